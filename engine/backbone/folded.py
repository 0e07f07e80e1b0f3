"""DKNet's sparse U-Net and point heads with BatchNorm folded: one structure for every runner.

The native backbone (``engine.backbone.native``) and the exported graph (``export.gather_conv``)
compute the same network from the same state dict; they differ only in how a convolution reads
its neighbours. So the structure lives here, once, and each runner supplies its ``ConvKinds``:
the modules for a submanifold 3³ conv, a down conv (k=2, s=2) and an inverse conv (k=2), each
called as ``conv(x, level_map)`` with the runner's own map of that conv (dense kernel maps for the
graph, ``OffsetPairs`` for the native runner).

BatchNorm (eval, eps 1e-4) is folded where that is exact, in float64, then cast:

* into the first subm 3³ conv of every residual block (conv, BN, nothing between): ``W·s``, bias ``t``;
* into every Linear / k=1 Conv1d of the point heads that a BN directly follows (``linear``,
  ``offset``, ``candidate_linear``, ``mask_branch``, ``kernel_branch``).

The other BNs are followed by a ReLU and then a conv (BN, ReLU, conv): the ReLU sits between, so
they cannot go into that conv, and their input is also a residual or skip path, so they cannot go
into the conv before. They run as one per-channel multiply-add ``relu(x·s + t)`` (``Affine``).

spconv's weight ``(out, kx, ky, kz, in)`` becomes one (in, out) matrix per offset, offsets in the
kernel maps' order (``conv_matrices``); a 1³ conv reads it as spconv 2.x does (``conv1x1_matrix``).

The point heads are per-row functions of the point features ``F = voxel_features[point_to_voxel]``,
so they run on the V voxel rows and the results are gathered to the N points at the end: the same
values, V/N of the work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from engine.classes import NUM_CLASSES
from engine.model import BLOCK_REPS, EMBED, UNET_LEVELS, batchnorm_affine

# Per-point outputs, in order, with their shapes after the leading point axis N.
OUTPUTS: dict[str, tuple[int, ...]] = {"semantic_scores": (NUM_CLASSES,), "offsets": (3,), "heat_logits": (),
                                        "mask_features": (EMBED,), "kernel_features": (EMBED,)}
OUTPUT_NAMES = tuple(OUTPUTS)

State = dict[str, torch.Tensor]


def folded_bn(state: State, prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval BatchNorm ``prefix`` as ``x·scale + shift`` (C,) float64."""
    return batchnorm_affine(*(state[f"{prefix}.{name}"] for name in ("weight", "bias", "running_mean", "running_var")))


def conv_matrices(weight: torch.Tensor) -> torch.Tensor:
    """spconv weight (out, kx, ky, kz, in) -> (K, in, out) float64, offset ``k`` in the maps' order
    (``9 x + 3 y + z`` for 3³, ``4 x + 2 y + z`` for 2³)."""
    out_channels, in_channels = weight.shape[0], weight.shape[-1]
    return weight.double().permute(1, 2, 3, 4, 0).reshape(-1, in_channels, out_channels)


