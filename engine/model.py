"""The DKNet network, with every module named as in the official checkpoint (SPEC §2, §3, §6, §7).

``build_model(provider)`` returns a ``DKNet`` whose ``state_dict`` keys, shapes and dtypes equal
``official-checkpoint-keys.txt``: the released checkpoint loads with ``strict=True``.
The sparse U-Net is built from the chosen provider's modules (spconv or spconv-triton);
the point heads are plain torch. BatchNorm runs in eval mode (running statistics, eps 1e-4).

Point-wise ``Conv1d`` layers (kernel size 1) are applied to ``(N, C)`` rows as linear maps,
which is the same arithmetic without the official code's ``(1, C, N)`` permutes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from torch.nn import functional as F

from engine.classes import FIRST_OBJECT_CLASS, NUM_CLASSES
from engine.sparse_provider import SparseProvider

WIDTH = 32  # d: channels of the first U-Net level and of the point features
EMBED = 16  # channels of mask and kernel features
UNET_LEVELS = 7  # channels WIDTH * (1..7)
BLOCK_REPS = 2
BN_EPS = 1e-4
DYNAMIC_PARAMS = (EMBED + 3) * EMBED + EMBED + EMBED + 1  # 337: W1 (16x19), b1, W2 (1x16), b2

BatchNorm = partial(nn.BatchNorm1d, eps=BN_EPS, momentum=0.1)


def _build_unet(sp):
    """The provider-specific residual U-Net classes (they subclass the provider's SparseModule)."""

    class ResidualBlock(sp.SparseModule):
        def __init__(self, in_channels: int, out_channels: int, indice_key: str):
            super().__init__()
            if in_channels == out_channels:
                self.i_branch = sp.SparseSequential(nn.Identity())
            else:
                self.i_branch = sp.SparseSequential(sp.SubMConv3d(in_channels, out_channels, 1, bias=False))
            self.conv_branch = sp.SparseSequential(
                BatchNorm(in_channels),
                nn.ReLU(),
                sp.SubMConv3d(in_channels, out_channels, 3, padding=1, bias=False, indice_key=indice_key),
                BatchNorm(out_channels),
                nn.ReLU(),
                sp.SubMConv3d(out_channels, out_channels, 3, padding=1, bias=False, indice_key=indice_key),
            )

        def forward(self, x):
            identity = sp.SparseConvTensor(x.features, x.indices, x.spatial_shape, x.batch_size)
            out = self.conv_branch(x)
            return out.replace_feature(out.features + self.i_branch(identity).features)

    class UBlock(nn.Module):
        def __init__(self, planes: list[int], level: int = 1):
            super().__init__()
            key = f"subm{level}"
            self.planes = planes
            self.blocks = sp.SparseSequential(
                OrderedDict((f"block{i}", ResidualBlock(planes[0], planes[0], key)) for i in range(BLOCK_REPS))
            )
            if len(planes) > 1:
                self.conv = sp.SparseSequential(
                    BatchNorm(planes[0]),
                    nn.ReLU(),
                    sp.SparseConv3d(planes[0], planes[1], 2, stride=2, bias=False, indice_key=f"spconv{level}"),
                )
                self.u = UBlock(planes[1:], level + 1)
                self.deconv = sp.SparseSequential(
                    BatchNorm(planes[1]),
                    nn.ReLU(),
                    sp.SparseInverseConv3d(planes[1], planes[0], 2, bias=False, indice_key=f"spconv{level}"),
                )
                self.blocks_tail = sp.SparseSequential(
                    OrderedDict(
                        (f"block{i}", ResidualBlock(planes[0] * (2 - i), planes[0], key))
                        for i in range(BLOCK_REPS)
                    )
                )

        def forward(self, x):
            out = self.blocks(x)
            if len(self.planes) == 1:
                return out
            skip = out.features
            up = self.deconv(self.u(self.conv(out)))
            return self.blocks_tail(out.replace_feature(torch.cat((skip, up.features), dim=1)))

    return UBlock


@contextmanager
def _sparse_threads(provider: str, device: torch.device) -> Iterator[None]:
    """spconv 2.3.x's CPU build gives wrong sums when torch runs more than one intra-op thread
    (measured here: errors of 0.3 on unit-scale features for 40k voxels; exact with one thread),
    so its CPU convolutions run single-threaded. ``tests/test_sparse_layout.py`` guards this."""
    if provider != "spconv" or device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


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


class DKNet(nn.Module):
    """DKNet with the official module names; ``forward`` runs backbone and point heads (SPEC §2–3)."""

    def __init__(self, provider: SparseProvider):
        super().__init__()
        sp = provider.module
        self.provider = provider.name
        d = WIDTH
        self.input_conv = sp.SparseSequential(sp.SubMConv3d(6, d, 3, padding=1, bias=False, indice_key="subm1"))
        self.unet = _build_unet(sp)([d * (i + 1) for i in range(UNET_LEVELS)])
        self.output_layer = sp.SparseSequential(BatchNorm(d), nn.ReLU())
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
        self._sp = sp
        self.eval()

    def voxel_features(self, features: torch.Tensor, coords: torch.Tensor, spatial_shape: list[int]) -> torch.Tensor:
        """Sparse U-Net on voxels: features (V, 6) float32, coords (V, 3) int32 -> (V, 32) float32."""
        indices = torch.cat((torch.zeros_like(coords[:, :1]), coords), dim=1).int()
        x = self._sp.SparseConvTensor(features, indices, spatial_shape, 1)
        with _sparse_threads(self.provider, features.device):
            return self.output_layer(self.unet(self.input_conv(x))).features

    def forward(self, features: torch.Tensor, coords: torch.Tensor, spatial_shape: list[int],
                point_to_voxel: torch.Tensor) -> PointOutputs:
        """Backbone and point heads.

        features (V, 6) float32 voxel features; coords (V, 3) int32 voxel coordinates;
        point_to_voxel (N,) int64 voxel of each point.
        """
        point_feats = self.voxel_features(features, coords, spatial_shape)[point_to_voxel]  # (N, 32)
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


def build_model(provider: SparseProvider) -> DKNet:
    return DKNet(provider)
