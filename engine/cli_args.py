"""Command-line arguments of the inference commands (no torch import: ``--help`` stays fast).

``session_parser`` is the parent parser that ``engine.run`` and ``python -m profiling`` share
(weights, device, ``--backbone`` x ``--kernels``, ``--engine-file``); so is ``add_scan_arguments``
(how to read a scan); ``engine.run`` and ``engine.batch`` share ``add_picture_arguments``;
``add_weight_arguments`` is also used by ``export.onnx``; ``build_parser`` / ``parse_args`` are
``engine.run``'s own.
"""

from __future__ import annotations

import argparse
from pathlib import Path

BACKBONES = ("native", "spconv", "onnxruntime", "tensorrt")
EXPORTED_BACKBONES = ("onnxruntime", "tensorrt")
KERNELS = ("torch", "triton")
PRECISIONS = ("fp32", "tf32", "fp16", "bf16")


def add_weight_arguments(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint`` / ``--random-weights`` / ``--seed``: every command that loads DKNet."""
    weights = parser.add_argument_group("weights")
    weights.add_argument("--checkpoint", type=Path, metavar="PATH",
                         help="official DKNet checkpoint (default: $DKNET_CHECKPOINT)")
    weights.add_argument("--random-weights", action="store_true",
                         help="seeded random weights instead of a checkpoint (for testing the pipeline)")
    weights.add_argument("--seed", type=int, default=0, help="seed for --random-weights (default 0)")


def add_scan_arguments(parser: argparse.ArgumentParser) -> None:
    """``--up-axis`` / ``--units`` / ``--colour-max``: how to read scans that are not ScanNet's
    (``engine.scene_io.read_scene``)."""
    scans = parser.add_argument_group("your own scans (PLY, PCD, LAS/LAZ, .npy/.npz)")
    scans.add_argument("--up-axis", choices=("z", "y", "-y", "x"), default="z",
                       help="the file's up axis (default z, as ScanNet; phone and ARKit scans are usually y)")
    scans.add_argument("--units", choices=("m", "cm", "mm"), default="m",
                       help="the file's length unit (default m)")
    scans.add_argument("--colour-max", type=int, choices=(1, 255), default=None,
                       help="full intensity of float colours: 1 or 255 (default: detected when unambiguous; "
                       "integer colours are always 0..255)")


def add_picture_arguments(parser: argparse.ArgumentParser) -> None:
    """``--html`` / ``--no-picture``: which pictures a scene gets besides its submission and PLY
    (``engine.pictures``); written in the ``write`` step, outside the timed stages."""
    pictures = parser.add_argument_group("pictures").add_mutually_exclusive_group()
    pictures.add_argument("--html", action="store_true",
                          help="also write <scene>.html: an interactive 3D viewer (one self-contained file, "
                          "works offline; instances listed and toggled in its legend)")
    pictures.add_argument("--no-picture", action="store_true",
                          help="write neither <scene>.png nor <scene>.html (batch runs that don't need them)")


def pictures_of(args: argparse.Namespace) -> tuple[bool, bool]:
    """(png, html): the pictures ``--html`` / ``--no-picture`` ask for."""
    return not args.no_picture, bool(args.html)


def session_parser() -> argparse.ArgumentParser:
    """The parent parser of the inference commands: weights, device, ``--backbone`` x ``--kernels``
    (any pair) and ``--engine-file``."""
    parser = argparse.ArgumentParser(add_help=False)
    add_weight_arguments(parser)
    run = parser.add_argument_group("inference")
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                     help="auto: cuda when available, else cpu")
    run.add_argument("--backbone", choices=BACKBONES, default="native",
                     help="what runs the sparse U-Net and point heads: native (the engine's own sparse convs; "
                     "default), spconv (the spconv library, when installed), onnxruntime / tensorrt (an exported "
                     "graph, --engine-file)")
    run.add_argument("--precision", choices=PRECISIONS, default="fp32",
                     help="products of the native backbone's Triton convolutions on CUDA (sums stay float32): "
                     "fp32 (default, the reference's results), or opt-in tf32 / fp16 / bf16 (see docs/faithfulness.md)")
    run.add_argument("--kernels", choices=KERNELS, default=None,
                     help="what runs encoding, decoding and post-processing: torch (the reference) or triton "
                     "(Triton kernels; on CPU Triton's slow interpreter). Default: triton on CUDA, torch on CPU")
    run.add_argument("--engine-file", type=Path, metavar="PATH",
                     help="exported backbone for --backbone onnxruntime (.onnx) / tensorrt (.plan)")
    return parser


def check_session_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The rules between the shared arguments (``parser.error`` on a violation)."""
    if args.engine_file is not None and args.backbone not in EXPORTED_BACKBONES:
        parser.error("--engine-file only applies to --backbone onnxruntime and tensorrt")
    if args.engine_file is None and args.backbone in EXPORTED_BACKBONES:
        parser.error(f"--backbone {args.backbone} needs --engine-file (python -m export.onnx / export.tensorrt)")
    if args.random_weights and args.checkpoint is not None:
        parser.error("give either --checkpoint or --random-weights, not both")
    if args.precision != "fp32" and args.backbone != "native":
        parser.error("--precision applies to --backbone native (its Triton convolutions on CUDA)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine.run", parents=[session_parser()],
        description="DKNet 3D instance segmentation of indoor scans: PLY meshes or point clouds, PCD, LAS/LAZ, "
        "NumPy .npy/.npz.",
        epilog="Outputs per scene in --out: <scene>.txt and predicted_masks/ (ScanNet benchmark format), "
        "<scene>_instances.ply (coloured by instance), <scene>.png (unless --no-picture) and <scene>.html "
        "(with --html). "
        "The scene name is the file name without its extension and _vh_clean_2.",
    )
    parser.add_argument("scenes", nargs="+", type=Path, metavar="SCAN",
                        help="scan(s) to segment: .ply, .pcd, .las, .laz, .npy, .npz")
    parser.add_argument("--out", type=Path, default=Path("dknet_out"), metavar="DIR",
                        help="output folder (default dknet_out)")
    parser.add_argument("--dump", type=Path, metavar="FILE.npz",
                        help="write intermediates to FILE.npz (with several scenes: FILE.<scene>.npz)")
    parser.add_argument("--gt", type=Path, metavar="GT_DIR",
                        help="ground truth (<scene>.txt per scene, as python -m engine.prepare_gt writes): "
                        "print the running ScanNet AP after each scene")
    parser.add_argument("--no-superpoints", action="store_true",
                        help="skip superpoint refinement (segs.json or the mesh segmentator)")
    add_scan_arguments(parser)
    add_picture_arguments(parser)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_session_arguments(parser, args)
    return args


def dump_path(dump: Path, scene: str, num_scenes: int) -> Path:
    """``FILE.npz`` for one scene; ``FILE.<scene>.npz`` when several scenes share one --dump."""
    if num_scenes == 1:
        return dump
    return dump.with_name(f"{dump.stem}.{scene}{dump.suffix or '.npz'}")
