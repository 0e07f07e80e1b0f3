"""``python -m engine.prepare_gt`` on synthetic scenes in ScanNet's layout, and its bad inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from plyfile import PlyData

from engine import prepare_gt
from engine.instance_ap import average_precisions, match_scene
from engine.synthetic import LABEL_TO_NYU40, generate_scene, instance_gt, write_scannet_scene

NAMES = ("scene0001_00", "scene0002_01")


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> Path:
    """scans/<scene>/ with ScanNet's four files for two synthetic scenes."""
    root = tmp_path_factory.mktemp("scans")
    for seed, name in enumerate(NAMES):
        write_scannet_scene(generate_scene(3000, seed=seed), root / name, name)
    return root


@pytest.fixture
def scans_copy(scans, tmp_path) -> Path:
    return Path(shutil.copytree(scans, tmp_path / "scans"))


def _expected(seed: int) -> np.ndarray:
    """ScanNet's export encoding (synthetic.instance_gt) with walls and floor taken out."""
    gt = instance_gt(generate_scene(3000, seed=seed))
    gt[np.isin(gt // 1000, (1, 2))] = 0
    return gt


def _read(path: Path) -> np.ndarray:
    return np.loadtxt(path, dtype=np.int64)


def _run(argv, capsys):
    code = prepare_gt.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_folder_of_scenes(scans, tmp_path, capsys):
    code, out, err = _run([scans, "--out", tmp_path / "gt"], capsys)
    assert code == 0, err
    assert "2/2 scenes" in out
    for seed, name in enumerate(NAMES):
        gt = _read(tmp_path / "gt" / f"{name}.txt")
        assert np.array_equal(gt, _expected(seed))
        assert set(np.unique(gt // 1000)) - {0} <= set(LABEL_TO_NYU40.values()) - {1, 2}
        assert gt.max() > 0 and (gt == 0).any()


def test_single_scene_folder(scans, tmp_path, capsys):
    code, _, err = _run([scans / NAMES[1], "--out", tmp_path / "gt"], capsys)
    assert code == 0, err
    assert [p.name for p in (tmp_path / "gt").iterdir()] == [f"{NAMES[1]}.txt"]
    assert np.array_equal(_read(tmp_path / "gt" / f"{NAMES[1]}.txt"), _expected(1))


def test_label_map_instead_of_labels_ply(scans_copy, tmp_path, capsys):
    tsv = tmp_path / "scannetv2-labels.combined.tsv"
    rows = ["id\traw_category\tcategory\tcount\tnyu40id\tnyu40class"]
    rows += [f"{i}\t{raw}\t{raw}\t1\t{nyu40}\t{raw}" for i, (raw, nyu40) in enumerate(LABEL_TO_NYU40.items())]
    tsv.write_text("\n".join(rows) + "\n")
    for name in NAMES:
        (scans_copy / name / f"{name}_vh_clean_2.labels.ply").unlink()
    code, _, err = _run([scans_copy, "--out", tmp_path / "gt", "--label-map", tsv], capsys)
    assert code == 0, err
    for seed, name in enumerate(NAMES):
        assert np.array_equal(_read(tmp_path / "gt" / f"{name}.txt"), _expected(seed))


def test_repeated_seg_groups_and_high_res_aggregation_are_ignored(scans_copy, tmp_path, capsys):
    # ScanNet's scene0217_00 lists its objects twice; also <scene>_vh_clean.aggregation.json exists.
    name = NAMES[0]
    path = scans_copy / name / f"{name}.aggregation.json"
    aggregation = json.loads(path.read_text())
    shutil.copy(path, scans_copy / name / f"{name}_vh_clean.aggregation.json")
    count = len(aggregation["segGroups"])
    repeats = [dict(group) for group in aggregation["segGroups"]]
    renumbered = [dict(group, objectId=group["objectId"] + count) for group in aggregation["segGroups"]]
    aggregation["segGroups"] += repeats + renumbered
    path.write_text(json.dumps(aggregation))
    code, _, err = _run([scans_copy / name, "--out", tmp_path / "gt"], capsys)
    assert code == 0, err
    assert np.array_equal(_read(tmp_path / "gt" / f"{name}.txt"), _expected(0))


def test_same_figures_as_the_official_encoding(scans, tmp_path, capsys):
    """Walls and floor as instances (ScanNet's export) or as 0 (here): the benchmark sees the same."""
    assert _run([scans, "--out", tmp_path / "gt"], capsys)[0] == 0
    rng = np.random.default_rng(0)
    prepared, official = [], []
    for seed, name in enumerate(NAMES):
        full = instance_gt(generate_scene(3000, seed=seed))
        ids = np.unique(full)
        masks = np.array([(full == i) & (rng.random(full.size) < 0.8) for i in ids])
        masks |= rng.random(masks.shape) < 0.02
        labels = np.where(rng.random(ids.size) < 0.8, ids // 1000, 5)
        scores = rng.random(ids.size)
        prepared.append(match_scene(masks, labels, scores, _read(tmp_path / "gt" / f"{name}.txt")))
        official.append(match_scene(masks, labels, scores, full))
    assert np.array_equal(average_precisions(prepared).ap, average_precisions(official).ap, equal_nan=True)


def _relabel_one_vertex(scans_copy: Path, name: str, new_label: int | None) -> None:
    """Give one vertex of an object (not wall or floor) another label in the labels.ply; None: a
    different benchmark class."""
    path = scans_copy / name / f"{name}_vh_clean_2.labels.ply"
    ply = PlyData.read(str(path), mmap=False)
    labels = ply["vertex"]["label"]
    vertex = int(np.flatnonzero(~np.isin(labels, (0, 1, 2)))[0])
    labels[vertex] = new_label if new_label is not None else (3 if labels[vertex] != 3 else 4)
    ply.write(str(path))


@pytest.mark.parametrize("damage, message", [
    (lambda root, name: (root / name / f"{name}_vh_clean_2.0.010000.segs.json").unlink(), "segs.json: file not found"),
    (lambda root, name: (root / name / f"{name}_vh_clean_2.labels.ply").unlink(), "--label-map"),
    (lambda root, name: (root / name / f"{name}.aggregation.json").write_text("{not json"), "cannot read JSON"),
    (lambda root, name: (root / name / f"{name}_vh_clean_2.0.010000.segs.json").write_text('{"segIndices": [1, "a"]}'),
     "segIndices must be a list of integers"),
    (lambda root, name: _relabel_one_vertex(root, name, None), "the vertices of objectId"),
    (lambda root, name: _relabel_one_vertex(root, name, 41), "not a NYU40 id"),
    (lambda root, name: _edit_groups(root, name, lambda g: g[1]["segments"].append(g[0]["segments"][0])),
     "share segment"),
    (lambda root, name: _edit_groups(root, name, lambda g: g[1].update(segments=[10**9])), "not in the segs.json"),
    (lambda root, name: _edit_groups(root, name, lambda g: g[1].update(objectId=g[0]["objectId"])),
     "used by two different segGroups"),
    (lambda root, name: _edit_groups(root, name, lambda g: g[1].pop("label")), "lacks objectId, label or segments"),
    (lambda root, name: (root / name / f"{name}.aggregation.json").write_text('{"segGroups": 5}'),
     "segGroups must be a list"),
])
def test_bad_scene_is_reported_and_the_others_are_written(scans_copy, tmp_path, capsys, damage, message):
    damage(scans_copy, NAMES[0])
    code, out, err = _run([scans_copy, "--out", tmp_path / "gt"], capsys)
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err and NAMES[0] in err, err
    assert [p.name for p in (tmp_path / "gt").iterdir()] == [f"{NAMES[1]}.txt"]
    assert "1/2 scenes" in out


def _edit_groups(root: Path, name: str, edit) -> None:
    path = root / name / f"{name}.aggregation.json"
    aggregation = json.loads(path.read_text())
    edit(aggregation["segGroups"])
    path.write_text(json.dumps(aggregation))


@pytest.mark.parametrize("make, message", [
    (lambda tmp: tmp / "absent", "folder not found"),
    (lambda tmp: tmp, "no ScanNet scene"),
])
def test_bad_folder(tmp_path, capsys, make, message):
    code, _, err = _run([make(tmp_path), "--out", tmp_path / "gt"], capsys)
    assert code == 1 and err.startswith("error: ") and message in err and err.count("\n") == 1


def test_bad_label_map(scans, tmp_path, capsys):
    tsv = tmp_path / "map.tsv"
    tsv.write_text("raw_category\tnyu40id\nchair\tfive\n")
    code, _, err = _run([scans, "--out", tmp_path / "gt", "--label-map", tsv], capsys)
    assert code == 1 and "line 2" in err and "not an integer" in err
    tsv.write_text("raw_category\tnyu40id\nchair\t5\n")
    code, _, err = _run([scans, "--out", tmp_path / "gt", "--label-map", tsv], capsys)
    assert code == 1 and "not in the label map" in err
