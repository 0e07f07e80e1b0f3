"""Writing one scene's results (SPEC §12): ScanNet submission, coloured PLY, and the pictures of
``engine.pictures`` (PNG quick look, HTML viewer). No torch.

Shapes: ``xyz (N, 3)`` float, ``faces (F, 3)`` int or None, ``masks (M, N)`` bool (one row per
instance, per input vertex), ``nyu40_ids (M,)`` int, ``scores (M,)`` float.

Atomicity policy: nothing is ever written in place. A single file is written to a hidden
temporary file beside it and renamed over the target (``os.replace``). A scene's outputs
(:func:`write_scene_outputs`, and the submission's summary plus mask files) are staged in a hidden
temporary directory inside ``out_dir`` and only renamed into place once everything is written;
mask files first, the ``<scene>.txt`` that references them last, so a ``<scene>.txt`` never points
at missing masks. On any exception the staging directory is removed and files already moved are
taken back out, so a failed scene leaves nothing of itself (an earlier run's file that was
already replaced is not restored). After a successful write, mask files of the same scene with
an index past the new instance count (left by an earlier run) are deleted. Only a killed process
(SIGKILL, power loss) can leave a hidden ``.<scene>.partial-*`` directory behind.

The submission follows the official DKNet/PointGroup test script byte for byte: summary lines
``predicted_masks/<scene>_<iii>.txt <nyu40 id> <confidence:.4f>`` joined by ``\\n`` with no
newline after the last one (an empty file for no instances); mask files as ``np.savetxt(fmt='%d')``
writes them, ``0\\n`` / ``1\\n`` per vertex.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from engine.atomic import atomic_file
from engine.pictures.caption import Caption
from engine.pictures.html import render_instances_html
from engine.pictures.palette import UNASSIGNED_RGB, instance_colors
from engine.pictures.png import render_instances_png
from engine.pictures.summary import InstanceSummary, instance_per_point

__all__ = [
    "scene_files",
    "write_instance_ply",
    "write_scannet_submission",
    "write_scene_outputs",
]

_MASK_DIR = "predicted_masks"


# ----------------------------------------------------------------------------------------------
# Public API


def write_scannet_submission(
    out_dir: os.PathLike | str,
    scene: str,
    masks: np.ndarray,
    nyu40_ids: np.ndarray,
    scores: np.ndarray,
) -> Path:
    """Write ``<out_dir>/<scene>.txt`` and ``<out_dir>/predicted_masks/<scene>_<iii>.txt``.

    ``iii`` is the instance index zero-padded to 3 digits (more digits past 999). Returns the
    summary file's path. The scene's files appear together or not at all (module docstring).
    """
    out_dir = Path(out_dir)
    masks, nyu40_ids, scores = _check_instances(scene, masks, nyu40_ids, scores)
    with _staging_dir(out_dir, scene) as staging:
        rel_paths = _stage_submission(staging, scene, masks, nyu40_ids, scores)
        _commit(staging, out_dir, rel_paths)
    _remove_stale_masks(out_dir, scene, masks.shape[0])
    return out_dir / f"{scene}.txt"


def write_instance_ply(
    path: os.PathLike | str,
    xyz: np.ndarray,
    faces: np.ndarray | None,
    masks: np.ndarray,
    note: str | None = None,
) -> Path:
    """Binary little-endian PLY: vertex ``x y z`` float32, ``red green blue`` uchar, ``instance`` int32.

    ``note`` (one line, e.g. that the weights were random) becomes a ``comment`` line of the header.

    ``instance`` is the first instance whose mask holds the vertex (``argmax`` over masks), -1 for
    none; colours are :func:`instance_colors`, unassigned vertices :data:`UNASSIGNED_RGB`. Faces,
    if given, are kept as ``vertex_indices`` (uchar count, int indices). The bytes are written
    directly (plyfile writes list properties one face at a time: 0.6 s for 300k faces, vs 25 ms); the
    result reads back with plyfile.
    """
    path = Path(path)
    xyz = _check_xyz(xyz)
    num_points = xyz.shape[0]
    masks = _check_masks(masks, num_points)
    instance = instance_per_point(masks, num_points)
    palette = np.concatenate((instance_colors(masks.shape[0]), np.array([UNASSIGNED_RGB], np.uint8)))
    rgb = palette[instance]  # index -1 picks the appended grey

    vertex = np.empty(
        num_points,
        dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
               ("red", "u1"), ("green", "u1"), ("blue", "u1"), ("instance", "<i4")],
    )
    vertex["x"], vertex["y"], vertex["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    vertex["red"], vertex["green"], vertex["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    vertex["instance"] = instance

    header = [
        "ply",
        "format binary_little_endian 1.0",
        f"comment dknet-engine instances {masks.shape[0]}",
        *([f"comment {_one_line(note)}"] if note else []),
        f"element vertex {num_points}",
        "property float x",
        "property float y",
        "property float z",
        "property uchar red",
        "property uchar green",
        "property uchar blue",
        "property int instance",
    ]
    face_bytes = b""
    if faces is not None:
        faces = _check_faces(faces, num_points)
        face = np.empty(faces.shape[0], dtype=[("count", "u1"), ("vertex_indices", "<i4", (3,))])
        face["count"] = 3
        face["vertex_indices"] = faces
        face_bytes = face.tobytes()
        header += [f"element face {faces.shape[0]}", "property list uchar int vertex_indices"]
    header.append("end_header")

    with atomic_file(path) as tmp, open(tmp, "wb") as stream:
        stream.write(("\n".join(header) + "\n").encode("ascii"))
        stream.write(vertex.tobytes())
        stream.write(face_bytes)
    return path


def scene_files(scene: str, png: bool = True, html: bool = False) -> list[str]:
    """The files :func:`write_scene_outputs` writes for ``scene`` beside its mask files:
    ``[<scene>.txt, <scene>_instances.ply, (<scene>.png), (<scene>.html)]``."""
    return [f"{scene}.txt", f"{scene}_instances.ply", *([f"{scene}.png"] if png else []),
            *([f"{scene}.html"] if html else [])]


def write_scene_outputs(
    out_dir: os.PathLike | str,
    scene: str,
    xyz: np.ndarray,
    faces: np.ndarray | None,
    masks: np.ndarray,
    nyu40_ids: np.ndarray,
    scores: np.ndarray,
    caption: Caption | None = None,
    *,
    png: bool = True,
    html: bool = False,
) -> list[Path]:
    """Write all of a scene's outputs as one unit (module docstring): the submission, the PLY, and
    ``<scene>.png`` / ``<scene>.html`` when ``png`` / ``html``.

    ``caption`` (the weights, what ran) is stated by the pictures; random weights also go into the
    PLY header. Returns the paths of :func:`scene_files` under ``out_dir``; the per-instance mask
    files are in ``out_dir/predicted_masks/`` and listed in ``<scene>.txt``.
    """
    out_dir = Path(out_dir)
    xyz = _check_xyz(xyz)
    masks, nyu40_ids, scores = _check_instances(scene, masks, nyu40_ids, scores)
    masks = _check_masks(masks, xyz.shape[0])
    txt_name, ply_name, *pictures = scene_files(scene, png, html)
    note = caption.weights if caption is not None and caption.random_weights else None

    with _staging_dir(out_dir, scene) as staging:
        submission = _stage_submission(staging, scene, masks, nyu40_ids, scores)
        write_instance_ply(staging / ply_name, xyz, faces, masks, note=note)
        summary = InstanceSummary.of(masks, nyu40_ids, scores) if pictures else None
        if png:
            render_instances_png(staging / f"{scene}.png", xyz, summary, scene=scene, caption=caption)
        if html:
            render_instances_html(staging / f"{scene}.html", xyz, summary, scene=scene, caption=caption)
        # mask files, then the PLY and pictures, and the summary that references the masks last
        _commit(staging, out_dir, submission[:-1] + [ply_name, *pictures, submission[-1]])
    _remove_stale_masks(out_dir, scene, masks.shape[0])
    return [out_dir / name for name in (txt_name, ply_name, *pictures)]


# ----------------------------------------------------------------------------------------------
# Staging and atomic renames


def _stage_submission(
    root: Path, scene: str, masks: np.ndarray, nyu40_ids: np.ndarray, scores: np.ndarray
) -> list[str]:
    """Write the submission under ``root``; returns relative paths, masks first, summary last."""
    (root / _MASK_DIR).mkdir(exist_ok=True)
    num_instances, num_points = masks.shape
    text = np.empty((num_points, 2), dtype=np.uint8)  # one "0\n" / "1\n" row per vertex
    text[:, 1] = ord("\n")
    rel_paths, lines = [], []
    for i in range(num_instances):
        rel = f"{_MASK_DIR}/{scene}_{i:03d}.txt"
        np.add(masks[i].view(np.uint8), ord("0"), out=text[:, 0])
        (root / rel).write_bytes(text.tobytes())
        rel_paths.append(rel)
        lines.append(f"{rel} {int(nyu40_ids[i])} {float(scores[i]):.4f}")
    (root / f"{scene}.txt").write_bytes("\n".join(lines).encode("ascii"))
    rel_paths.append(f"{scene}.txt")
    return rel_paths


@contextmanager
def _staging_dir(out_dir: Path, scene: str) -> Iterator[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{scene}.partial-", dir=out_dir))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _commit(staging: Path, out_dir: Path, rel_paths: list[str]) -> None:
    """Rename staged files into ``out_dir`` in the given order; on failure take them back out."""
    moved: list[Path] = []
    created: list[Path] = []
    try:
        mask_dir = out_dir / _MASK_DIR
        if not mask_dir.is_dir():
            mask_dir.mkdir()
            created.append(mask_dir)
        for rel in rel_paths:
            target = out_dir / rel
            os.replace(staging / rel, target)
            moved.append(target)
    except BaseException:
        for target in moved:
            target.unlink(missing_ok=True)
        for directory in created:
            try:
                directory.rmdir()  # only if still empty (another scene may be writing into it)
            except OSError:
                pass
        raise


def _remove_stale_masks(out_dir: Path, scene: str, num_instances: int) -> None:
    """Delete ``predicted_masks/<scene>_<i>.txt`` with i >= M left by an earlier run of the scene."""
    pattern = re.compile(re.escape(scene) + r"_(\d{3,})\.txt")
    for candidate in (out_dir / _MASK_DIR).glob(f"{glob.escape(scene)}_*.txt"):
        match = pattern.fullmatch(candidate.name)
        if match and int(match.group(1)) >= num_instances:
            candidate.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------
# Checks and helpers


def _check_scene(scene: str) -> None:
    if (
        not isinstance(scene, str)
        or not scene
        or scene.startswith(".")
        or any(ch in scene for ch in "/\\\0")
    ):
        raise ValueError(f"invalid scene name {scene!r}: must be a plain file name, not starting with '.'")


def _check_xyz(xyz: np.ndarray) -> np.ndarray:
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"xyz must have shape (N, 3), got {xyz.shape}")
    return xyz


def _check_masks(masks: np.ndarray, num_points: int | None = None) -> np.ndarray:
    """(M, N) masks as a C-contiguous bool array; integer masks must hold only 0 and 1."""
    masks = np.asarray(masks)
    if masks.ndim != 2:
        raise ValueError(f"masks must have shape (M, N), got {masks.shape}")
    if num_points is not None and masks.shape[1] != num_points and masks.shape[0] > 0:
        raise ValueError(f"masks have {masks.shape[1]} points, xyz has {num_points}")
    if masks.dtype != np.bool_:
        if masks.dtype.kind not in "iu" or (masks.size and not np.isin(masks, (0, 1)).all()):
            raise ValueError(f"masks must be bool (or 0/1 integers), got {masks.dtype}")
        masks = masks.astype(np.bool_)
    if masks.shape[0] == 0 and num_points is not None:
        masks = np.zeros((0, num_points), dtype=np.bool_)
    return np.ascontiguousarray(masks)


def _check_instances(
    scene: str, masks: np.ndarray, nyu40_ids: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    _check_scene(scene)
    masks = _check_masks(masks)
    nyu40_ids = np.asarray(nyu40_ids).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    num_instances = masks.shape[0]
    if len(nyu40_ids) != num_instances or len(scores) != num_instances:
        raise ValueError(
            f"{num_instances} masks but {len(nyu40_ids)} nyu40 ids and {len(scores)} scores"
        )
    if num_instances and nyu40_ids.dtype.kind not in "iu":
        raise ValueError(f"nyu40_ids must be integers, got {nyu40_ids.dtype}")
    return masks, nyu40_ids, scores


def _check_faces(faces: np.ndarray, num_points: int) -> np.ndarray:
    faces = np.asarray(faces)
    if faces.ndim != 2 or faces.shape[1] != 3 or (faces.size and faces.dtype.kind not in "iu"):
        raise ValueError(f"faces must be integers of shape (F, 3), got {faces.dtype} {faces.shape}")
    if faces.size and (faces.min() < 0 or faces.max() >= num_points):
        raise ValueError(f"face indices {faces.min()}..{faces.max()} outside 0..{num_points - 1}")
    return faces


def _one_line(text: str) -> str:
    return " ".join(str(text).split())
