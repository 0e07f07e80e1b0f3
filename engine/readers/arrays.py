"""NumPy arrays: ``.npy`` holding one (N, 3) xyz or (N, 6) xyzrgb array, or ``.npz`` holding
either that array alone (any key) or ``xyz`` (N, 3) with an optional ``rgb`` (N, 3).

Loaded with ``allow_pickle=False`` (object arrays are refused, never unpickled). Coordinates may be
any integer or float type; colours follow ``common.colours_to_uint8``'s rule (integers are 0..255;
floats by ``--colour-max``, or detected only when unambiguous).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from engine.readers.common import RawScan, SceneInputError, check_xyz, colours_to_uint8, listing


def read_npy(path: Path, colour_max: int | None = None) -> RawScan:
    """Read one ``.npy`` file; SceneInputError (one line, naming the file) for anything unusable."""
    return _from_points(path, _load(path), colour_max)


def read_npz(path: Path, colour_max: int | None = None) -> RawScan:
    """Read one ``.npz`` file; SceneInputError (one line, naming the file) for anything unusable."""
    archive = _load(path)
    if isinstance(archive, np.ndarray):  # a .npy file named .npz
        return _from_points(path, archive, colour_max)
    try:
        with archive:
            keys = list(archive.files)
            if "xyz" not in keys:
                if len(keys) != 1:
                    raise SceneInputError(path, "expected 'xyz' (+ optional 'rgb') or a single array, "
                                          f"found arrays: {listing(keys)}")
                return _from_points(path, archive[keys[0]], colour_max)
            xyz = archive["xyz"]
            rgb = archive["rgb"] if "rgb" in keys else None
    except SceneInputError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as error:
        raise SceneInputError(path, f"not a valid .npz file ({type(error).__name__}: {error})") from error
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise SceneInputError(path, f"'xyz' must have shape (N, 3), not {xyz.shape}")
    if rgb is not None and rgb.shape != xyz.shape:
        raise SceneInputError(path, f"'rgb' must have shape {xyz.shape} like 'xyz', not {rgb.shape}")
    return _scan(path, xyz, rgb, colour_max)


def _load(path: Path):
    try:
        return np.load(path, allow_pickle=False)
    except OSError as error:
        raise SceneInputError(path, f"cannot read the file: {error.strerror or error}") from error
    except MemoryError as error:
        raise SceneInputError(path, "not a valid NumPy file (its header declares more data than fits in memory)") \
            from error
    except Exception as error:  # numpy raises ValueError, zipfile and unicode errors for broken files
        raise SceneInputError(path, f"not a valid NumPy file ({type(error).__name__}: {error})") from error


def _from_points(path: Path, points: np.ndarray, colour_max: int | None) -> RawScan:
    if not isinstance(points, np.ndarray) or points.ndim != 2 or points.shape[1] not in (3, 6):
        shape = getattr(points, "shape", None)
        raise SceneInputError(path, f"expected an (N, 3) xyz or (N, 6) xyzrgb array, not shape {shape}")
    return _scan(path, points[:, :3], points[:, 3:] if points.shape[1] == 6 else None, colour_max)


def _scan(path: Path, xyz: np.ndarray, rgb: np.ndarray | None, colour_max: int | None) -> RawScan:
    if xyz.dtype.kind not in "fiu":
        raise SceneInputError(path, f"coordinates are not numbers ({xyz.dtype})")
    return RawScan(xyz=check_xyz(path, xyz.astype(np.float64)),
                   rgb=None if rgb is None else colours_to_uint8(path, rgb, colour_max),
                   faces=None, coordinate_dtype=np.dtype(xyz.dtype))
