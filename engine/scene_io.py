"""Reading one scan: a PLY mesh or point cloud into arrays (SPEC §1). numpy and plyfile only, no torch.

Accepted input: a binary (either byte order) or ASCII PLY with a ``vertex`` element carrying
``x y z`` (any numeric type, returned as float64) and ``red green blue`` (integers in 0..255, normally
uchar; returned as uint8; ``alpha`` and any other property is ignored). A ``face`` element is
optional; its index list may be named ``vertex_indices`` (ScanNet) or ``vertex_index``.

Decisions, so that every bad input gives one clear line instead of a traceback or a silent guess:

- Missing colours are an error (ScanNet always has them; the network is trained on colour, and
  inventing grey would give quietly worse instances). Float colours are an error too (their scale,
  0..1 or 0..255, would be a guess).
- Polygons with more than 3 vertices are triangulated as a fan ``(v0, vi, vi+1)``, in face order;
  faces with fewer than 3 vertices carry no surface and are dropped. A face index outside
  ``0..N-1`` is an error.
- A ``face`` element with no faces left gives ``faces = None`` (no mesh), same as no element.
- Coordinates that are NaN or infinite are an error (they would poison the centring mean).

Binary triangle meshes are memory-mapped (``known_list_len``), so a ScanNet scan (150k vertices,
300k faces) reads in milliseconds; other polygon meshes and ASCII files take plyfile's slower
per-row path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from plyfile import PlyData, PlyParseError

__all__ = ["Scene", "SceneInputError", "read_scene", "scene_name"]

_SCANNET_SUFFIX = "_vh_clean_2"
_FACE_INDEX_NAMES = ("vertex_indices", "vertex_index")
_COLOUR_NAMES = ("red", "green", "blue")
_COORD_NAMES = ("x", "y", "z")


class SceneInputError(ValueError):
    """A scene file that cannot be used; the message is one user-facing line naming the file."""

    def __init__(self, path: os.PathLike | str, problem: str):
        self.path = Path(path)
        self.problem = " ".join(str(problem).split())  # always a single line
        super().__init__(f"{self.path}: {self.problem}")


@dataclass
class Scene:
    name: str  # file name without ".ply" and without a trailing "_vh_clean_2"
    path: Path
    xyz: np.ndarray  # (N, 3) float64, input coordinates (metres for ScanNet)
    rgb: np.ndarray  # (N, 3) uint8
    faces: np.ndarray | None  # (F, 3) int64 vertex indices, or None when the file has no faces

    @property
    def num_points(self) -> int:
        return int(self.xyz.shape[0])


def scene_name(path: os.PathLike | str) -> str:
    """``.../scene0011_00_vh_clean_2.ply`` -> ``scene0011_00``; ``foo.ply`` -> ``foo``.

    Only a ``.ply`` extension (any case) is removed; other names are kept whole.
    """
    name = Path(path).name
    if name.lower().endswith(".ply"):
        name = name[: -len(".ply")]
    if name.endswith(_SCANNET_SUFFIX) and len(name) > len(_SCANNET_SUFFIX):
        name = name[: -len(_SCANNET_SUFFIX)]
    return name


def read_scene(path: os.PathLike | str) -> Scene:
    """Read one scan. Raises SceneInputError (one line, naming the file) for any unusable input."""
    path = Path(path)
    ply = _read_ply(path)

    names = [element.name for element in ply.elements]
    if "vertex" not in names:
        raise SceneInputError(path, f"no 'vertex' element (elements: {_listing(names)})")
    vertex = ply["vertex"].data
    fields = vertex.dtype.names or ()

    missing = [name for name in _COORD_NAMES if name not in fields]
    if missing:
        raise SceneInputError(
            path, f"vertex coordinates missing: {' '.join(missing)} (properties: {_listing(fields)})"
        )
    missing = [name for name in _COLOUR_NAMES if name not in fields]
    if missing:
        raise SceneInputError(
            path, f"vertex colours missing: {' '.join(missing)} (properties: {_listing(fields)})"
        )
    num_points = len(vertex)
    if num_points == 0:
        raise SceneInputError(path, "the file has zero vertices")

    xyz = np.empty((num_points, 3), dtype=np.float64)
    for axis, name in enumerate(_COORD_NAMES):
        column = vertex[name]
        if column.dtype.kind not in "fiu":
            raise SceneInputError(path, f"vertex property '{name}' is not numeric ({column.dtype})")
        xyz[:, axis] = column
    bad = ~np.isfinite(xyz).all(axis=1)
    if bad.any():
        num_nan = int(np.isnan(xyz).any(axis=1).sum())
        num_inf = int(np.isinf(xyz).any(axis=1).sum())
        raise SceneInputError(
            path,
            f"{int(bad.sum())} of {num_points} vertices have non-finite coordinates "
            f"({num_nan} with NaN, {num_inf} with infinity)",
        )

    rgb = np.empty((num_points, 3), dtype=np.uint8)
    for channel, name in enumerate(_COLOUR_NAMES):
        column = vertex[name]
        if column.dtype.kind not in "iu":
            raise SceneInputError(
                path, f"vertex colour '{name}' must be an integer 0..255 (uchar), not {column.dtype}"
            )
        if column.dtype != np.uint8 and (column.min() < 0 or column.max() > 255):
            raise SceneInputError(
                path, f"vertex colour '{name}' outside 0..255 ({column.min()}..{column.max()})"
            )
        rgb[:, channel] = column

    faces = _read_faces(path, ply, names, num_points)
    return Scene(name=scene_name(path), path=path, xyz=xyz, rgb=rgb, faces=faces)


def _read_ply(path: Path) -> PlyData:
    if not path.exists():
        raise SceneInputError(path, "file not found")
    if path.is_dir():
        raise SceneInputError(path, "is a directory, not a PLY file")
    try:
        if path.stat().st_size == 0:
            raise SceneInputError(path, "the file is empty")
    except OSError as error:
        raise SceneInputError(path, f"cannot read the file: {error.strerror or error}") from error
    # Fixed-length (triangle) face lists let plyfile memory-map the face element; a file whose
    # faces are not all triangles fails that check and is read again row by row.
    triangles = {"face": {name: 3 for name in _FACE_INDEX_NAMES}}
    try:
        with open(path, "rb") as stream:
            try:
                return _parse(path, stream, triangles)
            except SceneInputError as error:
                if "unexpected list length" not in error.problem:
                    raise
                stream.seek(0)
                return _parse(path, stream, {})
    except OSError as error:
        raise SceneInputError(path, f"cannot read the file: {error.strerror or error}") from error


def _parse(path: Path, stream, known_list_len: dict) -> PlyData:
    try:
        return PlyData.read(stream, mmap="c", known_list_len=known_list_len)
    except PlyParseError as error:
        raise SceneInputError(path, f"not a valid PLY file ({error})") from error
    except MemoryError as error:
        raise SceneInputError(
            path, "not a valid PLY file (its header declares more data than fits in memory)"
        ) from error
    except UnicodeDecodeError as error:
        raise SceneInputError(
            path, "not a valid PLY file (binary bytes where the header or ASCII data should be text)"
        ) from error
    except (ValueError, TypeError, IndexError, KeyError, EOFError) as error:
        raise SceneInputError(path, f"not a valid PLY file ({type(error).__name__}: {error})") from error


def _read_faces(path: Path, ply: PlyData, names: list[str], num_points: int) -> np.ndarray | None:
    if "face" not in names:
        return None
    face = ply["face"].data
    fields = face.dtype.names or ()
    index_name = next((name for name in _FACE_INDEX_NAMES if name in fields), None)
    if index_name is None:
        raise SceneInputError(
            path, f"'face' element has no vertex_indices/vertex_index list (properties: {_listing(fields)})"
        )
    lists = face[index_name]
    if len(lists) == 0:
        return None
    if lists.dtype != object:  # memory-mapped triangles: already (F, 3)
        faces = np.asarray(lists, dtype=np.int64).reshape(-1, 3)
    else:
        faces = _triangulate(lists)
    if faces.shape[0] == 0:
        return None
    bad = (faces < 0) | (faces >= num_points)
    if bad.any():
        num_bad = int(bad.any(axis=1).sum())
        raise SceneInputError(
            path,
            f"{num_bad} of {len(faces)} faces use vertex indices outside 0..{num_points - 1} "
            f"(indices seen: {int(faces.min())}..{int(faces.max())})",
        )
    return faces


def _triangulate(lists: np.ndarray) -> np.ndarray:
    """Variable-length polygons (object array of index arrays) -> (T, 3) int64 fan triangles.

    Polygon ``(v0, v1, ..., vk-1)`` gives ``(v0, vi, vi+1)`` for i = 1..k-2; triangles keep the
    order of their faces; faces with fewer than 3 vertices are dropped.
    """
    lengths = np.fromiter((len(item) for item in lists), dtype=np.int64, count=len(lists))
    pieces, owners = [], []
    for k in np.unique(lengths):
        if k < 3:
            continue
        rows = np.flatnonzero(lengths == k)
        polygons = np.stack([np.asarray(lists[row], dtype=np.int64) for row in rows])  # (R, k)
        i = np.arange(1, k - 1)
        fan = np.stack(
            (np.repeat(polygons[:, :1], k - 2, axis=1), polygons[:, i], polygons[:, i + 1]), axis=2
        )  # (R, k-2, 3)
        pieces.append(fan.reshape(-1, 3))
        owners.append(np.repeat(rows, k - 2))
    if not pieces:
        return np.empty((0, 3), dtype=np.int64)
    order = np.argsort(np.concatenate(owners), kind="stable")
    return np.concatenate(pieces)[order]


def _listing(names) -> str:
    return ", ".join(names) if len(names) else "none"
