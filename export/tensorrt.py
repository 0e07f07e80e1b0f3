"""``python -m export.tensorrt``: a TensorRT engine (``.plan``) from the exported backbone ONNX.

    python -m export.tensorrt backbone.onnx --out backbone.plan [--fp16] [--max-voxels N]

TensorRT API generation: **10.x** (``TENSORRT_MAJOR``; ``pip install 'tensorrt-cu12>=10,<11'``).
Why 10.x, and how the code stays ready for 11.x:

* a plan runs only under the TensorRT major version that built it, so builder and runner must agree
  on one generation; 10.x is the one every CUDA 11.8 – 12.x stack the engine supports (its spconv
  extras ``cu118`` … ``cu126``) can install: 11.x ships no CUDA 11 build and no JetPack build;
* 11.x removes weak typing (``BuilderFlag.FP16`` and the other precision flags). We do not use it:
  the network is built **strongly typed** (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``, opt-in
  on 10.x, accepted and ignored on 11.x), so precision comes from the ONNX file itself: an fp16
  plan is built from ``python -m export.onnx --fp16``, and ``--fp16`` here checks that it was.
  TF32 is cleared for fp32 plans, so their outputs stay within float32 tolerance of the
  reference. Moving to 11.x is then a version-check change, once tested there.

The optimization profile covers the dynamic voxel and point counts (``profile_shapes``); a timing
cache (``--timing-cache``, default ``<out>.timing.cache``) is read if present and written back, so
rebuilds skip kernel timing. ``tensorrt`` is imported only when a build starts: without TensorRT or
without a CUDA GPU the command ends with one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from engine.errors import print_error

TENSORRT_MAJOR = 10
INSTALL_HINT = "pip install 'tensorrt-cu12>=10,<11' on a machine with an NVIDIA GPU"
DEFAULT_MAX_VOXELS = 300_000
DEFAULT_OPT_VOXELS = 100_000
DEFAULT_MAX_POINTS = 1_000_000
DEFAULT_WORKSPACE_GIB = 4.0


class TensorRTError(RuntimeError):
    """TensorRT or a GPU is missing, or the build failed; the message is one line."""


def import_tensorrt():
    """The ``tensorrt`` module, checked to be the pinned API generation."""
    try:
        import tensorrt as trt
    except Exception:  # ImportError, or a broken install (missing CUDA libraries)
        raise TensorRTError(f"TensorRT is not installed ({INSTALL_HINT})") from None
    major = int(str(trt.__version__).split(".")[0])
    if major != TENSORRT_MAJOR:
        raise TensorRTError(f"TensorRT {trt.__version__} found; the engine targets the TensorRT "
                            f"{TENSORRT_MAJOR}.x API ({INSTALL_HINT})")
    return trt


def require_gpu() -> None:
    import torch

    if not torch.cuda.is_available():
        raise TensorRTError("no CUDA GPU: TensorRT builds and runs engines on the GPU they are for")


def level_voxel_bounds(max_voxels: int, opt_voxels: int) -> list[tuple[int, int, int]]:
    """(min, opt, max) voxel count at each U-Net level.

    Level 1 and 2 may hold up to ``max_voxels`` (at 2 cm a scan's points are often sparser than the
    grid, so level 2 keeps ~70 % of level 1); deeper levels shrink by at least half per level in
    indoor scans (they are surfaces: ~4x per level measured on synthetic ScanNet-like rooms), so
    their maximum halves per level, which keeps the plan's activation memory bounded. ``opt``
    divides by 3 per level. The runner names the level if a scene exceeds a bound.
    """
    from engine.backbone.kernel_maps import LEVELS

    bounds = []
    for level in range(1, LEVELS + 1):
        high = max_voxels if level <= 2 else max(1, max_voxels >> (level - 2))
        bounds.append((1, max(1, min(high, opt_voxels // 3 ** (level - 1))), high))
    return bounds


def profile_shapes(max_voxels: int, opt_voxels: int, max_points: int) -> dict[str, tuple[tuple[int, ...], ...]]:
    """(min, opt, max) shape of every graph input for the optimization profile."""
    from engine.backbone.kernel_maps import DOWN_OFFSETS, LEVELS, SUBM_OFFSETS

    voxels = level_voxel_bounds(max_voxels, opt_voxels)
    opt_points = min(max_points, voxels[0][1])

    def rows(bounds: tuple[int, int, int], *tail: int) -> tuple[tuple[int, ...], ...]:
        return tuple((n, *tail) for n in bounds)

    shapes = {"voxel_features": rows(voxels[0], 6), "point_to_voxel": rows((1, opt_points, max_points))}
    for level in range(1, LEVELS + 1):
        shapes[f"subm_map_{level}"] = rows(voxels[level - 1], SUBM_OFFSETS)
    for level in range(1, LEVELS):
        shapes[f"down_map_{level}"] = rows(voxels[level], DOWN_OFFSETS)
        shapes[f"up_index_{level}"] = rows(voxels[level - 1])
    return shapes


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def build_engine(onnx_path: Path, out: Path, fp16: bool = False, max_voxels: int = DEFAULT_MAX_VOXELS,
                 opt_voxels: int = DEFAULT_OPT_VOXELS, max_points: int = DEFAULT_MAX_POINTS,
                 timing_cache: Path | None = None, workspace_gib: float = DEFAULT_WORKSPACE_GIB) -> None:
    """Build ``out`` from ``onnx_path`` (written by ``export.onnx``); raises ``TensorRTError``."""
    from export.metadata import read_metadata

    onnx_path, out = Path(onnx_path), Path(out)
    if not onnx_path.is_file():
        raise TensorRTError(f"{onnx_path}: no such file")
    precision = read_metadata(onnx_path).get("precision")
    if precision is None:
        raise TensorRTError(f"{onnx_path}: not written by python -m export.onnx (no precision metadata)")
    if fp16 and precision != "fp16":
        raise TensorRTError(f"{onnx_path} is {precision}; for an fp16 plan export with python -m export.onnx --fp16")
    trt = import_tensorrt()
    require_gpu()

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TensorRTError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)  # float32 tolerance against the reference
    profile = builder.create_optimization_profile()
    for name, (low, opt, high) in profile_shapes(max_voxels, opt_voxels, max_points).items():
        profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(profile)
    cache_path = Path(timing_cache) if timing_cache is not None else out.with_name(out.name + ".timing.cache")
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)

    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise TensorRTError("TensorRT could not build the engine (see the messages above)")
    _write_atomic(out, bytes(plan))
    _write_atomic(cache_path, bytes(config.get_timing_cache().serialize()))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m export.tensorrt",
                                     description="Build a TensorRT engine from the exported backbone ONNX.")
    parser.add_argument("onnx", type=Path, metavar="backbone.onnx", help="from python -m export.onnx")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE.plan", help="output engine")
    parser.add_argument("--fp16", action="store_true",
                        help="require an fp16 ONNX (python -m export.onnx --fp16); precision comes from the graph")
    parser.add_argument("--max-voxels", type=int, default=DEFAULT_MAX_VOXELS, metavar="N",
                        help=f"largest level-1 voxel count the engine accepts (default {DEFAULT_MAX_VOXELS})")
    parser.add_argument("--opt-voxels", type=int, default=DEFAULT_OPT_VOXELS, metavar="N",
                        help=f"voxel count the kernels are tuned for (default {DEFAULT_OPT_VOXELS})")
    parser.add_argument("--max-points", type=int, default=DEFAULT_MAX_POINTS, metavar="N",
                        help=f"largest point count (default {DEFAULT_MAX_POINTS})")
    parser.add_argument("--timing-cache", type=Path, metavar="FILE",
                        help="timing cache to reuse and update (default <out>.timing.cache)")
    parser.add_argument("--workspace-gib", type=float, default=DEFAULT_WORKSPACE_GIB,
                        help=f"builder workspace limit in GiB (default {DEFAULT_WORKSPACE_GIB})")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if min(args.max_voxels, args.opt_voxels, args.max_points) < 1:
        parser.error("--max-voxels, --opt-voxels and --max-points must be positive")
    try:
        build_engine(args.onnx, args.out, fp16=args.fp16, max_voxels=args.max_voxels, opt_voxels=args.opt_voxels,
                     max_points=args.max_points, timing_cache=args.timing_cache, workspace_gib=args.workspace_gib)
    except TensorRTError as exc:
        print_error(exc)
        return 1
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
