"""Backbone benchmarks on a 150k-point synthetic scene (``pytest --benchmark-only``): the spconv
CPU backbone (the reference variant) against the exported backbone on ONNX Runtime's CPU provider.

Both variants take the voxelized scene and return ``PointOutputs`` (U-Net and point heads); the
ONNX Runtime time includes building the kernel maps, which are also timed alone. ``extra_info``
carries the voxel count per level and the largest difference from the reference's outputs.
spconv's CPU build runs single-threaded (``engine.backbone.spconv_unet.spconv_threads``); ONNX Runtime uses its
default intra-op threads. ONNX Runtime's first two calls grow its memory arena (gigabytes of
gathered neighbour rows) and take 1.5-2x longer, so its variant warms up twice.
"""

from __future__ import annotations

import pytest
import torch

from engine.backbone.kernel_maps import build_kernel_maps
from engine.checkpoint import randomize_weights
from engine.model import build_model
from engine.preprocess import voxelize
from engine.synthetic import generate_scene
from export.onnx import export_backbone
from export.runtime import load_backbone

POINTS = 150_000
FIELDS = ("semantic_scores", "offsets", "heat_logits", "mask_features", "kernel_features")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    device = torch.device("cpu")
    model = build_model()
    randomize_weights(model, seed=0)
    synthetic = generate_scene(POINTS, seed=1)
    vox = voxelize(synthetic.vertices_m, synthetic.colors, device)
    args = (vox.voxel_features, vox.voxel_coords, vox.spatial_shape, vox.point_to_voxel)
    path = tmp_path_factory.mktemp("bench") / "backbone.onnx"
    export_backbone(model.state_dict(), path)
    with torch.no_grad():
        reference = model(*args)
    return model, load_backbone("onnxruntime", path, device), args, reference


def _max_difference(outputs, reference) -> float:
    return max(float((getattr(outputs, f) - getattr(reference, f)).abs().max()) for f in FIELDS)


@pytest.mark.benchmark(group="backbone")
def test_backbone_spconv_cpu(benchmark, scene):
    model, _, args, _ = scene
    benchmark.extra_info.update(reference=True, voxels=int(args[0].shape[0]))
    benchmark.pedantic(torch.no_grad()(model), args=args, rounds=3, warmup_rounds=1)


@pytest.mark.benchmark(group="backbone")
def test_backbone_onnxruntime_cpu(benchmark, scene):
    _, backbone, args, reference = scene
    outputs = benchmark.pedantic(backbone, args=args, rounds=3, warmup_rounds=2)
    benchmark.extra_info.update(provider=backbone.provider, max_abs_difference=_max_difference(outputs, reference))


@pytest.mark.benchmark(group="backbone")
def test_kernel_maps_cpu(benchmark, scene):
    _, _, args, _ = scene
    maps = benchmark.pedantic(build_kernel_maps, args=(args[1], args[2]), rounds=5, warmup_rounds=1)
    benchmark.extra_info["voxels_per_level"] = maps.num_voxels
