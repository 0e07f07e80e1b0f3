"""LAS and LAZ point clouds (airborne and terrestrial LiDAR) through laspy.

Needs the ``las`` extra (``pip install -e ".[las]"``: laspy with the lazrs backend for LAZ).
Coordinates are laspy's scaled ``x y z`` (float64, the header's scale and offset applied: large
georeferenced offsets arrive intact). Colour exists in point formats 2, 3, 5, 7, 8 and 10 as 16-bit
``red green blue``; the specification says to scale to 16 bits, but many writers store 0..255: when
every value is at most 255 they are taken as 0..255, else as 0..65535 (divided by 257). Other
point formats have no colour.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.readers.common import RawScan, SceneInputError, check_xyz


def read_las(path: Path, colour_max: int | None = None) -> RawScan:
    """Read one LAS/LAZ file; SceneInputError (one line, naming the file) for anything unusable.
    ``colour_max`` is not used: LAS colours are integers."""
    try:
        import laspy
    except ImportError:
        raise SceneInputError(path, 'reading LAS/LAZ needs laspy: pip install -e ".[las]"') from None
    try:
        las = laspy.read(path)
        xyz = np.stack((np.asarray(las.x), np.asarray(las.y), np.asarray(las.z)), axis=1).astype(np.float64)
    except OSError as error:
        raise SceneInputError(path, f"cannot read the file: {error.strerror or error}") from error
    except MemoryError as error:
        raise SceneInputError(path, "not a valid LAS file (its header declares more data than fits in memory)") \
            from error
    except laspy.LaspyException as error:
        raise SceneInputError(path, f"not a valid LAS/LAZ file ({error})") from error
    except Exception as error:  # numpy and struct errors for broken files
        raise SceneInputError(path, f"not a valid LAS/LAZ file ({type(error).__name__}: {error})") from error
    check_xyz(path, xyz)
    names = set(las.point_format.dimension_names)
    rgb = None
    if {"red", "green", "blue"} <= names:
        words = np.stack((np.asarray(las.red), np.asarray(las.green), np.asarray(las.blue)), axis=1)
        if words.size and words.max() > 255:
            words = (words.astype(np.float64) / 257.0).round()
        rgb = words.astype(np.uint8)
    # scaled integers: precision is the header's scale, not float32's
    return RawScan(xyz=xyz, rgb=rgb, faces=None, coordinate_dtype=np.dtype(np.float64))
