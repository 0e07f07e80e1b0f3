"""The DKNet network, with every module named as in the official checkpoint (SPEC §2, §3, §6, §7).

``build_model()`` returns a ``DKNet`` whose ``state_dict`` keys, shapes and dtypes equal
``official-checkpoint-keys.txt``: the released checkpoint loads with ``strict=True``.
The sparse U-Net's weights are held here in spconv 2.x's layout; the backbones of
``engine.backbone`` run them (natively, on spconv, or as an exported graph). The point heads are
plain torch. BatchNorm runs in eval mode (running statistics, eps 1e-4).

Point-wise ``Conv1d`` layers (kernel size 1) are applied to ``(N, C)`` rows as linear maps,
which is the same arithmetic without the official code's ``(1, C, N)`` permutes.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from torch.nn import functional as F

from engine.classes import FIRST_OBJECT_CLASS, NUM_CLASSES

WIDTH = 32  # d: channels of the first U-Net level and of the point features
EMBED = 16  # channels of mask and kernel features
UNET_LEVELS = 7  # channels WIDTH * (1..7)
BLOCK_REPS = 2
BN_EPS = 1e-4
DYNAMIC_PARAMS = (EMBED + 3) * EMBED + EMBED + EMBED + 1  # 337: W1 (16x19), b1, W2 (1x16), b2

BatchNorm = partial(nn.BatchNorm1d, eps=BN_EPS, momentum=0.1)


class SparseConvWeight(nn.Module):
    """The weight of one sparse convolution, in spconv 2.x's layout (out, kx, ky, kz, in), no bias:
    the checkpoint's tensor. The backbones (``engine.backbone``) decide how it is applied."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, *[kernel_size] * 3, in_channels))


class ResidualBlockWeights(nn.Module):
    """BN, ReLU, subm 3³, BN, ReLU, subm 3³ (``conv_branch``); identity or a 1³ conv (``i_branch``)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.i_branch = nn.Sequential(
            nn.Identity() if in_channels == out_channels else SparseConvWeight(in_channels, out_channels, 1))
        self.conv_branch = nn.Sequential(
            BatchNorm(in_channels), nn.ReLU(), SparseConvWeight(in_channels, out_channels, 3),
            BatchNorm(out_channels), nn.ReLU(), SparseConvWeight(out_channels, out_channels, 3))


class UNetWeights(nn.Module):
    """One U-Net level's weights (SPEC §2): ``blocks``; except at the deepest level ``conv`` (BN, ReLU,
    down k2 s2), ``u`` (the next level), ``deconv`` (BN, ReLU, inverse k2) and ``blocks_tail``."""

    def __init__(self, planes: list[int]):
        super().__init__()
        width = planes[0]
        self.blocks = nn.Sequential(OrderedDict((f"block{i}", ResidualBlockWeights(width, width))
                                                for i in range(BLOCK_REPS)))
        if len(planes) > 1:
            self.conv = nn.Sequential(BatchNorm(width), nn.ReLU(), SparseConvWeight(width, planes[1], 2))
            self.u = UNetWeights(planes[1:])
            self.deconv = nn.Sequential(BatchNorm(planes[1]), nn.ReLU(), SparseConvWeight(planes[1], width, 2))
            self.blocks_tail = nn.Sequential(OrderedDict(
                (f"block{i}", ResidualBlockWeights(width * (2 - i), width)) for i in range(BLOCK_REPS)))


def batchnorm_affine(weight: torch.Tensor, bias: torch.Tensor, running_mean: torch.Tensor,
                     running_var: torch.Tensor, eps: float = BN_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval BatchNorm as ``x·scale + shift`` (C,) float64: scale = γ/√(var+eps), shift = β - mean·scale."""
    scale = weight.double() / torch.sqrt(running_var.double() + eps)
    return scale, bias.double() - running_mean.double() * scale


def _pointwise_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Conv1d(k=1, no bias), BN, ReLU: the official ``conv_with_kaiming_uniform('BN', True)``."""
    return nn.Sequential(nn.Conv1d(in_channels, out_channels, 1, bias=False), BatchNorm(out_channels), nn.ReLU())


def _pointwise_tower(channels: int, out_channels: int, depth: int = 3) -> nn.Sequential:
    return nn.Sequential(*[_pointwise_block(channels, channels) for _ in range(depth)],
                         nn.Conv1d(channels, out_channels, 1))


def run_pointwise(layers: nn.Module, rows: torch.Tensor) -> torch.Tensor:
    """Apply a stack of k=1 Conv1d / BatchNorm1d / ReLU / Linear layers to ``rows`` (R, C) float32."""
    for layer in layers.children() if isinstance(layers, nn.Sequential) else (layers,):
        if isinstance(layer, nn.Sequential):
            rows = run_pointwise(layer, rows)
        elif isinstance(layer, nn.Conv1d):
            rows = F.linear(rows, layer.weight[:, :, 0], layer.bias)
        else:
            rows = layer(rows)
    return rows


class WeightGenerator(nn.Module):
    """Instance kernel (I, 16) -> dynamic-conv parameters θ (I, 337) (SPEC §7)."""

    def __init__(self):
        super().__init__()
        self.before_embedding_tower = nn.Sequential(_pointwise_block(EMBED, EMBED))
        self.controller = nn.Conv1d(EMBED, DYNAMIC_PARAMS, 1)

    def forward(self, kernels: torch.Tensor) -> torch.Tensor:
        return run_pointwise(self.controller, run_pointwise(self.before_embedding_tower, kernels))


def object_points(semantic_scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Semantic labels (N,) int64 = argmax of the logits (N, 20), and the object points (No,) int64:
    those whose label is not wall or floor (SPEC §3)."""
    labels = semantic_scores.argmax(dim=1)
    return labels, torch.nonzero(labels >= FIRST_OBJECT_CLASS).view(-1)


