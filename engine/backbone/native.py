"""The native backbone: DKNet's sparse U-Net and point heads on the engine's own sparse convs.

Per scene: the kernel maps of all seven levels (``engine.backbone.kernel_maps``), their real pairs
grouped by offset (``OffsetPairs``, built once per level and shared by every conv of that level;
the inverse convs reuse their down conv's pairs, transposed), then the BatchNorm-folded network
of ``engine.backbone.folded`` with every convolution as gather → GEMM → scatter-add
(``engine.backbone.sparse_conv``). The same weights and maps feed the exported graph
(``export.gather_conv``); spconv is not needed.

Output bits are the same every run (``engine.backbone.sparse_conv``: fixed order, no atomics).
"""

from __future__ import annotations

import torch
from torch import nn

from engine.backbone.folded import ConvKinds, FoldedBackbone, State, conv_matrices
from engine.backbone.kernel_maps import SUBM_CENTRE, KernelMaps, build_kernel_maps
from engine.backbone.sparse_conv import OffsetPairs, sparse_conv
from engine.model import DKNet, PointOutputs, select_object_points


class NativeConv(nn.Module):
    """A submanifold 3³, down (k=2 s=2) or inverse (k=2) conv on ``OffsetPairs``:
    (V_in, Cin) -> (V_out, Cout). ``bn``: a BatchNorm that directly follows, folded in."""

    def __init__(self, weight: torch.Tensor, dtype: torch.dtype,
                 bn: tuple[torch.Tensor, torch.Tensor] | None = None):
        super().__init__()
        matrices = conv_matrices(weight)  # (K, Cin, Cout) float64
        bias = None
        if bn is not None:
            matrices, bias = matrices * bn[0], bn[1]
        self.register_buffer("weight_t", matrices.transpose(1, 2).to(dtype).contiguous())  # (K, Cout, Cin)
        self.register_buffer("bias", None if bias is None else bias.to(dtype))

    def forward(self, x: torch.Tensor, pairs: OffsetPairs) -> torch.Tensor:
        return sparse_conv(x, pairs, self.weight_t, self.bias)


NATIVE_KINDS = ConvKinds(subm=NativeConv, down=NativeConv, inverse=NativeConv)


def level_pairs(maps: KernelMaps) -> tuple[list[OffsetPairs], list[OffsetPairs], list[OffsetPairs]]:
    """Real pairs of every conv: subm (7 levels), down and up (6 each; up = down transposed)."""
    sizes = maps.num_voxels
    subm = [OffsetPairs.from_neighbours(m, size, identity=SUBM_CENTRE)
            for m, size in zip(maps.subm, sizes, strict=True)]
    down = [OffsetPairs.from_neighbours(m, size) for m, size in zip(maps.down, sizes[:-1], strict=True)]
    return subm, down, [pairs.transposed() for pairs in down]


class NativeBackbone:
    """Called like ``DKNet.forward``: (features (V, 6) float32, coords (V, 3) int, spatial_shape,
    point_to_voxel (N,) int64) -> ``PointOutputs`` on the device of ``features``."""

    name = "native"

    def __init__(self, state: State, device: torch.device):
        self.device = device
        self.network = FoldedBackbone(state, NATIVE_KINDS).to(device)
        self.provider = "native (torch gather-GEMM-scatter)"

    @classmethod
    def from_model(cls, model: DKNet, device: torch.device) -> NativeBackbone:
        return cls({k: v.detach() for k, v in model.state_dict().items()}, device)

    @torch.no_grad()
    def __call__(self, features: torch.Tensor, coords: torch.Tensor, spatial_shape: list[int],
                 point_to_voxel: torch.Tensor) -> PointOutputs:
        maps = build_kernel_maps(coords.to(self.device), spatial_shape)
        outputs = self.network.run(features.to(self.device, torch.float32), point_to_voxel.to(self.device),
                                   *level_pairs(maps))
        return select_object_points(*outputs)
