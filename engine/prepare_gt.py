"""``python -m engine.prepare_gt SCANNET_SCENE_DIR --out GT_DIR``: evaluation ground truth from ScanNet.

Writes ``GT_DIR/<scene>.txt``, one integer per mesh vertex: ``nyu40_id * 1000 + instance`` for
vertices of an annotated object, 0 for the rest. As in the official preparation (DKNet's
``prepare_data_inst*.py``), walls and floors are not instances: their vertices get 0, like
unannotated ones (the benchmark treats both as void either way).

Sources, per scene folder (ScanNet layout):

- instances: ``<scene>.aggregation.json`` (``segGroups``: objectId, raw label, segments) and
  ``<scene>_vh_clean_2.0.010000.segs.json`` (``segIndices``, one segment per vertex; its length
  is the vertex count). Instance = objectId + 1, as in ScanNet's own export.
- classes: the ``label`` vertex property of ``<scene>_vh_clean_2.labels.ply`` (NYU40 ids, all
  vertices of an object must agree), or with ``--label-map scannetv2-labels.combined.tsv`` the
  aggregation's raw labels mapped through its ``raw_category`` -> ``nyu40id`` columns.

``SCANNET_SCENE_DIR`` is one scene folder or a folder of scene folders (``scans/``). A scene is a
``<scene>.aggregation.json`` (ScanNet's ``*_vh_clean.aggregation.json``, for the high-resolution
mesh, is not one). A segGroup repeating an earlier one exactly (same label and segments; ScanNet's
scene0217_00 lists its objects twice) is skipped.

A scene with bad or missing files is reported in one line on stderr and nothing is written for
it; the other scenes are still prepared and the exit status is 1.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

from engine.atomic import atomic_file
from engine.errors import UserError, print_error

__all__ = ["find_scenes", "main", "read_label_map", "scene_gt_ids", "write_gt_ids"]

_AGGREGATION_SUFFIX = ".aggregation.json"
_HIGH_RES_SUFFIX = "_vh_clean"  # <scene>_vh_clean.aggregation.json annotates another mesh
_SEGS_SUFFIX = "_vh_clean_2.0.010000.segs.json"
_LABELS_SUFFIX = "_vh_clean_2.labels.ply"
_NOT_INSTANCES = (1, 2)  # NYU40 wall, floor
_MAX_NYU40 = 40
_MAX_INSTANCE = 999  # instance ids live in the last three digits


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine.prepare_gt",
        description="Evaluation ground truth (nyu40_id * 1000 + instance per vertex, walls and floor "
        "excluded) from ScanNet's aggregation.json, segs.json and _vh_clean_2.labels.ply.",
    )
    parser.add_argument("scenes", type=Path, metavar="SCANNET_SCENE_DIR",
                        help="a ScanNet scene folder, or a folder of them (e.g. scans/)")
    parser.add_argument("--out", type=Path, required=True, metavar="GT_DIR", help="where <scene>.txt go")
    parser.add_argument("--label-map", type=Path, metavar="TSV",
                        help="scannetv2-labels.combined.tsv: take classes from the aggregation's raw labels "
                        "instead of _vh_clean_2.labels.ply")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from rich.console import Console

    console = Console()
    try:
        scenes = find_scenes(args.scenes)
        label_map = read_label_map(args.label_map) if args.label_map is not None else None
    except UserError as exc:
        print_error(exc)
        return 1
    failures = 0
    for name, folder in scenes:
        try:
            gt_ids = scene_gt_ids(folder, name, label_map)
            path = write_gt_ids(args.out, name, gt_ids)
        except UserError as exc:
            print_error(exc)
            failures += 1
            continue
        num_instances = np.unique(gt_ids[gt_ids > 0]).size
        console.print(f"{path}: {gt_ids.size} vertices, {num_instances} instances", markup=False, soft_wrap=True)
    console.print(f"{len(scenes) - failures}/{len(scenes)} scenes written to {args.out}", markup=False)
    return 1 if failures else 0


def find_scenes(root: Path) -> list[tuple[str, Path]]:
    """(scene name, folder) of every scene in ``root`` itself, else in its immediate subfolders."""
    if not root.is_dir():
        raise UserError(f"{root}: {'not a folder' if root.exists() else 'folder not found'}")
    scenes = _scenes_in(root)
    if not scenes:
        scenes = [scene for folder in sorted(root.iterdir()) if folder.is_dir() for scene in _scenes_in(folder)]
    if not scenes:
        raise UserError(f"{root}: no ScanNet scene (<scene>{_AGGREGATION_SUFFIX}) here or in its subfolders")
    return scenes


def read_label_map(path: Path) -> dict[str, int]:
    """``raw_category`` -> ``nyu40id`` from ScanNet's scannetv2-labels.combined.tsv."""
    try:
        with open(path, newline="", encoding="utf-8") as stream:
            rows = list(csv.DictReader(stream, delimiter="\t"))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path}: cannot read the label map ({exc})") from None
    if not rows or not {"raw_category", "nyu40id"} <= set(rows[0]):
        raise UserError(f"{path}: not a label map (tab-separated, with columns raw_category and nyu40id)")
    mapping = {}
    for line, row in enumerate(rows, start=2):
        try:
            mapping[row["raw_category"]] = int(row["nyu40id"])
        except (TypeError, ValueError):
            raise UserError(f"{path} line {line}: nyu40id {row['nyu40id']!r} is not an integer") from None
    return mapping


