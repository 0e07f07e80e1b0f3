"""Multiply-add work of the native backbone on one scene: what its GFLOP/s and floors are computed from.

``backbone_flops`` runs the backbone once with forward hooks on its sparse convolutions and
counts ``2 · pairs · Cin · Cout`` per convolution (real pairs only, the work gather → GEMM →
scatter does), plus the dense per-voxel layers (1³ convs and point heads, ``2 · V · Cin · Cout``).
``decoding_flops`` counts the dynamic convolution of every instance over every point.
"""

from __future__ import annotations

import torch

from engine.backbone.folded import Linear
from engine.backbone.native import NativeBackbone, NativeConv
from engine.model import DYNAMIC_PARAMS


def backbone_flops(backbone: NativeBackbone, features: torch.Tensor, coords: torch.Tensor,
                   spatial_shape: list[int], point_to_voxel: torch.Tensor) -> dict[str, float]:
    """FLOPs of one call: ``{"sparse_conv": ..., "dense": ..., "total": ...}`` (floats)."""
    counts = {"sparse_conv": 0.0, "dense": 0.0}

    def sparse(module: NativeConv, inputs, _output) -> None:
        _, out_channels, in_channels = module.weight_t.shape
        counts["sparse_conv"] += 2.0 * inputs[1].num_pairs * in_channels * out_channels

    def dense(module: Linear, inputs, _output) -> None:
        counts["dense"] += 2.0 * inputs[0].shape[0] * module.weight.shape[0] * module.weight.shape[1]

    handles = [m.register_forward_hook(sparse) for m in backbone.network.modules() if isinstance(m, NativeConv)]
    handles += [m.register_forward_hook(dense) for m in backbone.network.modules() if isinstance(m, Linear)]
    try:
        backbone(features, coords, spatial_shape, point_to_voxel)
    finally:
        for handle in handles:
            handle.remove()
    return {**counts, "total": counts["sparse_conv"] + counts["dense"]}


def decoding_flops(num_points: int, num_instances: int) -> int:
    """FLOPs of decoding (SPEC §8), counted as 2 per (point, instance, parameter): W1 (16x19) and
    W2 (16) multiply-adds, b1 (16) adds counted like them; the last bias b2 is left out."""
    return 2 * num_points * num_instances * (DYNAMIC_PARAMS - 1)
