"""The ONNX Runtime backbone: same PointOutputs and same instances as the spconv backbone;
one-line errors for files it cannot use."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from engine.pipeline import run_backbone, run_decoding, run_encoding, run_post_processing
from engine.synthetic import generate_scene
from export.runtime import BackendError, load_backbone
from tests.export.conftest import TOLERANCE, random_scene

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def ort_backbone(onnx_fp32):
    return load_backbone("onnxruntime", onnx_fp32, CPU)


def test_runner_is_called_like_dknet_forward(ort_backbone, spconv_backbone):
    assert ort_backbone.name == "onnxruntime" and ort_backbone.provider == "onnxruntime CPUExecutionProvider"
    xyz, rgb = random_scene(1500, seed=4, extent_m=2.0)
    with torch.no_grad():
        ref = run_backbone(spconv_backbone, xyz, rgb, CPU)
    ours = run_backbone(ort_backbone, xyz, rgb, CPU)
    assert torch.equal(ours.points.object_idx, ref.points.object_idx)
    for field in ("semantic_scores", "offsets", "heat_logits", "mask_features", "kernel_features"):
        torch.testing.assert_close(getattr(ours.points, field), getattr(ref.points, field),
                                   **TOLERANCE[torch.float32], msg=lambda m, f=field: f"{f}: {m}")
    torch.testing.assert_close(ours.heat, ref.heat, **TOLERANCE[torch.float32])


def _instances(backbone, model, xyz, rgb, segments):
    with torch.no_grad():
        result = run_backbone(backbone, xyz, rgb, CPU)
        encoded = run_encoding(model, result)
        post = run_post_processing(run_decoding(result, encoded), result, segments)
    return encoded, post


def test_same_instances_as_spconv_backbone(ort_backbone, spconv_backbone, random_model):
    room = generate_scene(6000, seed=5)
    xyz, segments = room.vertices_m.astype(np.float64), room.segments.astype(np.int64)
    ref_enc, ref = _instances(spconv_backbone, random_model, xyz, room.colors, segments)
    enc, ours = _instances(ort_backbone, random_model, xyz, room.colors, segments)
    assert ref.masks.shape[0] > 0  # the comparison covers real instances
    assert np.array_equal(enc.candidates.points, ref_enc.candidates.points)
    assert torch.equal(enc.instance_centers, ref_enc.instance_centers)
    assert torch.equal(ours.masks, ref.masks) and torch.equal(ours.classes, ref.classes)
    torch.testing.assert_close(ours.scores, ref.scores, **TOLERANCE[torch.float32])


def test_missing_foreign_and_corrupt_files_are_one_line_errors(tmp_path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x00not onnx")
    foreign = tmp_path / "foreign.onnx"
    node = onnx.helper.make_node("Relu", ["x"], ["y"])
    value = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph([node], "g", [value("x", onnx.TensorProto.FLOAT, [1])],
                                   [value("y", onnx.TensorProto.FLOAT, [1])])
    onnx.save(onnx.helper.make_model(graph), str(foreign))
    for path, expected in [(tmp_path / "missing.onnx", "no such file"), (corrupt, "cannot load"),
                           (foreign, "not a DKNet backbone")]:
        with pytest.raises(BackendError, match=expected) as info:
            load_backbone("onnxruntime", path, CPU)
        assert "\n" not in str(info.value)
    with pytest.raises(BackendError, match="unknown backend"):
        load_backbone("openvino", corrupt, CPU)
