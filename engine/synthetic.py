"""Seeded synthetic ScanNet-like scenes: a furnished room as a triangle mesh, in ScanNet's file layout.

Used by tests, benchmarks and the bundled example, where real ScanNet scans cannot be shipped.
numpy and plyfile only (no torch import, so ``python -m engine.synthetic --help`` is fast).

Scene model
-----------
- A rectangular room, 4-8 m on each side, walls 2.4-3.0 m high, no ceiling (as in ScanNet scans).
  Room and furniture are built axis-aligned at the origin; the whole scene is then turned by a
  random yaw and shifted a little, because raw ScanNet scans are not axis-aligned either.
- A room "theme" (bedroom, office, living room, bathroom, kitchen) picks which furniture classes
  appear. Floor furniture count scales with floor area (4-14 pieces), plus 1-2 doors and up to 7
  windows / pictures / curtains on the walls and up to 3 small items on tables and cabinets.
  Every object is a union of boxes (a chair is a seat, a back and 4 legs; a table a top and 4 legs;
  a bookshelf sides, back and shelves; ...). Pieces stand on the floor, wall items hang on a wall,
  and no two objects' bounding boxes intersect (5 cm clearance; doors keep 0.9 m free in front).
- The surfaces are rectangles, each triangulated as a regular grid with shared vertices
  (``nx * ny`` vertices, ``2 (nx-1)(ny-1)`` triangles, normals facing outward). Box faces hidden
  on the floor or against a wall are left out. One grid spacing ``h`` for the whole scene is found
  by bisection so that the vertex count is as close to ``num_points`` as the grid steps allow
  (well within 10 %; each rectangle has at least 2 x 2 vertices). For tiny budgets the last
  placed objects are dropped until those minimum grids take at most half the budget.
- Vertex positions get Gaussian noise of ``min(3 mm, 0.1 h)``; colours are a per-object base
  colour (one or two materials), shaded by the face normal, plus per-vertex noise.
- Vertex order is shuffled (``shuffle=True``, the default) and faces renumbered, so that no
  consumer can rely on objects being contiguous vertex ranges; real scans interleave objects too.

Labels and ids (ScanNet's conventions)
--------------------------------------
- ``nyu40``: the NYU40 id of each vertex's object (SPEC §12 classes, plus ``box`` 29 and ``lamp``
  35, which ScanNet annotates but the benchmark ignores); 0 for unannotated vertices. Some small
  items are left unannotated on purpose, as ScanNet leaves some surfaces unannotated.
- ``instance_ids``: ``objectId + 1`` of the aggregation segGroup the vertex belongs to, exactly as
  ScanNet's ``export_train_mesh_for_evaluation.py`` numbers them; 0 = unannotated. Walls (one
  instance per wall) and the floor are instances here too, because ScanNet's aggregation files
  annotate them as segGroups; they are "stuff" only for the benchmark, which ignores their
  classes. ``instance_gt`` therefore returns ``nyu40 * 1000 + instance_ids`` for every vertex,
  like the official ground-truth export (walls give 1xxx, the floor 2xxx, unannotated 0).
- ``segments``: superpoint ids ``0..S-1``. Each rectangle is cut into patches of about 0.5 m (room)
  or 0.3 m (furniture) along each side (or 4 grid steps, where the grid is coarser); a furniture
  part no larger than 0.45 m in any dimension (a leg, a lamp pole) is one segment. A segment
  therefore never covers two objects, and each aggregation segGroup lists exactly the segments of
  its object. (As in ScanNet, faces on a patch border do span two segments.)

The layout (room, themes, objects, colours) depends only on ``seed``; ``num_points`` only sets the
grid density (and, below a few thousand points, how many objects fit). Same seed and same
``num_points`` give identical arrays on every run.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.atomic import atomic_file

__all__ = [
    "LABEL_TO_NYU40",
    "NYU40_PALETTE",
    "SyntheticScene",
    "generate_scene",
    "instance_gt",
    "main",
    "nyu40_from_label",
    "write_scannet_scene",
]

# Raw ScanNet category names (aggregation ``label``) used here, with their NYU40 ids: the 20
# benchmark classes (SPEC §12), plus two annotated non-benchmark classes for small items.
LABEL_TO_NYU40: dict[str, int] = {
    "wall": 1, "floor": 2, "cabinet": 3, "bed": 4, "chair": 5, "sofa": 6, "table": 7, "door": 8,
    "window": 9, "bookshelf": 10, "picture": 11, "counter": 12, "desk": 14, "curtain": 16,
    "refrigerator": 24, "box": 29, "shower curtain": 28, "toilet": 33, "sink": 34, "lamp": 35,
    "bathtub": 36, "otherfurniture": 39,
}

# ScanNet's NYU40 colour palette (BenchmarkScripts/util.py, create_color_palette), index = NYU40 id.
NYU40_PALETTE = np.array([
    (0, 0, 0), (174, 199, 232), (152, 223, 138), (31, 119, 180), (255, 187, 120), (188, 189, 34),
    (140, 86, 75), (255, 152, 150), (214, 39, 40), (197, 176, 213), (148, 103, 189), (196, 156, 148),
    (23, 190, 207), (178, 76, 76), (247, 182, 210), (66, 188, 102), (219, 219, 141), (140, 57, 197),
    (202, 185, 52), (51, 176, 203), (200, 54, 131), (92, 193, 61), (78, 71, 183), (172, 114, 82),
    (255, 127, 14), (91, 163, 138), (153, 98, 156), (140, 153, 101), (158, 218, 229), (100, 125, 154),
    (178, 127, 135), (120, 185, 128), (146, 111, 194), (44, 160, 44), (112, 128, 144), (96, 207, 209),
    (227, 119, 194), (213, 92, 176), (94, 106, 211), (82, 84, 163), (100, 85, 144),
], dtype=np.uint8)

MIN_POINTS = 1000
_ROOM_PATCH_M = 0.5  # superpoint patch side on walls and floor
_FURNITURE_PATCH_M = 0.3  # superpoint patch side on furniture
_SMALL_PART_M = 0.45  # a part no larger than this in every dimension is one segment
_CLEARANCE_M = 0.05  # gap kept between objects' bounding boxes
_NOISE_M = 0.003  # positional noise cap (sigma)


def nyu40_from_label(label: str) -> int:
    """Raw aggregation label -> NYU40 id (the scannetv2-labels.combined.tsv mapping for our names)."""
    return LABEL_TO_NYU40[label]


@dataclass
class SyntheticScene:
    """One generated scene; all per-vertex arrays are in the same (shuffled) vertex order."""

    vertices_m: np.ndarray  # (N, 3) float32, metres, z up, floor at z = 0
    colors: np.ndarray  # (N, 3) uint8 RGB
    faces: np.ndarray  # (F, 3) int32 triangles, counter-clockwise seen from outside
    nyu40: np.ndarray  # (N,) int32 NYU40 id, 0 = unannotated
    instance_ids: np.ndarray  # (N,) int32 objectId + 1 of the vertex's segGroup, 0 = unannotated
    segments: np.ndarray  # (N,) int32 superpoint id in 0..S-1
    instance_labels: tuple[str, ...]  # raw label of instance k + 1 (aggregation objectId k)
    room_size_m: tuple[float, float, float]  # width, depth, wall height

    @property
    def num_points(self) -> int:
        return int(self.vertices_m.shape[0])

    @property
    def num_instances(self) -> int:
        return len(self.instance_labels)


def instance_gt(scene: SyntheticScene) -> np.ndarray:
    """Per-vertex ground truth ``nyu40 * 1000 + instance`` (N,) int64, 0 = unannotated.

    Same encoding as ScanNet's official export (``label_ids * 1000 + instance_ids``, instance =
    objectId + 1), walls and floor included; the benchmark ignores their classes itself.
    """
    gt = scene.nyu40.astype(np.int64) * 1000 + scene.instance_ids.astype(np.int64)
    gt[scene.instance_ids == 0] = 0
    return gt


# --------------------------------------------------------------------------------------------
# Boxes and rectangles
# --------------------------------------------------------------------------------------------

_AXES = np.eye(3)


@dataclass
class _Part:
    """An axis-aligned box in its object's frame: centre xy, bottom z, size, hidden faces."""

    cx: float
    cy: float
    z0: float
    sx: float
    sy: float
    sz: float
    skip: str = ""  # hidden faces, e.g. "-z+y"
    mat: int = 0  # material index (colour) within the object

    def corners(self) -> np.ndarray:
        lo = np.array([self.cx - self.sx / 2, self.cy - self.sy / 2, self.z0])
        hi = lo + np.array([self.sx, self.sy, self.sz])
        return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])

    def rects(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Visible faces as (origin, u, v) with u x v pointing outward."""
        size = np.array([self.sx, self.sy, self.sz])
        lo = np.array([self.cx - self.sx / 2, self.cy - self.sy / 2, self.z0])
        skip = set(self.skip[i : i + 2] for i in range(0, len(self.skip), 2))
        if self.z0 <= 1e-9:
            skip.add("-z")  # standing on the floor: the bottom is never seen
        out = []
        for k, axis in enumerate("xyz"):
            u = _AXES[(k + 1) % 3] * size[(k + 1) % 3]
            v = _AXES[(k + 2) % 3] * size[(k + 2) % 3]
            for sign in "+-":
                if sign + axis in skip or size[(k + 1) % 3] <= 0 or size[(k + 2) % 3] <= 0:
                    continue
                if sign == "+":
                    out.append((lo + _AXES[k] * size[k], u, v))
                else:
                    out.append((lo.copy(), v, u))
        return out


def _box(cx, cy, z0, sx, sy, sz, skip="", mat=0) -> _Part:
    return _Part(float(cx), float(cy), float(z0), float(sx), float(sy), float(sz), skip, mat)


def _leg(x, y, w, h, mat=1) -> _Part:
    return _box(x, y, 0.0, w, w, h, "+z-z", mat)


@dataclass
class _Shape:
    parts: list[_Part]
    support: tuple[float, float, float, float, float] | None = None  # cx, cy, half x, half y, top z


# --------------------------------------------------------------------------------------------
# Furniture builders: local frame, footprint centred on the origin, back towards +y, on z = 0.
# --------------------------------------------------------------------------------------------


def _chair(rng) -> _Shape:
    w, d, h = rng.uniform(0.42, 0.55), rng.uniform(0.40, 0.52), rng.uniform(0.42, 0.48)
    t, lw = 0.05, 0.035
    corners = [(sx * (w / 2 - lw / 2), sy * (d / 2 - lw / 2)) for sx in (-1, 1) for sy in (-1, 1)]
    parts = [_leg(x, y, lw, h - t) for x, y in corners]
    parts.append(_box(0, 0, h - t, w, d, t))
    parts.append(_box(0, d / 2 - 0.025, h, w, 0.05, rng.uniform(0.35, 0.5)))
    return _Shape(parts)


def _table(rng) -> _Shape:
    w, d, h = rng.uniform(0.8, 1.8), rng.uniform(0.6, 1.0), rng.uniform(0.72, 0.77)
    t, lw, inset = 0.04, 0.06, 0.06
    parts = [_leg(sx * (w / 2 - inset), sy * (d / 2 - inset), lw, h - t) for sx in (-1, 1) for sy in (-1, 1)]
    parts.append(_box(0, 0, h - t, w, d, t))
    return _Shape(parts, (0.0, 0.0, w / 2, d / 2, h))


def _desk(rng) -> _Shape:
    w, d, h = rng.uniform(1.0, 1.6), rng.uniform(0.55, 0.75), rng.uniform(0.72, 0.76)
    t, p = 0.03, 0.03
    parts = [_box(sx * (w / 2 - p / 2), 0, 0, p, d, h - t, "+z", 1) for sx in (-1, 1)]
    parts.append(_box(0, d / 2 - 0.02, 0.35, w - 2 * p, 0.02, h - t - 0.35, "+z", 1))
    if rng.random() < 0.5:  # a drawer block under one side
        side = 1 if rng.random() < 0.5 else -1
        parts.append(_box(side * (w / 2 - p - 0.2), -0.01, 0, 0.4, d - 0.06, h - t - 0.08, "", 1))
    parts.append(_box(0, 0, h - t, w, d, t))
    return _Shape(parts, (0.0, 0.0, w / 2, d / 2, h))


def _bed(rng) -> _Shape:
    w, length = rng.uniform(0.95, 1.8), rng.uniform(1.95, 2.15)
    base_h, mattress_h, head_t = rng.uniform(0.25, 0.35), rng.uniform(0.15, 0.22), 0.06
    body = length - head_t
    return _Shape([
        _box(0, -head_t / 2, 0, w, body, base_h, "", 1),
        _box(0, -head_t / 2, base_h, w - 0.04, body - 0.04, mattress_h),
        _box(0, length / 2 - head_t / 2, 0, w, head_t, rng.uniform(0.85, 1.1), "", 1),
    ])


def _sofa(rng) -> _Shape:
    w, d = rng.uniform(1.5, 2.4), rng.uniform(0.8, 0.95)
    back_t, arm_w = 0.2, 0.18
    return _Shape([
        _box(0, -back_t / 2, 0, w - 2 * arm_w, d - back_t, 0.42),
        _box(0, d / 2 - back_t / 2, 0, w, back_t, rng.uniform(0.75, 0.9)),
        _box(-(w / 2 - arm_w / 2), -back_t / 2, 0, arm_w, d - back_t, rng.uniform(0.55, 0.65)),
        _box(w / 2 - arm_w / 2, -back_t / 2, 0, arm_w, d - back_t, rng.uniform(0.55, 0.65)),
    ])


def _cabinet(rng) -> _Shape:
    w, d, h = rng.uniform(0.5, 1.2), rng.uniform(0.4, 0.6), rng.uniform(0.6, 1.1)
    parts = [_box(0, 0, 0, w, d, h - 0.03, "+z"), _box(0, -0.01, h - 0.03, w + 0.02, d + 0.02, 0.03, "", 1)]
    for sx in (-1, 1):  # two door fronts
        parts.append(_box(sx * w / 4, -d / 2 - 0.01, 0.05, w / 2 - 0.02, 0.02, h - 0.12, "+y", 1))
    return _Shape(parts, (0.0, -0.01, w / 2, d / 2, h))


def _bookshelf(rng) -> _Shape:
    w, d, h, t = rng.uniform(0.6, 1.2), rng.uniform(0.28, 0.38), rng.uniform(1.4, 2.0), 0.025
    parts = [_box(sx * (w / 2 - t / 2), 0, 0, t, d, h) for sx in (-1, 1)]
    parts.append(_box(0, d / 2 - t / 2, 0, w - 2 * t, t, h))
    num_shelves = int(h / 0.35)
    for z in np.linspace(0.0, h - t, num_shelves + 1):
        parts.append(_box(0, -t / 2, z, w - 2 * t, d - t, t, "", 1))
    return _Shape(parts)


def _counter(rng) -> _Shape:
    w, d, h = rng.uniform(1.2, 2.6), rng.uniform(0.55, 0.65), rng.uniform(0.86, 0.92)
    return _Shape([
        _box(0, 0.02, 0, w - 0.02, d - 0.04, h - 0.04, "+z", 1),
        _box(0, 0, h - 0.04, w, d, 0.04),
    ], (0.0, 0.0, w / 2, d / 2, h))


def _refrigerator(rng) -> _Shape:
    w, d, h = rng.uniform(0.6, 0.8), rng.uniform(0.6, 0.75), rng.uniform(1.6, 1.9)
    return _Shape([
        _box(0, 0, 0, w, d, h),
        _box(w / 2 - 0.08, -d / 2 - 0.03, h * 0.45, 0.03, 0.03, h * 0.3, "+y", 1),  # handle
    ])


def _toilet(rng) -> _Shape:
    return _Shape([
        _box(0, -0.09, 0, 0.38, 0.52, 0.38),
        _box(0, -0.1, 0.38, 0.40, 0.50, 0.03, "", 1),
        _box(0, 0.26, 0, rng.uniform(0.42, 0.48), 0.18, rng.uniform(0.75, 0.8)),
    ])


def _sink(rng) -> _Shape:
    w, d = rng.uniform(0.45, 0.6), rng.uniform(0.4, 0.5)
    return _Shape([_box(0, 0.05, 0, 0.18, 0.18, 0.72, "+z", 1), _box(0, 0, 0.72, w, d, 0.16)])


def _bathtub(rng) -> _Shape:
    w, d, h, t = rng.uniform(1.5, 1.75), rng.uniform(0.7, 0.8), rng.uniform(0.5, 0.6), 0.07
    return _Shape([
        _box(0, 0, 0, w - 2 * t, d - 2 * t, 0.12),
        _box(-(w / 2 - t / 2), 0, 0, t, d, h),
        _box(w / 2 - t / 2, 0, 0, t, d, h),
        _box(0, -(d / 2 - t / 2), 0, w - 2 * t, t, h),
        _box(0, d / 2 - t / 2, 0, w - 2 * t, t, h),
    ])


def _otherfurniture(rng) -> _Shape:
    w, d, h = rng.uniform(0.35, 0.7), rng.uniform(0.35, 0.6), rng.uniform(0.4, 0.75)
    return _Shape([_box(0, 0, 0, w, d, h - 0.03, "+z", 1), _box(0, 0, h - 0.03, w + 0.02, d + 0.02, 0.03)],
                  (0.0, 0.0, w / 2 + 0.01, d / 2 + 0.01, h))


def _shower_curtain(rng) -> _Shape:
    z0 = rng.uniform(0.1, 0.3)
    return _Shape([_box(0, 0, z0, rng.uniform(1.0, 1.6), 0.03, rng.uniform(1.9, 2.05) - z0)])


def _door(rng) -> _Shape:
    return _Shape([_box(0, 0, 0, rng.uniform(0.8, 1.0), 0.045, rng.uniform(1.98, 2.1), "+y")])


def _window(rng) -> _Shape:
    w, h, z0 = rng.uniform(0.8, 1.6), rng.uniform(1.0, 1.4), rng.uniform(0.8, 1.0)
    return _Shape([_box(0, 0, z0, w, 0.06, h, "+y"), _box(0, -0.03, z0 - 0.04, w + 0.1, 0.12, 0.04, "+y", 1)])


def _picture(rng) -> _Shape:
    w, h = rng.uniform(0.4, 1.0), rng.uniform(0.3, 0.8)
    return _Shape([_box(0, 0, rng.uniform(1.2, 1.6), w, 0.03, h, "+y")])


def _curtain(rng) -> _Shape:
    z0 = rng.uniform(0.05, 0.15)
    return _Shape([_box(0, 0, z0, rng.uniform(0.8, 1.6), 0.08, rng.uniform(2.0, 2.3) - z0, "+y")])


def _small_box(rng) -> _Shape:
    w, d, h = rng.uniform(0.15, 0.4), rng.uniform(0.15, 0.35), rng.uniform(0.1, 0.3)
    return _Shape([_box(0, 0, 0, w, d, h, "-z")])


def _lamp(rng) -> _Shape:
    pole = rng.uniform(0.25, 0.4)
    return _Shape([
        _box(0, 0, 0, 0.15, 0.15, 0.03, "-z", 1),
        _box(0, 0, 0.03, 0.03, 0.03, pole, "-z+z", 1),
        _box(0, 0, 0.03 + pole, 0.3, 0.3, 0.2),
    ])


@dataclass(frozen=True)
class _Kind:
    build: Callable[[np.random.Generator], _Shape]
    placement: str  # "wall" (back against a wall), "free", "hang" (on a wall), "door"
    gap: tuple[float, float] = (0.02, 0.08)  # distance from the wall, for "wall" and "hang"
    colours: tuple[tuple[tuple[int, int, int], ...], ...] = (((128, 128, 128),),)  # per material


_WOOD = ((150, 105, 65), (120, 80, 50), (180, 140, 95), (95, 65, 45))
_LIGHT = ((225, 225, 220), (205, 200, 190), (235, 230, 215))
_FABRIC = ((70, 90, 140), (140, 60, 55), (90, 120, 80), (150, 140, 120), (60, 60, 65))
_METAL = ((70, 70, 75), (160, 160, 165), (40, 40, 40))
_CERAMIC = ((240, 240, 238), (230, 232, 235))

_KINDS: dict[str, _Kind] = {
    "chair": _Kind(_chair, "free", colours=(_FABRIC + _WOOD, _METAL + _WOOD)),
    "table": _Kind(_table, "free", colours=(_WOOD + _LIGHT, _WOOD + _METAL)),
    "desk": _Kind(_desk, "wall", colours=(_WOOD + _LIGHT, _WOOD + _LIGHT)),
    "bed": _Kind(_bed, "wall", colours=(_LIGHT + _FABRIC, _WOOD)),
    "sofa": _Kind(_sofa, "wall", colours=(_FABRIC,)),
    "cabinet": _Kind(_cabinet, "wall", colours=(_WOOD + _LIGHT, _WOOD + _LIGHT)),
    "bookshelf": _Kind(_bookshelf, "wall", colours=(_WOOD, _WOOD + _LIGHT)),
    "counter": _Kind(_counter, "wall", colours=(((60, 60, 60), (200, 195, 185), (110, 100, 90)),
                                                _LIGHT + _WOOD)),
    "refrigerator": _Kind(_refrigerator, "wall", colours=(_LIGHT + ((180, 180, 185),), _METAL)),
    "toilet": _Kind(_toilet, "wall", (0.01, 0.04), colours=(_CERAMIC, _CERAMIC)),
    "sink": _Kind(_sink, "wall", (0.01, 0.04), colours=(_CERAMIC, _CERAMIC)),
    "bathtub": _Kind(_bathtub, "wall", (0.01, 0.03), colours=(_CERAMIC,)),
    "otherfurniture": _Kind(_otherfurniture, "free", colours=(_WOOD + _FABRIC, _WOOD + _LIGHT)),
    "shower curtain": _Kind(_shower_curtain, "wall", (0.6, 0.8), colours=(_LIGHT + ((150, 190, 210),),)),
    "door": _Kind(_door, "door", (0.0, 0.005), colours=(_WOOD + _LIGHT,)),
    "window": _Kind(_window, "hang", (0.0, 0.005), colours=(((210, 225, 235), (190, 210, 225)), _LIGHT)),
    "picture": _Kind(_picture, "hang", (0.0, 0.005), colours=(_FABRIC + _WOOD,)),
    "curtain": _Kind(_curtain, "hang", (0.03, 0.08), colours=(_FABRIC + _LIGHT,)),
    "box": _Kind(_small_box, "top", colours=(((160, 120, 80), (200, 170, 120), (90, 90, 100)),)),
    "lamp": _Kind(_lamp, "top", colours=(_LIGHT + ((240, 220, 160),), _METAL)),
}

# Theme -> (anchor classes always tried first, weighted classes for the rest).
_THEMES: dict[str, tuple[tuple[str, ...], dict[str, float]]] = {
    "bedroom": (("bed",), {"cabinet": 2, "desk": 1, "chair": 2, "bookshelf": 1, "otherfurniture": 2,
                           "sofa": 0.5, "table": 0.5}),
    "office": (("desk", "chair"), {"chair": 4, "desk": 2, "table": 1, "bookshelf": 1.5, "cabinet": 1.5,
                                   "otherfurniture": 1}),
    "living": (("sofa", "table"), {"chair": 2, "table": 1, "bookshelf": 1, "cabinet": 1,
                                   "otherfurniture": 1.5, "sofa": 0.7}),
    "bathroom": (("toilet", "sink", "bathtub"), {"cabinet": 1.5, "counter": 1, "shower curtain": 1,
                                                "otherfurniture": 1, "sink": 0.5}),
    "kitchen": (("counter", "refrigerator", "table"), {"chair": 3, "cabinet": 2, "counter": 1, "sink": 1,
                                                      "otherfurniture": 1}),
}
_AT_MOST_ONE = {"bed", "bathtub", "toilet", "refrigerator", "shower curtain"}


# --------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------


@dataclass
class _Object:
    label: str  # raw ScanNet category (a key of LABEL_TO_NYU40)
    annotated: bool  # False: its vertices get nyu40 0 and instance 0, and no segGroup
    origins: np.ndarray  # (R, 3) rectangle origins, room frame
    us: np.ndarray  # (R, 3)
    vs: np.ndarray  # (R, 3)
    part_of_rect: np.ndarray  # (R,) part index within the object
    part_small: np.ndarray  # (P,) bool: part is one segment
    mat_of_rect: np.ndarray  # (R,) material index
    colours: np.ndarray  # (M, 3) float base colour per material
    patch_m: float


def _rotation(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _instantiate(shape: _Shape, yaw: float, offset: np.ndarray, label: str, annotated: bool,
                 colours: np.ndarray, patch_m: float = _FURNITURE_PATCH_M) -> _Object:
    rot = _rotation(yaw)
    origins, us, vs, part_of_rect, mats = [], [], [], [], []
    for p, part in enumerate(shape.parts):
        for o, u, v in part.rects():
            origins.append(o)
            us.append(u)
            vs.append(v)
            part_of_rect.append(p)
            mats.append(part.mat)
    small = np.array([max(p.sx, p.sy, p.sz) <= _SMALL_PART_M for p in shape.parts])
    return _Object(
        label=label, annotated=annotated,
        origins=np.array(origins) @ rot.T + offset, us=np.array(us) @ rot.T, vs=np.array(vs) @ rot.T,
        part_of_rect=np.array(part_of_rect), part_small=small, mat_of_rect=np.array(mats),
        colours=colours, patch_m=patch_m,
    )


def _pick_colours(rng, kind: _Kind) -> np.ndarray:
    chosen = []
    for choices in kind.colours:
        base = np.array(choices[int(rng.integers(len(choices)))], dtype=np.float64)
        chosen.append(np.clip(base + rng.normal(0.0, 10.0, 3), 0, 255))
    if len(chosen) == 1:
        chosen.append(chosen[0])
    return np.array(chosen)


def _overlaps(lo: np.ndarray, hi: np.ndarray, boxes: list[tuple[np.ndarray, np.ndarray]]) -> bool:
    for blo, bhi in boxes:
        if np.all(lo < bhi + _CLEARANCE_M) and np.all(blo < hi + _CLEARANCE_M):
            return True
    return False


class _Room:
    """Walls as (start corner, direction, length, inward normal); +y of an object faces the wall."""

    def __init__(self, width: float, depth: float, height: float):
        self.width, self.depth, self.height = width, depth, height
        # (corner, unit direction along the wall, length, yaw that turns local +y towards the wall)
        self.walls = (
            (np.array([0.0, 0.0]), np.array([1.0, 0.0]), width, math.pi),  # y = 0
            (np.array([width, depth]), np.array([-1.0, 0.0]), width, 0.0),  # y = depth
            (np.array([0.0, depth]), np.array([0.0, -1.0]), depth, math.pi / 2),  # x = 0
            (np.array([width, 0.0]), np.array([0.0, 1.0]), depth, -math.pi / 2),  # x = width
        )

    def inside(self, lo: np.ndarray, hi: np.ndarray) -> bool:
        eps = 1e-6
        return bool(lo[0] >= -eps and lo[1] >= -eps and hi[0] <= self.width + eps
                    and hi[1] <= self.depth + eps and hi[2] <= self.height - 0.05)


def _shape_extent(shape: _Shape) -> tuple[np.ndarray, np.ndarray]:
    corners = np.concatenate([part.corners() for part in shape.parts])
    return corners.min(axis=0), corners.max(axis=0)


def _try_place(rng, room: _Room, shape: _Shape, kind: _Kind, boxes, tries: int = 60):
    """Random poses until one fits in the room without touching ``boxes``: (yaw, offset, lo, hi)."""
    lo_l, hi_l = _shape_extent(shape)
    for _ in range(tries):
        if kind.placement == "free":
            yaw = rng.integers(4) * math.pi / 2 + rng.uniform(-0.4, 0.4)
            rot = _rotation(yaw)
            xy = rng.uniform([0.0, 0.0], [room.width, room.depth])
            offset = np.array([xy[0], xy[1], 0.0])
        else:
            corner, direction, length, yaw = room.walls[int(rng.integers(4))]
            if kind.placement != "door":
                yaw += rng.uniform(-0.03, 0.03) if kind.placement == "wall" else 0.0
            rot = _rotation(yaw)
            half_w = (hi_l[0] - lo_l[0]) / 2
            if length < 2 * half_w + 0.1:
                continue
            along = rng.uniform(half_w + 0.05, length - half_w - 0.05)
            inward = np.array([-direction[1], direction[0]])  # left of the direction: into the room
            dist = rng.uniform(*kind.gap) + hi_l[1]  # local +y extent faces the wall
            xy = corner + direction * along + inward * dist
            offset = np.array([xy[0], xy[1], 0.0])
        corners = np.array([[x, y, z] for x in (lo_l[0], hi_l[0]) for y in (lo_l[1], hi_l[1])
                            for z in (lo_l[2], hi_l[2])]) @ rot.T + offset
        lo, hi = corners.min(axis=0), corners.max(axis=0)
        if not room.inside(lo, hi):
            continue
        check_lo, check_hi = lo.copy(), hi.copy()
        if kind.placement in ("door", "hang"):  # keep room in front: door swing, hanging depth
            front = np.array([*(rot @ np.array([0.0, -1.0, 0.0]))[:2], 0.0])
            reach = front * (0.9 if kind.placement == "door" else 0.1)
            check_lo = np.minimum(lo, lo + reach)
            check_hi = np.maximum(hi, hi + reach)
        if _overlaps(check_lo, check_hi, boxes):
            continue
        return yaw, offset, check_lo, check_hi
    return None


def _layout(rng: np.random.Generator) -> tuple[list[_Object], tuple[float, float, float]]:
    width, depth, height = rng.uniform(4.0, 8.0), rng.uniform(4.0, 8.0), rng.uniform(2.4, 3.0)
    room = _Room(width, depth, height)
    objects: list[_Object] = []

    wall_colour = np.array(_LIGHT[int(rng.integers(len(_LIGHT)))], dtype=np.float64) + rng.normal(0, 8, 3)
    floor_colour = np.array((_WOOD + ((120, 120, 120), (90, 80, 70)))[int(rng.integers(6))], dtype=np.float64)
    floor = _Shape([_box(width / 2, depth / 2, 0.0, width, depth, 0.0, "-z")])
    objects.append(_instantiate(floor, 0.0, np.zeros(3), "floor", True, np.array([floor_colour] * 2),
                                _ROOM_PATCH_M))
    walls = (  # zero-thickness boxes whose one visible face looks into the room
        _box(width / 2, 0.0, 0.0, width, 0.0, height, "-y"),
        _box(width / 2, depth, 0.0, width, 0.0, height, "+y"),
        _box(0.0, depth / 2, 0.0, 0.0, depth, height, "-x"),
        _box(width, depth / 2, 0.0, 0.0, depth, height, "+x"),
    )
    for wall in walls:
        wall.skip += "-z+z"
        objects.append(_instantiate(_Shape([wall]), 0.0, np.zeros(3), "wall", True,
                                    np.array([wall_colour] * 2), _ROOM_PATCH_M))

    boxes: list[tuple[np.ndarray, np.ndarray]] = []
    supports: list[tuple[_Shape, float, np.ndarray]] = []

    def place(label: str, shape: _Shape | None = None, annotated: bool = True) -> bool:
        kind = _KINDS[label]
        shape = shape if shape is not None else kind.build(rng)
        colours = _pick_colours(rng, kind)
        pose = _try_place(rng, room, shape, kind, boxes)
        if pose is None:
            return False
        yaw, offset, lo, hi = pose
        boxes.append((lo, hi))
        objects.append(_instantiate(shape, yaw, offset, label, annotated, colours))
        if shape.support is not None:
            supports.append((shape, yaw, offset))
        return True

    for _ in range(1 + int(rng.random() < 0.3)):
        place("door")

    theme = list(_THEMES)[int(rng.integers(len(_THEMES)))]
    anchors, weights = _THEMES[theme]
    num_furniture = int(np.clip(round(width * depth / 4.0), 4, 14))
    names = list(weights)
    probs = np.array([weights[n] for n in names], dtype=np.float64)
    labels = list(anchors)
    while len(labels) < num_furniture:
        label = names[int(rng.choice(len(names), p=probs / probs.sum()))]
        if label in _AT_MOST_ONE and label in labels:
            continue
        labels.append(label)
    shapes = [(label, _KINDS[label].build(rng)) for label in labels]
    area = [-(np.prod(_shape_extent(s)[1][:2] - _shape_extent(s)[0][:2])) for _, s in shapes]
    for i in np.argsort(area, kind="stable"):  # biggest first: they are the hardest to fit
        place(shapes[i][0], shapes[i][1])

    num_windows, num_pictures = int(rng.integers(0, 3)), int(rng.integers(0, 4))
    num_curtains = int(rng.integers(0, 2)) if theme != "bathroom" else 0
    for label, count in (("window", num_windows), ("curtain", num_curtains), ("picture", num_pictures)):
        for _ in range(count):
            place(label)

    # Small items on tables, desks, counters and cabinets; some are left unannotated.
    order = rng.permutation(len(supports))[: int(rng.integers(0, 4))]
    for k in order:
        parent, yaw, offset = supports[int(k)]
        cx, cy, hx, hy, top = parent.support
        label = "lamp" if rng.random() < 0.3 else "box"
        kind = _KINDS[label]
        item = kind.build(rng)
        lo_l, hi_l = _shape_extent(item)
        r = float(np.hypot(*(hi_l[:2] - lo_l[:2]))) / 2
        if r > min(hx, hy):
            continue
        local = np.array([cx + rng.uniform(-hx + r, hx - r), cy + rng.uniform(-hy + r, hy - r), top])
        yaw_item = rng.uniform(0, 2 * math.pi)
        obj = _instantiate(item, yaw_item, local, label, bool(rng.random() < 0.7), _pick_colours(rng, kind))
        rot = _rotation(yaw)  # item frame -> parent frame (above) -> room frame
        obj.origins = obj.origins @ rot.T + offset
        obj.us, obj.vs = obj.us @ rot.T, obj.vs @ rot.T
        objects.append(obj)
    return objects, (width, depth, height)


# --------------------------------------------------------------------------------------------
# Meshing
# --------------------------------------------------------------------------------------------


def _grid_counts(lengths: np.ndarray, spacing: float) -> np.ndarray:
    return np.maximum(2, np.floor(lengths / spacing + 0.5).astype(np.int64) + 1)


def _choose_spacing(len_u: np.ndarray, len_v: np.ndarray, num_points: int) -> float:
    """Grid spacing whose total vertex count is closest to ``num_points`` (bisection, monotone)."""

    def total(h: float) -> int:
        return int((_grid_counts(len_u, h) * _grid_counts(len_v, h)).sum())

    lo, hi = 1e-4, 1e2  # total(lo) >= num_points >= total(hi) for every budget we accept
    for _ in range(80):
        mid = math.sqrt(lo * hi)
        if total(mid) >= num_points:
            lo = mid
        else:
            hi = mid
    return lo if abs(total(lo) - num_points) <= abs(total(hi) - num_points) else hi


def generate_scene(num_points: int, seed: int = 0, shuffle: bool = True) -> SyntheticScene:
    """A furnished room with about ``num_points`` vertices (see the module docstring).

    num_points >= 1000, seed >= 0; the vertex count is within a few percent of num_points (10 % at
    most). Deterministic in (num_points, seed, shuffle).
    """
    if num_points < MIN_POINTS:
        raise ValueError(f"num_points must be at least {MIN_POINTS}, got {num_points}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    layout_rng = np.random.default_rng([int(seed), 0])
    noise_rng = np.random.default_rng([int(seed), 1])
    objects, room_size = _layout(layout_rng)

    # Tiny budgets: drop the last placed objects (never the floor and walls) until the minimum
    # 2 x 2 grids take at most half the budget.
    while len(objects) > 5 and 4 * sum(len(o.origins) for o in objects) > num_points // 2:
        objects.pop()

    origins = np.concatenate([o.origins for o in objects])
    us = np.concatenate([o.us for o in objects])
    vs = np.concatenate([o.vs for o in objects])
    num_rects = len(origins)
    obj_of_rect = np.concatenate([np.full(len(o.origins), i) for i, o in enumerate(objects)])
    len_u, len_v = np.linalg.norm(us, axis=1), np.linalg.norm(vs, axis=1)
    spacing = _choose_spacing(len_u, len_v, num_points)
    nx, ny = _grid_counts(len_u, spacing), _grid_counts(len_v, spacing)

    # Vertices: rect r owns nx[r] * ny[r] consecutive vertices, i fastest.
    per_rect = nx * ny
    start = np.concatenate(([0], np.cumsum(per_rect)[:-1]))
    num_vertices = int(per_rect.sum())
    rect = np.repeat(np.arange(num_rects), per_rect)
    local = np.arange(num_vertices) - start[rect]
    i, j = local % nx[rect], local // nx[rect]
    s = (i / (nx[rect] - 1))[:, None]
    t = (j / (ny[rect] - 1))[:, None]
    xyz = origins[rect] + s * us[rect] + t * vs[rect]

    # Faces: two triangles per grid cell, (00, 10, 11) and (00, 11, 01): normal along u x v.
    cells = (nx - 1) * (ny - 1)
    cell_rect = np.repeat(np.arange(num_rects), cells)
    cell = np.arange(int(cells.sum())) - np.repeat(np.concatenate(([0], np.cumsum(cells)[:-1])), cells)
    ci, cj = cell % (nx[cell_rect] - 1), cell // (nx[cell_rect] - 1)
    v00 = start[cell_rect] + cj * nx[cell_rect] + ci
    v10, v01 = v00 + 1, v00 + nx[cell_rect]
    v11 = v01 + 1
    faces = np.stack((np.stack((v00, v10, v11), 1), np.stack((v00, v11, v01), 1)), 1).reshape(-1, 3)

    # Segments: per rect a pu x pv patch grid, or one segment for a whole small part.
    seg_base = np.empty(num_rects, dtype=np.int64)
    pu = np.ones(num_rects, dtype=np.int64)
    pv = np.ones(num_rects, dtype=np.int64)
    next_seg, r = 0, 0
    for obj in objects:
        part_seg: dict[int, int] = {}
        for k in range(len(obj.origins)):
            part = int(obj.part_of_rect[k])
            if obj.part_small[part]:
                if part not in part_seg:
                    part_seg[part] = next_seg
                    next_seg += 1
                seg_base[r] = part_seg[part]
            else:
                patch_m = max(obj.patch_m, 4 * spacing)  # sparse grids: at least ~4 x 4 vertices
                pu[r] = min(max(1, round(len_u[r] / patch_m)), nx[r])
                pv[r] = min(max(1, round(len_v[r] / patch_m)), ny[r])
                seg_base[r] = next_seg
                next_seg += int(pu[r] * pv[r])
            r += 1
    seg_raw = seg_base[rect] + (i * pu[rect]) // nx[rect] + pu[rect] * ((j * pv[rect]) // ny[rect])
    _, segments = np.unique(seg_raw, return_inverse=True)

    # Labels and instances: annotated objects get objectId 0.. in order; walls and floor included.
    nyu40_of_obj = np.array([LABEL_TO_NYU40[o.label] if o.annotated else 0 for o in objects])
    instance_of_obj = np.zeros(len(objects), dtype=np.int64)
    instance_labels = []
    for k, obj in enumerate(objects):
        if obj.annotated:
            instance_labels.append(obj.label)
            instance_of_obj[k] = len(instance_labels)
    vertex_obj = obj_of_rect[rect]

    # Colours: material base colour, shaded by the face normal, plus noise.
    normals = np.cross(us, vs)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    shade = 0.8 + 0.15 * normals[:, 2] + 0.05 * normals[:, 0]
    mat_of_rect = np.concatenate([o.mat_of_rect for o in objects])
    rect_colour = np.stack([objects[o].colours[m] for o, m in zip(obj_of_rect, mat_of_rect, strict=True)])
    rect_colour *= shade[:, None]
    colours = rect_colour[rect] + noise_rng.normal(0.0, 4.0, (num_vertices, 3))
    colours = np.clip(np.rint(colours), 0, 255).astype(np.uint8)

    # Noise, then the global pose: a yaw about the room centre and a small shift.
    xyz += noise_rng.normal(0.0, min(_NOISE_M, 0.1 * spacing), xyz.shape)
    centre = np.array([room_size[0] / 2, room_size[1] / 2, 0.0])
    yaw = float(np.random.default_rng([int(seed), 2]).uniform(0.0, 2 * math.pi))
    xyz = (xyz - centre) @ _rotation(yaw).T
    shift = np.random.default_rng([int(seed), 3]).uniform(0.0, 0.5, 2)
    xyz[:, :2] += shift - xyz[:, :2].min(axis=0)

    nyu40 = nyu40_of_obj[vertex_obj]
    instance_ids = instance_of_obj[vertex_obj]
    if shuffle:
        perm = noise_rng.permutation(num_vertices)
        inverse = np.empty_like(perm)
        inverse[perm] = np.arange(num_vertices)
        xyz, colours, nyu40, instance_ids, segments = (
            xyz[perm], colours[perm], nyu40[perm], instance_ids[perm], segments[perm])
        faces = inverse[faces]
    return SyntheticScene(
        vertices_m=xyz.astype(np.float32),
        colors=colours,
        faces=faces.astype(np.int32),
        nyu40=nyu40.astype(np.int32),
        instance_ids=instance_ids.astype(np.int32),
        segments=segments.astype(np.int32),
        instance_labels=tuple(instance_labels),
        room_size_m=(float(room_size[0]), float(room_size[1]), float(room_size[2])),
    )


# --------------------------------------------------------------------------------------------
# ScanNet files
# --------------------------------------------------------------------------------------------

_FACE_RECORD = np.dtype([("n", "u1"), ("vertex_indices", "<i4", (3,))])  # packed: 13 bytes


def _atomic_write(path: Path, chunks: Sequence[bytes]) -> None:
    with atomic_file(path) as tmp, open(tmp, "xb") as stream:
        for chunk in chunks:
            stream.write(chunk)


def _ply_chunks(vertex: np.ndarray, faces: np.ndarray) -> list[bytes]:
    """Binary little-endian PLY: header from plyfile, body written in bulk.

    plyfile writes list properties row by row in Python (seconds for ScanNet-sized meshes); the
    bytes here are the same (uchar count 3, three int32 indices per face), which the tests check
    against plyfile's own writer.
    """
    from plyfile import PlyData, PlyElement

    face = np.empty(len(faces), dtype=np.dtype([("vertex_indices", "<i4", (3,))]))
    face["vertex_indices"] = faces
    header = PlyData(
        [PlyElement.describe(vertex, "vertex"), PlyElement.describe(face, "face")],
        text=False, byte_order="<", comments=["VCGLIB generated"],
    ).header
    records = np.empty(len(faces), dtype=_FACE_RECORD)
    records["n"] = 3
    records["vertex_indices"] = faces
    return [header.encode("ascii") + b"\n", vertex.tobytes(), records.tobytes()]


def _vertex_array(scene: SyntheticScene, colours: np.ndarray, label: np.ndarray | None) -> np.ndarray:
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
              ("red", "u1"), ("green", "u1"), ("blue", "u1"), ("alpha", "u1")]
    if label is not None:
        fields.append(("label", "<u2"))
    vertex = np.empty(scene.num_points, dtype=np.dtype(fields))
    for axis, name in enumerate("xyz"):
        vertex[name] = scene.vertices_m[:, axis]
    for channel, name in enumerate(("red", "green", "blue")):
        vertex[name] = colours[:, channel]
    vertex["alpha"] = 255
    if label is not None:
        vertex["label"] = label
    return vertex


def write_scannet_scene(scene: SyntheticScene, out_dir: Path, name: str = "scene0000_00") -> Path:
    """Write ScanNet's files for one scene into ``out_dir`` (created if needed); returns the mesh path.

    ``<name>_vh_clean_2.ply`` (x y z float, red green blue alpha uchar, faces as uchar-counted
    int lists), ``<name>_vh_clean_2.labels.ply`` (same, coloured by the NYU40 palette, plus a
    ushort ``label``), ``<name>_vh_clean_2.0.010000.segs.json`` and ``<name>.aggregation.json``
    (segGroups with raw labels; see ``LABEL_TO_NYU40``). Every file is written atomically.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mesh_path = out_dir / f"{name}_vh_clean_2.ply"
    segs_name = f"{name}_vh_clean_2.0.010000.segs.json"

    _atomic_write(mesh_path, _ply_chunks(_vertex_array(scene, scene.colors, None), scene.faces))
    label_colours = NYU40_PALETTE[np.clip(scene.nyu40, 0, len(NYU40_PALETTE) - 1)]
    _atomic_write(out_dir / f"{name}_vh_clean_2.labels.ply",
                  _ply_chunks(_vertex_array(scene, label_colours, scene.nyu40), scene.faces))

    segs = {
        "params": {"kThresh": "0.01", "segMinVerts": "20", "generator": "engine.synthetic",
                   "roomPatchM": str(_ROOM_PATCH_M), "furniturePatchM": str(_FURNITURE_PATCH_M)},
        "sceneId": name,
        "segIndices": scene.segments.tolist(),
    }
    _atomic_write(out_dir / segs_name, [json.dumps(segs).encode()])

    num_segments = int(scene.segments.max()) + 1 if scene.num_points else 0
    owner = np.zeros(num_segments, dtype=np.int64)
    owner[scene.segments] = scene.instance_ids
    order = np.argsort(owner, kind="stable")
    bounds = np.searchsorted(owner[order], np.arange(1, scene.num_instances + 2))
    groups = [
        {"id": k, "objectId": k, "segments": np.sort(order[bounds[k]:bounds[k + 1]]).tolist(), "label": label}
        for k, label in enumerate(scene.instance_labels)
    ]
    aggregation = {"sceneId": f"scannet.{name}", "appId": "engine.synthetic.v1", "segGroups": groups,
                   "segmentsFile": f"scannet.{segs_name}"}
    _atomic_write(out_dir / f"{name}.aggregation.json", [json.dumps(aggregation).encode()])
    return mesh_path


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m engine.synthetic",
        description="Write a seeded synthetic ScanNet-like scene (mesh, labels, segments, aggregation).",
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory (created if missing)")
    parser.add_argument(
        "--points", type=int, default=150_000, help="approximate vertex count (default 150000)"
    )
    parser.add_argument("--seed", type=int, default=0, help="layout and noise seed (default 0)")
    parser.add_argument("--name", default="scene0000_00", help="scene name (default scene0000_00)")
    args = parser.parse_args(argv)
    if args.points < MIN_POINTS:
        parser.error(f"--points must be at least {MIN_POINTS}")
    if args.seed < 0:
        parser.error("--seed must be >= 0")
    scene = generate_scene(args.points, seed=args.seed)
    print(write_scannet_scene(scene, args.out, args.name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
