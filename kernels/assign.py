"""Assignment and scoring without the (N, I) masks (SPEC §10): each pass recomputes the masks.

A pass visits every (point, instance) pair once, computing m[i, n] with the decoder of
``kernels.decode`` (the same jit functions, hence the same bits as the histograms), transforming it
and keeping the first maximum over instances:

    threshold pass:  v = M'  = m if m >= T_i else 0                      (+ Σ_n v per instance)
    rescale pass:    v = M'' = sqrt(max(M' · cover_i, ZERO_STANDIN))      (IEEE sqrt)
    per point:       best = max_i v, which = first i reaching it

A pass may run over a subset of points and of instances (the filtering steps re-assign the points
of dropped instances over the survivors with the same kernel). Per-instance sums of per-point
values over assigned points (``instance_sums``) are a second small kernel.

Determinism (see ``kernels._triton``): no atomics. A fixed grid of G programs (a multiple of the
device's SM count) takes tiles of points in a strided loop; each program sums its tiles in order
into registers and writes one row of a (G, I) partial-sum table, which torch then sums over G in a
fixed order. Extra memory is O(N + G·I).
"""

from __future__ import annotations

import torch

from engine.decoding import HIDDEN, IN_CHANNELS
from engine.model import EMBED
from engine.postprocess import ZERO_STANDIN
from kernels._triton import INTERPRETER, jit, require_triton, tl, triton
from kernels.decode import check_decode_shapes, instance_masks, point_inputs

BLOCK_POINTS = 128  # points per tile, as in the decode kernel
PROGRAMS_PER_SM = 4
INTERPRETER_PROGRAMS = 4  # the interpreter runs programs one after another: few, long ones
SUM_TILE_ELEMENTS = 4096  # (points × instance slots) per tile of the instance-sums kernel


@jit
def _assign_kernel(theta_ptr, features_ptr, xyz_ptr, centres_ptr, thresholds_ptr, cover_ptr,
                   points_ptr, instances_ptr, best_ptr, which_ptr, column_sums_ptr,
                   num_points, num_instances,
                   HIDDEN: tl.constexpr, EMBED: tl.constexpr, INPUTS_PADDED: tl.constexpr,
                   BLOCK_POINTS: tl.constexpr, INSTANCES_PADDED: tl.constexpr, ZERO_STANDIN: tl.constexpr,
                   POINT_SUBSET: tl.constexpr, RESCALE: tl.constexpr, COLUMN_SUMS: tl.constexpr):
    """Grid (G,). Program g takes tiles g, g + G, … of the n = ``num_points`` rows.

    Row r is point ``points[r]`` when POINT_SUBSET, else point r. Instances visited: slots
    0..k-1 = ``instances[slot]`` (k = ``num_instances``). thresholds, cover (I,) float32 indexed by
    instance. Writes best (n,) float32, which (n,) int32 (a slot), and when COLUMN_SUMS
    column_sums[g, slot] (G, INSTANCES_PADDED) float32 = Σ over g's rows of v.
    """
    program = tl.program_id(0)
    programs = tl.num_programs(0)
    slots = tl.arange(0, INSTANCES_PADDED)
    column_sums = tl.zeros((INSTANCES_PADDED,), tl.float32)
    for tile in range(program, tl.cdiv(num_points, BLOCK_POINTS), programs):
        rows = tile * BLOCK_POINTS + tl.arange(0, BLOCK_POINTS)
        row_valid = rows < num_points
        if POINT_SUBSET:
            points = tl.load(points_ptr + rows, mask=row_valid, other=0)
        else:
            points = rows
        inputs = point_inputs(features_ptr, xyz_ptr, points, row_valid, EMBED, INPUTS_PADDED)
        best = tl.full((BLOCK_POINTS,), -1.0, tl.float32)  # below every value: slot 0 always wins first
        which = tl.zeros((BLOCK_POINTS,), tl.int32)
        for slot in range(num_instances):
            instance = tl.load(instances_ptr + slot)
            masks = instance_masks(theta_ptr, centres_ptr, instance, inputs, HIDDEN, EMBED, INPUTS_PADDED)
            values = tl.where(masks >= tl.load(thresholds_ptr + instance), masks, 0.0)
            if RESCALE:
                values = tl.sqrt_rn(tl.maximum(values * tl.load(cover_ptr + instance), ZERO_STANDIN))
            better = values > best  # strict: the first instance reaching the maximum keeps it
            best = tl.where(better, values, best)
            which = tl.where(better, slot, which)
            if COLUMN_SUMS:
                tile_sum = tl.sum(tl.where(row_valid, values, 0.0), axis=0)
                column_sums = tl.where(slots == slot, column_sums + tile_sum, column_sums)
        tl.store(best_ptr + rows, best, mask=row_valid)
        tl.store(which_ptr + rows, which, mask=row_valid)
    if COLUMN_SUMS:
        tl.store(column_sums_ptr + program * INSTANCES_PADDED + slots, column_sums)


