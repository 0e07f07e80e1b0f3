"""The TensorRT builder and runner: clear one-line errors without TensorRT or a GPU everywhere;
build, run and compare with the reference where TensorRT and a CUDA GPU exist."""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest
import torch

from engine.backbone.kernel_maps import LEVELS
from engine.pipeline import run_backbone
from export import tensorrt as trt_export
from export.onnx import input_names
from export.runtime import BackendError, load_backbone
from tests.export.conftest import TOLERANCE, random_scene

HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()
needs_tensorrt = pytest.mark.skipif(not HAVE_TENSORRT, reason="needs TensorRT 10.x and a CUDA GPU")


def test_builder_without_tensorrt_is_one_line_error(onnx_fp32, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    plan = tmp_path / "backbone.plan"
    assert trt_export.main([str(onnx_fp32), "--out", str(plan)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: TensorRT is not installed") and "tensorrt-cu12>=10,<11" in err and "\n" not in err
    assert not plan.exists()


def test_other_tensorrt_generation_is_refused(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="11.4.0"))
    with pytest.raises(trt_export.TensorRTError, match=r"TensorRT 11.4.0 found; .* 10.x API"):
        trt_export.import_tensorrt()


def test_runner_without_tensorrt_is_backend_error(onnx_fp32, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    plan = tmp_path / "backbone.plan"
    plan.write_bytes(b"plan")
    with pytest.raises(BackendError, match="TensorRT is not installed"):
        load_backbone("tensorrt", plan, torch.device("cpu"))


def test_fp16_plan_needs_fp16_onnx(onnx_fp32, tmp_path):
    with pytest.raises(trt_export.TensorRTError, match="export with python -m export.onnx --fp16"):
        trt_export.build_engine(onnx_fp32, tmp_path / "b.plan", fp16=True)


def test_profile_covers_every_input():
    shapes = trt_export.profile_shapes(max_voxels=1000, opt_voxels=300, max_points=5000)
    assert sorted(shapes) == sorted(input_names())
    for name, (low, opt, high) in shapes.items():
        assert all(a <= b <= c for a, b, c in zip(low, opt, high, strict=True)), name
        assert low[1:] == opt[1:] == high[1:], name  # only the leading count is dynamic
    bounds = trt_export.level_voxel_bounds(1000, 300)
    assert [b[2] for b in bounds] == [1000, 1000, 500, 250, 125, 62, 31] and len(bounds) == LEVELS
    assert shapes["down_map_1"][2][0] == 1000 and shapes["up_index_3"][2][0] == 500
    assert shapes["point_to_voxel"][2] == (5000,)


@needs_tensorrt
@pytest.mark.parametrize("fp16", [False, True])
def test_tensorrt_plan_equals_reference(request, spconv_backbone, tmp_path, fp16):
    onnx_path = request.getfixturevalue("onnx_fp16" if fp16 else "onnx_fp32")
    plan = tmp_path / "backbone.plan"
    trt_export.build_engine(onnx_path, plan, fp16=fp16, max_voxels=20_000, opt_voxels=5_000, max_points=50_000)
    assert plan.is_file() and (tmp_path / "backbone.plan.timing.cache").is_file()
    device = torch.device("cuda")
    backbone = load_backbone("tensorrt", plan, device)
    xyz, rgb = random_scene(3000, seed=6, extent_m=2.0)
    with torch.no_grad():
        ref = run_backbone(spconv_backbone, xyz, rgb, torch.device("cpu"))
    ours = run_backbone(backbone, xyz, rgb, device)
    tolerance = TOLERANCE[torch.float16 if fp16 else torch.float32]
    for field in ("semantic_scores", "offsets", "mask_features"):
        torch.testing.assert_close(getattr(ours.points, field).cpu(), getattr(ref.points, field), **tolerance)


@needs_tensorrt
def test_tensorrt_runner_names_the_exceeded_bound(onnx_fp32, tmp_path):
    plan = tmp_path / "small.plan"
    trt_export.build_engine(onnx_fp32, plan, max_voxels=50, opt_voxels=20, max_points=100)
    backbone = load_backbone("tensorrt", plan, torch.device("cuda"))
    xyz, rgb = random_scene(3000, seed=6)
    with pytest.raises(BackendError, match="rebuild with a larger"):
        run_backbone(backbone, xyz, rgb, torch.device("cuda"))
