"""Reference-path stage benchmarks on synthetic scenes (``pytest --benchmark-only``).

Scenes of 20k and 150k points (400k with ``--bench-large``); each stage runs on the same backbone
outputs (computed once per size). The decoding group carries its arithmetic floor measured in the
same run: a float32 matmul with the decoding's multiply-adds, so decoding / floor is a
side-by-side ratio. The RTX 3090 budget of each stage is in ``extra_info``.

Decoding runs both ways: the fused C kernel the CPU pipeline runs (``engine.c_kernels.decode``) and
the PyTorch reference (``engine.decoding``), each with its Otsu histograms.

Group ``decoding-2m``: decoding (masks and Otsu histograms) on a 2M-point scene with I = 150
instances, beside its floor: oneDNN GEMMs (the native backbone's ``linear``) doing the same
multiply-adds. Its inputs are seeded random tensors of the decoding's shapes (a 2M-point backbone
run takes minutes on CPU; decoding's work does not depend on the values).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.backbone.sparse_conv import linear
from engine.budget import RTX3090_BUDGET_MS
from engine.c_kernels import decode as c_decode
from engine.c_kernels.assign import CStoredMasks
from engine.checkpoint import randomize_weights
from engine.decoding import decode_masks_and_histograms
from engine.model import build_model
from engine.pipeline import EncodingResult, run_backbone, run_decoding, run_encoding, run_post_processing
from engine.postprocess import StoredMasks
from engine.session import build_backbone
from engine.synthetic import generate_scene
from profiling.flops import decoding_flops

SIZES = [20_000, 150_000, pytest.param(400_000, marks=pytest.mark.large)]
MILLION_SCENE_POINTS = 2_000_000
MILLION_SCENE_INSTANCES = 150
FLOOR_SIDE = 4096  # square GEMMs of the floor: 137 GFLOP each, ~1.5 of them make decoding's work


@pytest.fixture(scope="module")
def model():
    built = build_model()
    randomize_weights(built, seed=0)
    return built


@pytest.fixture(scope="module", params=SIZES, ids=lambda n: f"{n // 1000}k")
def scene(request, model):
    """(points, backbone outputs, encoding outputs, superpoints) of one synthetic scene; module
    scope makes pytest run every benchmark of one size before building the next."""
    synthetic = generate_scene(request.param, seed=1)
    with torch.no_grad():
        native = build_backbone("native", model, torch.device("cpu"))
        backbone = run_backbone(native, synthetic.vertices_m, synthetic.colors, torch.device("cpu"))
        encoded = run_encoding(model, backbone)
    return request.param, backbone, encoded, synthetic.segments.astype(np.int64)


def _first_instances(encoded: EncodingResult, count: int) -> EncodingResult:
    return EncodingResult(encoded.candidates, encoded.instances, encoded.theta[:count],
                          encoded.instance_centers[:count])


@pytest.mark.benchmark(group="encoding")
def test_encoding(benchmark, model, scene):
    _, backbone, _, _ = scene
    benchmark.extra_info["budget_ms"] = RTX3090_BUDGET_MS["encoding"]
    result = benchmark.pedantic(lambda: torch.no_grad()(run_encoding)(model, backbone), rounds=5, warmup_rounds=1)
    benchmark.extra_info["candidates"] = int(result.candidates.points.size)


DECODERS = {"c_kernel": c_decode.decode_masks_and_histograms, "torch": decode_masks_and_histograms}
c_kernel_only = pytest.mark.skipif(c_decode.KERNELS.unavailable_reason() is not None,
                                   reason=f"C kernels unavailable: {c_decode.KERNELS.unavailable_reason()}")


@pytest.mark.parametrize("decoder", [pytest.param("c_kernel", marks=c_kernel_only), "torch"])
@pytest.mark.parametrize("instances", [100, 150])
@pytest.mark.benchmark(group="decoding")
def test_decoding(benchmark, scene, instances, decoder):
    """Decoding with its Otsu histograms: the fused C kernel (what the CPU pipeline runs) and the
    PyTorch reference."""
    size, backbone, encoded, _ = scene
    subset = _first_instances(encoded, instances)
    count = int(subset.theta.shape[0])
    xyz_m = backbone.vox.xyz_m
    inputs = (subset.theta, backbone.points.mask_features, xyz_m, xyz_m[subset.instance_centers])
    benchmark.extra_info.update(budget_ms=RTX3090_BUDGET_MS["decoding"], instances=count,
                                gflop=decoding_flops(size, count) / 1e9)
    benchmark.pedantic(DECODERS[decoder], args=inputs, rounds=5, warmup_rounds=1)


@pytest.mark.parametrize("instances", [100, 150])
@pytest.mark.parametrize("size", [20_000, 150_000, pytest.param(400_000, marks=pytest.mark.large)],
                         ids=lambda n: f"{n // 1000}k")
@pytest.mark.benchmark(group="decoding")
def test_decoding_arithmetic_floor(benchmark, size, instances):
    """A square float32 matmul doing the decoding's multiply-adds: the machine's matmul floor."""
    side = round((decoding_flops(size, instances) / 2) ** (1 / 3))
    a, b = torch.randn(side, side), torch.randn(side, side)
    benchmark.extra_info["gflop"] = 2 * side**3 / 1e9
    benchmark.pedantic(torch.mm, args=(a, b), rounds=5, warmup_rounds=1)


@pytest.mark.parametrize("walks", [pytest.param("c_kernel", marks=c_kernel_only), "torch"])
@pytest.mark.parametrize("instances", [50, 150])
@pytest.mark.benchmark(group="post_processing")
def test_post_processing(benchmark, scene, instances, walks):
    """Post-processing with its passes over the masks as C row walks (``CStoredMasks``, what the
    CPU pipeline runs) and in torch (``StoredMasks``); the same bits either way."""
    _, backbone, encoded, segments = scene
    masks = run_decoding(backbone, _first_instances(encoded, instances)).masks  # (N, I), stored
    stored = CStoredMasks if walks == "c_kernel" else StoredMasks
    benchmark.extra_info.update(budget_ms=RTX3090_BUDGET_MS["post_processing"], instances=int(masks.shape[1]))
    benchmark.pedantic(run_post_processing, setup=lambda: ((stored(masks.clone()), backbone, segments), {}),
                       rounds=5, warmup_rounds=1)


@pytest.fixture(scope="module")
def decoding_inputs_2m() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """θ (150, 337), mask features (2M, 16), xyz_m (2M, 3) in a 10 m room, centres_m (150, 3)."""
    g = torch.Generator().manual_seed(2)
    xyz_m = torch.rand(MILLION_SCENE_POINTS, 3, generator=g) * 10
    return (torch.randn(MILLION_SCENE_INSTANCES, 337, generator=g) * 0.3,
            torch.randn(MILLION_SCENE_POINTS, 16, generator=g), xyz_m,
            xyz_m[torch.randperm(MILLION_SCENE_POINTS, generator=g)[:MILLION_SCENE_INSTANCES]])


@pytest.mark.parametrize("decoder", [pytest.param("c_kernel", marks=c_kernel_only), "torch"])
@pytest.mark.benchmark(group="decoding-2m")
def test_decoding_2m(benchmark, decoding_inputs_2m, decoder):
    benchmark.extra_info.update(points=MILLION_SCENE_POINTS, instances=MILLION_SCENE_INSTANCES,
                                gflop=decoding_flops(MILLION_SCENE_POINTS, MILLION_SCENE_INSTANCES) / 1e9)
    benchmark.pedantic(DECODERS[decoder], args=decoding_inputs_2m, rounds=3, warmup_rounds=1)


@pytest.mark.benchmark(group="decoding-2m")
def test_decoding_2m_gemm_floor(benchmark):
    """oneDNN GEMMs with the 2M-point decoding's multiply-adds: ``extra_info`` has their rate; the
    benchmark's time is that work at that rate (``benchmark.stats`` times ``work_fraction``)."""
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(FLOOR_SIDE, FLOOR_SIDE, generator=g), torch.randn(FLOOR_SIDE, FLOOR_SIDE, generator=g)
    gemm_flop = 2 * FLOOR_SIDE**3
    work = decoding_flops(MILLION_SCENE_POINTS, MILLION_SCENE_INSTANCES)
    benchmark.extra_info.update(gflop=gemm_flop / 1e9, work_fraction=work / gemm_flop)
    benchmark.pedantic(linear, args=(a, b), rounds=3, warmup_rounds=1)
    benchmark.extra_info["gflop_per_s"] = gemm_flop / benchmark.stats.stats.median / 1e9
    benchmark.extra_info["decoding_floor_ms"] = 1e3 * work / (benchmark.extra_info["gflop_per_s"] * 1e9)
