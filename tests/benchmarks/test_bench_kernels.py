"""Triton kernels against their torch references (``pytest --benchmark-only tests/benchmarks``).

Each group has exactly one reference variant and one kernel variant on the same inputs and device
(CUDA when available, else CPU). Kernel variants need compiled Triton on a CUDA device and are
skipped otherwise: on CPU they could only run in the interpreter, which measures numpy, not the
kernel. Run benchmarks in their own pytest invocation: ``tests/kernels`` sets TRITON_INTERPRET=1.

``kernels`` is imported inside the tests, never at collection: importing it would import triton
before ``tests/kernels/conftest.py`` selects the interpreter for the kernel tests of the same run.
Each kernel variant records its error against the reference in ``extra_info``.
"""

from __future__ import annotations

import pytest
import torch

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
POINTS = [20_000, 150_000]
INSTANCES = 100


def _synchronized(fn):
    """fn followed by a device sync, so wall-clock rounds time the work, not the launch."""
    def run(*args):
        result = fn(*args)
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        return result
    return run


def _skip_unless_compiled() -> None:
    from kernels._triton import INTERPRETER, triton_available

    if DEVICE.type != "cuda" or INTERPRETER or not triton_available(DEVICE):
        pytest.skip("Triton kernels are benchmarked compiled on a CUDA device only "
                    f"(device {DEVICE}, TRITON_INTERPRET={'1' if INTERPRETER else '0'})")


@pytest.fixture(scope="module", params=POINTS, ids=lambda n: f"{n // 1000}k")
def decode_inputs(request) -> tuple[torch.Tensor, ...]:
    """theta (I, 337), mask_features (N, 16), xyz_m (N, 3), centres_m (I, 3) float32 on DEVICE."""
    g = torch.Generator().manual_seed(request.param)
    num_points = request.param
    inputs = (torch.randn(INSTANCES, 337, generator=g) * 0.5, torch.randn(num_points, 16, generator=g),
              torch.randn(num_points, 3, generator=g) * 3, torch.randn(INSTANCES, 3, generator=g) * 3)
    return tuple(t.to(DEVICE) for t in inputs)


@pytest.fixture(scope="module")
def histograms() -> torch.Tensor:
    """(I, 100) int64 on DEVICE: 150 instances with about half their levels populated."""
    g = torch.Generator().manual_seed(0)
    counts = torch.randint(0, 5000, (150, 100), generator=g) * (torch.rand(150, 100, generator=g) < 0.5)
    return counts.to(DEVICE)


@pytest.mark.benchmark(group="kernel-decode")
def test_decode_reference(benchmark, decode_inputs):
    from kernels.decode import decode_histograms_reference

    benchmark.extra_info.update(instances=INSTANCES, device=str(DEVICE))
    benchmark.pedantic(_synchronized(decode_histograms_reference), args=decode_inputs, rounds=5, warmup_rounds=1)


@pytest.mark.benchmark(group="kernel-decode")
def test_decode_kernel(benchmark, decode_inputs):
    _skip_unless_compiled()
    from kernels.decode import decode_histograms, decode_histograms_reference

    hist = benchmark.pedantic(_synchronized(decode_histograms), args=decode_inputs, rounds=5, warmup_rounds=1)
    moved = (hist - decode_histograms_reference(*decode_inputs)).abs().sum().item() // 2
    benchmark.extra_info.update(instances=INSTANCES, device=str(DEVICE), points_moved_vs_reference=moved)


@pytest.mark.benchmark(group="kernel-otsu")
def test_otsu_reference(benchmark, histograms):
    from kernels.otsu import otsu_thresholds_reference

    benchmark.extra_info["device"] = str(DEVICE)
    benchmark.pedantic(_synchronized(otsu_thresholds_reference), args=(histograms,), rounds=20, warmup_rounds=2)


@pytest.mark.benchmark(group="kernel-otsu")
def test_otsu_kernel(benchmark, histograms):
    _skip_unless_compiled()
    from kernels.otsu import otsu_thresholds, otsu_thresholds_reference

    thresholds = benchmark.pedantic(_synchronized(otsu_thresholds), args=(histograms,), rounds=20, warmup_rounds=2)
    mismatches = int((thresholds != otsu_thresholds_reference(histograms)).sum())
    benchmark.extra_info.update(device=str(DEVICE), thresholds_differing_from_reference=mismatches)
