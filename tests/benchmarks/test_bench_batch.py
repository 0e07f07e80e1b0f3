"""``engine.batch`` throughput (``pytest --benchmark-only``, group ``batch``): 8 synthetic
20k-point scenes (``generate_scene(20_000, seed=i)``), random weights, CPU, side by side in one run:

* ``run``: ``engine.run`` over the 8 scenes in this process, single-threaded (the work of one worker);
* ``batch-1`` / ``batch-2``: ``engine.batch`` with 1 and 2 workers (one thread each) on a local Ray
  instance it starts itself (``--overwrite``: every round redoes every scene);

each with the default outputs (``png``: the PNG quick look) and with ``--no-picture`` (``none``).

Each round is one whole command. ``extra_info``: ``scenes_per_s`` over the pipeline's wall time
(first scene submitted to last written: actor start-up included, Ray start-up not; ``run``'s over
its whole loop), ``steady_scenes_per_s`` (the 7 scenes after the first one written, over the time
from the first written to the last: what a long run approaches) and, separately, ``ray_startup_s``
and ``wall_s`` (the whole command).
"""

from __future__ import annotations

import json
import time

import pytest
import torch

from engine import run
from engine.batch import cli
from engine.synthetic import generate_scene, write_scannet_scene

POINTS, SCENES = 20_000, 8


@pytest.fixture(scope="module")
def plys(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("bench_batch")
    return [str(write_scannet_scene(generate_scene(POINTS, seed=i), root / f"scene{i:04d}_00", f"scene{i:04d}_00"))
            for i in range(SCENES)]


PICTURES = {"png": [], "none": ["--no-picture"]}


@pytest.mark.parametrize("pictures", list(PICTURES))
@pytest.mark.benchmark(group="batch")
def test_run_single_thread(benchmark, plys, tmp_path, monkeypatch, pictures):
    written = []  # when each scene's outputs were in place
    write_step = run.write_step

    def timed_write_step(*args, **kwargs):
        write_step(*args, **kwargs)
        written.append(time.perf_counter())

    monkeypatch.setattr(run, "write_step", timed_write_step)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        began = time.perf_counter()
        code = benchmark.pedantic(run.main, args=([*plys, "--random-weights", "--out", str(tmp_path),
                                                   *PICTURES[pictures]],), rounds=1, iterations=1)
        wall_s = time.perf_counter() - began
    finally:
        torch.set_num_threads(threads)
    assert code == 0 and len(written) == SCENES
    benchmark.extra_info.update(scenes=SCENES, points=POINTS, pictures=pictures, wall_s=round(wall_s, 3),
                                scenes_per_s=round(SCENES / wall_s, 4),
                                steady_scenes_per_s=round((SCENES - 1) / (written[-1] - written[0]), 4))


@pytest.mark.parametrize("pictures", list(PICTURES))
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.benchmark(group="batch")
def test_batch(benchmark, plys, tmp_path, workers, pictures):
    argv = [*plys, "--random-weights", "--out", str(tmp_path), "--workers", str(workers), "--overwrite", "--quiet",
            *PICTURES[pictures]]
    assert benchmark.pedantic(cli.main, args=(argv,), rounds=1, iterations=1) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["totals"]["done"] == SCENES
    benchmark.extra_info.update(scenes=SCENES, points=POINTS, workers=workers, pictures=pictures,
                                wall_s=report["wall_s"], pipeline_s=report["pipeline_s"],
                                ray_startup_s=report["ray"]["startup_s"], scenes_per_s=report["totals"]["scenes_per_s"],
                                steady_scenes_per_s=report["totals"]["steady_scenes_per_s"],
                                bytes_per_scene=report["totals"]["bytes_between_stages"] // SCENES,
                                stage_ms=report["totals"]["stage_ms"])
