"""Export round trip: ``backbone.onnx`` on ONNX Runtime (CPU) against the reference DKNet."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from engine.backbone.folded import OUTPUT_NAMES
from engine.backbone.kernel_maps import build_kernel_maps
from engine.preprocess import voxelize
from engine.synthetic import generate_scene
from export.gather_conv import GatherBackbone
from export.metadata import read_metadata
from export.onnx import OPSET, input_names, main
from tests.export.conftest import TOLERANCE, random_scene
from tests.export.test_gather_conv import assert_matches_reference

CPU = torch.device("cpu")


def _scene(name: str):
    if name == "one point":
        return random_scene(1, seed=0)
    if name == "two points, one voxel":
        return np.array([[0.0, 0.0, 0.0], [0.001, 0.002, 0.003]]), np.array([[255, 0, 0], [0, 0, 255]], np.uint8)
    if name == "random 700":
        return random_scene(700, seed=7, extent_m=1.0)
    room = generate_scene(4000, seed=2)
    return room.vertices_m.astype(np.float64), room.colors


def _run_onnx(path, spconv_backbone, xyz, rgb, reference: bool = True):
    """(reference PointOutputs or None, ONNX Runtime outputs as tensors) for one scene."""
    vox = voxelize(xyz, rgb, CPU)
    ref = None
    if reference:
        with torch.no_grad():
            ref = spconv_backbone(vox.voxel_features, vox.voxel_coords, vox.spatial_shape, vox.point_to_voxel)
    maps = build_kernel_maps(vox.voxel_coords, vox.spatial_shape)
    feeds = {"voxel_features": vox.voxel_features.numpy(), "point_to_voxel": vox.point_to_voxel.numpy(),
             **{name: t.numpy() for name, t in maps.named().items()}}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return ref, [torch.from_numpy(o) for o in session.run(list(OUTPUT_NAMES), feeds)]


@pytest.mark.parametrize("scene", ["one point", "two points, one voxel", "random 700", "synthetic room"])
def test_onnxruntime_cpu_equals_reference(onnx_fp32, spconv_backbone, scene):
    xyz, rgb = _scene(scene)
    ref, ours = _run_onnx(onnx_fp32, spconv_backbone, xyz, rgb)
    assert [o.shape[0] for o in ours] == [xyz.shape[0]] * len(OUTPUT_NAMES)
    assert_matches_reference(ref, *ours, TOLERANCE[torch.float32])


def test_scene_with_an_empty_level(onnx_fp32, random_model):
    """Two voxels at x = 130 and y = 130 on a 131-cell grid: both parents fall outside the level-2
    grid, so levels 2-7 are empty. spconv cannot run this (it asserts on empty tensors); the
    exported graph gives what the formulation says: no contribution from below level 1."""
    xyz, rgb = np.array([[0.0, 2.605, 0.0], [2.605, 0.0, 0.0]]), np.array([[1, 2, 3], [4, 5, 6]], np.uint8)
    vox = voxelize(xyz, rgb, CPU)
    maps = build_kernel_maps(vox.voxel_coords, vox.spatial_shape)
    assert maps.num_voxels == [2, 0, 0, 0, 0, 0, 0]
    _, ours = _run_onnx(onnx_fp32, None, xyz, rgb, reference=False)
    with torch.no_grad():
        expected = GatherBackbone(random_model.state_dict())(vox.voxel_features, vox.point_to_voxel, *maps.tensors())
    for got, want in zip(ours, expected, strict=True):
        torch.testing.assert_close(got, want, **TOLERANCE[torch.float32])


def test_fp16_export_runs_in_float16_with_float32_io(onnx_fp16, spconv_backbone):
    model = onnx.load(str(onnx_fp16))
    weights = [i for i in model.graph.initializer if i.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)]
    assert weights and all(i.data_type == onnx.TensorProto.FLOAT16 for i in weights)
    io = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]}
    assert io["voxel_features"] == onnx.TensorProto.FLOAT and io["semantic_scores"] == onnx.TensorProto.FLOAT
    assert read_metadata(onnx_fp16)["precision"] == "fp16"
    ref, ours = _run_onnx(onnx_fp16, spconv_backbone, *_scene("synthetic room"))
    assert_matches_reference(ref, *ours, TOLERANCE[torch.float16])


def test_graph_inputs_metadata_and_ops(onnx_fp32):
    onnx.checker.check_model(str(onnx_fp32))
    model = onnx.load(str(onnx_fp32), load_external_data=False)
    assert [i.name for i in model.graph.input] == input_names()
    assert [o.name for o in model.graph.output] == list(OUTPUT_NAMES)
    for value in [*model.graph.input, *model.graph.output]:  # every count is a dynamic axis
        assert value.type.tensor_type.shape.dim[0].dim_param, value.name
    assert not {n.op_type for n in model.graph.node} & {"ScatterND", "ScatterElements", "Scatter", "NonZero", "Loop"}
    assert model.opset_import[0].version == OPSET
    meta = read_metadata(onnx_fp32)
    assert meta["opset"] == str(OPSET) and meta["input_names"].split(",") == input_names()
    assert meta["output_names"].split(",") == list(OUTPUT_NAMES) and meta["precision"] == "fp32"


def test_cli_needs_one_source_of_weights(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DKNET_CHECKPOINT", raising=False)
    assert main(["--out", str(tmp_path / "b.onnx")]) == 1
    assert "no weights" in capsys.readouterr().err and not (tmp_path / "b.onnx").exists()
    with pytest.raises(SystemExit):
        main(["--random-weights", "--checkpoint", "x.pth", "--out", str(tmp_path / "b.onnx")])


def test_cli_bad_checkpoint_is_one_line_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    assert main(["--checkpoint", str(bad), "--out", str(tmp_path / "b.onnx")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: checkpoint") and "\n" not in err
    assert list(tmp_path.iterdir()) == [bad]


def test_cli_exports_random_weights(tmp_path, capsys):
    out = tmp_path / "b.onnx"
    assert main(["--random-weights", "--seed", "3", "--out", str(out)]) == 0
    assert read_metadata(out)["weights"] == "random (seed 3)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.onnx"]  # no temporary file left


def test_metadata_holds_the_weights_fingerprint(onnx_fp32, onnx_fp16, random_model):
    from engine.checkpoint import weights_fingerprint

    expected = weights_fingerprint(random_model.state_dict())
    assert read_metadata(onnx_fp32)["weights_sha256"] == expected == read_metadata(onnx_fp16)["weights_sha256"]


def test_run_refuses_an_export_of_other_weights(onnx_fp32, tmp_path, capsys):
    from engine import run

    np.save(tmp_path / "s.npy", random_scene(50, seed=1)[0])
    code = run.main([str(tmp_path / "s.npy"), "--random-weights", "--seed", "1", "--backbone", "onnxruntime",
                     "--engine-file", str(onnx_fp32), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "exported from other weights (random (seed 0))" in err


def test_cli_reads_the_checkpoint_from_the_environment(tmp_path, capsys, monkeypatch, random_model):
    torch.save({"model": random_model.state_dict()}, tmp_path / "env.pth")
    monkeypatch.setenv("DKNET_CHECKPOINT", str(tmp_path / "env.pth"))
    assert main(["--out", str(tmp_path / "b.onnx")]) == 0
    assert read_metadata(tmp_path / "b.onnx")["weights"] == "env.pth"
