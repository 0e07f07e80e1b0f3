"""``python -m profiling SCENE.ply``: where the time goes, per stage, against the RTX 3090 budget.

One warm-up run, then ``--repeats`` timed runs of the four stages (SPEC §0); reading the scene,
its superpoints and writing the outputs are timed once, outside the budget. Prints a table
(median, spread, budget, ratio, verdict, device-normalized verdict on GPUs, peak memory) and with
``--json`` writes the same as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from engine.cli_args import add_scan_arguments, check_session_arguments, session_parser
from profiling.report import ProfileReport, StageStats


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m profiling", description=__doc__.splitlines()[0],
                                     parents=[session_parser()])
    parser.add_argument("scene", type=Path, metavar="SCAN", help="a scan: .ply, .pcd, .las, .laz, .npy, .npz")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs after one warm-up (default 5)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the report as JSON")
    add_scan_arguments(parser)
    return parser


def _peak_host_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def profile(args) -> ProfileReport:
    import torch

    from engine.errors import print_warning
    from engine.outputs import write_scene_outputs
    from engine.pipeline import infer_scene
    from engine.scene_io import read_scene
    from engine.session import build_session, kernels_description
    from engine.stage_timer import StageTimer
    from engine.superpoints import superpoints_for_scene
    from profiling.devices import device_throughput

    session = build_session(args)
    device = session.device
    io_ms = {}
    began = time.perf_counter()
    scene = read_scene(args.scene, up_axis=args.up_axis, units=args.units, colour_max=args.colour_max)
    io_ms["read"] = (time.perf_counter() - began) * 1e3
    for warning in scene.warnings:
        print_warning(warning)
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
        later_stages=kernels_description(session),
    )


def render(report: ProfileReport) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 140)  # piped: don't squeeze to 80 columns
    scene, tp = report.scene, report.throughput
    console.print(f"{scene['name']}: {scene['points']} points, {scene['voxels']} voxels, {scene['candidates']} "
                  f"candidates, {scene['instances']} instances; backbone {report.backbone}, kernels "
                  f"{report.kernels} ({report.later_stages}); {len(report.runs)} runs",
                  markup=False, soft_wrap=True)
    normalized = report.normalized
    if normalized:
        console.print(f"device {tp.name}: {tp.fp32_tflops:.3g} float32 TFLOP/s ({tp.source}), "
                      f"{tp.speed_vs_rtx3090:.3g}x an RTX 3090 (35.6); norm. budget = budget / that",
                      markup=False, soft_wrap=True)
    else:
        console.print(f"device {tp.name} (CPU): verdicts against the RTX 3090 budget as it stands; no "
                      "device-normalized verdict (a CPU's measured matmul rate moves with load and does not "
                      "scale a GPU budget)", markup=False, soft_wrap=True)
    table = Table()
    columns = ["stage", "median ms", "min-max", "budget", "x", "verdict"]
    if normalized:
        columns += ["norm. budget", "x", "verdict"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("stage", "verdict") else "right")
    rows = list(report.stages().items()) + [("total", report.total())]
    for name, stats in rows:
        cells = [name, f"{stats.ms:.1f}", f"{stats.min_ms:.0f}-{stats.max_ms:.0f}", f"{stats.budget_ms:.1f}",
                 f"{stats.ratio:.2f}", StageStats.verdict(stats.ratio)]
        if normalized:
            cells += [f"{stats.normalized_budget_ms:.1f}", f"{stats.normalized_ratio:.2f}",
                      StageStats.verdict(stats.normalized_ratio)]
        table.add_row(*cells)
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
    from engine.session import choose_cpu_threads

    choose_cpu_threads()
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
