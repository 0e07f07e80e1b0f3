"""DKNet's backbone and point heads as Gather + MatMul: the torch module that gets exported.

Every sparse convolution reads its neighbours through a kernel map (``engine.backbone.kernel_maps``) and
multiplies once: with ``x̂ = [x; 0]`` (one zero row appended for the maps' sentinel),

* submanifold 3³:  ``y = x̂[subm] (V, 27·Cin) @ W (27·Cin, Cout)``;
* submanifold 1³:  ``y = x @ W (Cin, Cout)``, ``W`` read as spconv 2.x reads it (``_conv1x1_matrix``);
* down, k=2 s=2:   ``y = x̂[down] (V', 8·Cin) @ W (8·Cin, Cout)``;
* inverse, k=2:    ``y = [x @ W (Cin, 8·Cout)]`` reshaped to (8 V', Cout), one zero row appended,
  gathered at ``up`` (the parent row and the child's offset, ``8 · parent + o``).

spconv's weight ``(out, kx, ky, kz, in)`` becomes ``W`` by ``permute(1, 2, 3, 4, 0)`` and a reshape,
so the offset order matches the maps'. The graph has no Scatter op; its only data-dependent ops
are Gathers, and every voxel and point count is a dynamic axis.

BatchNorm (eval, eps 1e-4) is folded where that is exact, in float64, then cast:

* into the first subm 3³ conv of every residual block (conv, BN, nothing between): ``W·s``, bias ``t``;
* into every Linear / k=1 Conv1d of the point heads that a BN directly follows (``linear``,
  ``offset``, ``candidate_linear``, ``mask_branch``, ``kernel_branch``).

The other BNs are followed by a ReLU and then a conv (BN, ReLU, conv): the ReLU sits between, so
they cannot go into that conv, and their input is also a residual or skip path, so they cannot go
into the conv before. They run as one per-channel multiply-add ``x·s + t`` (``_Affine``).

The point heads are per-row functions of the point features ``F = voxel_features[point_to_voxel]``,
so they run on the V voxel rows and the results are gathered to the N points at the end: the same
values, V/N of the work. Outputs, for all N points: semantic logits (N, 20), offsets (N, 3), heat
logits ``precision_linear(candidate_linear([F, O]))`` (N,), mask features (N, 16) and kernel
features (N, 16); the engine selects object points after the graph (``export.runtime``).

``dtype=torch.float16`` builds the fp16 variant: weights and activations in fp16, inputs and
outputs still float32 (a Cast at each end), so callers do not change.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.classes import NUM_CLASSES
from engine.model import EMBED, batchnorm_affine
from engine.backbone.kernel_maps import DOWN_OFFSETS, LEVELS

# Graph outputs, in order, with their shapes after the leading point axis N.
OUTPUTS: dict[str, tuple[int, ...]] = {"semantic_scores": (NUM_CLASSES,), "offsets": (3,), "heat_logits": (),
                                        "mask_features": (EMBED,), "kernel_features": (EMBED,)}
OUTPUT_NAMES = tuple(OUTPUTS)

State = dict[str, torch.Tensor]


def _bn(state: State, prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval BatchNorm as ``x·scale + shift`` (float64): scale = γ/√(var+eps), shift = β - mean·scale."""
    return batchnorm_affine(*(state[f"{prefix}.{name}"] for name in ("weight", "bias", "running_mean", "running_var")))


def _conv_matrix(weight: torch.Tensor) -> torch.Tensor:
    """spconv weight (out, kx, ky, kz, in) -> (kx·ky·kz·in, out), offsets major (the maps' order)."""
    return weight.double().permute(1, 2, 3, 4, 0).reshape(-1, weight.shape[0])


def _conv1x1_matrix(weight: torch.Tensor) -> torch.Tensor:
    """spconv 2.x's submanifold 1³ conv: (out, 1, 1, 1, in) -> (in, out) **[quirk]**.

    spconv 2.x runs a 1³ conv as ``features @ weight.view(in, out)``: it reads the
    ``(out, 1, 1, 1, in)`` tensor's memory as ``(in, out)``, not as its transpose
    (traveller59/spconv#450). DKNet was trained with spconv 2.x, so this is what the checkpoint's
    ``i_branch`` weights mean, and the reference backend computes it too.
    """
    return weight.double().reshape(weight.shape[-1], weight.shape[0])


