"""Backbone benchmarks (``pytest --benchmark-only``, group ``backbone``) on the 150k-point
synthetic scene (``generate_scene(150_000, seed=1)``), side by side in one run:

* ``native``: the engine's own backbone (kernel maps, pairs and the folded U-Net, all included);
* ``spconv``: spconv's CPU build (single-threaded: its CPU kernels race with several threads,
  ``engine.backbone.spconv_unet.spconv_threads``), the oracle;
* ``onnxruntime``: the exported graph on ONNX Runtime's CPU provider (kernel maps included; it
  warms up twice: its first two calls grow its memory arena);
* ``gemm``: the floor: one float32 GEMM through the native backbone's own ``linear`` on the shape
  that carries most of the work (level 2: ~98k voxel pairs per offset, 64 -> 64 channels).

Each variant's ``extra_info`` carries the backbone's multiply-add work (``gflop``, real pairs, from
``profiling.flops``), its rate ``gflop_per_s`` at the median time, and the largest difference from
spconv's outputs; the GEMM's carries its rate and the implied floor of the whole backbone.
CUDA variants run when a GPU is present (native on the device; spconv where a CUDA build runs).
"""

from __future__ import annotations

import pytest
import torch

from engine.checkpoint import randomize_weights
from engine.model import build_model
from engine.onednn import linear
from engine.preprocess import voxelize
from engine.session import build_backbone
from engine.synthetic import generate_scene
from export.onnx import export_backbone
from export.runtime import load_backbone
from profiling.flops import backbone_flops

POINTS = 150_000
FIELDS = ("semantic_scores", "offsets", "heat_logits", "mask_features", "kernel_features")
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


@pytest.fixture(scope="module")
def model():
    built = build_model()
    randomize_weights(built, seed=0)
    return built


@pytest.fixture(scope="module")
def scene():
    synthetic = generate_scene(POINTS, seed=1)
    return synthetic.vertices_m, synthetic.colors


@pytest.fixture(scope="module", params=DEVICES)
def setup(request, model, scene):
    """(device, voxelized inputs, spconv's outputs, the native backbone's FLOPs) on one device."""
    device = torch.device(request.param)
    vox = voxelize(*scene, device)
    args = (vox.voxel_features, vox.voxel_coords, vox.spatial_shape, vox.point_to_voxel)
    native = build_backbone("native", model.to(device), device)
    flops = backbone_flops(native, *args)["total"]
    reference = build_backbone("spconv", model, device)(*args) if request.param == "cpu" else None
    return device, args, reference, flops


def _record(benchmark, backbone, outputs, reference, flops: float) -> None:
    median_s = benchmark.stats.stats.median
    benchmark.extra_info.update(provider=backbone.provider, points=int(outputs.semantic_scores.shape[0]),
                                gflop=flops / 1e9, gflop_per_s=flops / median_s / 1e9)
    if reference is not None:
        benchmark.extra_info["max_abs_difference"] = max(
            float((getattr(outputs, f).cpu() - getattr(reference, f).cpu()).abs().max()) for f in FIELDS)


def _timed(backbone, device):
    def run(*args):
        outputs = backbone(*args)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return outputs

    return run


@pytest.mark.benchmark(group="backbone")
def test_backbone_native(benchmark, model, setup):
    device, args, reference, flops = setup
    backbone = build_backbone("native", model.to(device), device)
    outputs = benchmark.pedantic(_timed(backbone, device), args=args, rounds=3, warmup_rounds=1)
    _record(benchmark, backbone, outputs, reference, flops)


@pytest.mark.benchmark(group="backbone")
def test_backbone_spconv(benchmark, model, setup):
    device, args, reference, flops = setup
    from engine.session import UserError

    try:
        backbone = build_backbone("spconv", model.to(device), device)
    except UserError as exc:
        pytest.skip(str(exc))
    outputs = benchmark.pedantic(_timed(backbone, device), args=args, rounds=3, warmup_rounds=1)
    _record(benchmark, backbone, outputs, reference, flops)


@pytest.mark.benchmark(group="backbone")
def test_backbone_onnxruntime(benchmark, model, setup, tmp_path_factory):
    device, args, reference, flops = setup
    path = tmp_path_factory.mktemp("bench") / "backbone.onnx"
    export_backbone(model.cpu().state_dict(), path)
    backbone = load_backbone("onnxruntime", path, device)
    outputs = benchmark.pedantic(_timed(backbone, device), args=args, rounds=3, warmup_rounds=2)
    _record(benchmark, backbone, outputs, reference, flops)


@pytest.mark.benchmark(group="backbone")
def test_backbone_gemm_floor(benchmark, setup):
    device, _, _, flops = setup
    g = torch.Generator().manual_seed(0)
    rows, weight_t = torch.randn(98_000, 64, generator=g).to(device), torch.randn(64, 64, generator=g).to(device)
    benchmark.pedantic(_timed(lambda x: linear(x, weight_t), device), args=(rows,), rounds=20, warmup_rounds=2)
    rate = 2.0 * rows.shape[0] * 64 * 64 / benchmark.stats.stats.median
    benchmark.extra_info.update(gemm_gflop_per_s=rate / 1e9, backbone_floor_s=flops / rate)