def scene_gt_ids(folder: Path, name: str, label_map: dict[str, int] | None = None) -> np.ndarray:
    """(N,) int64 ground truth of one scene: ``nyu40 * 1000 + objectId + 1``, 0 off instances."""
    segs_path, aggregation_path = folder / f"{name}{_SEGS_SUFFIX}", folder / f"{name}{_AGGREGATION_SUFFIX}"
    segments = _integers(segs_path, "segIndices", _read_json(segs_path, "segIndices"))
    if segments.size == 0:
        raise UserError(f"{segs_path}: segIndices is empty")
    groups = _object_groups(aggregation_path)
    vertex_object = _vertex_objects(aggregation_path, segments, groups)
    if label_map is None:
        object_label = _labels_from_ply(folder / f"{name}{_LABELS_SUFFIX}", vertex_object, groups)
    else:
        object_label = _labels_from_map(aggregation_path, groups, label_map)
    vertex_label = object_label[vertex_object]
    instance = np.array([0] + [object_id + 1 for object_id, _, _ in groups], dtype=np.int64)
    gt_ids = vertex_label * 1000 + instance[vertex_object]
    gt_ids[(vertex_object == 0) | np.isin(vertex_label, (0, *_NOT_INSTANCES))] = 0
    return gt_ids


def write_gt_ids(out_dir: Path, name: str, gt_ids: np.ndarray) -> Path:
    """``out_dir/<name>.txt``, one id per line, written atomically; returns its path."""
    path = out_dir / f"{name}.txt"
    try:
        with atomic_file(path) as tmp:
            tmp.write_text("\n".join(map(str, gt_ids.tolist())) + "\n")
    except OSError as exc:
        raise UserError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return path


# ----------------------------------------------------------------------------------------------
# Implementation


def _scenes_in(folder: Path) -> list[tuple[str, Path]]:
    names = (path.name[: -len(_AGGREGATION_SUFFIX)] for path in folder.glob(f"*{_AGGREGATION_SUFFIX}"))
    return [(name, folder) for name in sorted(names) if name and not name.endswith(_HIGH_RES_SUFFIX)]


def _read_json(path: Path, key: str):
    try:
        with open(path, encoding="utf-8") as stream:
            data = json.load(stream)
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: cannot read JSON ({exc})") from None
    if not isinstance(data, dict) or key not in data:
        raise UserError(f"{path}: no '{key}' entry")
    return data[key]


