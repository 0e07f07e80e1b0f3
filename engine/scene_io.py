"""Reading one scan into a ``Scene`` (SPEC §1): any supported format, in metres with z up. numpy only,
no torch.

The file's format comes from its extension (``engine.readers``: PLY, PCD, LAS/LAZ, NumPy
``.npy``/``.npz``); every reader keeps the file's points in file order, so masks and outputs stay
per input point, in input order. Then, in float64:

- ``units`` (``m``, ``cm``, ``mm``) scale the coordinates to metres;
- ``up_axis`` (``z``, ``y``, ``-y``, ``x``) turns the scan so that z is up, by a rotation (no
  mirroring): y-up (phones, ARKit, many mesh tools) maps ``(x, y, z) -> (x, -z, y)``, -y-up
  ``(x, y, z) -> (x, z, -y)``, x-up ``(x, y, z) -> (-z, y, x)``;
- coordinates are not centred here (a georeferenced offset stays in ``Scene.xyz`` and in the
  outputs); every consumer centres in float64 before anything is float32 (``engine.preprocess``,
  ``engine.superpoints.segment_mesh``).

Warnings (one line each, in ``Scene.warnings``; the scene still runs):

- no colour: every point gets ``NEUTRAL_RGB`` (mid-grey, 0.004 after DKNet's colour
  normalization, i.e. "no colour information"); DKNet was trained on coloured ScanNet scans, so
  expect fewer and worse instances (objects that differ from their surroundings only by colour —
  pictures, windows, doors flush with a wall — suffer most);
- an implausible indoor room in metres: more than ``MAX_ROOM_M`` across, less than ``MIN_ROOM_M``
  across, or more than ``MAX_HEIGHT_RATIO`` times as tall as wide (wrong ``--units`` or
  ``--up-axis``?);
- precision already lost: float32 coordinates so far from the origin that float32's spacing there
  exceeds ``MAX_FLOAT32_STEP_M`` (a tenth of DKNet's 2 cm voxel): about 16 km in metres, 16 m in mm.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.readers import COLOUR_MAXIMA, EXTENSIONS, SceneInputError, read_raw

__all__ = ["COLOUR_MAXIMA", "NEUTRAL_RGB", "UNITS_M", "UP_AXES", "Scene", "SceneInputError", "read_scene",
           "safe_scene_name", "scene_name"]

NEUTRAL_RGB = (128, 128, 128)  # colour of scans without colour
UNITS_M = {"m": 1.0, "cm": 0.01, "mm": 0.001}  # --units: metres per file unit
UP_AXES = ("z", "y", "-y", "x")  # --up-axis
MAX_ROOM_M = 100.0
MIN_ROOM_M = 0.5
MAX_HEIGHT_RATIO = 3.0
MAX_FLOAT32_STEP_M = 0.002

_SCANNET_SUFFIX = "_vh_clean_2"
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]")
# z-up coordinates as file coordinates: new axis i = sign * file axis index
_TO_Z_UP = {"z": ((1, 0), (1, 1), (1, 2)), "y": ((1, 0), (-1, 2), (1, 1)),
            "-y": ((1, 0), (1, 2), (-1, 1)), "x": ((-1, 2), (1, 1), (1, 0))}


@dataclass
class Scene:
    name: str  # safe_scene_name of the file
    path: Path
    xyz: np.ndarray  # (N, 3) float64, metres, z up, file order (not centred)
    rgb: np.ndarray  # (N, 3) uint8 (NEUTRAL_RGB when the file has no colour)
    faces: np.ndarray | None  # (F, 3) int64 vertex indices, or None when the file has no faces
    has_colour: bool = True
    warnings: list[str] = field(default_factory=list)  # one line each, for the user

    @property
    def num_points(self) -> int:
        return int(self.xyz.shape[0])


def scene_name(path: os.PathLike | str) -> str:
    """``.../scene0011_00_vh_clean_2.ply`` -> ``scene0011_00``; ``foo.laz`` -> ``foo``.

    A readable scan extension (``engine.readers.EXTENSIONS``, any case) is removed, then a trailing
    ``_vh_clean_2`` (unless that is the whole name); other names are kept whole.
    """
    name = Path(path).name
    for extension in EXTENSIONS:
        if name.lower().endswith(extension):
            name = name[: -len(extension)]
            break
    if name.endswith(_SCANNET_SUFFIX) and len(name) > len(_SCANNET_SUFFIX):
        name = name[: -len(_SCANNET_SUFFIX)]
    return name


def safe_scene_name(path: os.PathLike | str) -> tuple[str, str | None]:
    """The scene name used for output files, and a one-line note when it differs from ``scene_name``.

    Output names must be plain file names that the space-separated submission format can hold:
    every character outside ``A-Z a-z 0-9 . _ -`` becomes ``_`` and leading dots are dropped (no
    hidden files). A name with nothing left (``.ply``) is a SceneInputError.
    """
    name = scene_name(path)
    safe = _UNSAFE_NAME_CHARS.sub("_", name).lstrip(".")
    if not safe:
        raise SceneInputError(path, "the file name leaves no scene name for the outputs: rename the file")
    if safe == name:
        return safe, None
    return safe, f"{path}: scene name {name!r} written as {safe!r} (plain characters, no leading dot)"


def read_scene(path: os.PathLike | str, up_axis: str = "z", units: str = "m",
               colour_max: int | None = None) -> Scene:
    """Read one scan (module docstring). Raises SceneInputError (one line, naming the file) for any
    unusable input. ``colour_max`` (1 or 255) states the scale of float colours (``--colour-max``)."""
    path = Path(path)
    if up_axis not in UP_AXES:
        raise ValueError(f"up_axis must be one of {UP_AXES}, not {up_axis!r}")
    if units not in UNITS_M:
        raise ValueError(f"units must be one of {tuple(UNITS_M)}, not {units!r}")
    if colour_max is not None and colour_max not in COLOUR_MAXIMA:
        raise ValueError(f"colour_max must be one of {COLOUR_MAXIMA}, not {colour_max!r}")
    name, _ = safe_scene_name(path)
    raw = read_raw(path, colour_max)
    warnings = []
    precision = _lost_precision(raw.xyz, raw.coordinate_dtype, UNITS_M[units], units)
    if precision:
        warnings.append(f"{path}: {precision}")
    xyz = _to_metres_z_up(raw.xyz, UNITS_M[units], up_axis)
    rgb = raw.rgb
    if rgb is None:
        rgb = np.empty(xyz.shape, dtype=np.uint8)
        rgb[:] = NEUTRAL_RGB
        warnings.append(f"{path}: no colour; using neutral grey {NEUTRAL_RGB}: DKNet was trained on colour, "
                        "expect fewer and worse instances")
    extent = _implausible_extent(xyz, units, up_axis)
    if extent:
        warnings.append(f"{path}: {extent}")
    return Scene(name=name, path=path, xyz=xyz, rgb=rgb, faces=raw.faces, has_colour=raw.rgb is not None,
                 warnings=warnings)


def _to_metres_z_up(xyz: np.ndarray, metres_per_unit: float, up_axis: str) -> np.ndarray:
    """(N, 3) float64 file coordinates -> (N, 3) float64 metres, z up (a rotation; exact for m)."""
    out = np.empty_like(xyz, dtype=np.float64)
    for axis, (sign, source) in enumerate(_TO_Z_UP[up_axis]):
        out[:, axis] = xyz[:, source] if sign > 0 else -xyz[:, source]
    if metres_per_unit != 1.0:
        out *= metres_per_unit
    return out


def _implausible_extent(xyz: np.ndarray, units: str, up_axis: str) -> str | None:
    """A one-line warning when the scene (metres, z up) does not look like an indoor room, else None."""
    extent = xyz.max(axis=0) - xyz.min(axis=0)
    width, height = float(extent[:2].max()), float(extent[2])
    largest = max(width, height)
    hint = f"is --units {units} right?"
    if largest > MAX_ROOM_M:
        return f"the scene is {largest:.0f} m across, large for an indoor room in metres: {hint}"
    if largest < MIN_ROOM_M and len(xyz) > 1:
        return f"the scene is only {largest:.3f} m across, small for an indoor room in metres: {hint}"
    if height > MAX_HEIGHT_RATIO * width:
        return (f"the scene is {height:.1f} m tall but {width:.1f} m wide: is --up-axis {up_axis} right? "
                "(phone and ARKit scans are usually y-up)")
    return None


def _lost_precision(xyz: np.ndarray, dtype: np.dtype, metres_per_unit: float, units: str) -> str | None:
    """A one-line warning when the file's float32 (or float16) coordinates are too far from the origin
    to hold DKNet's 2 cm voxels faithfully, else None. xyz (N, 3) float64 in file units."""
    if dtype.kind != "f" or dtype.itemsize > 4:
        return None
    largest = float(np.abs(xyz).max())
    step_m = float(np.spacing(dtype.type(largest))) * metres_per_unit
    if step_m <= MAX_FLOAT32_STEP_M:
        return None
    return (f"coordinates are {dtype.name} up to {largest:.3g} {units} from the origin, where {dtype.name} "
            f"only holds steps of {step_m * 1000:.3g} mm (voxels are 20 mm): precision was lost when the file "
            "was written; save float64 or subtract an offset first")
