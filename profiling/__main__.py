"""``python -m profiling SCENE.ply``: per-stage times over repeated runs, next to the RTX 3090 budget.

A first version (issue 5 extends it): warm-up run, N timed runs, median and min-max per stage.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m profiling", description=__doc__.splitlines()[0])
    parser.add_argument("scene", type=Path, metavar="SCENE.ply")
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--seed", type=int, default=0, help="random-weight seed when no --checkpoint")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    import torch
    from rich.console import Console
    from rich.table import Table

    from engine.checkpoint import load_checkpoint, randomize_weights
    from engine.model import build_model
    from engine.pipeline import infer_scene
    from engine.scene_io import read_scene
    from engine.sparse_provider import select_provider
    from engine.superpoints import superpoints_for_scene
    from profiling.budget import RTX3090_BUDGET_MS, STAGES
    from profiling.stage_timer import StageTimer

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    model = build_model(select_provider(device))
    if args.checkpoint:
        load_checkpoint(model, args.checkpoint)
    else:
        randomize_weights(model, args.seed)
    model.to(device)
    scene = read_scene(args.scene)
    superpoints, _ = superpoints_for_scene(scene.path, scene.xyz, scene.faces)
    runs = []
    for _ in range(args.repeats + 1):  # the first run warms up and is dropped
        timer = StageTimer(device)
        result = infer_scene(model, scene.xyz, scene.rgb, superpoints, device, timer)
        runs.append(timer.ms)
    runs = runs[1:]
    table = Table(title=f"{scene.name}: {scene.num_points} points, {result.num_voxels} voxels, "
                        f"{result.candidates.size} candidates, {result.instance_centers.size} instances; "
                        f"{device.type}, {args.repeats} runs")
    for column in ("stage", "median ms", "min-max ms", "budget ms", "x budget"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for stage in STAGES:
        values = [r[stage] for r in runs]
        median = statistics.median(values)
        table.add_row(stage, f"{median:.1f}", f"{min(values):.1f}-{max(values):.1f}",
                      f"{RTX3090_BUDGET_MS[stage]:.1f}", f"{median / RTX3090_BUDGET_MS[stage]:.2f}")
    Console().print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
