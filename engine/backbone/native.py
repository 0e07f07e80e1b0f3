"""The native backbone: DKNet's sparse U-Net and point heads on the engine's own sparse convs.

Per scene: the kernel maps of all seven levels (``engine.backbone.kernel_maps``), then the
BatchNorm-folded network of ``engine.backbone.folded`` with one of two convolution forms:

* torch (CPU, and the reference on CUDA): the maps' real pairs grouped by offset (``OffsetPairs``,
  built once per level and shared by every conv of that level; the inverse convs reuse their down
  conv's pairs, transposed), every convolution as gather → GEMM → scatter-add
  (``engine.backbone.sparse_conv``);
* Triton (the default on CUDA): every convolution as one implicit-GEMM kernel reading the dense
  neighbour maps (``kernels.sparse_conv``), with ``precision`` fp32 (default), tf32, fp16 or bf16
  for its products (always float32 sums).

The same weights and maps feed the exported graph (``export.gather_conv``); spconv is not needed.
Output bits are the same every run in both forms (fixed order of sums, no atomics).
"""

from __future__ import annotations

import torch
from torch import nn

from engine.backbone.folded import ConvKinds, FoldedBackbone, ResidualBlock, State, folded_conv
from engine.backbone.kernel_maps import SUBM_CENTRE, KernelMaps, build_kernel_maps, inverse_map
from engine.backbone.sparse_conv import OffsetPairs, sparse_conv
from engine.host_allocator import keep_freed_blocks
from engine.model import DKNet, PointOutputs, select_object_points


class NativeConv(nn.Module):
    """A submanifold 3³, down (k=2 s=2) or inverse (k=2) conv on ``OffsetPairs``:
    (V_in, Cin) -> (V_out, Cout). ``bn``: a BatchNorm that directly follows, folded in."""

    def __init__(self, weight: torch.Tensor, dtype: torch.dtype,
                 bn: tuple[torch.Tensor, torch.Tensor] | None = None):
        super().__init__()
        matrices, bias = folded_conv(weight, bn)
        self.register_buffer("weight_t", matrices.transpose(1, 2).to(dtype).contiguous())  # (K, Cout, Cin)
        self.register_buffer("bias", None if bias is None else bias.to(dtype))

    def forward(self, x: torch.Tensor, pairs: OffsetPairs) -> torch.Tensor:
        return sparse_conv(x, pairs, self.weight_t, self.bias)


class TritonConv(nn.Module):
    """The same convolutions as ``NativeConv``, as one Triton kernel on a dense neighbour map
    (V_out, K) (``kernels.sparse_conv``)."""

    def __init__(self, weight: torch.Tensor, dtype: torch.dtype,
                 bn: tuple[torch.Tensor, torch.Tensor] | None = None, precision: str = "fp32"):
        super().__init__()
        matrices, bias = folded_conv(weight, bn)
        self.precision = precision
        self.register_buffer("weight", matrices.to(dtype).contiguous())
        self.register_buffer("bias", None if bias is None else bias.to(dtype))

    def forward(self, x: torch.Tensor, neighbours: torch.Tensor,
                prologue: tuple[torch.Tensor, torch.Tensor] | None = None, relu: bool = False,
                residual: torch.Tensor | None = None) -> torch.Tensor:
        """``prologue``: (scale, shift) of a BatchNorm + ReLU applied to the gathered rows; ``relu``
        after the bias; ``residual`` added last (``kernels.sparse_conv``)."""
        from kernels.sparse_conv import sparse_conv as triton_sparse_conv

        return triton_sparse_conv(x, neighbours, self.weight, self.bias, prologue=prologue, relu=relu,
                                  residual=residual, precision=self.precision)


