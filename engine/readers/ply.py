"""PLY meshes and point clouds (plyfile): binary (either byte order) or ASCII.

The ``vertex`` element must carry ``x y z`` (any numeric type); ``red green blue`` are optional
(any numeric type, by the rule of ``common.colours_to_uint8``; ``alpha`` and other properties are
ignored). A ``face`` element is optional; its index list may be named ``vertex_indices`` (ScanNet)
or ``vertex_index`` and must be a list of integers.

- Polygons with more than 3 vertices are triangulated as a fan ``(v0, vi, vi+1)``, in face order;
  faces with fewer than 3 vertices carry no surface and are dropped. A face index outside
  ``0..N-1`` is an error.
- A ``face`` element with no faces left gives ``faces = None`` (no mesh), same as no element.

Binary triangle meshes are memory-mapped (``known_list_len``), so a ScanNet scan (150k vertices,
300k faces) reads in milliseconds; other polygon meshes and ASCII files take plyfile's slower
per-row path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from plyfile import PlyData, PlyListProperty, PlyParseError

from engine.readers.common import RawScan, SceneInputError, check_xyz, colours_to_uint8, listing

FACE_INDEX_NAMES = ("vertex_indices", "vertex_index")
COLOUR_NAMES = ("red", "green", "blue")
COORD_NAMES = ("x", "y", "z")


def read_ply(path: Path, colour_max: int | None = None) -> RawScan:
    """Read one PLY file; SceneInputError (one line, naming the file) for anything unusable."""
    ply = _read_ply(path)
    names = [element.name for element in ply.elements]
    if "vertex" not in names:
        raise SceneInputError(path, f"no 'vertex' element (elements: {listing(names)})")
    vertex = ply["vertex"].data
    fields = vertex.dtype.names or ()

    missing = [name for name in COORD_NAMES if name not in fields]
    if missing:
        raise SceneInputError(
            path, f"vertex coordinates missing: {' '.join(missing)} (properties: {listing(fields)})"
        )
    num_points = len(vertex)
    if num_points == 0:
        raise SceneInputError(path, "the file has zero vertices")

    xyz = np.empty((num_points, 3), dtype=np.float64)
    for axis, name in enumerate(COORD_NAMES):
        column = vertex[name]
        if column.dtype.kind not in "fiu":
            raise SceneInputError(path, f"vertex property '{name}' is not numeric ({column.dtype})")
        xyz[:, axis] = column
    check_xyz(path, xyz)
    coordinate_dtype = np.result_type(*(vertex[name].dtype for name in COORD_NAMES))

    present = [name for name in COLOUR_NAMES if name in fields]
    if present and len(present) < 3:
        missing = [name for name in COLOUR_NAMES if name not in fields]
        raise SceneInputError(
            path, f"vertex colours missing: {' '.join(missing)} (properties: {listing(fields)})"
        )
    rgb = None
    if present:
        for name in COLOUR_NAMES:
            if vertex[name].dtype.kind not in "fiu":
                raise SceneInputError(path, f"vertex colour '{name}' is not numeric ({vertex[name].dtype})")
        columns = np.stack([np.asarray(vertex[name]) for name in COLOUR_NAMES], axis=1)
        rgb = colours_to_uint8(path, columns, colour_max)

    faces = _read_faces(path, ply, names, num_points)
    return RawScan(xyz=xyz, rgb=rgb, faces=faces, coordinate_dtype=np.dtype(coordinate_dtype))


def _read_ply(path: Path) -> PlyData:
    # Fixed-length (triangle) face lists let plyfile memory-map the face element; a file whose
    # faces are not all triangles fails that check and is read again row by row.
    triangles = {"face": {name: 3 for name in FACE_INDEX_NAMES}}
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
    except (ValueError, TypeError, IndexError, KeyError, EOFError, OverflowError) as error:
        raise SceneInputError(path, f"not a valid PLY file ({type(error).__name__}: {error})") from error


def _read_faces(path: Path, ply: PlyData, names: list[str], num_points: int) -> np.ndarray | None:
    if "face" not in names:
        return None
    element = ply["face"]
    fields = element.data.dtype.names or ()
    index_name = next((name for name in FACE_INDEX_NAMES if name in fields), None)
    if index_name is None:
        raise SceneInputError(
            path, f"'face' element has no vertex_indices/vertex_index list (properties: {listing(fields)})"
        )
    prop = element.ply_property(index_name)
    if not isinstance(prop, PlyListProperty):
        raise SceneInputError(path, f"face property '{index_name}' is a single {prop.val_dtype} value, "
                              "not a list of vertex indices (property list uchar int ...)")
    if np.dtype(prop.val_dtype).kind not in "iu":
        raise SceneInputError(path, f"face property '{index_name}' lists {np.dtype(prop.val_dtype)} values, "
                              "not integer vertex indices")
    lists = element.data[index_name]
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
