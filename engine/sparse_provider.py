"""The seam between the backbone and the sparse-convolution library that runs it.

Two providers share spconv 2.x's module API and weight layout ``(out, kx, ky, kz, in)``:

* ``spconv`` — the official library (its CPU build runs on CPU; its CUDA builds on GPUs);
* ``spconv-triton`` — a pure-Triton drop-in for spconv 2.x, GPU only, for GPUs or CUDA versions
  that no spconv CUDA build fits.

``select_provider`` picks one for a device and says which, so the CLI can report it.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from types import ModuleType

import torch


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
