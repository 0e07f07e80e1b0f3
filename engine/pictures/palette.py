"""Colours shared by every output that draws instances: the PLY, the PNG and the HTML viewer."""

from __future__ import annotations

import numpy as np

from engine.classes import CLASS_NAMES

__all__ = ["UNASSIGNED_RGB", "class_colors", "hex_colors", "instance_colors"]

UNASSIGNED_RGB = (128, 128, 128)  # vertices in no instance (PLY and viewer)
_GOLDEN = 0.6180339887498949


def instance_colors(num_instances: int) -> np.ndarray:
    """(M, 3) uint8 palette: instance i always gets the same colour, whatever M is.

    Hues step by the golden ratio (neighbouring indices land far apart on the colour wheel),
    with saturation and value cycling over 3 x 3 levels so that hues that come close again
    differ in brightness. All colours are saturated (s >= 0.65, v >= 0.55: channels differ by at
    least 90/255), so none looks like the grey of unassigned points; the first 1000 are pairwise
    distinct.
    """
    if num_instances < 0:
        raise ValueError(f"num_instances must be >= 0, got {num_instances}")
    i = np.arange(num_instances)
    hue = (0.02 + i * _GOLDEN) % 1.0
    sat = np.array([0.85, 0.65, 1.0])[i % 3]
    val = np.array([0.95, 0.75, 0.55])[(i // 3) % 3]
    return _hsv_to_rgb8(hue, sat, val)


def class_colors() -> dict[str, np.ndarray]:
    """Class name -> (3,) uint8 colour, one per ``engine.classes.CLASS_NAMES`` entry (the same
    golden-ratio palette, indexed by class): the viewer's "colour by class" mode."""
    return dict(zip(CLASS_NAMES, instance_colors(len(CLASS_NAMES)), strict=True))


def hex_colors(rgb: np.ndarray) -> list[str]:
    """(M, 3) uint8 -> ``["#rrggbb", ...]``."""
    return [f"#{int(r):02x}{int(g):02x}{int(b):02x}" for r, g, b in np.asarray(rgb).reshape(-1, 3)]


def _hsv_to_rgb8(hue: np.ndarray, sat: np.ndarray, val: np.ndarray) -> np.ndarray:
    sector = np.floor(hue * 6.0).astype(np.int64) % 6
    frac = hue * 6.0 - np.floor(hue * 6.0)
    p, q, t = val * (1 - sat), val * (1 - frac * sat), val * (1 - (1 - frac) * sat)
    choices = [
        (val, t, p), (q, val, p), (p, val, t), (p, q, val), (t, p, val), (val, p, q),
    ]
    rgb = np.zeros((len(hue), 3))
    for s, (r, g, b) in enumerate(choices):
        sel = sector == s
        rgb[sel] = np.stack((r[sel], g[sel], b[sel]), axis=1)
    return np.round(rgb * 255.0).astype(np.uint8)
