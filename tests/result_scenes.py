"""Scene results for the output and picture tests: random ones, and the real ScanNet scene with its
ground-truth instances standing in for predictions (70+ instances, real layout)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REAL_SCANNET = Path(__file__).resolve().parents[2] / "shared" / "scannet"


def random_result(num_points: int = 500, num_instances: int = 4, seed: int = 0):
    """(xyz (N, 3), faces (2N, 3), masks (M, N) bool, nyu40_ids (M,), scores (M,)): points in a
    4 x 3 x 1 m box; instance i = points within 0.5 m of a random centre (first wins)."""
    rng = np.random.default_rng(seed)
    xyz = rng.random((num_points, 3)) * [4.0, 3.0, 1.0]
    centres = rng.random((num_instances, 3)) * [4.0, 3.0, 1.0]
    near = np.linalg.norm(xyz[None] - centres[:, None], axis=2) < 0.5  # (M, N), may overlap
    masks = np.zeros_like(near)
    first = np.where(near.any(0), near.argmax(0), -1)
    masks[first[first >= 0], np.flatnonzero(first >= 0)] = True
    faces = rng.integers(0, num_points, size=(2 * num_points, 3))
    nyu40_ids = rng.choice([3, 5, 7, 39], size=num_instances)
    scores = rng.random(num_instances)
    return xyz, faces, masks, nyu40_ids, scores


def real_gt_result():
    """(xyz (N, 3) float32, masks (72, N) bool, nyu40_ids (72,), scores (72,) seeded random) of
    ``../shared/scannet/scene0000_01``; skips when the folder is absent."""
    from engine.scene_io import read_scene

    ply = REAL_SCANNET / "scene0000_01_vh_clean_2.ply"
    if not ply.is_file():
        pytest.skip(f"{ply} is absent (the real ScanNet scene, ../shared/scannet)")
    gt = np.loadtxt(REAL_SCANNET / "gt" / "scene0000_01.txt", dtype=np.int64)
    ids = np.unique(gt[gt > 0])
    masks = gt[None] == ids[:, None]
    scores = np.random.default_rng(0).random(ids.size)
    return read_scene(ply).xyz, masks, ids // 1000, scores