class FusedResidualBlock(ResidualBlock):
    """A residual block in two Triton launches: the pre-activation BatchNorm + ReLU runs in the first
    conv's gather, the ReLU after it in its epilogue, the residual sum in the second conv's epilogue
    (the same operations in the same order as ``ResidualBlock``, without three passes over V rows)."""

    def forward(self, x: torch.Tensor, subm: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x, subm, prologue=(self.pre.scale, self.pre.shift), relu=True)
        return self.conv2(h, subm, residual=x if self.shortcut is None else self.shortcut(x))


NATIVE_KINDS = ConvKinds(subm=NativeConv, down=NativeConv, inverse=NativeConv)


def triton_kinds(precision: str) -> ConvKinds:
    def conv(weight: torch.Tensor, dtype: torch.dtype, bn=None) -> TritonConv:
        return TritonConv(weight, dtype, bn, precision)

    return ConvKinds(subm=conv, down=conv, inverse=conv, residual_block=FusedResidualBlock)


def level_pairs(maps: KernelMaps) -> tuple[list[OffsetPairs], list[OffsetPairs], list[OffsetPairs]]:
    """Real pairs of every conv: subm (7 levels), down and up (6 each; up = down transposed)."""
    sizes = maps.num_voxels
    subm = [OffsetPairs.from_neighbours(m, size, identity=SUBM_CENTRE)
            for m, size in zip(maps.subm, sizes, strict=True)]
    down = [OffsetPairs.from_neighbours(m, size) for m, size in zip(maps.down, sizes[:-1], strict=True)]
    return subm, down, [pairs.transposed() for pairs in down]


def level_neighbours(maps: KernelMaps) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """Dense neighbour maps of every conv for the Triton form: subm (7), down (6), inverse (6)."""
    sizes = maps.num_voxels
    return maps.subm, maps.down, [inverse_map(up, size) for up, size in zip(maps.up, sizes[1:], strict=True)]


class NativeBackbone:
    """Called like ``DKNet.forward``: (features (V, 6) float32, coords (V, 3) int, spatial_shape,
    point_to_voxel (N,) int64) -> ``PointOutputs`` on the backbone's device.

    ``triton``: the Triton form (default: on CUDA when triton is installed); ``precision``: its
    products' precision (fp32, tf32, fp16, bf16; the torch form is always fp32).
    """

    name = "native"

    def __init__(self, state: State, device: torch.device, triton: bool | None = None, precision: str = "fp32"):
        if triton is None:
            triton = device.type == "cuda" and _triton_runs_on(device)
        if precision != "fp32" and not triton:
            raise ValueError(f"native backbone precision {precision!r} needs the Triton form (a CUDA device)")
        if device.type == "cpu":
            keep_freed_blocks()  # its temporaries reuse heap memory instead of fresh pages (engine.host_allocator)
        self.device = device
        self.triton = triton
        self.network = FoldedBackbone(state, triton_kinds(precision) if triton else NATIVE_KINDS).to(device)
        self.provider = (f"native (Triton implicit GEMM, {precision})" if triton
                         else "native (torch gather-GEMM-scatter)")

    @classmethod
    def from_model(cls, model: DKNet, device: torch.device, triton: bool | None = None,
                   precision: str = "fp32") -> NativeBackbone:
        return cls({k: v.detach() for k, v in model.state_dict().items()}, device, triton, precision)

    @torch.no_grad()
    def __call__(self, features: torch.Tensor, coords: torch.Tensor, spatial_shape: list[int],
                 point_to_voxel: torch.Tensor) -> PointOutputs:
        maps = build_kernel_maps(coords.to(self.device), spatial_shape)
        level_maps = level_neighbours(maps) if self.triton else level_pairs(maps)
        outputs = self.network.run(features.to(self.device, torch.float32), point_to_voxel.to(self.device),
                                   *level_maps)
        return select_object_points(*outputs)


def _triton_runs_on(device: torch.device) -> bool:
    from kernels._triton import TRITON_IMPORTED, triton_available

    return TRITON_IMPORTED and triton_available(device)