class _Linear(nn.Module):
    """``y = x @ weight + bias``; weight (Cin, Cout), bias (Cout,) or None. Parameters are buffers."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype):
        super().__init__()
        self.register_buffer("weight", weight.to(dtype).contiguous())
        self.register_buffer("bias", None if bias is None else bias.to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x @ self.weight
        return y if self.bias is None else y + self.bias


class _Affine(nn.Module):
    """An eval BatchNorm that cannot be folded, followed by ReLU: ``relu(x·scale + shift)``."""

    def __init__(self, state: State, prefix: str, dtype: torch.dtype):
        super().__init__()
        scale, shift = _bn(state, prefix)
        self.register_buffer("scale", scale.to(dtype))
        self.register_buffer("shift", shift.to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x * self.scale + self.shift)


def _as(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``x`` in ``dtype``; no graph node when it already is (the tracer records no-op casts)."""
    return x if x.dtype == dtype else x.to(dtype)


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
        matrix = _conv_matrix(weight)
        bias = None
        if bn is not None:  # conv directly followed by BN: fold
            matrix, bias = matrix * bn[0], bn[1]
        self.pad = _ZeroRow(weight.shape[-1], dtype)
        self.linear = _Linear(matrix, bias, dtype)

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
        self.linear = _Linear(matrix, None, dtype)

    def forward(self, x: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        return self.pad(self.linear(x).reshape(-1, self.out_channels))[up]


class Conv1x1(_Linear):
    """Submanifold 1³ conv (``i_branch``): (V, Cin) -> (V, Cout), no map needed."""

    def __init__(self, weight: torch.Tensor, dtype: torch.dtype):
        super().__init__(_conv1x1_matrix(weight), None, dtype)


class ResidualBlock(nn.Module):
    """BN, ReLU, subm 3³ (+ folded BN), ReLU, subm 3³; plus identity or a 1³ conv (``i_branch``)."""

    def __init__(self, state: State, prefix: str, dtype: torch.dtype):
        super().__init__()
        self.pre = _Affine(state, f"{prefix}.conv_branch.0", dtype)
        folded = _bn(state, f"{prefix}.conv_branch.3")
        self.conv1 = GatherConv(state[f"{prefix}.conv_branch.2.weight"], dtype, bn=folded)
        self.conv2 = GatherConv(state[f"{prefix}.conv_branch.5.weight"], dtype)
        shortcut = state.get(f"{prefix}.i_branch.0.weight")
        self.shortcut = None if shortcut is None else Conv1x1(shortcut, dtype)

    def forward(self, x: torch.Tensor, subm: torch.Tensor) -> torch.Tensor:
        h = self.conv2(torch.relu(self.conv1(self.pre(x), subm)), subm)
        return h + (x if self.shortcut is None else self.shortcut(x))


class UNetLevel(nn.Module):
    """One U-Net level (``unet``, ``unet.u``, ...): blocks, then down / deeper level / up / tail."""

    def __init__(self, state: State, prefix: str, level: int, dtype: torch.dtype):
        super().__init__()
        self.level = level
        self.blocks = nn.ModuleList(ResidualBlock(state, f"{prefix}.blocks.block{i}", dtype) for i in range(2))
        self.inner = None
        if level < LEVELS:
            self.down_pre = _Affine(state, f"{prefix}.conv.0", dtype)
            self.down = GatherConv(state[f"{prefix}.conv.2.weight"], dtype)
            self.inner = UNetLevel(state, f"{prefix}.u", level + 1, dtype)
            self.up_pre = _Affine(state, f"{prefix}.deconv.0", dtype)
            self.up = GatherInverseConv(state[f"{prefix}.deconv.2.weight"], dtype)
            self.tail = nn.ModuleList(ResidualBlock(state, f"{prefix}.blocks_tail.block{i}", dtype) for i in range(2))

    def forward(self, x: torch.Tensor, subm: list[torch.Tensor], down: list[torch.Tensor],
                up: list[torch.Tensor]) -> torch.Tensor:
        i = self.level - 1
        for block in self.blocks:
            x = block(x, subm[i])
        if self.inner is None:
            return x
        deeper = self.inner(self.down(self.down_pre(x), down[i]), subm, down, up)
        x = torch.cat((x, self.up(self.up_pre(deeper), up[i])), dim=1)
        for block in self.tail:
            x = block(x, subm[i])
        return x


def _mlp(state: State, layers: list[tuple[str, str | None]], dtype: torch.dtype) -> nn.Sequential:
    """Linear / k=1 Conv1d layers, each ``(weight prefix, BN prefix or None)``; a folded BN is
    followed by ReLU, the last layer (no BN) by nothing."""
    modules: list[nn.Module] = []
    for prefix, bn_prefix in layers:
        weight = state[f"{prefix}.weight"].double()
        weight = weight[:, :, 0] if weight.dim() == 3 else weight  # Conv1d (out, in, 1)
        bias = state.get(f"{prefix}.bias")
        bias = torch.zeros(weight.shape[0], dtype=torch.float64) if bias is None else bias.double()
        matrix = weight.t()
        if bn_prefix is not None:
            scale, shift = _bn(state, bn_prefix)
            matrix, bias = matrix * scale, bias * scale + shift
        modules.append(_Linear(matrix, bias, dtype))
        if bn_prefix is not None:
            modules.append(nn.ReLU())
    return nn.Sequential(*modules)


def _tower(name: str) -> list[tuple[str, str | None]]:
    """``mask_branch`` / ``kernel_branch``: 3 x (Conv1d, BN, ReLU), Conv1d."""
    return [(f"{name}.{i}.0", f"{name}.{i}.1") for i in range(3)] + [(f"{name}.3", None)]


class GatherBackbone(nn.Module):
    """DKNet's U-Net and point heads (SPEC §2–3) on kernel maps; weights from a DKNet state dict.

    ``forward(voxel_features, point_to_voxel, *maps)``: voxel_features (V, 6) float32,
    point_to_voxel (N,) int64, maps the 19 tensors of ``KernelMaps.tensors()``. Returns, float32:
    semantic_scores (N, 20), offsets (N, 3), heat_logits (N,), mask_features (N, 16),
    kernel_features (N, 16).
    """

    def __init__(self, state: State, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.dtype = dtype
        self.input_conv = GatherConv(state["input_conv.0.weight"], dtype)
        self.unet = UNetLevel(state, "unet", 1, dtype)
        self.output_layer = _Affine(state, "output_layer.0", dtype)
        self.semantic = _mlp(state, [("linear.0", "linear.1"), ("linear.3", "linear.4"), ("linear.6", None)], dtype)
        self.offset = _mlp(state, [("offset.0", "offset.1"), ("offset_linear", None)], dtype)
        self.heat = _mlp(state, [("candidate_linear.0", "candidate_linear.1"),
                                 ("candidate_linear.3", "candidate_linear.4"), ("precision_linear", None)], dtype)
        self.mask = _mlp(state, _tower("mask_branch"), dtype)
        self.kernel = _mlp(state, _tower("kernel_branch"), dtype)
        self.eval()

    def forward(self, voxel_features: torch.Tensor, point_to_voxel: torch.Tensor,
                *maps: torch.Tensor) -> tuple[torch.Tensor, ...]:
        subm, down, up = list(maps[:LEVELS]), list(maps[LEVELS:2 * LEVELS - 1]), list(maps[2 * LEVELS - 1:])
        x = self.input_conv(_as(voxel_features, self.dtype), subm[0])
        feats = self.output_layer(self.unet(x, subm, down, up))  # (V, 32)
        offsets = self.offset(feats)
        per_voxel = (self.semantic(feats), offsets, self.heat(torch.cat((feats, offsets), dim=1)).view(-1),
                     self.mask(feats), self.kernel(feats))
        return tuple(_as(t[point_to_voxel], torch.float32) for t in per_voxel)

