"""Kernel tests run on both devices: ``device`` is ``cpu`` (Triton's interpreter) and ``cuda``
(compiled kernels); each is skipped, with the reason, where this process cannot run it.

One mode per process: triton decides between compiling and interpreting when a kernel is
decorated, from ``TRITON_INTERPRET`` as ``engine.environment.choose_triton_mode`` leaves it (the
user's value, else interpreted exactly when no CUDA device is visible). ``make test`` sets
``TRITON_INTERPRET=1``; on a GPU machine ``pytest tests/kernels`` runs the CUDA cases compiled.
"""

from __future__ import annotations

import pytest
import torch

from kernels._triton import TRITON_IMPORTED, triton_available


def device_skip_reason(device: str) -> str:
    """Why this process cannot run the kernels on ``device`` ("" when it can)."""
    if not TRITON_IMPORTED:
        return "triton is not installed (pip install 'dknet-engine[test]')"
    if triton_available(device):
        return ""
    if device == "cpu":
        return "CPU tensors run in Triton's interpreter: set TRITON_INTERPRET=1 (one mode per process)"
    if not torch.cuda.is_available():
        return "no CUDA device visible"
    return "CUDA runs compiled kernels: unset TRITON_INTERPRET (one mode per process)"


@pytest.fixture(params=["cpu", "cuda"])
def device(request) -> torch.device:
    reason = device_skip_reason(request.param)
    if reason:
        pytest.skip(reason)
    return torch.device(request.param)
