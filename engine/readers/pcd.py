"""PCD point clouds (the Point Cloud Library's format) through pypcd4: ASCII, binary and
binary_compressed data.

Needs the ``pcd`` extra (``pip install -e ".[pcd]"``). Fields ``x y z`` are required; colour is read
from a packed ``rgb`` or ``rgba`` field (PCL's layout: one 32-bit word, red in bits 16-23, green in
8-15, blue in 0-7, stored as float32 or uint32) or from separate ``r g b`` / ``red green blue``
fields (by ``common.colours_to_uint8``'s rule). Points keep the file's order; organized clouds
(HEIGHT > 1) are read row by row; points with NaN coordinates (PCL's "no return" in organized
clouds) are an error, as in every format.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.readers.common import RawScan, SceneInputError, check_xyz, colours_to_uint8, listing

PACKED_COLOUR_NAMES = ("rgb", "rgba")
SEPARATE_COLOUR_NAMES = (("r", "g", "b"), ("red", "green", "blue"))


def read_pcd(path: Path, colour_max: int | None = None) -> RawScan:
    """Read one PCD file; SceneInputError (one line, naming the file) for anything unusable."""
    try:
        from pypcd4 import PointCloud
    except ImportError:
        raise SceneInputError(path, 'reading PCD needs pypcd4: pip install -e ".[pcd]"') from None
    try:
        cloud = PointCloud.from_path(path)
    except OSError as error:
        raise SceneInputError(path, f"cannot read the file: {error.strerror or error}") from error
    except MemoryError as error:
        raise SceneInputError(path, "not a valid PCD file (its header declares more data than fits in memory)") \
            from error
    except Exception as error:  # pypcd4 raises pydantic, numpy, lzf and unicode errors for broken files
        raise SceneInputError(path, f"not a valid PCD file ({type(error).__name__}: {error})") from error
    data = np.atleast_1d(cloud.pc_data)  # numpy's loadtxt gives a 0-d array for one ASCII point
    fields = data.dtype.names or ()
    if len(data) != cloud.metadata.points:
        raise SceneInputError(path, f"not a valid PCD file (header declares {cloud.metadata.points} points, "
                              f"the data holds {len(data)}: truncated?)")
    missing = [name for name in ("x", "y", "z") if name not in fields]
    if missing:
        raise SceneInputError(path, f"PCD coordinates missing: {' '.join(missing)} (fields: {listing(fields)})")
    columns = [np.asarray(data[name]) for name in ("x", "y", "z")]
    if any(column.ndim != 1 or column.dtype.kind not in "fiu" for column in columns):
        raise SceneInputError(path, "PCD fields x y z must be single numbers (COUNT 1)")
    xyz = check_xyz(path, np.stack(columns, axis=1).astype(np.float64))
    coordinate_dtype = np.result_type(*(column.dtype for column in columns))
    return RawScan(xyz=xyz, rgb=_colours(path, data, fields, colour_max), faces=None,
                   coordinate_dtype=np.dtype(coordinate_dtype))


def _colours(path: Path, data: np.ndarray, fields: tuple[str, ...], colour_max: int | None) -> np.ndarray | None:
    packed = next((name for name in PACKED_COLOUR_NAMES if name in fields), None)
    if packed is not None:
        column = np.ascontiguousarray(data[packed])
        if column.ndim != 1 or column.dtype.itemsize != 4:
            raise SceneInputError(path, f"PCD field '{packed}' is not one 32-bit packed colour (SIZE 4 COUNT 1)")
        words = column.view(np.uint32)
        return np.stack(((words >> 16) & 255, (words >> 8) & 255, words & 255), axis=1).astype(np.uint8)
    for names in SEPARATE_COLOUR_NAMES:
        if all(name in fields for name in names):
            return colours_to_uint8(path, np.stack([np.asarray(data[name]) for name in names], axis=1), colour_max)
    return None
