"""Reference-path stage benchmarks on synthetic scenes (``pytest --benchmark-only``).

Scenes of 20k and 150k points (400k with ``--bench-large``); each stage runs on the same backbone
outputs (computed once per size). The decoding group carries its arithmetic floor measured in the
same run: a float32 matmul with the decoding's multiply-adds, so decoding / floor is a
side-by-side ratio. The RTX 3090 budget of each stage is in ``extra_info``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.budget import RTX3090_BUDGET_MS
from engine.checkpoint import randomize_weights
from engine.model import build_model
from engine.pipeline import EncodingResult, run_backbone, run_decoding, run_encoding, run_post_processing
from engine.postprocess import StoredMasks
from engine.session import build_backbone
from engine.synthetic import generate_scene
from profiling.flops import decoding_flops

SIZES = [20_000, 150_000, pytest.param(400_000, marks=pytest.mark.large)]


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


@pytest.mark.parametrize("instances", [100, 150])
@pytest.mark.benchmark(group="decoding")
def test_decoding(benchmark, scene, instances):
    size, backbone, encoded, _ = scene
    subset = _first_instances(encoded, instances)
    count = int(subset.theta.shape[0])
    benchmark.extra_info.update(budget_ms=RTX3090_BUDGET_MS["decoding"], instances=count,
                                gflop=decoding_flops(size, count) / 1e9)
    benchmark.pedantic(run_decoding, args=(backbone, subset), rounds=5, warmup_rounds=1)


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


@pytest.mark.parametrize("instances", [50, 150])
@pytest.mark.benchmark(group="post_processing")
def test_post_processing(benchmark, scene, instances):
    _, backbone, encoded, segments = scene
    masks = run_decoding(backbone, _first_instances(encoded, instances)).masks  # (N, I), stored
    benchmark.extra_info.update(budget_ms=RTX3090_BUDGET_MS["post_processing"], instances=int(masks.shape[1]))
    benchmark.pedantic(run_post_processing, setup=lambda: ((StoredMasks(masks.clone()), backbone, segments), {}),
                       rounds=5, warmup_rounds=1)
