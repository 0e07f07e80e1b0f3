"""The Ray Data pipeline of ``engine.batch``: scenes -> read (CPU tasks) -> infer (an actor pool,
the model built once per actor) -> write (CPU tasks), streamed, one scene per block.

Fault tolerance is Ray's: an actor whose process dies is restarted (``max_restarts=-1``) and the
scene it held is retried once (``max_task_retries=1``); a scene whose retry dies too is dropped
from the stream (``max_errored_blocks=-1``) and the caller records it as failed.
"""

from __future__ import annotations

import argparse
import json
import os
import warnings
from collections.abc import Callable

from engine.batch import stages
from engine.batch.inputs import SceneJob
from engine.cli_args import pictures_of
from engine.environment import RAY_DATA_LOG_LEVEL

__all__ = ["WORKER_THREADS", "run_pipeline"]

WORKER_THREADS = 1  # CPU threads (and logical CPUs) of each inference worker
_TASK_CPUS = 1  # logical CPUs of each read or write task


def run_pipeline(jobs: list[SceneJob], args: argparse.Namespace, on_record: Callable[[dict], bool]) -> None:
    """Segment ``jobs`` on the connected Ray cluster with ``args``' options (``engine.batch.cli``);
    ``on_record`` gets each scene's report record as it completes and returns False to stop."""
    os.environ.setdefault(RAY_DATA_LOG_LEVEL, "ERROR")
    import ray
    import ray.data

    context = ray.data.DataContext.get_current()
    context.max_errored_blocks = -1
    context.enable_progress_bars = False
    dataset = ray.data.from_items([stages.initial_row(job.name, job.path) for job in jobs],
                                  override_num_blocks=len(jobs))
    dataset = dataset.map(stages.read_row, fn_kwargs={"no_superpoints": args.no_superpoints}, num_cpus=_TASK_CPUS)
    with warnings.catch_warnings():  # Ray 2.60 names no parameter for max_task_retries; the generic one warns
        warnings.simplefilter("ignore", DeprecationWarning)
        dataset = dataset.map_batches(
            stages.InferActor, fn_constructor_kwargs={"args": args, "threads": WORKER_THREADS},
            batch_size=1, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=args.workers),
            num_cpus=WORKER_THREADS, num_gpus=args.gpus_per_worker, max_restarts=-1, max_task_retries=1)
    dataset = dataset.map(stages.write_row, fn_kwargs={"out_dir": str(args.out), "pictures": pictures_of(args)},
                          num_cpus=_TASK_CPUS)
    for row in dataset.iter_rows():
        if not on_record(json.loads(row["record"])):
            return
