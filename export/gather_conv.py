"""DKNet's backbone and point heads as Gather + MatMul: the torch module that gets exported.

The network is ``engine.backbone.folded.FoldedBackbone`` (BatchNorm folded where exact); this
module supplies its convolutions in a form every ONNX runtime takes. Every sparse convolution
reads its neighbours through a dense kernel map (``engine.backbone.kernel_maps``) and multiplies
once: with ``x̂ = [x; 0]`` (one zero row appended for the maps' sentinel),

* submanifold 3³:  ``y = x̂[subm] (V, 27·Cin) @ W (27·Cin, Cout)``;
* submanifold 1³:  ``y = x @ W (Cin, Cout)``, ``W`` read as spconv 2.x reads it;
* down, k=2 s=2:   ``y = x̂[down] (V', 8·Cin) @ W (8·Cin, Cout)``;
* inverse, k=2:    ``y = [x @ W (Cin, 8·Cout)]`` reshaped to (8 V', Cout), one zero row appended,
  gathered at ``up`` (the parent row and the child's offset, ``8 · parent + o``).

The graph has no Scatter op; its only data-dependent ops are Gathers, and every voxel and point
count is a dynamic axis. Why the graph gathers all 27 slots where the native backbone multiplies
only real pairs: see ``docs/faithfulness.md`` (Export).

``dtype=torch.float16`` builds the fp16 variant: weights and activations in fp16, inputs and
outputs still float32 (a Cast at each end), so callers do not change.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.backbone.folded import ConvKinds, FoldedBackbone, Linear, State, folded_conv
from engine.backbone.kernel_maps import DOWN_OFFSETS, LEVELS


class _ZeroRow(nn.Module):
    """(R, C) -> (R + 1, C): appends the zero row the maps' sentinel index points at (one Concat
    with a constant; ``F.pad`` would export as a chain of shape ops)."""

    def __init__(self, channels: int, dtype: torch.dtype):
        super().__init__()
        self.register_buffer("zero", torch.zeros(1, channels, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((x, self.zero))


class GatherConv(nn.Module):
    """Submanifold 3³ or down (k=2, s=2) conv: ``y = x̂[kmap].flatten(1) @ W (+ bias)``.

    ``x`` (V, Cin), ``kmap`` (V', K) int64 rows of ``x`` with sentinel V -> (V', Cout).
    """

    def __init__(self, weight: torch.Tensor, dtype: torch.dtype, bn: tuple[torch.Tensor, torch.Tensor] | None = None):
        super().__init__()
        matrices, bias = folded_conv(weight, bn)
        self.pad = _ZeroRow(weight.shape[-1], dtype)
        self.linear = Linear(matrices.flatten(0, 1), bias, dtype)  # (K·Cin, Cout)

    def forward(self, x: torch.Tensor, kmap: torch.Tensor) -> torch.Tensor:
        return self.linear(self.pad(x)[kmap].flatten(1))


class GatherInverseConv(nn.Module):
    """Inverse conv (k=2) on the down conv's pairs: (V', Cin) parents -> (V, Cout) children.

    ``y = ([x @ W_all].reshape(8 V', Cout) with a zero row)[up]``, ``up`` (V,) int64.
    """

    def __init__(self, weight: torch.Tensor, dtype: torch.dtype):
        super().__init__()
        out_channels = weight.shape[0]
        # (out, 2, 2, 2, in) -> (in, 8 * out): column block o is W_o.
        matrix = weight.double().permute(4, 1, 2, 3, 0).reshape(weight.shape[-1], DOWN_OFFSETS * out_channels)
        self.out_channels = out_channels
        self.pad = _ZeroRow(out_channels, dtype)
        self.linear = Linear(matrix, None, dtype)

    def forward(self, x: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        return self.pad(self.linear(x).reshape(-1, self.out_channels))[up]


GATHER_KINDS = ConvKinds(subm=GatherConv, down=lambda weight, dtype: GatherConv(weight, dtype),
                         inverse=GatherInverseConv)


class GatherBackbone(FoldedBackbone):
    """DKNet's U-Net and point heads (SPEC §2–3) on dense kernel maps; weights from a DKNet state dict.

    ``forward(voxel_features, point_to_voxel, *maps)``: voxel_features (V, 6) float32,
    point_to_voxel (N,) int64, maps the 19 tensors of ``KernelMaps.tensors()``. Returns, float32:
    semantic_scores (N, 20), offsets (N, 3), heat_logits (N,), mask_features (N, 16),
    kernel_features (N, 16).
    """

    def __init__(self, state: State, dtype: torch.dtype = torch.float32):
        super().__init__(state, GATHER_KINDS, dtype)

    def forward(self, voxel_features: torch.Tensor, point_to_voxel: torch.Tensor,
                *maps: torch.Tensor) -> tuple[torch.Tensor, ...]:
        subm, down, up = list(maps[:LEVELS]), list(maps[LEVELS:2 * LEVELS - 1]), list(maps[2 * LEVELS - 1:])
        return self.run(voxel_features, point_to_voxel, subm, down, up)