@jit
def _instance_sums_kernel(values_ptr, assignment_ptr, partial_ptr, num_points,
                          BLOCK_POINTS: tl.constexpr, INSTANCES_PADDED: tl.constexpr):
    """Grid (G,). partial[g, i] = Σ values[n] over g's tiles' points n with assignment[n] == i.

    values (N,) float32 or float64, assignment (N,) int64 (-1: none), partial (G, INSTANCES_PADDED)
    of the values' dtype. One (BLOCK_POINTS, INSTANCES_PADDED) one-hot reduction per tile.
    """
    program = tl.program_id(0)
    programs = tl.num_programs(0)
    slots = tl.arange(0, INSTANCES_PADDED)
    sums = tl.zeros((INSTANCES_PADDED,), values_ptr.dtype.element_ty)
    for tile in range(program, tl.cdiv(num_points, BLOCK_POINTS), programs):
        rows = tile * BLOCK_POINTS + tl.arange(0, BLOCK_POINTS)
        row_valid = rows < num_points
        values = tl.load(values_ptr + rows, mask=row_valid, other=0.0)
        owners = tl.load(assignment_ptr + rows, mask=row_valid, other=-1)
        sums += tl.sum(tl.where(owners[:, None] == slots[None, :], values[:, None], 0.0), axis=0)
    tl.store(partial_ptr + program * INSTANCES_PADDED + slots, sums)


def _programs(device: torch.device, tiles: int) -> int:
    """G: enough programs to fill the device (PROGRAMS_PER_SM per SM), never more than tiles."""
    if INTERPRETER or device.type != "cuda":
        per_device = INTERPRETER_PROGRAMS
    else:
        per_device = PROGRAMS_PER_SM * torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(per_device, tiles))


def best_instances(theta: torch.Tensor, mask_features: torch.Tensor, xyz_m: torch.Tensor,
                   centres_m: torch.Tensor, thresholds: torch.Tensor, cover: torch.Tensor | None = None,
                   points: torch.Tensor | None = None, instances: torch.Tensor | None = None,
                   column_sums: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """First maximum over instances of the thresholded (``cover`` None) or rescaled masks.

    theta (I, 337), mask_features (N, 16), xyz_m (N, 3), centres_m (I, 3), thresholds (I,) and
    cover (I,) float32 on one device (CUDA, or CPU under TRITON_INTERPRET=1). points (n,) int64:
    the points to visit (default all N); instances (k,) int64: the instances to compare (default
    all I). Returns best (n,) float32, which (n,) int64 (a position in ``instances``; 0 when k = 0,
    with best -1) and, when ``column_sums``, Σ over the visited points of the values (k,) float32.
    """
    require_triton(theta.device)
    check_decode_shapes(theta, mask_features, xyz_m, centres_m)
    device = theta.device
    count = theta.shape[0]
    rows = xyz_m.shape[0] if points is None else points.numel()
    if instances is None:
        instances = torch.arange(count, device=device)
    slots = instances.numel()
    best = torch.full((rows,), -1.0, device=device)
    which = torch.zeros(rows, dtype=torch.int32, device=device)
    tiles = triton.cdiv(rows, BLOCK_POINTS)
    programs = _programs(device, tiles)
    padded = triton.next_power_of_2(max(slots, 1))
    partial = torch.zeros(programs, padded, device=device) if column_sums else None
    if rows and slots:
        _assign_kernel[(programs,)](
            theta.float().contiguous(), mask_features.float().contiguous(), xyz_m.float().contiguous(),
            centres_m.float().contiguous(), thresholds.float().contiguous(),
            thresholds if cover is None else cover.float().contiguous(),
            which if points is None else points.to(torch.int64).contiguous(),  # unused without a subset
            instances.to(torch.int64).contiguous(), best, which, best if partial is None else partial,
            rows, slots,
            HIDDEN=HIDDEN, EMBED=EMBED, INPUTS_PADDED=triton.next_power_of_2(IN_CHANNELS),
            BLOCK_POINTS=BLOCK_POINTS, INSTANCES_PADDED=padded, ZERO_STANDIN=ZERO_STANDIN,
            POINT_SUBSET=points is not None, RESCALE=cover is not None, COLUMN_SUMS=column_sums)
    sums = partial.sum(dim=0)[:slots] if partial is not None else None
    return best, which.to(torch.int64), sums


def instance_sums(values: torch.Tensor, assignment: torch.Tensor, count: int) -> torch.Tensor:
    """Σ of ``values`` (N,) float32/float64 over each instance's assigned points -> (count,), in
    the values' dtype. assignment (N,) int64, -1 for none. Deterministic (fixed summation order
    for a given device)."""
    require_triton(values.device)
    num_points = values.numel()
    padded = triton.next_power_of_2(max(count, 1))
    block_points = max(16, SUM_TILE_ELEMENTS // padded)
    programs = _programs(values.device, triton.cdiv(num_points, block_points))
    partial = torch.zeros(programs, padded, dtype=values.dtype, device=values.device)
    if num_points and count:
        _instance_sums_kernel[(programs,)](values.contiguous(), assignment.to(torch.int64).contiguous(),
                                           partial, num_points, BLOCK_POINTS=block_points,
                                           INSTANCES_PADDED=padded)
    return partial.sum(dim=0)[:count]


__all__ = ["best_instances", "instance_sums"]
