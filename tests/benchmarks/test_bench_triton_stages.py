"""Stages of ``--kernels triton`` beside ``--kernels torch`` on one CUDA device
(``pytest --benchmark-only``); skipped without CUDA and compiled Triton.

Each group (encoding, decoding, post-processing) holds the reference and the Triton variant on the
same backbone outputs of a 150k-point synthetic scene, with the RTX 3090 budget and the issue's H100
target in ``extra_info``, so the ratios are side by side. The Triton decoding variant records its
FLOPs and achieved TFLOP/s; decoding + post-processing record the peak extra device memory.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.budget import H100_TARGET_MS, RTX3090_BUDGET_MS
from engine.pipeline import run_backbone, run_decoding, run_encoding, run_post_processing
from engine.postprocess import StoredMasks
from profiling.flops import decoding_flops


def _cuda_triton_or_skip() -> torch.device:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from kernels._triton import INTERPRETER, triton_available

    if INTERPRETER or not triton_available("cuda"):
        pytest.skip("needs compiled Triton (TRITON_INTERPRET unset)")
    return torch.device("cuda")


@pytest.fixture(scope="module")
def cuda_scene():
    device = _cuda_triton_or_skip()
    from engine.checkpoint import randomize_weights
    from engine.model import build_model
    from engine.session import build_backbone
    from engine.synthetic import generate_scene

    model = build_model()
    randomize_weights(model, seed=0)
    model = model.to(device).eval()
    synthetic = generate_scene(150_000, seed=1)
    with torch.no_grad():
        backbone = run_backbone(build_backbone("native", model, device), synthetic.vertices_m, synthetic.colors,
                                device)
        encoded = run_encoding(model, backbone)
    return model, backbone, encoded, synthetic.segments.astype(np.int64)


def _timed(fn):
    def run(*args):
        result = fn(*args)
        torch.cuda.synchronize()
        return result
    return run


def _info(benchmark, stage: str, **extra) -> None:
    benchmark.extra_info.update(budget_ms=RTX3090_BUDGET_MS[stage], h100_target_ms=H100_TARGET_MS[stage],
                                device=torch.cuda.get_device_name(), **extra)


def _kernels(name: str):
    from engine.session import later_stages

    return later_stages(name, torch.device("cuda"))


def _fresh(masks):
    """A stored matrix is overwritten by post-processing: each round gets a copy."""
    return StoredMasks(masks.masks.clone(), masks.histograms) if isinstance(masks, StoredMasks) else masks


@pytest.mark.parametrize("kernels", ["torch", "triton"])
@pytest.mark.benchmark(group="triton-stage-encoding")
def test_encoding(benchmark, cuda_scene, kernels):
    model, backbone, _, _ = cuda_scene
    _info(benchmark, "encoding")
    with torch.no_grad():
        benchmark.pedantic(_timed(run_encoding), args=(model, backbone, _kernels(kernels)), rounds=10,
                           warmup_rounds=2)


@pytest.mark.parametrize("kernels", ["torch", "triton"])
@pytest.mark.benchmark(group="triton-stage-decoding")
def test_decoding(benchmark, cuda_scene, kernels):
    _, backbone, encoded, _ = cuda_scene
    num_points, count = backbone.vox.xyz_m.shape[0], encoded.theta.shape[0]
    flops = decoding_flops(num_points, count)
    benchmark.pedantic(_timed(run_decoding), args=(backbone, encoded, _kernels(kernels)), rounds=10, warmup_rounds=2)
    _info(benchmark, "decoding", instances=count, gflop=flops / 1e9,
          achieved_tflops=flops / benchmark.stats.stats.median / 1e12)


@pytest.mark.parametrize("kernels", ["torch", "triton"])
@pytest.mark.benchmark(group="triton-stage-post_processing")
def test_post_processing(benchmark, cuda_scene, kernels):
    _, backbone, encoded, segments = cuda_scene
    masks = run_decoding(backbone, encoded, _kernels(kernels))

    def setup():
        return ((_fresh(masks), backbone, segments), {})

    benchmark.pedantic(_timed(run_post_processing), setup=setup, rounds=10, warmup_rounds=2)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    run_post_processing(run_decoding(backbone, encoded, _kernels(kernels)), backbone, segments)
    torch.cuda.synchronize()
    _info(benchmark, "post_processing", instances=int(encoded.theta.shape[0]),
          peak_extra_mib_decoding_and_post=(torch.cuda.max_memory_allocated() - base) / 2**20)
