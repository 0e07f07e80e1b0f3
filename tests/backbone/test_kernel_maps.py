"""Kernel maps against spconv's own index pairs (subm 3³, down k2 s2, and the inverse's reuse)."""

from __future__ import annotations

import pytest
import torch

from engine.backbone.kernel_maps import LEVELS, build_kernel_maps, down_level, map_names, submanifold_map
from tests.backbone.spconv_oracle import CASES, canonical, down_triples_spconv, random_voxels, subm_triples_spconv


def _subm_triples(kmap: torch.Tensor) -> torch.Tensor:
    rows, offsets = torch.nonzero(kmap < kmap.shape[0], as_tuple=True)
    return canonical(torch.stack((rows, offsets, kmap[rows, offsets]), 1))


@pytest.mark.parametrize("num,shape", CASES)
def test_submanifold_map_equals_spconv_pairs(num, shape):
    coords, _, _ = random_voxels(num, shape, 1, seed=num)
    kmap = submanifold_map(coords)
    assert kmap.shape == (coords.shape[0], 27) and kmap.dtype == torch.int64
    assert int(kmap.min()) >= 0 and int(kmap.max()) <= coords.shape[0]  # rows or the sentinel V
    assert torch.equal(_subm_triples(kmap), subm_triples_spconv(coords, shape))


@pytest.mark.parametrize("num,shape", CASES)
def test_down_map_and_up_index_equal_spconv_pairs(num, shape):
    coords, _, _ = random_voxels(num, shape, 1, seed=num + 1)
    parents, down, up, parent_shape = down_level(coords, shape)
    assert parent_shape == [(s - 2) // 2 + 1 for s in shape]
    num_children, num_parents = coords.shape[0], parents.shape[0]
    q, o = torch.nonzero(down < num_children, as_tuple=True)
    mine = canonical(torch.cat((parents[q], o[:, None], coords[down[q, o]]), 1))
    expected = down_triples_spconv(coords, shape)
    assert torch.equal(mine, expected)
    assert num_parents == torch.unique(expected[:, :3], dim=0).shape[0]  # no parent without a child

    # The inverse conv reuses the same pairs: child -> 8 * parent + offset, sentinel 8 P.
    has_parent = up < 8 * num_parents
    children = torch.nonzero(has_parent).view(-1)
    from_up = canonical(torch.cat((parents[up[children] // 8], (up[children] % 8)[:, None], coords[children]), 1))
    assert torch.equal(from_up, expected)
    assert int(up.max()) <= 8 * num_parents
    assert has_parent.sum() == expected.shape[0]  # every child that spconv pairs, and only those


def test_children_outside_the_parent_grid_have_no_parent():
    """Grid 5 on x: parents live on (5 - 2) // 2 + 1 = 2 cells, so a voxel at x = 4 (parent 2) is
    dropped, as spconv drops it; with no other voxel the next level is empty."""
    coords = torch.tensor([[4, 0, 1]])
    parents, down, up, parent_shape = down_level(coords, [5, 2, 2])
    assert parent_shape == [2, 1, 1] and parents.shape == (0, 3) and down.shape == (0, 8)
    assert up.tolist() == [0]  # the sentinel 8 * 0
    maps = build_kernel_maps(coords, [5, 2, 2])
    assert maps.num_voxels == [1, 0, 0, 0, 0, 0, 0]
    assert maps.subm[1].shape == (0, 27) and maps.up[1].shape == (0,)


def test_build_kernel_maps_chains_levels():
    coords, _, _ = random_voxels(3000, [150, 131, 128], 1, seed=5)
    maps = build_kernel_maps(coords.int(), [150, 131, 128])
    sizes = maps.num_voxels
    assert len(maps.subm) == LEVELS and len(maps.down) == len(maps.up) == LEVELS - 1
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] > 0
    assert maps.spatial_shapes[-1] == [2, 2, 2]  # 150 -> 75 -> 37 -> 18 -> 9 -> 4 -> 2, 131 -> ... -> 2
    for level in range(LEVELS - 1):
        assert maps.down[level].shape == (sizes[level + 1], 8) and maps.up[level].shape == (sizes[level],)
        assert torch.equal(maps.coords[level + 1], down_level(maps.coords[level], maps.spatial_shapes[level])[0])
    assert list(maps.named()) == map_names()
    assert torch.equal(maps.coords[0], coords)  # level 1 keeps the caller's order


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_maps_on_cuda_equal_cpu():
    coords, _, _ = random_voxels(4000, [40, 41, 39], 1, seed=9)
    cpu = build_kernel_maps(coords, [40, 41, 39])
    gpu = build_kernel_maps(coords.cuda(), [40, 41, 39])
    for a, b in zip(cpu.tensors(), gpu.tensors(), strict=True):
        assert torch.equal(a, b.cpu())
