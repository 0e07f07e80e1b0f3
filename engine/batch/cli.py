"""``python -m engine.batch INPUTS... --out DIR``: the command (arguments, then the run).

``--help`` imports neither torch nor ray. Bad arguments or inputs end the command with one line
on stderr and exit status 1 before Ray starts; a bad scene is recorded in ``DIR/report.json`` and
on stderr and the others go on; the exit status is 1 when any scene failed.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from engine.batch.inputs import SceneJob, expand_inputs
from engine.batch.markers import completed_record
from engine.cli_args import add_picture_arguments, check_session_arguments, pictures_of, session_parser
from engine.errors import UserError, print_error

__all__ = ["build_parser", "main", "parse_args"]

_WORKER_DIED = "the inference worker died twice on this scene (it was retried once)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine.batch", parents=[session_parser()],
        description="DKNet instance segmentation of many scans on a Ray cluster (a local one by default): "
        "fault-isolated (a bad scene is recorded, the rest go on) and resumable (complete scenes are skipped).",
        epilog="INPUTS: .ply files, folders (a ScanNet scans/ tree: <scene>/<scene>_vh_clean_2.ply) or list files "
        "(one path per line, relative to the list file). Per scene in --out: the files python -m engine.run writes, "
        "and .complete/<scene>.json once they are all there; DIR/report.json: every scene's status and error.")
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUTS", help="scans, scans/ folders or list files")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    parser.add_argument("--no-superpoints", action="store_true",
                        help="skip superpoint refinement (segs.json or the mesh segmentator)")
    cluster = parser.add_argument_group("cluster")
    cluster.add_argument("--ray-address", metavar="ADDR",
                         help="join this Ray cluster (ray start's address, ray://..., or auto); "
                         "default: start a local Ray instance for the run")
    cluster.add_argument("--workers", type=int, default=1, metavar="N",
                         help="inference workers, each holding the model once (default 1)")
    cluster.add_argument("--gpus-per-worker", type=float, default=0.0, metavar="F",
                         help="GPUs per worker; fractions let several workers share a GPU (default 0: CPU)")
    parser.add_argument("--gt", type=Path, metavar="GT_DIR",
                        help="ground truth (python -m engine.prepare_gt): ScanNet AP over all complete scenes "
                        "at the end")
    parser.add_argument("--overwrite", action="store_true", help="redo scenes that are already complete")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary (errors still go to stderr)")
    add_picture_arguments(parser)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_session_arguments(parser, args)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.gpus_per_worker < 0:
        parser.error("--gpus-per-worker must not be negative")
    if args.gpus_per_worker > 0 and args.device == "cpu":
        parser.error("--gpus-per-worker with --device cpu: the workers would not use their GPUs")
    if args.gpus_per_worker == 0 and args.device == "cuda":
        parser.error("--device cuda needs --gpus-per-worker (Ray hides GPUs from workers that did not ask for one)")
    args.dump = None  # engine.run's --dump: not offered here
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    started, began = datetime.now(timezone.utc).isoformat(timespec="seconds"), time.perf_counter()
    try:
        jobs = _check_setup(args)
    except UserError as exc:
        print_error(exc)
        return 1
    records: dict[str, dict | None] = {job.name: _skipped(args, job) for job in jobs}
    todo = [job for job in jobs if records[job.name] is None]
    cluster, pipeline_s, setup_error = None, 0.0, None
    if todo:
        from engine.batch.cluster import ray_cluster
        from engine.batch.pipeline import run_pipeline
        from engine.batch.progress import BatchProgress

        try:
            with ray_cluster(args.ray_address, args.workers) as cluster, \
                    BatchProgress(len(todo), len(jobs) - len(todo), args.quiet) as progress:
                if args.gpus_per_worker > cluster.gpus:  # Ray would wait forever for them
                    raise UserError(f"--gpus-per-worker {args.gpus_per_worker:g}: the Ray cluster has "
                                    f"{cluster.gpus:g} GPUs")
                pipeline_began = time.perf_counter()

                def on_record(record: dict) -> bool:
                    nonlocal setup_error
                    if record.pop("setup_error"):
                        setup_error = record["error"]
                        return False
                    record["finished_s"] = round(time.perf_counter() - pipeline_began, 3)
                    records[record["scene"]] = record
                    progress.add(record)
                    if record["error"]:
                        print_error(record["error"])
                    return True

                run_pipeline(todo, args, on_record)
                pipeline_s = time.perf_counter() - pipeline_began
        except UserError as exc:
            print_error(exc)
            return 1
        if setup_error is not None:
            print_error(f"worker setup failed: {setup_error}")
    for job in todo:
        if records[job.name] is None:
            records[job.name] = _failed(job, f"not run: {setup_error}" if setup_error else _WORKER_DIED)
    return _finish(args, argv, [records[job.name] for job in jobs], cluster, started, began, pipeline_s,
                   failed_setup=setup_error is not None)


def _check_setup(args: argparse.Namespace) -> list[SceneJob]:
    """What can be checked before Ray starts: ray installed, the inputs, the weights, --gt."""
    from engine.session import resolve_checkpoint

    if importlib.util.find_spec("ray") is None:
        raise UserError("python -m engine.batch needs Ray: pip install -e \".[cluster]\"")
    jobs = expand_inputs(args.inputs)
    checkpoint = resolve_checkpoint(args.checkpoint, args.random_weights)
    if checkpoint is not None and not checkpoint.is_file():
        raise UserError(f"{checkpoint}: checkpoint not found")
    if args.gt is not None and not args.gt.is_dir():
        raise UserError(f"{args.gt}: ground-truth folder not found")
    return jobs


def _skipped(args: argparse.Namespace, job: SceneJob) -> dict | None:
    """The stored record of a scene complete from an earlier run (status ``skipped``), else None."""
    record = None if args.overwrite else completed_record(args.out, job.name, pictures_of(args))
    return None if record is None else {**record, "status": "skipped", "input": str(job.path)}


def _failed(job: SceneJob, error: str) -> dict:
    return {"scene": job.name, "input": str(job.path), "status": "failed", "error": error, "points": 0,
            "voxels": 0, "instances": 0, "predicted": 0, "superpoints": None, "stage_ms": {}, "worker": None,
            "bytes_read_to_infer": 0, "bytes_infer_to_write": 0}


def _finish(args, argv: list[str], records: list[dict], cluster, started: str, began: float, pipeline_s: float,
            failed_setup: bool) -> int:
    """AP (--gt), report.json, the summary; the exit status."""
    from rich.console import Console

    from engine.batch.report import totals, write_report

    console = Console()
    ap, ap_failed = None, False
    complete = [r["scene"] for r in records if r["status"] in ("done", "skipped")]
    if args.gt is not None and complete:
        from engine.batch.evaluation import batch_ap
        from engine.eval import print_table

        try:
            result = batch_ap(args.out, args.gt, complete)
            ap = result.to_json_dict()
            if not args.quiet:
                print_table(console, result, len(complete))
        except UserError as exc:
            print_error(exc)
            ap_failed = True
    summary = totals(records, pipeline_s)
    ray_info = None if cluster is None else {"address": cluster.address, "startup_s": round(cluster.startup_s, 3),
                                             "cpus": cluster.cpus, "gpus": cluster.gpus}
    try:
        path = write_report(args.out, {
            "command": ["python", "-m", "engine.batch", *argv], "started": started,
            "wall_s": round(time.perf_counter() - began, 3), "pipeline_s": round(pipeline_s, 3), "ray": ray_info,
            "workers": args.workers, "gpus_per_worker": args.gpus_per_worker, "totals": summary, "ap": ap,
            "scenes": records})
    except OSError as exc:
        print_error(f"{args.out}: cannot write the report ({exc})")
        return 1
    if not args.quiet:
        rate = f", {summary['scenes_per_s']:.2f} scenes/s" if summary["done"] else ""
        console.print(f"{summary['done']} done, {summary['skipped']} skipped (complete), {summary['failed']} failed "
                      f"of {summary['scenes']} scenes{rate}; report: {path}", markup=False, soft_wrap=True)
    return 1 if summary["failed"] or ap_failed or failed_setup else 0


if __name__ == "__main__":
    sys.exit(main())
