"""``python -m profiling.scaling``: how each stage's time grows with points and with instances.

Runs the native backbone and the reference (torch) stages on synthetic scenes of several sizes
(random weights), takes the median of ``--repeats`` runs, and fits ``time = a * size ** k`` by
least squares in log-log space. An exponent above ``LINEAR_TOLERANCE`` is flagged as worse than
linear. Instances are varied at the largest scene by decoding and post-processing the first I
instances' parameters. ``--json FILE`` keeps the measurement as data (``docs/bench/``);
``--plot FILE.png`` draws stage time against scene size, from this run or, with
``--from-json FILE``, from a saved one.

An exponent is only as good as its data: ``fit_warning`` says so, per stage, when the sizes span
less than ``MIN_SIZE_RANGE`` x (a 10 % timing wobble then moves k by 0.07 or more), when the
smallest median is under ``MIN_MEDIAN_MS`` (timer and interpreter noise dominate), or when three or
more sizes leave a slope standard error above ``MAX_SLOPE_ERROR`` (the times are not a power law).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

LINEAR_TOLERANCE = 1.15  # exponents up to this count as linear (timing noise, cache effects)
MIN_SIZE_RANGE = 4.0  # largest / smallest size below this: the fit is noise
MIN_MEDIAN_MS = 5.0
MAX_SLOPE_ERROR = 0.1


def fit_exponent(sizes: list[float], times_ms: list[float]) -> float:
    """Least-squares slope of log(time) against log(size)."""
    xs = [math.log(s) for s in sizes]
    ys = [math.log(max(t, 1e-9)) for t in times_ms]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else float("nan")


def fit_warning(sizes: list[float], times_ms: list[float]) -> str | None:
    """Why an exponent fitted to these medians means little (module docstring), or None."""
    if max(sizes) / min(sizes) < MIN_SIZE_RANGE:
        return f"sizes span only {max(sizes) / min(sizes):.1f}x (< {MIN_SIZE_RANGE:g}x): the exponent is noise"
    if min(times_ms) < MIN_MEDIAN_MS:
        return f"a median of {min(times_ms):.2f} ms (< {MIN_MEDIAN_MS:g} ms): timer noise dominates"
    if len(sizes) >= 3:
        k = fit_exponent(sizes, times_ms)
        xs = [math.log(x) for x in sizes]
        ys = [math.log(max(t, 1e-9)) for t in times_ms]
        intercept = statistics.fmean(ys) - k * statistics.fmean(xs)
        residual = sum((y - intercept - k * x) ** 2 for x, y in zip(xs, ys, strict=True)) / (len(xs) - 2)
        spread = sum((x - statistics.fmean(xs)) ** 2 for x in xs)
        error = math.sqrt(residual / spread)
        if error > MAX_SLOPE_ERROR:
            return f"slope standard error {error:.2f} (> {MAX_SLOPE_ERROR:g}): the times are not a power law"
    return None


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats + 1):
        began = time.perf_counter()
        fn()
        times.append((time.perf_counter() - began) * 1e3)
    return statistics.median(times[1:])


def measure(sizes: list[int], instance_counts: list[int], repeats: int, seed: int) -> dict:
    import numpy as np
    import torch

    from engine.pipeline import run_backbone, run_decoding, run_encoding, run_post_processing
    from engine.postprocess import StoredMasks
    from engine.session import build_backbone, load_model
    from engine.synthetic import generate_scene

    device = torch.device("cpu")
    model = load_model(None, True, seed)
    native = build_backbone("native", model, device)
    by_points: dict[str, list[float]] = {s: [] for s in ("backbone", "encoding", "decoding", "post_processing")}
    scenes = []
    with torch.no_grad():
        for size in sizes:
            scene = generate_scene(size, seed=1)
            segments = scene.segments.astype(np.int64)
            backbone = run_backbone(native, scene.vertices_m, scene.colors, device)
            encoded = run_encoding(model, backbone)
            masks = run_decoding(backbone, encoded)
            by_points["backbone"].append(
                _median_ms(lambda s=scene: run_backbone(native, s.vertices_m, s.colors, device), repeats))
            by_points["encoding"].append(_median_ms(lambda b=backbone: run_encoding(model, b), repeats))
            by_points["decoding"].append(_median_ms(lambda b=backbone, e=encoded: run_decoding(b, e), repeats))
            by_points["post_processing"].append(_median_ms(
                lambda m=masks, b=backbone, sp=segments: run_post_processing(
                    StoredMasks(m.masks.clone(), m.histograms), b, sp), repeats))
            scenes.append({"points": scene.num_points, "instances": int(encoded.theta.shape[0])})
        by_instances: dict[str, list[float]] = {"decoding": [], "post_processing": []}
        for count in instance_counts:
            subset = type(encoded)(encoded.candidates, encoded.instances, encoded.theta[:count],
                                   encoded.instance_centers[:count])
            masks = run_decoding(backbone, subset)
            by_instances["decoding"].append(_median_ms(lambda s=subset: run_decoding(backbone, s), repeats))
            by_instances["post_processing"].append(_median_ms(
                lambda m=masks: run_post_processing(StoredMasks(m.masks.clone(), m.histograms), backbone, segments),
                repeats))
    points = [s["points"] for s in scenes]
    return {
        "scenes": scenes,
        "ms_by_points": by_points,
        "exponent_in_points": {k: fit_exponent(points, v) for k, v in by_points.items()},
        "instances": instance_counts,
        "instances_at_points": points[-1],
        "ms_by_instances": by_instances,
        "exponent_in_instances": {k: fit_exponent(instance_counts, v) for k, v in by_instances.items()},
    }


def plot(result: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    from engine.budget import RTX3090_BUDGET_MS

    figure = Figure(figsize=(7, 4.5))
    axes = figure.add_subplot()
    points = [s["points"] for s in result["scenes"]]
    for index, (stage, times) in enumerate(result["ms_by_points"].items()):
        colour = f"C{index}"
        k = result["exponent_in_points"][stage]
        axes.loglog(points, times, "o-", color=colour, label=f"{stage} (k = {k:.2f})")
        axes.axhline(RTX3090_BUDGET_MS[stage], color=colour, linestyle=":", linewidth=0.8)
    axes.set_xlabel("scene size (points)")
    axes.set_ylabel("median time (ms), CPU")
    axes.set_title("Native backbone and reference stages vs scene size (dotted: RTX 3090 budget)")
    axes.legend(fontsize=8)
    axes.grid(True, which="both", linewidth=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m profiling.scaling", description="How each stage's time grows with points and with instances.",
        epilog="Fits time = a * size^k per stage on random-weight synthetic scenes (CPU); k > 1.15 is flagged worse "
        "than linear, and a fit its data cannot support is flagged too.")
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 50_000, 150_000], metavar="POINTS",
                        help="synthetic scene sizes in points, at least two (default 20000 50000 150000)")
    parser.add_argument("--instances", type=int, nargs="+", default=[25, 50, 100, 150], metavar="I",
                        help="instance counts decoded and post-processed at the largest size, at least two "
                        "(default 25 50 100 150)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed runs per point after one warm-up; the median is fitted (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="random-weight seed (default 0)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the measurement as JSON")
    parser.add_argument("--plot", type=Path, metavar="FILE.png", help="draw stage time against scene size")
    parser.add_argument("--from-json", type=Path, metavar="FILE", help="plot a saved --json result; measure nothing")
    args = parser.parse_args(argv)
    if args.from_json is not None:
        if args.plot is None:
            parser.error("--from-json needs --plot")
        plot(json.loads(args.from_json.read_text()), args.plot)
        return 0
    if len(args.sizes) < 2 or len(args.instances) < 2:
        parser.error("give at least two --sizes and two --instances to fit an exponent")
    result = measure(sorted(args.sizes), sorted(args.instances), args.repeats, args.seed)
    for axis, sizes in (("points", [s["points"] for s in result["scenes"]]), ("instances", result["instances"])):
        for stage, k in result[f"exponent_in_{axis}"].items():
            flag = "  <- worse than linear" if k > LINEAR_TOLERANCE else ""
            print(f"{stage:16s} time ~ {axis}^{k:.2f}{flag}")
            warning = fit_warning(sizes, result[f"ms_by_{axis}"][stage])
            if warning:
                print(f"warning: {stage} in {axis}: {warning}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.plot:
        plot(result, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
