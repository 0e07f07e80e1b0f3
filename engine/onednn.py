"""CPU GEMMs through torch's oneDNN linear (``torch.ops.mkldnn._linear_pointwise``), a leaf module.

On an AMD Zen 5 it ran the native backbone's layer shapes at 1.2–1.5x ``torch.mm``'s rate (MKL's
generic path) and decoding's K = 19 shapes at 2–4x (docs/performance.md). Where this torch build
lacks it, or for other devices, dtypes or empty inputs, ``torch.nn.functional.linear``.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

__all__ = ["linear", "linear_relu"]


def _available() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    except (AttributeError, RuntimeError):
        return False


_AVAILABLE = _available()


def _use_onednn(rows: torch.Tensor) -> bool:
    return _AVAILABLE and rows.device.type == "cpu" and rows.dtype == torch.float32 and rows.shape[0] > 0


def linear(rows: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``rows (R, Cin) @ weight_t.T (+ bias (Cout,))`` -> (R, Cout), weight_t (Cout, Cin) contiguous."""
    if _use_onednn(rows):
        return torch.ops.mkldnn._linear_pointwise(rows, weight_t, bias, "none", [], "")
    return F.linear(rows, weight_t, bias)


def linear_relu(rows: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``relu(rows (R, Cin) @ weight_t.T + bias (Cout,))`` -> (R, Cout): on oneDNN one GEMM with the
    ReLU fused."""
    if _use_onednn(rows):
        return torch.ops.mkldnn._linear_pointwise(rows, weight_t, bias, "relu", [], "")
    return F.linear(rows, weight_t, bias).relu_()
