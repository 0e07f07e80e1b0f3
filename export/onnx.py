"""``python -m export.onnx``: DKNet's backbone and point heads as one ONNX graph.

    python -m export.onnx --checkpoint checkpoint.pth --out backbone.onnx [--fp16]
    python -m export.onnx --random-weights [--seed S] --out backbone.onnx

The graph is ``export.gather_conv.GatherBackbone`` traced by torch's TorchScript-based exporter
(``dynamo=False``: the torch.export-based one needs ``onnxscript``, which the engine does not
depend on), at opset ``OPSET``. Inputs, by name (V_l voxels at U-Net level l, N points; every
count is a dynamic axis):

* ``voxel_features`` (V_1, 6) float32, ``point_to_voxel`` (N,) int64;
* ``subm_map_1..7`` (V_l, 27), ``down_map_1..6`` (V_{l+1}, 8), ``up_index_1..6`` (V_l,), int64
  (``engine.backbone.kernel_maps``).

Outputs, float32, for all N points: ``semantic_scores`` (N, 20), ``offsets`` (N, 3),
``heat_logits`` (N,), ``mask_features`` (N, 16), ``kernel_features`` (N, 16). ``--fp16`` keeps these
I/O types and runs everything between in float16. The file's metadata records ``opset``,
``input_names``, ``output_names``, ``precision``, ``weights`` (a description) and ``weights_sha256``
(``engine.checkpoint.weights_fingerprint``: ``engine.run`` refuses the file with other weights);
``onnx.checker`` validates it. Without ``--checkpoint`` the weights come from ``$DKNET_CHECKPOINT``,
as for ``engine.run``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.atomic import atomic_file
from engine.cli_args import add_weight_arguments

OPSET = 17
EXAMPLE_SEED = 0


def input_names() -> list[str]:
    from engine.backbone.kernel_maps import map_names

    return ["voxel_features", "point_to_voxel", *map_names()]


def dynamic_axes() -> dict[str, dict[int, str]]:
    """Axis 0 of every input and output: ``voxels_<level>`` or ``points``."""
    from engine.backbone.folded import OUTPUT_NAMES
    from engine.backbone.kernel_maps import LEVELS

    axes = {"voxel_features": {0: "voxels_1"}, "point_to_voxel": {0: "points"}}
    for level in range(1, LEVELS + 1):
        axes[f"subm_map_{level}"] = {0: f"voxels_{level}"}
    for level in range(1, LEVELS):
        axes[f"down_map_{level}"] = {0: f"voxels_{level + 1}"}
        axes[f"up_index_{level}"] = {0: f"voxels_{level}"}
    axes.update({name: {0: "points"} for name in OUTPUT_NAMES})
    return axes


def example_inputs():
    """A tiny random scene to trace with (64 voxels, every level non-empty). Tracing records
    ops, not sizes: the graph takes no Python number from a dynamic shape."""
    import torch

    from engine.backbone.kernel_maps import build_kernel_maps

    g = torch.Generator().manual_seed(EXAMPLE_SEED)
    coords = torch.randint(0, 150, (64, 3), generator=g).unique(dim=0)
    maps = build_kernel_maps(coords, [150, 151, 152])
    point_to_voxel = torch.randint(0, coords.shape[0], (coords.shape[0] + 17,), generator=g)
    return (torch.randn(coords.shape[0], 6, generator=g), point_to_voxel, *maps.tensors())


def export_backbone(state: dict, out: Path, fp16: bool = False, weights: str = "") -> None:
    """Export ``state`` (a DKNet state dict) to ``out``; ``weights`` describes them in the metadata.

    Written to a temporary file beside ``out``, checked, then renamed: no partial file is left.
    """
    import warnings

    import onnx
    import torch

    from engine.backbone.folded import OUTPUT_NAMES
    from engine.checkpoint import weights_fingerprint
    from export.gather_conv import GatherBackbone
    from export.metadata import WEIGHTS_FINGERPRINT

    module = GatherBackbone(state, dtype=torch.float16 if fp16 else torch.float32)
    with atomic_file(Path(out)) as tmp:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter's notice
            torch.onnx.export(module, example_inputs(), str(tmp), dynamo=False, input_names=input_names(),
                              output_names=list(OUTPUT_NAMES), dynamic_axes=dynamic_axes(), opset_version=OPSET)
        model = onnx.load(str(tmp))
        metadata = {"opset": str(OPSET), "input_names": ",".join(input_names()),
                    "output_names": ",".join(OUTPUT_NAMES), "precision": "fp16" if fp16 else "fp32",
                    "weights": weights, WEIGHTS_FINGERPRINT: weights_fingerprint(state)}
        onnx.helper.set_model_props(model, metadata)
        onnx.checker.check_model(model)
        onnx.save(model, str(tmp))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m export.onnx",
                                     description="Export DKNet's sparse U-Net and point heads to ONNX.")
    add_weight_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, metavar="FILE.onnx", help="output file")
    parser.add_argument("--fp16", action="store_true", help="float16 weights and activations (float32 I/O)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.random_weights and args.checkpoint is not None:
        parser.error("give either --checkpoint or --random-weights, not both")
    from engine.errors import UserError, print_error
    from engine.session import load_model, resolve_checkpoint

    try:
        model = load_model(args.checkpoint, args.random_weights, args.seed)
    except UserError as exc:
        print_error(exc)
        return 1
    weights = f"random (seed {args.seed})" if args.random_weights else resolve_checkpoint(args.checkpoint, False).name
    try:
        export_backbone(model.state_dict(), args.out, fp16=args.fp16, weights=weights)
    except OSError as exc:
        print_error(f"cannot write {args.out}: {exc}")
        return 1
    print(f"wrote {args.out} (opset {OPSET}, {'fp16' if args.fp16 else 'fp32'}, weights: {weights})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