@dataclass
class PointOutputs:
    """Per-point outputs of backbone and heads (N points, No object points)."""

    semantic_scores: torch.Tensor  # (N, 20) float32 logits
    offsets: torch.Tensor  # (N, 3) float32, metres to the instance centroid
    labels: torch.Tensor  # (N,) int64 argmax of semantic_scores
    object_idx: torch.Tensor  # (No,) int64 indices of points with label >= FIRST_OBJECT_CLASS
    heat_logits: torch.Tensor  # (No,) float32 precision logits of object points (pre-softmax)
    mask_features: torch.Tensor  # (N, 16) float32
    kernel_features: torch.Tensor  # (No, 16) float32, object points only


def select_object_points(semantic_scores: torch.Tensor, offsets: torch.Tensor, heat_logits: torch.Tensor,
                         mask_features: torch.Tensor, kernel_features: torch.Tensor) -> PointOutputs:
    """Graph outputs for all N points -> ``PointOutputs`` (heat logits and kernel features of object
    points only, selected by ``engine.model.object_points`` as in ``DKNet.forward``)."""
    labels, object_idx = object_points(semantic_scores)
    return PointOutputs(semantic_scores=semantic_scores, offsets=offsets, labels=labels, object_idx=object_idx,
                        heat_logits=heat_logits[object_idx], mask_features=mask_features,
                        kernel_features=kernel_features[object_idx])


class DKNet(nn.Module):
    """DKNet's weights with the official module names, and the parts of the network that are plain
    torch: the point heads (SPEC §3), the merge MLP (§6) and the weight generator (§7). The sparse
    U-Net's weights live here too (``input_conv``, ``unet``, ``output_layer``); a backbone
    (``engine.backbone``) runs them and calls ``point_heads`` on its point features."""

    def __init__(self):
        super().__init__()
        d = WIDTH
        self.input_conv = nn.Sequential(SparseConvWeight(6, d, 3))
        self.unet = UNetWeights([d * (i + 1) for i in range(UNET_LEVELS)])
        self.output_layer = nn.Sequential(BatchNorm(d), nn.ReLU())
        self.linear = nn.Sequential(nn.Linear(d, d), BatchNorm(d), nn.ReLU(), nn.Linear(d, d), BatchNorm(d),
                                    nn.ReLU(), nn.Linear(d, NUM_CLASSES))
        self.offset = nn.Sequential(nn.Linear(d, d), BatchNorm(d), nn.ReLU())
        self.offset_linear = nn.Linear(d, 3)
        self.candidate_linear = nn.Sequential(nn.Linear(d + 3, d), BatchNorm(d), nn.ReLU(), nn.Linear(d, d),
                                              BatchNorm(d), nn.ReLU())
        self.precision_linear = nn.Linear(d, 1)
        self.recall_linear = nn.Linear(d, 1)  # trained, unused at inference
        self.mask_branch = _pointwise_tower(d, EMBED)
        self.kernel_branch = _pointwise_tower(d, EMBED)
        self.merge_branch = _pointwise_tower(2 * EMBED + 3, 1)
        self.semantic_branch = _pointwise_tower(EMBED, NUM_CLASSES)  # trained, unused at inference
        self.weight_generator = WeightGenerator()
        self.eval()

    def point_heads(self, point_feats: torch.Tensor) -> PointOutputs:
        """Point heads (SPEC §3) on the U-Net's point features (N, 32) float32."""
        semantic_scores = self.linear(point_feats)
        offsets = self.offset_linear(self.offset(point_feats))
        labels, object_idx = object_points(semantic_scores)
        object_feats = point_feats[object_idx]
        heat_logits = self.precision_linear(
            self.candidate_linear(torch.cat((object_feats, offsets[object_idx]), dim=1))
        ).view(-1)
        return PointOutputs(
            semantic_scores=semantic_scores,
            offsets=offsets,
            labels=labels,
            object_idx=object_idx,
            heat_logits=heat_logits,
            mask_features=run_pointwise(self.mask_branch, point_feats),
            kernel_features=run_pointwise(self.kernel_branch, object_feats),
        )

    def merge_scores(self, pair_features: torch.Tensor) -> torch.Tensor:
        """Merge MLP: (R, 35) float32 |differences| -> (R,) float32 probabilities (SPEC §6)."""
        return torch.sigmoid(run_pointwise(self.merge_branch, pair_features)).view(-1)


def build_model() -> DKNet:
    return DKNet()
