"""``python -m profiling SCENE.ply``: where the time goes, per stage, against the RTX 3090 budget.

One warm-up run, then ``--repeats`` timed runs of the four stages (SPEC §0); reading the scene,
its superpoints and writing the outputs are timed once, outside the budget. Prints a table
(median, spread, budget, ratio, verdict, device-normalized verdict, peak memory) and with
``--json`` writes the same as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from engine.cli_args import check_session_arguments, session_parser
from profiling.report import ProfileReport, StageStats


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m profiling", description=__doc__.splitlines()[0],
                                     parents=[session_parser()])
    parser.add_argument("scene", type=Path, metavar="SCENE.ply")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs after one warm-up (default 5)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the report as JSON")
    return parser


def _peak_host_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def profile(args) -> ProfileReport:
    import torch

    from engine.outputs import write_scene_outputs
    from engine.pipeline import infer_scene
    from engine.scene_io import read_scene
    from engine.session import build_session
    from engine.stage_timer import StageTimer
    from engine.superpoints import superpoints_for_scene
    from profiling.devices import device_throughput

    session = build_session(args)
    device = session.device
    io_ms = {}
    began = time.perf_counter()
    scene = read_scene(args.scene)
    io_ms["read"] = (time.perf_counter() - began) * 1e3
    began = time.perf_counter()
    superpoints, _ = superpoints_for_scene(scene.path, scene.xyz, scene.faces)
    io_ms["superpoints"] = (time.perf_counter() - began) * 1e3
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    runs = []
    for _ in range(args.repeats + 1):
        timer = StageTimer(device)
        result = infer_scene(session, scene.xyz, scene.rgb, superpoints, timer)
        runs.append(timer.ms)
    with tempfile.TemporaryDirectory() as out:
        began = time.perf_counter()
        write_scene_outputs(Path(out), scene.name, scene.xyz, scene.faces, result.pred_masks,
                            result.pred_labels, result.pred_scores)
        io_ms["write"] = (time.perf_counter() - began) * 1e3
    return ProfileReport(
        scene={"name": scene.name, "points": scene.num_points, "voxels": result.num_voxels,
               "candidates": int(result.candidates.size), "instances": int(result.instance_centers.size)},
        backbone=result.backbone,
        kernels=session.kernels.name,
        throughput=device_throughput(device),
        runs=runs[1:],
        io_ms=io_ms,
        peak_memory_mb={"host": _peak_host_mb(),
                        "device": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None},
    )


def render(report: ProfileReport) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 140)  # piped: don't squeeze to 80 columns
    scene, tp = report.scene, report.throughput
    console.print(f"{scene['name']}: {scene['points']} points, {scene['voxels']} voxels, {scene['candidates']} "
                  f"candidates, {scene['instances']} instances; backbone {report.backbone}, kernels "
                  f"{report.kernels}; {len(report.runs)} runs",
                  markup=False, soft_wrap=True)
    console.print(f"device {tp.name}: {tp.fp32_tflops:.3g} float32 TFLOP/s ({tp.source}), "
                  f"{tp.speed_vs_rtx3090:.3g}x an RTX 3090 (35.6); norm. budget = budget / that",
                  markup=False, soft_wrap=True)
    table = Table()
    for column in ("stage", "median ms", "min-max", "budget", "x", "verdict", "norm. budget", "x", "verdict"):
        table.add_column(column, justify="left" if column in ("stage", "verdict") else "right")
    rows = list(report.stages().items()) + [("total", report.total())]
    for name, stats in rows:
        table.add_row(name, f"{stats.ms:.1f}", f"{stats.min_ms:.0f}-{stats.max_ms:.0f}", f"{stats.budget_ms:.1f}",
                      f"{stats.ratio:.2f}", StageStats.verdict(stats.ratio), f"{stats.normalized_budget_ms:.1f}",
                      f"{stats.normalized_ratio:.2f}", StageStats.verdict(stats.normalized_ratio))
    console.print(table)
    io = ", ".join(f"{k} {v:.1f} ms" for k, v in report.io_ms.items())
    memory = f"peak host memory {report.peak_memory_mb['host']:.0f} MiB"
    if report.peak_memory_mb.get("device") is not None:
        memory += f", peak device memory {report.peak_memory_mb['device']:.0f} MiB"
    console.print(f"outside the budget: {io}; {memory}", markup=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_session_arguments(parser, args)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    from engine.errors import UserError, print_error
    from engine.scene_io import SceneInputError

    try:
        report = profile(args)
    except (UserError, SceneInputError) as exc:
        print_error(exc)
        return 1
    render(report)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
