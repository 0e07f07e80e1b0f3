"""Preprocessing: centring in float64, colour scaling, the voxel grid origin, voxel means."""

from __future__ import annotations

import numpy as np
import torch

from engine.preprocess import voxelize


def test_voxelize_hand_checked(cpu):
    xyz = np.array([[1.000, 2.0, 3.0], [1.019, 2.0, 3.0], [1.021, 2.0, 3.0], [1.1, 2.5, 3.3]])
    rgb = np.array([[0, 0, 0], [255, 255, 255], [127, 0, 255], [10, 20, 30]], np.uint8)
    vox = voxelize(xyz, rgb, cpu)
    xyz_m = xyz - xyz.mean(0)
    torch.testing.assert_close(vox.xyz_m, torch.from_numpy(xyz_m).float())
    grid = xyz_m * 50
    grid -= grid.min(0)
    coords = np.trunc(grid).astype(int)  # points 0 and 1 share voxel x=0; point 2 is at x=1
    assert coords[:3, 0].tolist() == [0, 0, 1]
    got = vox.voxel_coords[vox.point_to_voxel].numpy()
    assert got.tolist() == coords.tolist()
    assert vox.spatial_shape == [128, 128, 128]
    rows = vox.point_features.numpy()
    np.testing.assert_allclose(rows[:, :3], rgb / 127.5 - 1, atol=1e-6)
    v01 = vox.point_to_voxel[0]
    assert vox.point_to_voxel[1] == v01
    np.testing.assert_allclose(vox.voxel_features[v01].numpy(), rows[:2].mean(0), atol=1e-6)


def test_grid_origin_is_the_scene_minimum_not_zero(cpu):
    # Shifting the whole scene leaves voxel coordinates unchanged (xyz is centred, then the min
    # is subtracted), so stride-2 grouping by coord // 2 is the official one.
    rng = np.random.default_rng(0)
    xyz = rng.uniform(0, 4, (500, 3))
    rgb = rng.integers(0, 256, (500, 3)).astype(np.uint8)
    a = voxelize(xyz, rgb, cpu)
    b = voxelize(xyz + np.array([100.25, -3.0, 7.5]), rgb, cpu)
    assert torch.equal(a.voxel_coords[a.point_to_voxel], b.voxel_coords[b.point_to_voxel])
    assert a.voxel_coords.min().item() == 0
    assert a.spatial_shape == [max(128, int(a.voxel_coords[:, k].max()) + 1) for k in range(3)]


def test_large_scene_spatial_shape(cpu):
    xyz = np.array([[0.0, 0.0, 0.0], [3.0, 0.5, 0.1]])
    vox = voxelize(xyz, np.zeros((2, 3), np.uint8), cpu)
    assert vox.spatial_shape == [151, 128, 128]
