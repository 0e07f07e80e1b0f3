"""Command-line arguments of ``python -m engine.run`` (no torch import: ``--help`` stays fast)."""

from __future__ import annotations

import argparse
from pathlib import Path

BACKENDS = ("reference", "triton", "onnxruntime", "tensorrt")
EXPORTED_BACKENDS = ("onnxruntime", "tensorrt")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine.run",
        description="DKNet 3D instance segmentation of ScanNet-style scans (PLY meshes or point clouds).",
        epilog="Outputs per scene in --out: <scene>.txt and predicted_masks/ (ScanNet benchmark format), "
        "<scene>_instances.ply (coloured by instance) and <scene>.png. "
        "The scene name is the file name without .ply and _vh_clean_2.",
    )
    parser.add_argument("scenes", nargs="+", type=Path, metavar="SCENE.ply", help="scan(s) to segment")
    weights = parser.add_argument_group("weights")
    weights.add_argument("--checkpoint", type=Path, metavar="PATH",
                         help="official DKNet checkpoint (default: $DKNET_CHECKPOINT)")
    weights.add_argument("--random-weights", action="store_true",
                         help="seeded random weights instead of a checkpoint (for testing the pipeline)")
    weights.add_argument("--seed", type=int, default=0, help="seed for --random-weights (default 0)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: cuda when available, else cpu")
    parser.add_argument("--backend", choices=BACKENDS, default="reference",
                        help="reference: plain PyTorch with spconv; triton: the reference backbone, then "
                        "Triton kernels for encoding, decoding and post-processing (CUDA; on CPU Triton's slow "
                        "interpreter); onnxruntime / tensorrt: an exported backbone (--engine-file) with the "
                        "engine's own later stages")
    parser.add_argument("--engine-file", type=Path, metavar="PATH",
                        help="exported backbone for the onnxruntime / tensorrt backends")
    parser.add_argument("--out", type=Path, default=Path("dknet_out"), metavar="DIR",
                        help="output folder (default dknet_out)")
    parser.add_argument("--dump", type=Path, metavar="FILE.npz",
                        help="write intermediates to FILE.npz (with several scenes: FILE.<scene>.npz)")
    parser.add_argument("--gt", type=Path, metavar="GT_DIR",
                        help="ground truth (<scene>.txt per scene, as python -m engine.prepare_gt writes): "
                        "print the running ScanNet AP after each scene")
    parser.add_argument("--no-superpoints", action="store_true",
                        help="skip superpoint refinement (segs.json or the mesh segmentator)")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.engine_file is not None and args.backend not in EXPORTED_BACKENDS:
        parser.error("--engine-file only applies to the onnxruntime and tensorrt backends")
    if args.engine_file is None and args.backend in EXPORTED_BACKENDS:
        parser.error(f"--backend {args.backend} needs --engine-file (python -m export.onnx / export.tensorrt)")
    if args.random_weights and args.checkpoint is not None:
        parser.error("give either --checkpoint or --random-weights, not both")
    return args


def dump_path(dump: Path, scene: str, num_scenes: int) -> Path:
    """``FILE.npz`` for one scene; ``FILE.<scene>.npz`` when several scenes share one --dump."""
    if num_scenes == 1:
        return dump
    return dump.with_name(f"{dump.stem}.{scene}{dump.suffix or '.npz'}")