def folded_conv(weight: torch.Tensor, bn: tuple[torch.Tensor, torch.Tensor] | None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """spconv weight -> (K, Cin, Cout) float64 matrices and bias (Cout,) or None, with a BatchNorm
    (scale, shift) that directly follows the conv folded in."""
    matrices = conv_matrices(weight)
    if bn is None:
        return matrices, None
    return matrices * bn[0], bn[1]


def conv1x1_matrix(weight: torch.Tensor) -> torch.Tensor:
    """spconv 2.x's submanifold 1³ conv: (out, 1, 1, 1, in) -> (in, out) float64 **[quirk]**.

    spconv 2.x runs a 1³ conv as ``features @ weight.view(in, out)``: it reads the
    ``(out, 1, 1, 1, in)`` tensor's memory as ``(in, out)``, not as its transpose
    (traveller59/spconv#450). DKNet was trained with spconv 2.x, so this is what the checkpoint's
    ``i_branch`` weights mean.
    """
    return weight.double().reshape(weight.shape[-1], weight.shape[0])


class Linear(nn.Module):
    """``y = x @ weight + bias``; weight (Cin, Cout), bias (Cout,) or None. Parameters are buffers."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype):
        super().__init__()
        self.register_buffer("weight", weight.to(dtype).contiguous())
        self.register_buffer("bias", None if bias is None else bias.to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x @ self.weight
        return y if self.bias is None else y + self.bias


class Affine(nn.Module):
    """An eval BatchNorm that cannot be folded, followed by ReLU: ``relu(x·scale + shift)``."""

    def __init__(self, state: State, prefix: str, dtype: torch.dtype):
        super().__init__()
        scale, shift = folded_bn(state, prefix)
        self.register_buffer("scale", scale.to(dtype))
        self.register_buffer("shift", shift.to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.scale).add_(self.shift).relu_()


class Conv1x1(Linear):
    """Submanifold 1³ conv (``i_branch``): (V, Cin) -> (V, Cout), no map needed."""

    def __init__(self, weight: torch.Tensor, dtype: torch.dtype):
        super().__init__(conv1x1_matrix(weight), None, dtype)


class ResidualBlock(nn.Module):
    """BN, ReLU, subm 3³ (+ folded BN), ReLU, subm 3³; plus identity or a 1³ conv (``i_branch``)."""

    def __init__(self, state: State, prefix: str, kinds: ConvKinds, dtype: torch.dtype):
        super().__init__()
        self.pre = Affine(state, f"{prefix}.conv_branch.0", dtype)
        folded = folded_bn(state, f"{prefix}.conv_branch.3")
        self.conv1 = kinds.subm(state[f"{prefix}.conv_branch.2.weight"], dtype, folded)
        self.conv2 = kinds.subm(state[f"{prefix}.conv_branch.5.weight"], dtype, None)
        shortcut = state.get(f"{prefix}.i_branch.0.weight")
        self.shortcut = None if shortcut is None else Conv1x1(shortcut, dtype)

    def forward(self, x: torch.Tensor, subm) -> torch.Tensor:
        h = self.conv2(self.conv1(self.pre(x), subm).relu_(), subm)
        return h.add_(x if self.shortcut is None else self.shortcut(x))


ConvFactory = Callable[..., nn.Module]


@dataclass(frozen=True)
class ConvKinds:
    """How a runner builds its convolutions from (spconv weight, dtype[, folded BN (scale, shift)]).

    ``subm(weight, dtype, bn)``: submanifold 3³, ``bn`` folded in when given;
    ``down(weight, dtype)``: k=2 s=2; ``inverse(weight, dtype)``: the inverse of a down conv.
    Each module is called as ``conv(x, level_map)``. ``residual_block``: the block class, for a
    runner that fuses a block's BatchNorm, ReLU and residual sum into its convolutions.
    """

    subm: ConvFactory
    down: ConvFactory
    inverse: ConvFactory
    residual_block: type[ResidualBlock] = ResidualBlock


class UNetLevel(nn.Module):
    """One U-Net level (``unet``, ``unet.u``, ...): blocks, then down / deeper level / up / tail."""

    def __init__(self, state: State, prefix: str, level: int, kinds: ConvKinds, dtype: torch.dtype):
        super().__init__()
        self.level = level
        self.blocks = nn.ModuleList(kinds.residual_block(state, f"{prefix}.blocks.block{i}", kinds, dtype)
                                    for i in range(BLOCK_REPS))
        self.inner = None
        if level < UNET_LEVELS:
            self.down_pre = Affine(state, f"{prefix}.conv.0", dtype)
            self.down = kinds.down(state[f"{prefix}.conv.2.weight"], dtype)
            self.inner = UNetLevel(state, f"{prefix}.u", level + 1, kinds, dtype)
            self.up_pre = Affine(state, f"{prefix}.deconv.0", dtype)
            self.up = kinds.inverse(state[f"{prefix}.deconv.2.weight"], dtype)
            self.tail = nn.ModuleList(kinds.residual_block(state, f"{prefix}.blocks_tail.block{i}", kinds, dtype)
                                      for i in range(BLOCK_REPS))

    def forward(self, x: torch.Tensor, subm: list, down: list, up: list) -> torch.Tensor:
        """``subm[l]``, ``down[l]``, ``up[l]``: the runner's maps of level ``l + 1``'s convs."""
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
            scale, shift = folded_bn(state, bn_prefix)
            matrix, bias = matrix * scale, bias * scale + shift
        modules.append(Linear(matrix, bias, dtype))
        if bn_prefix is not None:
            modules.append(nn.ReLU())
    return nn.Sequential(*modules)


def _tower(name: str) -> list[tuple[str, str | None]]:
    """``mask_branch`` / ``kernel_branch``: 3 x (Conv1d, BN, ReLU), Conv1d."""
    return [(f"{name}.{i}.0", f"{name}.{i}.1") for i in range(3)] + [(f"{name}.3", None)]


def _as(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``x`` in ``dtype``; no graph node when it already is (the tracer records no-op casts)."""
    return x if x.dtype == dtype else x.to(dtype)


class FoldedBackbone(nn.Module):
    """DKNet's input conv, U-Net, output layer and point heads (SPEC §2–3), BN folded, with the
    convolutions of ``kinds``; weights from a DKNet state dict.

    ``run(voxel_features, point_to_voxel, subm, down, up)``: voxel_features (V, 6) float32,
    point_to_voxel (N,) int64, and the runner's per-level maps (7 subm, 6 down, 6 up). Returns the
    ``OUTPUTS`` for all N points, float32: semantic_scores (N, 20), offsets (N, 3), heat_logits (N,),
    mask_features (N, 16), kernel_features (N, 16).
    """

    def __init__(self, state: State, kinds: ConvKinds, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.dtype = dtype
        self.input_conv = kinds.subm(state["input_conv.0.weight"], dtype, None)
        self.unet = UNetLevel(state, "unet", 1, kinds, dtype)
        self.output_layer = Affine(state, "output_layer.0", dtype)
        self.semantic = _mlp(state, [("linear.0", "linear.1"), ("linear.3", "linear.4"), ("linear.6", None)], dtype)
        self.offset = _mlp(state, [("offset.0", "offset.1"), ("offset_linear", None)], dtype)
        self.heat = _mlp(state, [("candidate_linear.0", "candidate_linear.1"),
                                 ("candidate_linear.3", "candidate_linear.4"), ("precision_linear", None)], dtype)
        self.mask = _mlp(state, _tower("mask_branch"), dtype)
        self.kernel = _mlp(state, _tower("kernel_branch"), dtype)
        self.eval()

    def voxel_features(self, voxel_features: torch.Tensor, subm: list, down: list, up: list) -> torch.Tensor:
        """The U-Net's output features (V, 32) in ``dtype``."""
        x = self.input_conv(_as(voxel_features, self.dtype), subm[0])
        return self.output_layer(self.unet(x, subm, down, up))

    def run(self, voxel_features: torch.Tensor, point_to_voxel: torch.Tensor, subm: list, down: list,
            up: list) -> tuple[torch.Tensor, ...]:
        feats = self.voxel_features(voxel_features, subm, down, up)  # (V, 32)
        offsets = self.offset(feats)
        per_voxel = (self.semantic(feats), offsets, self.heat(torch.cat((feats, offsets), dim=1)).view(-1),
                     self.mask(feats), self.kernel(feats))
        return tuple(_as(t[point_to_voxel], torch.float32) for t in per_voxel)
