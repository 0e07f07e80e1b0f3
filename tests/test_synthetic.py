"""Synthetic ScanNet-like scenes (engine/synthetic.py): determinism, geometry, and ScanNet's file layout."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from plyfile import PlyData, PlyElement
from scipy.spatial import cKDTree

from engine.synthetic import (
    LABEL_TO_NYU40,
    NYU40_PALETTE,
    SyntheticScene,
    generate_scene,
    instance_gt,
    write_scannet_scene,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
ARRAYS = ("vertices_m", "colors", "faces", "nyu40", "instance_ids", "segments")
# ScanNet's *_vh_clean_2.ply header; the labels.ply adds a ushort label after alpha.
MESH_HEADER = [
    "ply", "format binary_little_endian 1.0", "comment VCGLIB generated", "element vertex {n}",
    "property float x", "property float y", "property float z", "property uchar red",
    "property uchar green", "property uchar blue", "property uchar alpha",
    "element face {f}", "property list uchar int vertex_indices", "end_header",
]
LABEL_HEADER = MESH_HEADER[:11] + ["property ushort label"] + MESH_HEADER[11:]
STUFF = ("wall", "floor")
SMALL_ITEMS = ("box", "lamp")  # rest on other furniture, so they touch it


@pytest.fixture(scope="module")
def scene_50k() -> SyntheticScene:
    return generate_scene(50_000, seed=1)


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[SyntheticScene, Path]:
    scene = generate_scene(5_000, seed=5)  # seed 5 has unannotated items and non-benchmark classes
    out = tmp_path_factory.mktemp("scannet")
    mesh = write_scannet_scene(scene, out, "scene0042_00")
    return scene, mesh


def _first_mismatch(a: np.ndarray, b: np.ndarray) -> str:
    if a.shape != b.shape:
        return f"shapes {a.shape} != {b.shape}"
    bad = np.argwhere(a != b)
    return "equal" if len(bad) == 0 else f"first mismatch at {tuple(bad[0])}: {a[tuple(bad[0])]} != {b[tuple(bad[0])]}"


def _read(path: Path) -> PlyData:
    return PlyData.read(str(path), known_list_len={"face": {"vertex_indices": 3}})


# ------------------------------------------------------------------------------------------ arrays


def test_same_seed_gives_identical_arrays():
    a, b = generate_scene(5_000, seed=3), generate_scene(5_000, seed=3)
    for name in ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y), f"{name}: {_first_mismatch(x, y)}"
    assert a.instance_labels == b.instance_labels and a.room_size_m == b.room_size_m


def test_different_seeds_differ():
    a, b = generate_scene(5_000, seed=0), generate_scene(5_000, seed=1)
    assert a.room_size_m != b.room_size_m
    assert a.num_points != b.num_points or not np.array_equal(a.vertices_m, b.vertices_m)
    assert a.instance_labels != b.instance_labels


def test_layout_depends_on_seed_not_density():
    sparse, dense = generate_scene(20_000, seed=4), generate_scene(60_000, seed=4)
    assert sparse.instance_labels == dense.instance_labels
    assert sparse.room_size_m == dense.room_size_m


@pytest.mark.parametrize("num_points", [1_000, 2_000, 5_000, 50_000])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vertex_count_within_tolerance(num_points, seed):
    scene = generate_scene(num_points, seed=seed)
    assert abs(scene.num_points / num_points - 1) <= 0.10, (num_points, seed, scene.num_points)


def test_bad_arguments_are_errors():
    with pytest.raises(ValueError, match="at least"):
        generate_scene(500)
    with pytest.raises(ValueError, match="seed"):
        generate_scene(5_000, seed=-1)


def test_shapes_and_dtypes(scene_50k):
    n = scene_50k.num_points
    assert scene_50k.vertices_m.shape == (n, 3) and scene_50k.vertices_m.dtype == np.float32
    assert scene_50k.colors.shape == (n, 3) and scene_50k.colors.dtype == np.uint8
    assert scene_50k.faces.ndim == 2 and scene_50k.faces.shape[1] == 3 and scene_50k.faces.dtype == np.int32
    for name in ("nyu40", "instance_ids", "segments"):
        array = getattr(scene_50k, name)
        assert array.shape == (n,) and array.dtype == np.int32, name
    assert np.isfinite(scene_50k.vertices_m).all()
    assert scene_50k.colors.std(axis=0).min() > 10, "colours should vary between objects"


def test_room_geometry(scene_50k):
    xyz = scene_50k.vertices_m.astype(np.float64)
    width, depth, height = scene_50k.room_size_m
    assert 4.0 <= width <= 8.0 and 4.0 <= depth <= 8.0
    assert abs(np.percentile(xyz[scene_50k.nyu40 == 2, 2], 50)) < 0.01, "floor at z = 0"
    assert xyz[:, 2].min() > -0.02 and xyz[:, 2].max() < height + 0.02
    extent = np.ptp(xyz[:, :2], axis=0)
    assert extent.max() <= np.hypot(width, depth) + 0.05 and extent.min() >= min(width, depth) - 0.05


def test_faces_are_valid_triangles(scene_50k):
    faces, xyz = scene_50k.faces.astype(np.int64), scene_50k.vertices_m.astype(np.float64)
    assert faces.min() >= 0 and faces.max() < scene_50k.num_points
    distinct = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
    assert distinct.all(), f"repeated index in face {np.flatnonzero(~distinct)[0]}"
    edge1, edge2 = xyz[faces[:, 1]] - xyz[faces[:, 0]], xyz[faces[:, 2]] - xyz[faces[:, 0]]
    area = 0.5 * np.linalg.norm(np.cross(edge1, edge2), axis=1)
    assert area.min() > 1e-7, f"degenerate face {int(area.argmin())} (area {area.min():.2e} m^2)"
    used = np.zeros(scene_50k.num_points, dtype=bool)
    used[faces.ravel()] = True
    assert used.all(), f"{int((~used).sum())} vertices belong to no face"
    # Faces never join two objects: the mesh segmentator must not see bridges between them.
    ids = scene_50k.instance_ids[faces]
    assert (ids == ids[:, :1]).all(), "a face spans two instances"


def test_vertex_order_is_shuffled(scene_50k):
    # Consumers must not rely on objects being contiguous vertex ranges.
    changes = np.count_nonzero(np.diff(scene_50k.instance_ids))
    assert changes > scene_50k.num_points // 4
    ordered = generate_scene(5_000, seed=1, shuffle=False)
    assert np.count_nonzero(np.diff(ordered.instance_ids)) < 100


@pytest.mark.parametrize("seed", range(5))
def test_objects_classes_and_instances(seed):
    scene = generate_scene(50_000, seed=seed)
    labels = scene.instance_labels
    objects = [label for label in labels if label not in STUFF]
    benchmark = {label for label in objects if label not in SMALL_ITEMS}
    assert len(objects) >= 5 and len(benchmark) >= 3, labels
    assert labels.count("floor") == 1 and labels.count("wall") == 4
    assert set(labels) <= set(LABEL_TO_NYU40)
    ids = np.unique(scene.instance_ids)
    assert np.array_equal(ids[ids > 0], np.arange(1, len(labels) + 1)), "every instance has vertices"
    for k, label in enumerate(labels, start=1):
        nyu = np.unique(scene.nyu40[scene.instance_ids == k])
        assert nyu.tolist() == [LABEL_TO_NYU40[label]], (k, label, nyu)
    assert (scene.nyu40[scene.instance_ids == 0] == 0).all()


def test_objects_do_not_touch(scene_50k):
    # Furniture, doors, windows, pictures and curtains keep 5 cm between bounding boxes; only the
    # small items on top of furniture touch what carries them.
    xyz = scene_50k.vertices_m.astype(np.float64)
    solid = [k for k, label in enumerate(scene_50k.instance_labels, start=1)
             if label not in STUFF and label not in SMALL_ITEMS]
    owner = np.where(np.isin(scene_50k.instance_ids, solid), scene_50k.instance_ids, 0)
    tree_points = np.flatnonzero(owner)
    tree = cKDTree(xyz[tree_points])
    for k in solid:
        mine = np.flatnonzero(owner == k)
        neighbours = tree.query_ball_point(xyz[mine], r=0.03)
        touching = {int(owner[tree_points[j]]) for hits in neighbours for j in hits} - {k}
        assert not touching, f"instance {k} ({scene_50k.instance_labels[k - 1]}) touches {touching}"


def test_segments_stay_inside_objects(scene_50k):
    seg, inst = scene_50k.segments, scene_50k.instance_ids
    num = int(seg.max()) + 1
    assert np.array_equal(np.unique(seg), np.arange(num)), "segment ids are 0..S-1, none empty"
    pairs = np.unique(np.stack((seg, inst), axis=1), axis=0)
    assert len(pairs) == num, "a segment covers two instances"
    size = np.bincount(seg)
    assert np.median(size) >= 4


def test_instance_gt_encoding(scene_50k):
    gt = instance_gt(scene_50k)
    assert gt.dtype == np.int64 and gt.shape == (scene_50k.num_points,)
    annotated = scene_50k.instance_ids > 0
    assert (gt[~annotated] == 0).all()
    assert np.array_equal(gt[annotated] // 1000, scene_50k.nyu40[annotated])
    assert np.array_equal(gt[annotated] % 1000, scene_50k.instance_ids[annotated])


# ------------------------------------------------------------------------------------------ files


def test_written_file_names(written):
    scene, mesh = written
    out = mesh.parent
    assert mesh == out / "scene0042_00_vh_clean_2.ply"
    expected = {"scene0042_00_vh_clean_2.ply", "scene0042_00_vh_clean_2.labels.ply",
                "scene0042_00_vh_clean_2.0.010000.segs.json", "scene0042_00.aggregation.json"}
    assert set(os.listdir(out)) == expected, "no temporary files may be left behind"


@pytest.mark.parametrize("kind", ["mesh", "labels"])
def test_ply_layout_matches_scannet(written, kind):
    scene, mesh = written
    path = mesh if kind == "mesh" else mesh.with_name("scene0042_00_vh_clean_2.labels.ply")
    raw = path.read_bytes()
    header = raw[: raw.index(b"end_header\n") + len(b"end_header")].decode("ascii").split("\n")
    expected = [line.format(n=scene.num_points, f=len(scene.faces))
                for line in (MESH_HEADER if kind == "mesh" else LABEL_HEADER)]
    assert header == expected
    record = 16 if kind == "mesh" else 18
    assert len(raw) == len("\n".join(header)) + 1 + record * scene.num_points + 13 * len(scene.faces)

    ply = PlyData.read(str(path))  # plain read, no hints: what any ScanNet tool would do
    assert not ply.text and ply.byte_order == "<"
    assert [element.name for element in ply.elements] == ["vertex", "face"]
    vertex_types = [(p.name, p.val_dtype) for p in ply["vertex"].properties]
    assert vertex_types == [("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"),
                            ("blue", "u1"), ("alpha", "u1")] + ([("label", "u2")] if kind == "labels" else [])
    (face_prop,) = ply["face"].properties
    assert (face_prop.name, face_prop.len_dtype, face_prop.val_dtype) == ("vertex_indices", "u1", "i4")

    vertex = ply["vertex"].data
    xyz = np.stack([vertex[a] for a in "xyz"], axis=1)
    rgb = np.stack([vertex[c] for c in ("red", "green", "blue")], axis=1)
    assert np.array_equal(xyz, scene.vertices_m), _first_mismatch(xyz, scene.vertices_m)
    assert (vertex["alpha"] == 255).all()
    faces = np.stack(ply["face"].data["vertex_indices"])
    assert np.array_equal(faces, scene.faces), _first_mismatch(faces, scene.faces)
    if kind == "mesh":
        assert np.array_equal(rgb, scene.colors), _first_mismatch(rgb, scene.colors)
    else:
        assert np.array_equal(vertex["label"], scene.nyu40), _first_mismatch(vertex["label"], scene.nyu40)
        assert np.array_equal(rgb, NYU40_PALETTE[scene.nyu40])


def test_bulk_ply_writer_matches_plyfile(tmp_path):
    # The writer emits the face list in bulk; plyfile's own (row by row) writer must give the same bytes.
    scene = generate_scene(1_500, seed=7)
    mesh = write_scannet_scene(scene, tmp_path)
    vertex = PlyData.read(str(mesh))["vertex"].data
    face = np.empty(len(scene.faces), dtype=[("vertex_indices", "O")])
    face["vertex_indices"] = list(scene.faces)
    reference = io.BytesIO()
    PlyData([PlyElement.describe(np.asarray(vertex), "vertex"),
             PlyElement.describe(face, "face", val_types={"vertex_indices": "i4"})],
            text=False, byte_order="<", comments=["VCGLIB generated"]).write(reference)
    assert mesh.read_bytes() == reference.getvalue()


def test_segs_json(written):
    scene, mesh = written
    segs = json.loads(mesh.with_name("scene0042_00_vh_clean_2.0.010000.segs.json").read_text())
    assert set(segs) == {"params", "sceneId", "segIndices"} and segs["sceneId"] == "scene0042_00"
    assert len(segs["segIndices"]) == scene.num_points == len(_read(mesh)["vertex"].data)
    assert np.array_equal(np.asarray(segs["segIndices"]), scene.segments)


def test_aggregation_groups_cover_exactly_each_object(written):
    scene, mesh = written
    agg = json.loads(mesh.with_name("scene0042_00.aggregation.json").read_text())
    assert set(agg) == {"sceneId", "appId", "segGroups", "segmentsFile"}
    assert agg["segmentsFile"].endswith("scene0042_00_vh_clean_2.0.010000.segs.json")
    seg_indices = np.asarray(json.loads(
        mesh.with_name("scene0042_00_vh_clean_2.0.010000.segs.json").read_text())["segIndices"])
    groups = agg["segGroups"]
    assert [g["id"] for g in groups] == list(range(len(groups))) == [g["objectId"] for g in groups]
    assert [g["label"] for g in groups] == list(scene.instance_labels)
    claimed = np.concatenate([g["segments"] for g in groups])
    assert len(claimed) == len(np.unique(claimed)), "a segment is in two groups"
    for g in groups:
        from_files = np.isin(seg_indices, g["segments"])
        truth = scene.instance_ids == g["objectId"] + 1
        assert np.array_equal(from_files, truth), (g["objectId"], g["label"], _first_mismatch(from_files, truth))
    assert (scene.instance_ids == 0).any(), "this seed leaves some vertices unannotated"


def test_ground_truth_rebuilt_from_files_like_scannet(written):
    # ScanNet's export_train_mesh_for_evaluation.py: label ids via the raw-label map, instance ids
    # objectId + 1, both painted through the segments; gt = label * 1000 + instance.
    scene, mesh = written
    seg_indices = np.asarray(json.loads(
        mesh.with_name("scene0042_00_vh_clean_2.0.010000.segs.json").read_text())["segIndices"])
    agg = json.loads(mesh.with_name("scene0042_00.aggregation.json").read_text())
    label_ids = np.zeros(len(seg_indices), dtype=np.int64)
    instance_ids = np.zeros(len(seg_indices), dtype=np.int64)
    for group in agg["segGroups"]:
        verts = np.isin(seg_indices, group["segments"])
        label_ids[verts] = LABEL_TO_NYU40[group["label"]]
        instance_ids[verts] = group["objectId"] + 1
    gt = label_ids * 1000 + instance_ids
    assert np.array_equal(gt, instance_gt(scene)), _first_mismatch(gt, instance_gt(scene))
    labels = _read(mesh.with_name("scene0042_00_vh_clean_2.labels.ply"))["vertex"].data["label"]
    assert np.array_equal(labels, label_ids)


def test_rewrite_replaces_files(tmp_path):
    first = write_scannet_scene(generate_scene(2_000, seed=0), tmp_path)
    second_scene = generate_scene(3_000, seed=1)
    second = write_scannet_scene(second_scene, tmp_path)
    assert first == second
    assert len(_read(second)["vertex"].data) == second_scene.num_points
    assert len(os.listdir(tmp_path)) == 4


# ------------------------------------------------------------------------------------------ CLI


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def test_cli_writes_scene(tmp_path):
    out = tmp_path / "new" / "dir"
    result = _run("-m", "engine.synthetic", "--out", str(out), "--points", "3000", "--seed", "2",
                  "--name", "scene0001_00")
    assert result.returncode == 0, result.stderr
    mesh = Path(result.stdout.strip())
    assert mesh == out / "scene0001_00_vh_clean_2.ply" and mesh.is_file()
    assert sorted(os.listdir(out)) == sorted([
        "scene0001_00_vh_clean_2.ply", "scene0001_00_vh_clean_2.labels.ply",
        "scene0001_00_vh_clean_2.0.010000.segs.json", "scene0001_00.aggregation.json"])
    expected = generate_scene(3000, seed=2)
    xyz = _read(mesh)["vertex"].data
    assert len(xyz) == expected.num_points
    assert np.array_equal(xyz["x"], expected.vertices_m[:, 0])


def test_cli_rejects_tiny_scene(tmp_path):
    result = _run("-m", "engine.synthetic", "--out", str(tmp_path), "--points", "10")
    assert result.returncode == 2 and "at least" in result.stderr
    assert os.listdir(tmp_path) == []


def test_cli_help_does_not_import_torch():
    code = (
        "import runpy, sys\n"
        "sys.argv = ['engine.synthetic', '--help']\n"
        "try:\n"
        "    runpy.run_module('engine.synthetic', run_name='__main__')\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0, exit.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('ok')\n"
    )
    result = _run("-c", code)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stdout + result.stderr
    assert "--points" in result.stdout
