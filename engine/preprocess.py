"""Preprocessing: centring, colour normalization and 2 cm voxelization (SPEC §1)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

VOXELS_PER_M = 50  # 2 cm voxels
MIN_SPATIAL_SHAPE = 128


@dataclass
class Voxelized:
    xyz_m: torch.Tensor  # (N, 3) float32, centred coordinates in metres
    point_features: torch.Tensor  # (N, 6) float32: rgb in [-1, 1], xyz_m
    voxel_coords: torch.Tensor  # (V, 3) int32 voxel coordinates (x, y, z)
    voxel_features: torch.Tensor  # (V, 6) float32, mean of each voxel's point features
    point_to_voxel: torch.Tensor  # (N,) int64
    spatial_shape: list[int]  # 3 ints, max(coord) + 1, at least 128


def voxelize(xyz: np.ndarray, rgb: np.ndarray, device: torch.device) -> Voxelized:
    """Centre, normalize and voxelize one scene.

    xyz (N, 3) float (any precision; centred in float64 as the official preparation does),
    rgb (N, 3) uint8. The voxel grid origin is the per-axis minimum of ``xyz_m * 50`` (not the
    world origin): stride-2 layers group voxels by ``coord // 2``, so this origin is kept exactly.
    """
    xyz64 = np.asarray(xyz, dtype=np.float64)
    xyz_m64 = xyz64 - xyz64.mean(axis=0)
    grid = xyz_m64 * VOXELS_PER_M
    grid -= grid.min(axis=0)
    point_coords = torch.from_numpy(grid.astype(np.int64))  # trunc toward zero; grid >= 0
    rgb_norm = torch.from_numpy(np.asarray(rgb, dtype=np.float64) / 127.5 - 1.0).float()
    xyz_m = torch.from_numpy(xyz_m64).float()
    point_features = torch.cat((rgb_norm, xyz_m), dim=1)

    spatial_shape = [max(int(s), MIN_SPATIAL_SHAPE) for s in (point_coords.max(dim=0).values + 1)]
    sy, sz = spatial_shape[1], spatial_shape[2]
    keys = (point_coords[:, 0] * sy + point_coords[:, 1]) * sz + point_coords[:, 2]
    unique_keys, point_to_voxel = torch.unique(keys, return_inverse=True)
    num_voxels = unique_keys.numel()
    voxel_coords = torch.stack((unique_keys // (sy * sz), (unique_keys // sz) % sy, unique_keys % sz), dim=1)

    sums = torch.zeros(num_voxels, point_features.shape[1]).index_add_(0, point_to_voxel, point_features)
    counts = torch.bincount(point_to_voxel, minlength=num_voxels).clamp_(min=1).unsqueeze(1)
    return Voxelized(
        xyz_m=xyz_m.to(device),
        point_features=point_features.to(device),
        voxel_coords=voxel_coords.int().to(device),
        voxel_features=(sums / counts).to(device),
        point_to_voxel=point_to_voxel.to(device),
        spatial_shape=spatial_shape,
    )