def _integers(path: Path, what: str, values) -> np.ndarray:
    """A JSON list of integers as (L,) int64; UserError otherwise."""
    try:
        array = np.asarray(values, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        array = None
    if array is None or array.ndim != 1:
        raise UserError(f"{path}: {what} must be a list of integers")
    return array


def _object_groups(path: Path) -> list[tuple[int, str, np.ndarray]]:
    """(objectId, raw label, segments (S,) int64) per segGroup, repeats dropped; UserError when malformed.

    A repeat is a group with the label and segments of an earlier one (under any objectId).
    """
    entries = _read_json(path, "segGroups")
    if not isinstance(entries, list):
        raise UserError(f"{path}: segGroups must be a list")
    groups, content_of_id, seen = [], {}, set()
    for index, group in enumerate(entries):
        try:
            object_id, label, members = int(group["objectId"]), str(group["label"]), group["segments"]
        except (TypeError, KeyError, ValueError):
            raise UserError(f"{path}: segGroup {index} lacks objectId, label or segments") from None
        segments = _integers(path, f"segGroup {index} segments", members)
        content = (label, tuple(np.unique(segments).tolist()))
        if content in seen:
            continue
        if object_id in content_of_id:
            raise UserError(f"{path}: objectId {object_id} is used by two different segGroups")
        if not 0 <= object_id < _MAX_INSTANCE:
            raise UserError(f"{path}: objectId {object_id} outside 0..{_MAX_INSTANCE - 1}")
        content_of_id[object_id] = content
        seen.add(content)
        groups.append((object_id, label, segments))
    return groups


def _vertex_objects(path: Path, segments: np.ndarray, groups: list) -> np.ndarray:
    """(N,) int64 per vertex: 1 + index of its object in ``groups``, 0 for none."""
    segment_ids, vertex_segment = np.unique(segments, return_inverse=True)
    segment_object = np.zeros(segment_ids.size, dtype=np.int64)
    for index, (object_id, _, members) in enumerate(groups, start=1):
        position = np.minimum(np.searchsorted(segment_ids, members), segment_ids.size - 1)
        absent = members[segment_ids[position] != members]
        if absent.size:
            raise UserError(f"{path}: objectId {object_id} uses segment {absent[0]}, not in the segs.json")
        owner = segment_object[position]
        if (owner != 0).any():
            other = groups[int(owner[owner != 0][0]) - 1][0]
            raise UserError(f"{path}: objectIds {other} and {object_id} share segment "
                            f"{members[owner != 0][0]}")
        segment_object[position] = index
    return segment_object[vertex_segment.reshape(-1)]


def _labels_from_ply(path: Path, vertex_object: np.ndarray, groups: list) -> np.ndarray:
    """(objects + 1,) int64 NYU40 id per object (index 0: none) from the labels.ply vertex labels."""
    from plyfile import PlyData, PlyParseError

    if not path.is_file():
        raise UserError(f"{path}: file not found (or give --label-map scannetv2-labels.combined.tsv)")
    try:
        vertex = PlyData.read(str(path))["vertex"]
        labels = np.asarray(vertex["label"], dtype=np.int64)
    except (PlyParseError, KeyError, ValueError, OSError) as exc:
        raise UserError(f"{path}: no readable vertex 'label' property ({exc})") from None
    if labels.size != vertex_object.size:
        raise UserError(f"{path}: {labels.size} vertices, but the segs.json has {vertex_object.size}")
    bad = np.flatnonzero((labels < 0) | (labels > _MAX_NYU40))
    if bad.size:
        raise UserError(f"{path}: vertex {bad[0]} has label {labels[bad[0]]}, not a NYU40 id 0..{_MAX_NYU40}")
    pairs = np.unique(np.stack([vertex_object, labels]), axis=1)  # (2, distinct (object, label))
    pairs = pairs[:, pairs[0] > 0]
    mixed = pairs[0, 1:][pairs[0, 1:] == pairs[0, :-1]]
    if mixed.size:
        found = pairs[1, pairs[0] == mixed[0]].tolist()
        raise UserError(f"{path}: the vertices of objectId {groups[mixed[0] - 1][0]} carry several labels {found}")
    object_label = np.zeros(len(groups) + 1, dtype=np.int64)
    object_label[pairs[0]] = pairs[1]
    return object_label


def _labels_from_map(path: Path, groups: list, label_map: dict[str, int]) -> np.ndarray:
    """(objects + 1,) int64 NYU40 id per object (index 0: none) from the raw labels."""
    object_label = np.zeros(len(groups) + 1, dtype=np.int64)
    for index, (object_id, label, _) in enumerate(groups, start=1):
        if label not in label_map:
            raise UserError(f"{path}: objectId {object_id} has raw label {label!r}, not in the label map")
        if not 0 <= label_map[label] <= _MAX_NYU40:
            raise UserError(f"{path}: raw label {label!r} maps to {label_map[label]}, not a NYU40 id")
        object_label[index] = label_map[label]
    return object_label


if __name__ == "__main__":
    sys.exit(main())
