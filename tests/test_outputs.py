"""Writing results (engine/outputs.py): exact submission format, PLY round trip, PNG, atomicity."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from plyfile import PlyData

from engine import outputs
from engine.outputs import write_instance_ply, write_scannet_submission, write_scene_outputs
from engine.pictures.palette import UNASSIGNED_RGB, instance_colors
from engine.scene_io import read_scene
from tests.result_scenes import random_result

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _savetxt_bytes(mask: np.ndarray) -> bytes:
    """What the official test script writes: np.savetxt(path, mask.astype(int), fmt='%d')."""
    buffer = io.BytesIO()
    np.savetxt(buffer, mask.astype(np.int64), fmt="%d")
    return buffer.getvalue()


def _entries(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*")}


# ---------------------------------------------------------------------------------------------
# ScanNet submission


def test_submission_exact_format(tmp_path):
    masks = np.array([[1, 0, 1, 1, 0], [0, 1, 0, 0, 0], [0, 0, 0, 0, 1]], dtype=bool)
    nyu40_ids = np.array([5, 39, 3])
    scores = np.array([0.5, 1.0, 0.12344])
    summary = write_scannet_submission(tmp_path, "scene0011_00", masks, nyu40_ids, scores)

    assert summary == tmp_path / "scene0011_00.txt"
    assert summary.read_bytes() == (
        b"predicted_masks/scene0011_00_000.txt 5 0.5000\n"
        b"predicted_masks/scene0011_00_001.txt 39 1.0000\n"
        b"predicted_masks/scene0011_00_002.txt 3 0.1234"
    )
    assert (tmp_path / "predicted_masks/scene0011_00_000.txt").read_bytes() == b"1\n0\n1\n1\n0\n"
    for i, mask in enumerate(masks):
        data = (tmp_path / f"predicted_masks/scene0011_00_{i:03d}.txt").read_bytes()
        assert data == _savetxt_bytes(mask), f"mask {i} differs from np.savetxt output"
    assert _entries(tmp_path) == {"scene0011_00.txt", "predicted_masks"} | {
        f"predicted_masks/scene0011_00_{i:03d}.txt" for i in range(3)
    }


def test_submission_mask_files_equal_masks(tmp_path):
    _, _, masks, nyu40_ids, scores = random_result(num_points=1234, num_instances=12, seed=3)
    write_scannet_submission(tmp_path, "s", masks, nyu40_ids, scores)
    lines = (tmp_path / "s.txt").read_text().split("\n")
    assert len(lines) == 12
    for i, line in enumerate(lines):
        name, label, confidence = line.split(" ")
        assert name == f"predicted_masks/s_{i:03d}.txt"
        assert int(label) == nyu40_ids[i]
        assert confidence == f"{scores[i]:.4f}" and len(confidence.split(".")[1]) == 4
        back = np.loadtxt(tmp_path / name, dtype=np.int64)
        np.testing.assert_array_equal(back.astype(bool), masks[i], err_msg=f"mask {i}")
    assert (tmp_path / "predicted_masks/s_011.txt").exists()


def test_submission_no_instances(tmp_path):
    summary = write_scannet_submission(tmp_path, "empty", np.zeros((0, 50), bool), [], [])
    assert summary.read_bytes() == b""
    assert (tmp_path / "predicted_masks").is_dir()
    assert list((tmp_path / "predicted_masks").iterdir()) == []


def test_submission_integer_masks_and_bad_inputs(tmp_path):
    write_scannet_submission(tmp_path, "ints", np.array([[0, 1, 1]], np.int64), [7], [0.25])
    assert (tmp_path / "predicted_masks/ints_000.txt").read_bytes() == b"0\n1\n1\n"
    with pytest.raises(ValueError, match="bool"):
        write_scannet_submission(tmp_path, "f", np.array([[0.2, 0.9]]), [7], [0.5])
    with pytest.raises(ValueError, match="2 masks"):
        write_scannet_submission(tmp_path, "n", np.zeros((2, 3), bool), [7], [0.5, 0.1])
    for bad_name in ("", "../up", "a/b", ".hidden"):
        with pytest.raises(ValueError, match="scene name"):
            write_scannet_submission(tmp_path, bad_name, np.zeros((1, 3), bool), [7], [0.5])


def test_submission_rewrite_removes_stale_masks_of_that_scene_only(tmp_path):
    _, _, masks, ids, scores = random_result(num_points=100, num_instances=5)
    write_scannet_submission(tmp_path, "a", masks, ids, scores)
    write_scannet_submission(tmp_path, "a_1", masks, ids, scores)  # a different scene
    write_scannet_submission(tmp_path, "a", masks[:2], ids[:2], scores[:2])
    remaining = sorted(p.name for p in (tmp_path / "predicted_masks").iterdir())
    assert remaining == ["a_000.txt", "a_001.txt"] + [f"a_1_{i:03d}.txt" for i in range(5)]
    assert (tmp_path / "a.txt").read_text().count("\n") == 1


def test_submission_failure_leaves_nothing(tmp_path, monkeypatch):
    _, _, masks, ids, scores = random_result(num_points=100, num_instances=5)
    real_write_bytes = Path.write_bytes
    calls = []

    def failing_write_bytes(self, data):
        calls.append(self)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real_write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", failing_write_bytes)
    with pytest.raises(OSError, match="No space"):
        write_scannet_submission(tmp_path, "scene0000_00", masks, ids, scores)
    assert len(calls) == 3
    assert _entries(tmp_path) == set()


# ---------------------------------------------------------------------------------------------
# Instance PLY


def test_instance_ply_round_trip(tmp_path):
    xyz, faces, masks, _, _ = random_result(num_points=800, num_instances=6)
    overlap = masks.copy()
    overlap[5, overlap[2]] = True  # points in 2 and 5: the first (2) wins
    path = write_instance_ply(tmp_path / "x.ply", xyz, faces, overlap)

    ply = PlyData.read(str(path))
    assert ply.text is False
    vertex = ply["vertex"].data
    assert [(name, vertex.dtype[name]) for name in vertex.dtype.names] == [
        ("x", np.float32), ("y", np.float32), ("z", np.float32),
        ("red", np.uint8), ("green", np.uint8), ("blue", np.uint8), ("instance", np.int32),
    ]
    assert "property list uchar int vertex_indices" in str(ply.header)
    xyz_back = np.stack([vertex["x"], vertex["y"], vertex["z"]], 1)
    np.testing.assert_array_equal(xyz_back, xyz.astype(np.float32))
    expected = np.where(overlap.any(0), overlap.argmax(0), -1)
    np.testing.assert_array_equal(vertex["instance"], expected)
    assert (vertex["instance"] == 5).sum() == (masks[5] & ~masks[2]).sum()

    rgb = np.stack([vertex["red"], vertex["green"], vertex["blue"]], 1)
    palette = instance_colors(6)
    for i in range(6):
        inside = expected == i
        assert inside.any()
        np.testing.assert_array_equal(rgb[inside], np.broadcast_to(palette[i], (inside.sum(), 3)))
    assert (rgb[expected == -1] == UNASSIGNED_RGB).all()
    assert len(np.unique(palette, axis=0)) == 6
    np.testing.assert_array_equal(np.stack(ply["face"].data["vertex_indices"]), faces)

    scene = read_scene(path)  # and our own reader takes it back
    np.testing.assert_array_equal(scene.faces, faces)
    np.testing.assert_array_equal(scene.rgb, rgb)


def test_instance_ply_without_faces_and_instances(tmp_path):
    xyz = np.random.default_rng(0).random((10, 3))
    path = write_instance_ply(tmp_path / "bare.ply", xyz, None, np.zeros((0, 10), bool))
    ply = PlyData.read(str(path))
    assert [e.name for e in ply.elements] == ["vertex"]
    assert (ply["vertex"]["instance"] == -1).all()
    assert (ply["vertex"]["red"] == UNASSIGNED_RGB[0]).all()


def test_instance_ply_rejects_bad_faces(tmp_path):
    xyz = np.zeros((4, 3))
    with pytest.raises(ValueError, match="outside"):
        write_instance_ply(tmp_path / "bad.ply", xyz, np.array([[0, 1, 4]]), np.zeros((1, 4), bool))
    assert _entries(tmp_path) == set()


# ---------------------------------------------------------------------------------------------
# All of a scene, as one unit


def test_scene_outputs(tmp_path):
    xyz, faces, masks, ids, scores = random_result(num_points=2000, num_instances=4)
    out = tmp_path / "out"
    paths = write_scene_outputs(out, "scene0011_00", xyz, faces, masks, ids, scores)
    assert paths == [out / "scene0011_00.txt", out / "scene0011_00_instances.ply", out / "scene0011_00.png"]
    assert _entries(out) == {
        "scene0011_00.txt", "scene0011_00_instances.ply", "scene0011_00.png", "predicted_masks",
    } | {f"predicted_masks/scene0011_00_{i:03d}.txt" for i in range(4)}
    for line in paths[0].read_text().split("\n"):
        assert (out / line.split(" ")[0]).is_file()
    assert paths[2].read_bytes()[:8] == PNG_MAGIC
    np.testing.assert_array_equal(read_scene(paths[1]).faces, faces)


def _existing_otherrandom_result(out: Path) -> set[str]:
    xyz, faces, masks, ids, scores = random_result(num_points=300, num_instances=2, seed=9)
    write_scene_outputs(out, "other", xyz, None, masks, ids, scores)
    return _entries(out)


def test_scene_outputs_failure_while_staging_leaves_nothing(tmp_path, monkeypatch):
    out = tmp_path / "out"
    before = _existing_otherrandom_result(out)
    xyz, faces, masks, ids, scores = random_result(num_points=500, num_instances=3)
    staged = []

    def broken_renderer(path, *args, **kwargs):
        staged.extend(p.name for p in Path(path).parent.rglob("*"))  # what was staged before the failure
        raise RuntimeError("renderer exploded")

    monkeypatch.setattr(outputs, "render_instances_png", broken_renderer)
    with pytest.raises(RuntimeError, match="exploded"):
        write_scene_outputs(out, "scene0011_00", xyz, faces, masks, ids, scores)
    assert "scene0011_00_instances.ply" in staged and "scene0011_00.txt" in staged  # it failed midway
    assert _entries(out) == before, "files of the failed scene (or its staging directory) remain"


def test_scene_outputs_failure_while_committing_is_rolled_back(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    xyz, faces, masks, ids, scores = random_result(num_points=500, num_instances=3)
    real_replace = os.replace
    moved_into_out = []

    def failing_replace(src, dst, *args, **kwargs):
        dst = Path(dst)
        if dst.parent in (out, out / "predicted_masks"):
            moved_into_out.append(dst.name)
            if dst.name.endswith(".png"):
                raise OSError(5, "Input/output error")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="Input/output"):
        write_scene_outputs(out, "scene0011_00", xyz, faces, masks, ids, scores)
    assert "scene0011_00_instances.ply" in moved_into_out and "scene0011_00_000.txt" in moved_into_out
    assert _entries(out) == set(), f"left behind: {_entries(out)}"
