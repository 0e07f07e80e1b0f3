"""Kernel maps: the index tensors that turn the U-Net's sparse convolutions into Gather + MatMul.

spconv finds each convolution's (input, output) voxel pairs inside the library. The exported
backbone cannot (TensorRT's ONNX parser has no hash tables and rejects ScatterND reductions), so
the engine computes every pair list before the graph, here, and passes them in as inputs:

* ``subm[l]`` (V_l, 27) int64: for each voxel ``p`` of level ``l`` and each offset
  ``k = 9 (dx+1) + 3 (dy+1) + (dz+1)`` (spconv's weight order ``(out, kx, ky, kz, in)``), the row of
  the voxel at ``p + (dx, dy, dz)``, or ``V_l`` when there is none. Row ``V_l`` is the zero row the
  graph appends, so ``out[p] = Σ_k W_k · x[subm[l][p, k]]``. All submanifold 3³ convs of a level
  share it (spconv's ``indice_key="subm{l}"``).
* ``down[l]`` (V_{l+1}, 8) int64: for each voxel ``q`` of level ``l + 1`` and each child offset
  ``o = 4 ox + 2 oy + oz``, the level-``l`` row of the voxel at ``2 q + (ox, oy, oz)``, or ``V_l``.
  The down conv (k=2, s=2) is ``out[q] = Σ_o W_o · x[down[l][q, o]]``.
* ``up[l]`` (V_l,) int64: ``8 · parent + o`` for each level-``l`` voxel (its parent's level-``l+1``
  row and its own offset in that parent), or ``8 V_{l+1}`` (a zero row) when it has no parent. The
  inverse conv reuses the down conv's pairs: ``out[p] = W_o · y[parent]`` is row ``up[l][p]`` of
  ``y @ [W_0 … W_7]`` reshaped to (8 V_{l+1}, C).

Levels follow spconv's rules exactly: level ``l + 1`` holds ``coord // 2`` of level ``l``, on a grid of
``(s - 2) // 2 + 1`` cells per axis (spconv's output size for k=2, s=2, no padding); a voxel whose
parent falls outside that grid (its coordinate is ``s - 1`` on an axis where ``s`` is odd) has no
parent, as in spconv, so it contributes nothing to the deeper levels and receives zero from the
inverse conv. Level ``l + 1`` is ordered by ``(x, y, z)``; spconv orders it its own way, which changes
nothing outside the U-Net because level 1 keeps the caller's voxel order.

Everything is vectorized torch (a dense lookup table or sort + ``searchsorted``; no Python loop over voxels) and runs on
the device of ``coords`` (CPU or CUDA).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.model import UNET_LEVELS as LEVELS

SUBM_OFFSETS = 27
SUBM_CENTRE = 13  # the offset (0, 0, 0): every voxel is its own neighbour there
DOWN_OFFSETS = 8
# Submanifold lookups use a dense table of the (padded) grid up to this many cells (int32: 4 bytes
# each, 512 MiB at most), else sorted keys and binary search. Both give the same map.
DENSE_LOOKUP_CELLS = 1 << 27

# (27, 3) neighbour offsets in spconv's weight order: k = 9 (dx+1) + 3 (dy+1) + (dz+1).
_SUBM_DELTAS = torch.stack(torch.meshgrid(*[torch.arange(-1, 2)] * 3, indexing="ij"), dim=-1).reshape(-1, 3)
_CHILD_WEIGHTS = torch.tensor([4, 2, 1])  # o = 4 ox + 2 oy + oz


def map_names() -> list[str]:
    """Graph input names of the maps, in ``KernelMaps.tensors()`` order."""
    return ([f"subm_map_{level}" for level in range(1, LEVELS + 1)]
            + [f"down_map_{level}" for level in range(1, LEVELS)]
            + [f"up_index_{level}" for level in range(1, LEVELS)])


@dataclass
class KernelMaps:
    """Kernel maps of one scene (V_l voxels at level l = 1..7; lists are indexed from level 1)."""

    subm: list[torch.Tensor]  # 7 x (V_l, 27) int64, sentinel V_l
    down: list[torch.Tensor]  # 6 x (V_{l+1}, 8) int64 level-l rows, sentinel V_l
    up: list[torch.Tensor]  # 6 x (V_l,) int64 = 8 * parent row + offset, sentinel 8 V_{l+1}
    coords: list[torch.Tensor]  # 7 x (V_l, 3) int64 voxel coordinates of each level
    spatial_shapes: list[list[int]]  # 7 x 3 grid sizes

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """The maps in ``map_names()`` order (graph inputs after ``voxel_features``)."""
        return (*self.subm, *self.down, *self.up)

    def named(self) -> dict[str, torch.Tensor]:
        """The maps by graph input name."""
        return dict(zip(map_names(), self.tensors(), strict=True))

    @property
    def num_voxels(self) -> list[int]:
        return [int(c.shape[0]) for c in self.coords]


def _keys(coords: torch.Tensor, shape: list[int]) -> torch.Tensor:
    """Row-major linear index of ``coords`` (any rows, int64) in a grid of ``shape``."""
    return (coords[..., 0] * shape[1] + coords[..., 1]) * shape[2] + coords[..., 2]


def submanifold_map(coords: torch.Tensor) -> torch.Tensor:
    """(V, 27) int64 rows of each voxel's 3³ neighbours, ``V`` where absent; ``coords`` (V, 3) int64.

    Keys are taken on a grid padded by one cell per side, so a neighbour outside the scene's grid
    gets a key no voxel has. Lookup: a dense table of the padded grid holding each voxel's row
    (``DENSE_LOOKUP_CELLS`` at most), read at the 27 V neighbour keys; for larger grids, sort the
    keys once and ``searchsorted`` the queries.
    """
    num = coords.shape[0]
    if num == 0:
        return torch.empty(0, SUBM_OFFSETS, dtype=torch.int64, device=coords.device)
    padded = (coords.max(dim=0).values + 3).tolist()
    keys = _keys(coords + 1, padded)
    queries = _keys(coords[:, None, :] + 1 + _SUBM_DELTAS.to(coords.device), padded)  # (V, 27)
    cells = padded[0] * padded[1] * padded[2]
    if cells <= DENSE_LOOKUP_CELLS:
        table = torch.full((cells,), num, dtype=torch.int32, device=coords.device)
        table[keys] = torch.arange(num, dtype=torch.int32, device=coords.device)
        return table[queries].long()
    sorted_keys, order = torch.sort(keys)
    pos = torch.searchsorted(sorted_keys, queries).clamp_(max=num - 1)
    return torch.where(sorted_keys[pos] == queries, order[pos], num)


def down_level(coords: torch.Tensor, shape: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    """One stride-2 step: ``coords`` (V, 3) int64 on a grid of ``shape``.

    Returns parent coords (P, 3) int64 sorted by (x, y, z), ``down`` (P, 8) int64, ``up`` (V,) int64
    (see the module docstring) and the parent grid shape ``(s - 2) // 2 + 1`` per axis.
    """
    num = coords.shape[0]
    device = coords.device
    parent_shape = [(s - 2) // 2 + 1 for s in shape]
    parents = torch.div(coords, 2, rounding_mode="floor")
    offsets = (coords % 2) @ _CHILD_WEIGHTS.to(device)  # (V,)
    inside = (parents < torch.tensor(parent_shape, device=device)).all(dim=1)
    children = torch.nonzero(inside).view(-1)
    unique_keys, parent_row = torch.unique(_keys(parents[children], parent_shape), return_inverse=True)
    pz = unique_keys % parent_shape[2]
    py = (unique_keys // parent_shape[2]) % parent_shape[1]
    px = unique_keys // (parent_shape[1] * parent_shape[2])
    parent_coords = torch.stack((px, py, pz), dim=1)
    num_parents = parent_coords.shape[0]
    down = torch.full((num_parents, DOWN_OFFSETS), num, dtype=torch.int64, device=device)
    down[parent_row, offsets[children]] = children  # each (parent, offset) holds one child
    up = torch.full((num,), DOWN_OFFSETS * num_parents, dtype=torch.int64, device=device)
    up[children] = parent_row * DOWN_OFFSETS + offsets[children]
    return parent_coords, down, up, parent_shape


def inverse_map(up: torch.Tensor, num_parents: int) -> torch.Tensor:
    """The inverse conv's neighbour map (V, 8) int64 from ``up`` (V,): row ``p``'s column ``o`` holds
    its parent's row when ``p`` is child ``o`` of that parent, else ``num_parents`` (none)."""
    neighbours = torch.full((up.shape[0], DOWN_OFFSETS), num_parents, dtype=torch.int64, device=up.device)
    children = torch.nonzero(up < DOWN_OFFSETS * num_parents).view(-1)
    neighbours[children, up[children] % DOWN_OFFSETS] = up[children] // DOWN_OFFSETS
    return neighbours


def build_kernel_maps(coords: torch.Tensor, spatial_shape: list[int]) -> KernelMaps:
    """All kernel maps of the U-Net for voxels ``coords`` (V, 3) int (level 1, in the caller's order)
    on a grid of ``spatial_shape`` (3 ints, as ``engine.preprocess.Voxelized``)."""
    level_coords = [coords.long()]
    shapes = [list(spatial_shape)]
    downs, ups = [], []
    for _ in range(LEVELS - 1):
        parent_coords, down, up, parent_shape = down_level(level_coords[-1], shapes[-1])
        level_coords.append(parent_coords)
        shapes.append(parent_shape)
        downs.append(down)
        ups.append(up)
    subms = [submanifold_map(c) for c in level_coords]
    return KernelMaps(subm=subms, down=downs, up=ups, coords=level_coords, spatial_shapes=shapes)
