"""What every scan reader returns, and the checks they share (a leaf of the readers: numpy only).

A reader turns one file into a :class:`RawScan`: coordinates as float64 in the file's own units and
axes, colours as uint8 when the file has them, faces when it is a mesh, all per point in file order.
``engine.scene_io`` then applies ``--units`` / ``--up-axis`` and the plausibility warnings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

COLOUR_MAXIMA = (1, 255)  # --colour-max: the value of full intensity in float colour data


class SceneInputError(ValueError):
    """A scene file that cannot be used; the message is one user-facing line naming the file."""

    def __init__(self, path: os.PathLike | str, problem: str):
        self.path = Path(path)
        self.problem = " ".join(str(problem).split())  # always a single line
        super().__init__(f"{self.path}: {self.problem}")


@dataclass
class RawScan:
    """One file's points as read, before units and axes are applied."""

    xyz: np.ndarray  # (N, 3) float64, the file's units and axes, finite
    rgb: np.ndarray | None  # (N, 3) uint8, or None when the file has no colour
    faces: np.ndarray | None  # (F, 3) int64 vertex indices in 0..N-1, or None (a point cloud)
    coordinate_dtype: np.dtype  # how the file stored x y z (float32 files may have lost precision)


def check_xyz(path: Path, xyz: np.ndarray) -> np.ndarray:
    """(N, 3) float64 with N >= 1 and every value finite, else SceneInputError."""
    num_points = xyz.shape[0]
    if num_points == 0:
        raise SceneInputError(path, "the file has zero points")
    bad = ~np.isfinite(xyz).all(axis=1)
    if bad.any():
        num_nan = int(np.isnan(xyz).any(axis=1).sum())
        num_inf = int(np.isinf(xyz).any(axis=1).sum())
        raise SceneInputError(
            path,
            f"{int(bad.sum())} of {num_points} vertices have non-finite coordinates "
            f"({num_nan} with NaN, {num_inf} with infinity)",
        )
    return xyz


def colours_to_uint8(path: Path, values: np.ndarray, colour_max: int | None) -> np.ndarray:
    """(N, 3) colour values of any numeric dtype -> (N, 3) uint8, by one rule for every format.

    - integers: 0..255 as they are (values outside are an error);
    - floats with ``colour_max`` given (``--colour-max 1`` or ``255``): scaled to 0..255 and rounded;
    - floats without it: 0..255 when some value exceeds 1 (then all must lie in 0..255), 0..1 when
      every value lies in 0..1 and some value is strictly between 0 and 1; floats holding only 0
      and 1 are ambiguous (black-and-white at 0..1, or nearly black at 0..255): an error asking
      for ``--colour-max``.
    """
    values = np.asarray(values)
    if values.dtype.kind in "iub":
        if values.size and (values.min() < 0 or values.max() > 255):
            raise SceneInputError(path, f"integer colours outside 0..255 ({values.min()}..{values.max()})")
        return values.astype(np.uint8)
    if values.dtype.kind != "f":
        raise SceneInputError(path, f"colours are not numbers ({values.dtype})")
    values = values.astype(np.float64)
    if not np.isfinite(values).all():
        raise SceneInputError(path, "colours hold NaN or infinity")
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if colour_max is None:
        if high > 1.0:
            colour_max = 255
        elif ((values > 0) & (values < 1)).any():
            colour_max = 1
        else:
            raise SceneInputError(path, "float colours hold only 0 and 1: say their scale with --colour-max 1 or 255")
    if low < 0 or high > colour_max:
        raise SceneInputError(path, f"float colours outside 0..{colour_max} ({low:g}..{high:g}); see --colour-max")
    return np.rint(values * (255.0 / colour_max)).astype(np.uint8)


def listing(names) -> str:
    """Names for an error message, comma-separated ("none" for no names)."""
    return ", ".join(names) if len(names) else "none"
