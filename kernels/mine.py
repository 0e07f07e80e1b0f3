"""Candidate mining on the device (SPEC §4): the LN-NMS scan as one persistent single-program kernel.

The scan is sequential by definition (a visit's marks decide which point is visited next), so it
runs as one program that loops over the visit order until K candidates are accepted or the heat
falls below the threshold: no launch, no host round trip, per visit. Each visit touches only the
grid cells (edge just over 2R) that the ball around the visited point q can reach, located in the
cell-sorted points through a dense table of where each cell starts (``CellGrid``):

1. marking pass (radius R): every point with ``d² < R²`` is marked visited (flags by visit
   position, in global memory); those of q's label go to a scratch list (the foreground);
2. the foreground keeps its ``max_fg`` smallest point indices **[fix]**: when the list is longer,
   a radix select over 11-bit digits of the indices (two digits below 4M object points, three
   beyond; one histogram pass over the list per digit) finds the ``max_fg``-th smallest index;
3. the kept foreground is written to the candidate's row while its maximum heat is taken, and the
   local-maximum test decides;
4. only for an accepted q: the background pass (radius 2R, other labels) and its selection.

A barrier separates each pass's global writes (flags, scratch) from the reads that depend on them.
``d²`` is evaluated as the reference does (``dx·dx + dy·dy + dz·dz`` in float32, left to right) with
floating-point contraction switched off for this kernel, and the local test divides with
``div_rn``, so every decision is the reference's bit for bit. Rows are sorted by point index on the
device afterwards, so the lists equal ``engine.encoding.mine_candidates``'s exactly.

Extra memory: O(No) (grid arrays, visit order, flags, two scratch lists) + O(K · (max_fg + max_bg)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from engine import encoding
from kernels._triton import constexpr, jit, require_triton, tl

BLOCK = 512  # points per step of every pass
LAUNCH_OPTIONS = {"num_warps": 4, "enable_fp_fusion": False}  # no contraction: d² rounds as the reference's
COLUMNS = 16  # lanes for the 9 (x, y) columns of cells around q
NO_INDEX = 2 ** 31 - 1  # above every object-point index: row padding, "no threshold"
_NO_INDEX = constexpr(NO_INDEX)
_REACH_MARGIN = constexpr(1e-3)  # cell units: slack on the cells a ball can reach, far above rounding
DIGIT_BITS = 11  # radix digits of the cap selection: 2048-bin histograms


@dataclass
class PaddedCandidates:
    """Accepted candidates (P) as device tensors; each one's fg/bg object-point indices fill the
    first ``*_counts[c]`` slots of its row, ascending (the rest is padding)."""

    points: torch.Tensor  # (P,) int64 object-point index of each candidate, in acceptance order
    sizes: torch.Tensor  # (P,) int64 foreground size (capped)
    fg_rows: torch.Tensor  # (P, Wf) int64
    fg_counts: torch.Tensor  # (P,) int64
    bg_rows: torch.Tensor  # (P, Wb) int64
    bg_counts: torch.Tensor  # (P,) int64


@jit
def _reachable_runs(cell_starts_ptr, key_q, cell_q_ptr, dim_y, dim_z, reach, COLUMNS: tl.constexpr):
    """Runs [starts, ends) (COLUMNS,) int32 of the cell-sorted points holding every cell that a ball
    of radius ``reach`` (cell units) around q can touch: of the 3 x 3 x 3 cells around q's, only the
    sides where the ball crosses q's cell boundary. Lane c < 9 is the (x, y) column
    (c // 3 - 1, c % 3 - 1), whose z-neighbours are consecutive keys; cell_starts (cells + 1,) int32
    is the first sorted position of each key; cell_q (3,) float32 is q's position in cell units."""
    axes = tl.arange(0, 4)
    position = tl.load(cell_q_ptr + axes, mask=axes < 3, other=0.0)
    fraction = position - tl.floor(position)
    lower = (fraction < reach + _REACH_MARGIN).to(tl.int32)  # (4,) the ball crosses the lower face
    upper = (1.0 - fraction < reach + _REACH_MARGIN).to(tl.int32)
    lower_x = tl.sum(tl.where(axes == 0, lower, 0), axis=0)
    upper_x = tl.sum(tl.where(axes == 0, upper, 0), axis=0)
    lower_y = tl.sum(tl.where(axes == 1, lower, 0), axis=0)
    upper_y = tl.sum(tl.where(axes == 1, upper, 0), axis=0)
    lower_z = tl.sum(tl.where(axes == 2, lower, 0), axis=0)
    upper_z = tl.sum(tl.where(axes == 2, upper, 0), axis=0)
    lanes = tl.arange(0, COLUMNS)
    dx = lanes // 3 - 1
    dy = lanes % 3 - 1
    reached_x = tl.where(dx < 0, lower_x, tl.where(dx > 0, upper_x, 1))
    reached_y = tl.where(dy < 0, lower_y, tl.where(dy > 0, upper_y, 1))
    wanted = (lanes < 9) & (reached_x > 0) & (reached_y > 0)
    centre = key_q + (dx * dim_y + dy) * dim_z
    starts = tl.load(cell_starts_ptr + centre - lower_z, mask=wanted, other=0)
    ends = tl.load(cell_starts_ptr + centre + upper_z + 1, mask=wanted, other=0)
    return starts, ends


@jit
def _select_neighbours(cell_starts_ptr, ids_ptr, x_ptr, y_ptr, z_ptr, labels_ptr, rank_ptr, visited_ptr,
                       scratch_ptr, key_q, cell_q_ptr, dim_y, dim_z, reach, x_q, y_q, z_q, label_q, radius2,
                       MARK: tl.constexpr, SAME_LABEL: tl.constexpr, COLUMNS: tl.constexpr, BLOCK: tl.constexpr):
    """Appends to scratch the object-point indices with ``d² < radius2`` and q's label (SAME_LABEL)
    or another label; with MARK, flags every point with ``d² < radius2`` visited (any label).
    The runs are walked as one range of BLOCK-sized steps. Returns how many were appended (int32)."""
    starts, ends = _reachable_runs(cell_starts_ptr, key_q, cell_q_ptr, dim_y, dim_z, reach, COLUMNS)
    lengths = ends - starts
    run_offsets = tl.cumsum(lengths, axis=0) - lengths  # (COLUMNS,) where each run begins in the range
    shifts = starts - run_offsets
    lanes = tl.arange(0, COLUMNS)
    total = tl.sum(lengths, axis=0)
    count = total * 0
    for first in range(0, total, BLOCK):
        steps = first + tl.arange(0, BLOCK)
        begun = (run_offsets[None, :] <= steps[:, None]) & (lengths[None, :] > 0)  # (BLOCK, COLUMNS)
        run = tl.max(tl.where(begun, lanes[None, :], -1), axis=1)
        valid = (run >= 0) & (steps < total)
        slots = steps + tl.sum(tl.where(lanes[None, :] == run[:, None], shifts[None, :], 0), axis=1)
        dx = tl.load(x_ptr + slots, mask=valid, other=0.0) - x_q
        dy = tl.load(y_ptr + slots, mask=valid, other=0.0) - y_q
        dz = tl.load(z_ptr + slots, mask=valid, other=0.0) - z_q
        inside = valid & (dx * dx + dy * dy + dz * dz < radius2)
        if MARK:
            tl.store(visited_ptr + tl.load(rank_ptr + slots, mask=inside, other=0), 1, mask=inside)
        same = tl.load(labels_ptr + slots, mask=valid, other=0) == label_q
        if SAME_LABEL:
            chosen = inside & same
        else:
            chosen = inside & ~same
        chosen_i32 = chosen.to(tl.int32)
        tl.store(scratch_ptr + count + tl.cumsum(chosen_i32, axis=0) - 1,
                 tl.load(ids_ptr + slots, mask=chosen, other=0), mask=chosen)
        count += tl.sum(chosen_i32, axis=0)
    return count


@jit
def _cap_threshold(scratch_ptr, count, cap, BLOCK: tl.constexpr, DIGIT_BITS: tl.constexpr, DIGITS: tl.constexpr):
    """The cap-th smallest of the distinct non-negative indices scratch[0:count] (int32, below
    2^(DIGITS·DIGIT_BITS)) when count > cap, else NO_INDEX: the entries <= it are the first ``cap``.
    Radix select, most significant digit first: a histogram of the digit among the entries that
    match the digits chosen so far, and the first digit value whose cumulative count reaches cap."""
    threshold = count * 0 + _NO_INDEX
    if count > cap:
        bins = tl.arange(0, 1 << DIGIT_BITS)
        prefix = count * 0  # the digits chosen so far
        below = count * 0  # entries whose digits so far are smaller than prefix's
        for digit_index in tl.static_range(DIGITS):
            shift = (DIGITS - 1 - digit_index) * DIGIT_BITS
            histogram = tl.zeros((1 << DIGIT_BITS,), tl.int32)
            for first in range(0, count, BLOCK):
                slots = first + tl.arange(0, BLOCK)
                matching = slots < count
                entries = tl.load(scratch_ptr + slots, mask=matching, other=0)
                if digit_index > 0:
                    matching = matching & ((entries >> (shift + DIGIT_BITS)) == prefix)
                histogram += tl.histogram((entries >> shift) & ((1 << DIGIT_BITS) - 1), 1 << DIGIT_BITS,
                                          mask=matching)
            digit = tl.min(tl.where(below + tl.cumsum(histogram, axis=0) >= cap, bins, 1 << DIGIT_BITS), axis=0)
            below += tl.sum(tl.where(bins < digit, histogram, 0), axis=0)
            prefix = (prefix << DIGIT_BITS) | digit
        threshold = prefix
    return threshold


@jit
def _keep_first(scratch_ptr, count, threshold, row_ptr, width, heat_ptr, BLOCK: tl.constexpr):
    """Copies the entries <= threshold of scratch[0:count] to row (width,) (never past its end);
    returns (copied int32, their max heat float32, 0 if none)."""
    kept = count * 0
    max_heat = tl.sum(tl.zeros((BLOCK,), tl.float32), axis=0)
    for first in range(0, count, BLOCK):
        slots = first + tl.arange(0, BLOCK)
        entries = tl.load(scratch_ptr + slots, mask=slots < count, other=0)
        keep = (slots < count) & (entries <= threshold)
        keep_i32 = keep.to(tl.int32)
        row_slots = kept + tl.cumsum(keep_i32, axis=0) - 1
        tl.store(row_ptr + row_slots, entries, mask=keep & (row_slots < width))
        max_heat = tl.maximum(max_heat, tl.max(tl.load(heat_ptr + entries, mask=keep, other=0.0), axis=0))
        kept += tl.sum(keep_i32, axis=0)
    return kept, max_heat


@jit
def _mine_kernel(order_ptr, visit_heat_ptr, heat_ptr, thres_ptr, point_keys_ptr, cells_ptr, cell_starts_ptr,
                 ids_ptr, x_ptr, y_ptr, z_ptr, labels_ptr, rank_ptr, point_xyz_ptr, point_labels_ptr,
                 visited_ptr, fg_scratch_ptr, bg_scratch_ptr,
                 points_ptr, fg_rows_ptr, fg_counts_ptr, bg_rows_ptr, bg_counts_ptr, accepted_ptr,
                 num_points, dim_y, dim_z, radius2, radius2_bg, reach, reach_bg, local_thres,
                 max_candidates, max_fg, max_bg,
                 COLUMNS: tl.constexpr, BLOCK: tl.constexpr, DIGIT_BITS: tl.constexpr, DIGITS: tl.constexpr):
    """Grid (1,). By visit position: order (No,) int32 object-point index, visit_heat (No,) float32.
    By object point: heat (No,) float32, point_keys (No,) int32 cell key, cells (No, 3) float32
    position in cell units, point_xyz (No, 3) float32, point_labels (No,) int32. Sorted by cell:
    ids (object-point index), x/y/z, labels, rank (visit position), all (No,); cell_starts
    (cells + 1,) int32. thres (1,) float32; visited (No,) int8 zeros; scratch (No,) int32. Writes
    points (K,), fg/bg rows (K, cap) and counts (K,) int32 of the accepted candidates, and
    accepted (1,) int32 = P."""
    thres = tl.load(thres_ptr)
    position = num_points * 0
    accepted = num_points * 0
    running = (num_points > 0) & (max_candidates > 0)
    while running:
        tl.debug_barrier()  # the last visit's flags are written and its scratch reads are done
        searching = position >= 0
        while searching:  # the first unvisited position >= position (positions past the end read 0)
            slots = position + tl.arange(0, BLOCK)
            flags = tl.load(visited_ptr + slots, mask=slots < num_points, other=0)
            first = tl.min(tl.where(flags == 0, slots, _NO_INDEX), axis=0)
            searching = first == _NO_INDEX
            position = tl.where(searching, position + BLOCK, first)
        at = tl.minimum(position, num_points - 1)
        running = (position < num_points) & (tl.load(visit_heat_ptr + at) >= thres)
        if running:
            q = tl.load(order_ptr + at)
            key_q = tl.load(point_keys_ptr + q)
            x_q = tl.load(point_xyz_ptr + 3 * q)
            y_q = tl.load(point_xyz_ptr + 3 * q + 1)
            z_q = tl.load(point_xyz_ptr + 3 * q + 2)
            label_q = tl.load(point_labels_ptr + q)
            fg_found = _select_neighbours(cell_starts_ptr, ids_ptr, x_ptr, y_ptr, z_ptr, labels_ptr, rank_ptr,
                                          visited_ptr, fg_scratch_ptr, key_q, cells_ptr + 3 * q, dim_y, dim_z,
                                          reach, x_q, y_q, z_q, label_q, radius2, True, True, COLUMNS, BLOCK)
            tl.debug_barrier()
            fg_threshold = _cap_threshold(fg_scratch_ptr, fg_found, max_fg, BLOCK, DIGIT_BITS, DIGITS)
            fg_kept, fg_max_heat = _keep_first(fg_scratch_ptr, fg_found, fg_threshold,
                                               fg_rows_ptr + accepted * max_fg, max_fg, heat_ptr, BLOCK)
            heat_q = tl.load(heat_ptr + q)
            if tl.math.div_rn(heat_q, tl.maximum(heat_q, fg_max_heat)) >= local_thres:
                bg_found = _select_neighbours(cell_starts_ptr, ids_ptr, x_ptr, y_ptr, z_ptr, labels_ptr, rank_ptr,
                                              visited_ptr, bg_scratch_ptr, key_q, cells_ptr + 3 * q, dim_y, dim_z,
                                              reach_bg, x_q, y_q, z_q, label_q, radius2_bg, False, False,
                                              COLUMNS, BLOCK)
                tl.debug_barrier()
                bg_threshold = _cap_threshold(bg_scratch_ptr, bg_found, max_bg, BLOCK, DIGIT_BITS, DIGITS)
                bg_kept, _ = _keep_first(bg_scratch_ptr, bg_found, bg_threshold,
                                         bg_rows_ptr + accepted * max_bg, max_bg, heat_ptr, BLOCK)
                tl.store(points_ptr + accepted, q)
                tl.store(fg_counts_ptr + accepted, fg_kept)
                tl.store(bg_counts_ptr + accepted, bg_kept)
                accepted += 1
            running = accepted < max_candidates
            position += 1
    tl.store(accepted_ptr, accepted)


class CellGrid:
    """Object points sorted into cubic cells of edge ``cell_m`` >= 2R + 1 mm, so that the 27 cells
    around a point's cell hold its 2R ball, with a dense table of where each cell's points start.
    The edge grows (by 1.25x steps) only when the scene's bounding box would need more than
    ``max(8 No, 4096)`` cells (far-flung outliers), which keeps the table O(No)."""

    def __init__(self, xyz_m: torch.Tensor, radius: float):
        num = xyz_m.shape[0]
        origin = xyz_m.min(dim=0).values
        extent_m = (xyz_m.max(dim=0).values - origin).tolist()  # the one sync of the setup
        self.cell_m = 2 * radius + 1e-3
        while math.prod(self._dims(extent_m)) > max(8 * num, 4096):
            self.cell_m *= 1.25
        self.dims = self._dims(extent_m)
        self.cells = ((xyz_m - origin) / self.cell_m).contiguous()  # (No, 3) float32 positions in cell units
        index = self.cells.floor().int() + 1  # margins: neighbours of any cell stay inside the box
        self.point_keys = ((index[:, 0] * self.dims[1] + index[:, 1]) * self.dims[2] + index[:, 2]).contiguous()
        keys, by_cell = torch.sort(self.point_keys, stable=True)
        self.by_cell = by_cell  # (No,) int64 object points by cell, then by index
        self.ids = by_cell.to(torch.int32)
        cells = torch.arange(math.prod(self.dims) + 1, dtype=torch.int32, device=xyz_m.device)
        self.cell_starts = torch.searchsorted(keys, cells).to(torch.int32)  # (cells + 1,)

    def _dims(self, extent_m: list[float]) -> list[int]:
        """Cells per axis: the box's cells, one margin cell on each side, one more for rounding."""
        return [math.floor(e / self.cell_m) + 4 for e in extent_m]


def mine_candidates(xyz_m: torch.Tensor, labels: torch.Tensor, heat: torch.Tensor, thres: torch.Tensor,
                    radius: float = encoding.RADIUS_M, local_thres: float = encoding.LOCAL_THRESHOLD,
                    max_candidates: int = encoding.MAX_CANDIDATES, max_fg: int = encoding.MAX_FOREGROUND,
                    max_bg: int = encoding.MAX_BACKGROUND) -> PaddedCandidates:
    """``engine.encoding.mine_candidates`` in one launch: the same candidates, sizes and lists.

    xyz_m (No, 3) float32, labels (No,) int, heat (No,) float32 and thres (1,) float32 as returned
    by ``engine.encoding.scan_heat``, all on one device. Two host syncs per scene: the scene's
    extent (to size the cell table) and the number of accepted candidates.
    """
    device = xyz_m.device
    require_triton(device)
    num = xyz_m.shape[0]
    rows_fg = torch.full((max_candidates, max_fg), NO_INDEX, dtype=torch.int32, device=device)
    rows_bg = torch.full((max_candidates, max_bg), NO_INDEX, dtype=torch.int32, device=device)
    counts_fg = torch.zeros(max_candidates, dtype=torch.int32, device=device)
    counts_bg = torch.zeros_like(counts_fg)
    points = torch.zeros_like(counts_fg)
    accepted = torch.zeros(1, dtype=torch.int32, device=device)
    if num:
        xyz_m = xyz_m.float().contiguous()
        labels = labels.to(torch.int32).contiguous()
        order = encoding.heat_order(heat)
        rank = torch.empty(num, dtype=torch.int32, device=device)
        rank[order] = torch.arange(num, dtype=torch.int32, device=device)
        grid = CellGrid(xyz_m, radius)
        radius2 = np.float32(radius) * np.float32(radius)  # the reference's float32 R² and 4R²
        _mine_kernel[(1,)](
            order.to(torch.int32), heat[order].contiguous(), heat.float().contiguous(), thres.float(),
            grid.point_keys, grid.cells, grid.cell_starts, grid.ids,
            *(xyz_m[grid.by_cell, k].contiguous() for k in range(3)), labels[grid.by_cell].contiguous(),
            rank[grid.by_cell].contiguous(), xyz_m, labels, torch.zeros(num, dtype=torch.int8, device=device),
            torch.empty(num, dtype=torch.int32, device=device), torch.empty(num, dtype=torch.int32, device=device),
            points, rows_fg, counts_fg, rows_bg, counts_bg, accepted,
            num, grid.dims[1], grid.dims[2], float(radius2), float(np.float32(4) * radius2),
            radius / grid.cell_m, 2 * radius / grid.cell_m, local_thres, max_candidates, max_fg, max_bg,
            COLUMNS=COLUMNS, BLOCK=BLOCK, DIGIT_BITS=DIGIT_BITS, DIGITS=radix_digits(num),
            **LAUNCH_OPTIONS)
    count = int(accepted.item())

    def ascending(rows: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Each row's first counts[c] entries sorted (rejected visits may have left entries past them)."""
        filled = torch.arange(rows.shape[1], device=device).unsqueeze(0) < counts.unsqueeze(1)
        return torch.sort(torch.where(filled, rows, NO_INDEX), dim=1).values.long()

    counts_fg, counts_bg = counts_fg[:count].long(), counts_bg[:count].long()
    return PaddedCandidates(points[:count].long(), counts_fg.clone(), ascending(rows_fg[:count], counts_fg),
                            counts_fg, ascending(rows_bg[:count], counts_bg), counts_bg)


def radix_digits(num_points: int) -> int:
    """Digits of the cap selection: two cover indices below 2^22 (4M object points), three all int32."""
    return 2 if num_points <= 1 << (2 * DIGIT_BITS) else 3


def compile_cases(case: type) -> list:
    """``kernels.compile_check`` specializations of the mining kernel (``case`` is its Case)."""
    types = dict.fromkeys(("order_ptr", "point_keys_ptr", "cell_starts_ptr", "ids_ptr", "labels_ptr", "rank_ptr",
                           "point_labels_ptr", "fg_scratch_ptr", "bg_scratch_ptr", "points_ptr", "fg_rows_ptr",
                           "fg_counts_ptr", "bg_rows_ptr", "bg_counts_ptr", "accepted_ptr"), "*i32")
    types.update(dict.fromkeys(("visit_heat_ptr", "heat_ptr", "thres_ptr", "cells_ptr", "x_ptr", "y_ptr", "z_ptr",
                                "point_xyz_ptr"), "*fp32"))
    types.update(visited_ptr="*i8", **dict.fromkeys(("num_points", "dim_y", "dim_z", "max_candidates", "max_fg",
                                                     "max_bg"), "i32"))
    types.update(dict.fromkeys(("radius2", "radius2_bg", "reach", "reach_bg", "local_thres"), "fp32"))
    return [case(f"mine_candidates DIGITS={digits}", _mine_kernel, types,
                 {"COLUMNS": COLUMNS, "BLOCK": BLOCK, "DIGIT_BITS": DIGIT_BITS, "DIGITS": digits}, LAUNCH_OPTIONS)
            for digits in (2, 3)]
