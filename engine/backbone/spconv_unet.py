"""The spconv backbone: DKNet's sparse U-Net on spconv 2.x, the library the official code uses.

It is an optional provider (``pip install spconv``, or a CUDA build) and the oracle the native
backbone is tested against. Two providers share spconv 2.x's module API and weight layout
``(out, kx, ky, kz, in)``:

* ``spconv`` — the official library (its CPU build runs on CPU; its CUDA builds on GPUs);
* ``spconv-triton`` — a pure-Triton drop-in for spconv 2.x, GPU only, for GPUs or CUDA versions
  that no spconv CUDA build fits.

``select_provider`` picks one for a device and says which, so the CLI can report it;
``SpconvBackbone`` builds the U-Net from its modules with the weights of a ``DKNet``.
"""

from __future__ import annotations

import importlib
import logging
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType

import torch
from torch import nn

from engine.model import BLOCK_REPS, UNET_LEVELS, WIDTH, BatchNorm, DKNet, PointOutputs


class ProviderError(RuntimeError):
    """No sparse-convolution library can run on the requested device."""


@dataclass(frozen=True)
class SparseProvider:
    name: str  # "spconv" or "spconv-triton"
    module: ModuleType  # exposes SparseConvTensor, SubMConv3d, SparseConv3d, SparseInverseConv3d, ...


# spconv's SparseSequential calls torch.fx's deprecated ``is_fx_tracing``, whose one-time warning
# means nothing to our users; only that logger is quietened.
logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)


def _import(module_name: str) -> ModuleType | None:
    try:
        return importlib.import_module(module_name)
    except Exception:  # a broken install (missing CUDA libs, ABI mismatch) counts as absent
        return None


def _runs_on(module: ModuleType, device: torch.device) -> bool:
    """Whether a one-voxel submanifold conv runs on ``device`` with this library."""
    try:
        conv = module.SubMConv3d(1, 1, 3, bias=False).to(device)
        indices = torch.zeros(1, 4, dtype=torch.int32, device=device)
        tensor = module.SparseConvTensor(torch.ones(1, 1, device=device), indices, [4, 4, 4], 1)
        with torch.no_grad():
            conv(tensor)
        return True
    except Exception:
        return False


def select_provider(device: torch.device, prefer: str | None = None) -> SparseProvider:
    """Choose the sparse-conv library for ``device``.

    CPU: spconv (its CPU build). CUDA: spconv if its build has working CUDA kernels, else
    spconv-triton. ``prefer`` ("spconv" or "spconv-triton") forces one, with a clear error if it
    cannot run there.
    """
    candidates = {"spconv": "spconv.pytorch", "spconv-triton": "spconv_triton.pytorch"}
    order = [prefer] if prefer else (["spconv"] if device.type == "cpu" else ["spconv", "spconv-triton"])
    tried = []
    for name in order:
        if name not in candidates:
            raise ProviderError(f"unknown sparse-conv provider {name!r}; choose from {sorted(candidates)}")
        module = _import(candidates[name])
        if module is not None and _runs_on(module, device):
            return SparseProvider(name, module)
        tried.append(name if module is None else f"{name} (installed, cannot run on {device.type})")
    hint = (
        "pip install spconv" if device.type == "cpu"
        else "pip install 'dknet-engine[cu121]' (a spconv CUDA build) or 'dknet-engine[triton-gpu]'"
    )
    raise ProviderError(f"no sparse-conv library runs on {device.type}: tried {', '.join(tried)}; {hint}")


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
def spconv_threads(provider: str, device: torch.device) -> Iterator[None]:
    """spconv 2.3.x's CPU build gives wrong sums when torch runs more than one intra-op thread
    (measured here: errors of 0.3 on unit-scale features for 40k voxels; exact with one thread),
    so its CPU convolutions run single-threaded. ``tests/backbone/test_spconv_layout.py`` guards this."""
    if provider != "spconv" or device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class SpconvBackbone:
    """Called like ``DKNet.forward`` was: (features (V, 6) float32, coords (V, 3) int, spatial_shape,
    point_to_voxel (N,) int64) -> ``PointOutputs``: the U-Net on ``provider``'s modules with the
    model's weights, then the model's point heads."""

    name = "spconv"

    def __init__(self, model: DKNet, provider: SparseProvider, device: torch.device):
        sp = provider.module
        d = WIDTH
        self.model = model
        self.provider = f"spconv ({provider.name})"
        self._provider_name = provider.name
        self._sp = sp
        net = nn.Module()
        net.input_conv = sp.SparseSequential(sp.SubMConv3d(6, d, 3, padding=1, bias=False, indice_key="subm1"))
        net.unet = _build_unet(sp)([d * (i + 1) for i in range(UNET_LEVELS)])
        net.output_layer = sp.SparseSequential(BatchNorm(d), nn.ReLU())
        parts = ("input_conv.", "unet.", "output_layer.")
        net.load_state_dict({k: v for k, v in model.state_dict().items() if k.startswith(parts)})
        self.network = net.to(device).eval()

    @torch.no_grad()
    def __call__(self, features: torch.Tensor, coords: torch.Tensor, spatial_shape: list[int],
                 point_to_voxel: torch.Tensor) -> PointOutputs:
        indices = torch.cat((torch.zeros_like(coords[:, :1]), coords), dim=1).int()
        x = self._sp.SparseConvTensor(features, indices, spatial_shape, 1)
        net = self.network
        with spconv_threads(self._provider_name, features.device):
            voxel_feats = net.output_layer(net.unet(net.input_conv(x))).features
        return self.model.point_heads(voxel_feats[point_to_voxel])
