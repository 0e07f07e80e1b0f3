"""Candidate mining on the device (SPEC §4): the LN-NMS scan as parallel chunks of the heat order.

Why it is exact. Every visit marks its R ball (``d² < R²``, all labels) visited before its
acceptance test, so the visited points are the lexicographically-first maximal independent set
(MIS), in visit order, of the graph ``d² < R²`` over the object points with heat >= thres; a
visit's acceptance depends on that visit alone; the candidates are the first K accepted visits.
The MIS restricted to a prefix of the visit order is the full MIS restricted to that prefix, so
the order can be decided in chunks, each a prefix of the positions not yet decided:

1. ``_chunk_kernel`` (one program) folds the last chunk's verdicts into candidate slots
   (acceptance order) and stops once K are accepted. Otherwise it takes the next ``chunk``
   (default ``CHUNK``) positions that no earlier joiner's ball has marked and that have heat >=
   thres (a scan of the visited flags from a cursor), and decides them TILE by TILE in visit
   order: a member in the ball of a joiner of an earlier tile is out, and parallel rounds decide
   the rest of the tile (a member joins when none of its earlier in-tile neighbours is undecided or
   joined; one with a joined earlier neighbour drops out). Each round decides at least the first
   undecided member, and each decision is the sequential scan's. The chunk ends early once it has
   as many joiners as candidates are still missing; its undecided members go back to the next one.
2. ``_visit_kernel`` (one program per SM, the chunk's joiners strided over them): each joiner's
   R-ball pass marks its ball visited (for the next chunk's scan) and counts its foreground; past
   ``max_fg``, a radix select (11-bit digits of the point indices, one histogram pass over the
   ball per digit) finds the ``max_fg``-th smallest index **[fix]**; the maximum heat over the kept
   foreground and ``div_rn`` give the local-maximum verdict.
3. After the last chunk, ``_rows_kernel`` (one program per SM, the candidates strided over them)
   writes each candidate's kept foreground and its background (2R ball, other labels; past
   ``max_bg``, a radix select and a second write).

A ball pass reads only the grid cells (edge just over 2R) the ball can reach, located in the
cell-sorted points through a dense table of where each cell starts (``CellGrid``). ``d²`` is
evaluated as the reference does (``dx·dx + dy·dy + dz·dz`` in float32, left to right; swapping the
two points only negates dx, dy and dz) with floating-point contraction off for these kernels, and
the local test divides with ``div_rn``, so every decision is the reference's bit for bit. Rows are
sorted by point index on the device afterwards, so the lists equal
``engine.encoding.mine_candidates``'s exactly. No program reads what another program of the same
launch writes (launch boundaries order a chunk's marks before the next chunk's scan), so the result
does not depend on the order in which programs run.

Launches and host syncs. Each chunk after the first is a step of two launches (visits, then the
next chunk), and the host cannot know which step ends the scan without reading the device. So it
launches steps in batches, ``FIRST_BATCH`` and then twice as many each time (never more than the
``ceil(No / min(chunk, TILE))`` steps a scene can need: every chunk but the last decides at least
``min(chunk, TILE)`` positions), and reads the state (done, candidates accepted) once per batch;
steps after the end find the state done and return at once. Triton launches: 1 + 2·(steps
launched) + 1 (rows), besides torch's own for the setup (visit order, cell grid) and the rows'
sorts. Host syncs: one per batch, the last of which also reads the candidate count; the cell grid
is built on the device without one (``CellGrid``). The synthetic rooms of the benchmarks (seed 0)
end after 12 chunk launches at 150k points (61k object points) and 21 at 1M (384k object points),
3-52 joiners per chunk: one batch, so one sync in all.

Extra memory: O(No) (grid arrays, visit order, visited flags) + O(chunk) + O(K · (max_fg + max_bg)).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from engine import encoding
from kernels._triton import INTERPRETER, constexpr, jit, require_triton, tl

BLOCK = 512  # points per step of a ball pass
SCAN = 1024  # positions per step of the chunk kernel's scan for unmarked positions
TILE = 64  # chunk members decided together (a (TILE, TILE) neighbour tile)
CHUNK = 1024  # undecided positions per chunk: fewer chunks (sequential steps) vs. longer chunk kernels
FIRST_BATCH = 32  # steps launched before the first look at the state (a 384k object-point room needs 20)
GRID_GROWTH_STEPS = 512  # cell edges tried (x1.25 each): 1.25^511 covers any float32 extent
INTERPRETER_PROGRAMS = 3  # the interpreter runs programs one after another: few, but more than one
LAUNCH_OPTIONS = {"num_warps": 4, "enable_fp_fusion": False}  # no contraction: d² rounds as the reference's
COLUMNS = 16  # lanes for the 9 (x, y) columns of cells around q
NO_INDEX = 2 ** 31 - 1  # above every object-point index: row padding, "no threshold"
_NO_INDEX = constexpr(NO_INDEX)
_REACH_MARGIN = constexpr(1e-3)  # cell units: slack on the cells a ball can reach, far above rounding
DIGIT_BITS = 11  # radix digits of the cap selection: 2048-bin histograms
# The scan state (int32): the first position not yet taken into a chunk, candidates accepted so far
# (at most K), joiners of the last chunk (0 once done), and whether the scan has ended.
CURSOR, ACCEPTED, JOINERS, DONE = 0, 1, 2, 3
_CURSOR, _ACCEPTED, _JOINERS, _DONE = (constexpr(i) for i in (CURSOR, ACCEPTED, JOINERS, DONE))


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
    position_x = tl.load(cell_q_ptr)
    position_y = tl.load(cell_q_ptr + 1)
    position_z = tl.load(cell_q_ptr + 2)
    fraction_x = position_x - tl.floor(position_x)
    fraction_y = position_y - tl.floor(position_y)
    fraction_z = position_z - tl.floor(position_z)
    lower_x = (fraction_x < reach + _REACH_MARGIN).to(tl.int32)  # the ball crosses the lower x face
    upper_x = (1.0 - fraction_x < reach + _REACH_MARGIN).to(tl.int32)
    lower_y = (fraction_y < reach + _REACH_MARGIN).to(tl.int32)
    upper_y = (1.0 - fraction_y < reach + _REACH_MARGIN).to(tl.int32)
    lower_z = (fraction_z < reach + _REACH_MARGIN).to(tl.int32)
    upper_z = (1.0 - fraction_z < reach + _REACH_MARGIN).to(tl.int32)
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
def _ball_runs(cell_starts_ptr, point_keys_ptr, cells_ptr, q, dim_y, dim_z, reach, COLUMNS: tl.constexpr):
    """The runs around object point q walked as one range of steps: run_offsets (COLUMNS,) int32
    (where each run begins in the range), shifts (COLUMNS,) int32 (sorted position minus range
    step), lengths (COLUMNS,) int32, and the range's length (int32). point_keys (No,) int32 cell
    keys, cells (No, 3) float32 positions in cell units."""
    starts, ends = _reachable_runs(cell_starts_ptr, tl.load(point_keys_ptr + q), cells_ptr + 3 * q, dim_y, dim_z,
                                   reach, COLUMNS)
    lengths = ends - starts
    run_offsets = tl.cumsum(lengths, axis=0) - lengths
    return run_offsets, starts - run_offsets, lengths, tl.sum(lengths, axis=0)


@jit
def _ball_step(first, run_offsets, shifts, lengths, total, sorted_xyz_ptr, sorted_labels_ptr, point_xyz_ptr,
               point_labels_ptr, num_points, q, COLUMNS: tl.constexpr, BLOCK: tl.constexpr):
    """Steps [first, first + BLOCK) of the range of ``_ball_runs``: sorted positions (BLOCK,) int32,
    their ``d²`` to q (BLOCK,) float32 (+inf past the range) and whether they have q's label
    (BLOCK,). sorted_xyz (3, No) float32 and sorted_labels (No,) int32 are by cell; point_xyz
    (No, 3) float32 and point_labels (No,) int32 by object point."""
    steps = first + tl.arange(0, BLOCK)
    lanes = tl.arange(0, COLUMNS)
    begun = (run_offsets[None, :] <= steps[:, None]) & (lengths[None, :] > 0)  # (BLOCK, COLUMNS)
    run = tl.max(tl.where(begun, lanes[None, :], -1), axis=1)
    valid = (run >= 0) & (steps < total)
    slots = steps + tl.sum(tl.where(lanes[None, :] == run[:, None], shifts[None, :], 0), axis=1)
    dx = tl.load(sorted_xyz_ptr + slots, mask=valid, other=0.0) - tl.load(point_xyz_ptr + 3 * q)
    dy = tl.load(sorted_xyz_ptr + num_points + slots, mask=valid, other=0.0) - tl.load(point_xyz_ptr + 3 * q + 1)
    dz = tl.load(sorted_xyz_ptr + 2 * num_points + slots, mask=valid, other=0.0) - tl.load(point_xyz_ptr + 3 * q + 2)
    d2 = tl.where(valid, dx * dx + dy * dy + dz * dz, float("inf"))
    same = tl.load(sorted_labels_ptr + slots, mask=valid, other=0) == tl.load(point_labels_ptr + q)
    return slots, d2, same


@jit
def _ball_count(run_offsets, shifts, lengths, total, sorted_xyz_ptr, sorted_labels_ptr, ids_ptr, point_xyz_ptr,
                point_labels_ptr, heat_ptr, rank_ptr, visited_ptr, num_points, q, radius2, threshold,
                MARK: tl.constexpr, COLUMNS: tl.constexpr, BLOCK: tl.constexpr):
    """How many foreground points of q (in the runs of ``_ball_runs``, ``d² < radius2``, q's label)
    have an index <= threshold (int32), and their maximum heat (float32, 0 if none; heat (No,)
    float32 by object point). With MARK, flags visited (No,) int8, by visit position (rank (No,)
    int32 by cell), every point with ``d² < radius2``, whatever its label."""
    count = total * 0
    max_heat = tl.sum(tl.zeros((BLOCK,), tl.float32), axis=0)
    for first in range(0, total, BLOCK):
        slots, d2, same = _ball_step(first, run_offsets, shifts, lengths, total, sorted_xyz_ptr, sorted_labels_ptr,
                                     point_xyz_ptr, point_labels_ptr, num_points, q, COLUMNS, BLOCK)
        inside = d2 < radius2
        if MARK:
            tl.store(visited_ptr + tl.load(rank_ptr + slots, mask=inside, other=0), 1, mask=inside)
        entries = tl.load(ids_ptr + slots, mask=inside & same, other=0)
        kept = inside & same & (entries <= threshold)
        count += tl.sum(kept.to(tl.int32), axis=0)
        max_heat = tl.maximum(max_heat, tl.max(tl.load(heat_ptr + entries, mask=kept, other=0.0), axis=0))
    return count, max_heat


@jit
def _ball_threshold(run_offsets, shifts, lengths, total, sorted_xyz_ptr, sorted_labels_ptr, ids_ptr, point_xyz_ptr,
                    point_labels_ptr, num_points, q, radius2, count, cap, SAME_LABEL: tl.constexpr,
                    COLUMNS: tl.constexpr, BLOCK: tl.constexpr, DIGIT_BITS: tl.constexpr, DIGITS: tl.constexpr):
    """The cap-th smallest index among the ``count`` points of q's ball (the runs of ``_ball_runs``,
    ``d² < radius2``) with q's label (SAME_LABEL) or another label, when count > cap, else
    NO_INDEX: those with an index <= it are the first ``cap``. Indices are below
    2^(DIGITS·DIGIT_BITS). Radix select, most significant digit first: one pass over the ball per
    digit builds the histogram of the digit among the points that match the digits chosen so far,
    and the first digit value whose cumulative count reaches cap is chosen."""
    threshold = count * 0 + _NO_INDEX
    if count > cap:
        bins = tl.arange(0, 1 << DIGIT_BITS)
        prefix = count * 0  # the digits chosen so far
        below = count * 0  # chosen points whose digits so far are smaller than prefix's
        for digit_index in tl.static_range(DIGITS):
            shift = (DIGITS - 1 - digit_index) * DIGIT_BITS
            histogram = tl.zeros((1 << DIGIT_BITS,), tl.int32)
            for first in range(0, total, BLOCK):
                slots, d2, same = _ball_step(first, run_offsets, shifts, lengths, total, sorted_xyz_ptr,
                                             sorted_labels_ptr, point_xyz_ptr, point_labels_ptr, num_points, q,
                                             COLUMNS, BLOCK)
                if SAME_LABEL:
                    matching = (d2 < radius2) & same
                else:
                    matching = (d2 < radius2) & ~same
                entries = tl.load(ids_ptr + slots, mask=matching, other=0)
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
def _append(row_ptr, kept, width, entries, keep):
    """Appends entries[keep] to row (width,) int32 after its first ``kept`` (never past its end);
    returns the new count (int32), which may exceed width."""
    keep_i32 = keep.to(tl.int32)
    row_slots = kept + tl.cumsum(keep_i32, axis=0) - 1
    tl.store(row_ptr + row_slots, entries, mask=keep & (row_slots < width))
    return kept + tl.sum(keep_i32, axis=0)


@jit
def _ball_write(run_offsets, shifts, lengths, total, sorted_xyz_ptr, sorted_labels_ptr, ids_ptr, point_xyz_ptr,
                point_labels_ptr, num_points, q, radius2_fg, fg_threshold, fg_row_ptr, max_fg, radius2_bg,
                bg_threshold, bg_row_ptr, max_bg, FOREGROUND: tl.constexpr, COLUMNS: tl.constexpr,
                BLOCK: tl.constexpr):
    """One pass over q's 2R ball (the runs of ``_ball_runs``) writing, in cell order, the indices
    <= bg_threshold of its background (``d² < radius2_bg``, other labels) to bg_row (max_bg,) int32
    and, with FOREGROUND, those <= fg_threshold of its foreground (``d² < radius2_fg``, q's label)
    to fg_row (max_fg,) int32, the first max_* of each; returns how many each has (int32, the
    foreground's 0 without FOREGROUND)."""
    fg_kept = total * 0
    bg_kept = total * 0
    for first in range(0, total, BLOCK):
        slots, d2, same = _ball_step(first, run_offsets, shifts, lengths, total, sorted_xyz_ptr, sorted_labels_ptr,
                                     point_xyz_ptr, point_labels_ptr, num_points, q, COLUMNS, BLOCK)
        entries = tl.load(ids_ptr + slots, mask=d2 < radius2_bg, other=0)
        if FOREGROUND:
            fg_kept = _append(fg_row_ptr, fg_kept, max_fg, entries,
                              (d2 < radius2_fg) & same & (entries <= fg_threshold))
        bg_kept = _append(bg_row_ptr, bg_kept, max_bg, entries, (d2 < radius2_bg) & ~same & (entries <= bg_threshold))
    return fg_kept, bg_kept


@jit
def _tile_distances(point_xyz_ptr, rows_q, row_live, columns_q, column_live):
    """``d²`` (rows, columns) float32 between the object points rows_q (rows,) and columns_q
    (columns,) int32 (masked lanes: live flags), as the reference evaluates it (the row point minus
    the column point)."""
    dx = (tl.load(point_xyz_ptr + 3 * rows_q, mask=row_live, other=0.0)[:, None]
          - tl.load(point_xyz_ptr + 3 * columns_q, mask=column_live, other=0.0)[None, :])
    dy = (tl.load(point_xyz_ptr + 3 * rows_q + 1, mask=row_live, other=0.0)[:, None]
          - tl.load(point_xyz_ptr + 3 * columns_q + 1, mask=column_live, other=0.0)[None, :])
    dz = (tl.load(point_xyz_ptr + 3 * rows_q + 2, mask=row_live, other=0.0)[:, None]
          - tl.load(point_xyz_ptr + 3 * columns_q + 2, mask=column_live, other=0.0)[None, :])
    return dx * dx + dy * dy + dz * dz


@jit
def _fold_verdicts(state_ptr, chunk_points_ptr, chunk_thresholds_ptr, chunk_accepted_ptr, candidate_points_ptr,
                   candidate_thresholds_ptr, max_candidates, SCAN: tl.constexpr):
    """Gives the accepted joiners of the last chunk (chunk_points, their fg cap thresholds and
    verdicts, (chunk,) int32, in visit order) the next candidate slots, below max_candidates;
    returns the candidates accepted so far (int32, at most max_candidates)."""
    accepted = tl.load(state_ptr + _ACCEPTED)
    joiners = tl.load(state_ptr + _JOINERS)
    for first in range(0, joiners, SCAN):
        slots = first + tl.arange(0, SCAN)
        verdicts = tl.load(chunk_accepted_ptr + slots, mask=slots < joiners, other=0)
        targets = accepted + tl.cumsum(verdicts, axis=0) - verdicts
        keep = (verdicts > 0) & (targets < max_candidates)
        tl.store(candidate_points_ptr + targets, tl.load(chunk_points_ptr + slots, mask=keep, other=0), mask=keep)
        tl.store(candidate_thresholds_ptr + targets, tl.load(chunk_thresholds_ptr + slots, mask=keep, other=0),
                 mask=keep)
        accepted += tl.sum(verdicts, axis=0)
    return tl.minimum(accepted, max_candidates)


@jit
def _take_members(visit_heat_ptr, thres, visited_ptr, members_ptr, cursor, num_points, chunk, SCAN: tl.constexpr):
    """Writes to members (chunk,) int32 the first ``chunk`` positions >= cursor that are not marked
    visited and have heat >= thres (visit_heat (No,) float32 by position, which falls along the
    order); returns (how many, the first position not taken), int32."""
    members = cursor * 0
    taking = cursor < num_points
    while taking:
        positions = cursor + tl.arange(0, SCAN)
        in_range = positions < num_points
        eligible = in_range & (tl.load(visit_heat_ptr + positions, mask=in_range, other=0.0) >= thres)
        free = eligible & (tl.load(visited_ptr + positions, mask=eligible, other=1) == 0)
        slots = members + tl.cumsum(free.to(tl.int32), axis=0) - 1
        take = free & (slots < chunk)
        tl.store(members_ptr + slots, positions, mask=take)
        members += tl.sum(take.to(tl.int32), axis=0)
        below = tl.sum((in_range & ~eligible).to(tl.int32), axis=0) > 0  # the heat fell below thres: the end
        full = members >= chunk
        cursor = tl.where(full, tl.max(tl.where(take, positions, -1), axis=0) + 1,
                          tl.where(below, num_points, cursor + SCAN))
        taking = ~full & (cursor < num_points)
    return members, cursor


@jit
def _decide_tile(order_ptr, point_xyz_ptr, members_ptr, chunk_points_ptr, first, members, joiners, radius2,
                 TILE: tl.constexpr):
    """Decides chunk members [first, first + TILE) (positions in members (chunk,) int32), given the
    chunk's ``joiners`` so far (chunk_points (chunk,) int32, object points in visit order): a member
    in the ball of one of them is out, and parallel rounds decide the rest. Appends the tile's
    joiners to chunk_points; returns the new joiner count (int32)."""
    lanes = tl.arange(0, TILE)
    live = first + lanes < members
    rows_q = tl.load(order_ptr + tl.load(members_ptr + first + lanes, mask=live, other=0), mask=live, other=0)
    undecided = live
    for joined_first in range(0, joiners, TILE):
        joined_live = joined_first + lanes < joiners
        joined_q = tl.load(chunk_points_ptr + joined_first + lanes, mask=joined_live, other=0)
        near = (_tile_distances(point_xyz_ptr, rows_q, live, joined_q, joined_live) < radius2) & joined_live[None, :]
        undecided = undecided & (tl.sum(near.to(tl.int32), axis=1) == 0)
    earlier = (_tile_distances(point_xyz_ptr, rows_q, live, rows_q, live) < radius2) \
        & (lanes[None, :] < lanes[:, None]) & live[None, :]  # (TILE, TILE): row's neighbours earlier in the tile
    joined = tl.zeros((TILE,), tl.int1)
    out = ~undecided
    deciding = tl.sum(undecided.to(tl.int32), axis=0) > 0
    while deciding:  # each round decides at least the first undecided member
        blocked = tl.sum((earlier & ~out[None, :]).to(tl.int32), axis=1) > 0
        joining = undecided & ~blocked
        joined = joined | joining
        undecided = undecided & ~joining
        dropping = undecided & (tl.sum((earlier & joined[None, :]).to(tl.int32), axis=1) > 0)
        out = out | dropping
        undecided = undecided & ~dropping
        deciding = tl.sum(undecided.to(tl.int32), axis=0) > 0
    joined_i32 = joined.to(tl.int32)
    tl.store(chunk_points_ptr + joiners + tl.cumsum(joined_i32, axis=0) - 1, rows_q, mask=joined)
    return joiners + tl.sum(joined_i32, axis=0)


@jit
def _chunk_kernel(order_ptr, visit_heat_ptr, thres_ptr, point_xyz_ptr, visited_ptr, state_ptr, members_ptr,
                  chunk_points_ptr, chunk_thresholds_ptr, chunk_accepted_ptr, candidate_points_ptr,
                  candidate_thresholds_ptr, num_points, chunk, radius2, max_candidates,
                  SCAN: tl.constexpr, TILE: tl.constexpr):
    """Grid (1,). Folds the last chunk's verdicts (``_fold_verdicts``), then, unless K are accepted,
    decides the next chunk tile by tile (``_decide_tile``) until its members run out or it has as
    many joiners as candidates are still missing (the members left go back to the next chunk). The
    joiners go to chunk_points (chunk,) int32 in visit order and their count to the state (4,) int32
    (CURSOR, ACCEPTED, JOINERS, DONE); the scan is done when K are accepted or no member is left.
    order (No,) int32 object point by position, visit_heat (No,) float32 by position, thres (1,)
    float32, point_xyz (No, 3) float32, visited (No,) int8 by position; members (chunk,) int32 scratch."""
    accepted = _fold_verdicts(state_ptr, chunk_points_ptr, chunk_thresholds_ptr, chunk_accepted_ptr,
                              candidate_points_ptr, candidate_thresholds_ptr, max_candidates, SCAN)
    done = (tl.load(state_ptr + _DONE) > 0) | (accepted >= max_candidates)
    cursor = tl.load(state_ptr + _CURSOR)
    joiners = cursor * 0
    if not done:
        members, cursor = _take_members(visit_heat_ptr, tl.load(thres_ptr), visited_ptr, members_ptr, cursor,
                                        num_points, chunk, SCAN)
        done = members == 0
        tl.debug_barrier()  # members and the folded chunk_points are written before the tiles read or overwrite
        first = members * 0
        deciding = members > 0
        while deciding:
            joiners = _decide_tile(order_ptr, point_xyz_ptr, members_ptr, chunk_points_ptr, first, members, joiners,
                                   radius2, TILE)
            tl.debug_barrier()  # this tile's joiners are written before the next tile reads them
            first += TILE
            deciding = (first < members) & (joiners < max_candidates - accepted)
        if first < members:
            cursor = tl.load(members_ptr + first)
    tl.debug_barrier()  # every warp has read the state before it is overwritten
    tl.store(state_ptr + _CURSOR, cursor)
    tl.store(state_ptr + _ACCEPTED, accepted)
    tl.store(state_ptr + _JOINERS, joiners)
    tl.store(state_ptr + _DONE, done.to(tl.int32))


@jit
def _visit_kernel(state_ptr, chunk_points_ptr, chunk_thresholds_ptr, chunk_accepted_ptr, heat_ptr, point_keys_ptr,
                  cells_ptr, cell_starts_ptr, ids_ptr, sorted_xyz_ptr, sorted_labels_ptr, rank_ptr, point_xyz_ptr,
                  point_labels_ptr, visited_ptr, num_points, grid_dims_ptr, radius2, reaches_ptr, local_thres, max_fg,
                  COLUMNS: tl.constexpr, BLOCK: tl.constexpr, DIGIT_BITS: tl.constexpr, DIGITS: tl.constexpr):
    """Grid (programs,): the visits of the last chunk's joiners (chunk_points, state[JOINERS] of
    them), strided over the programs. Each marks its R ball visited, and writes its foreground cap
    threshold (``_ball_threshold``) to chunk_thresholds and its local-maximum verdict (1: accepted)
    to chunk_accepted, both (chunk,) int32. heat (No,) float32 by object point; the grid arrays as
    ``_ball_count``'s; grid_dims (3,) int32 and reaches (2,) float32 as ``CellGrid``'s."""
    dim_y, dim_z, reach = tl.load(grid_dims_ptr + 1), tl.load(grid_dims_ptr + 2), tl.load(reaches_ptr)
    for joiner in range(tl.program_id(0), tl.load(state_ptr + _JOINERS), tl.num_programs(0)):
        q = tl.load(chunk_points_ptr + joiner)
        run_offsets, shifts, lengths, total = _ball_runs(cell_starts_ptr, point_keys_ptr, cells_ptr, q, dim_y, dim_z,
                                                         reach, COLUMNS)
        found, max_heat = _ball_count(run_offsets, shifts, lengths, total, sorted_xyz_ptr, sorted_labels_ptr, ids_ptr,
                                      point_xyz_ptr, point_labels_ptr, heat_ptr, rank_ptr, visited_ptr, num_points, q,
                                      radius2, _NO_INDEX, True, COLUMNS, BLOCK)
        threshold = _ball_threshold(run_offsets, shifts, lengths, total, sorted_xyz_ptr, sorted_labels_ptr, ids_ptr,
                                    point_xyz_ptr, point_labels_ptr, num_points, q, radius2, found, max_fg, True,
                                    COLUMNS, BLOCK, DIGIT_BITS, DIGITS)
        if threshold != _NO_INDEX:  # the heat maximum is over the kept foreground only
            _, max_heat = _ball_count(run_offsets, shifts, lengths, total, sorted_xyz_ptr, sorted_labels_ptr, ids_ptr,
                                      point_xyz_ptr, point_labels_ptr, heat_ptr, rank_ptr, visited_ptr, num_points, q,
                                      radius2, threshold, False, COLUMNS, BLOCK)
        heat_q = tl.load(heat_ptr + q)
        verdict = tl.math.div_rn(heat_q, tl.maximum(heat_q, max_heat)) >= local_thres
        tl.store(chunk_thresholds_ptr + joiner, threshold)
        tl.store(chunk_accepted_ptr + joiner, verdict.to(tl.int32))


@jit
def _rows_kernel(state_ptr, candidate_points_ptr, candidate_thresholds_ptr, point_keys_ptr, cells_ptr,
                 cell_starts_ptr, ids_ptr, sorted_xyz_ptr, sorted_labels_ptr, point_xyz_ptr, point_labels_ptr,
                 fg_rows_ptr, fg_counts_ptr, bg_rows_ptr, bg_counts_ptr, num_points, grid_dims_ptr, radius2,
                 radius2_bg, reaches_ptr, max_fg, max_bg, COLUMNS: tl.constexpr, BLOCK: tl.constexpr,
                 DIGIT_BITS: tl.constexpr, DIGITS: tl.constexpr):
    """Grid (programs,): the rows of the state[ACCEPTED] candidates (candidate_points and their fg
    cap thresholds, (K,) int32), strided over the programs, in one pass over the 2R ball (reaches[1]
    in cell units) unless the background is over its cap: the kept foreground to fg_rows
    (K, max_fg), the first max_bg background points (other labels) to bg_rows (K, max_bg), in cell
    order, and their counts (K,) int32."""
    dim_y, dim_z, reach_bg = tl.load(grid_dims_ptr + 1), tl.load(grid_dims_ptr + 2), tl.load(reaches_ptr + 1)
    for candidate in range(tl.program_id(0), tl.load(state_ptr + _ACCEPTED), tl.num_programs(0)):
        q = tl.load(candidate_points_ptr + candidate)
        fg_row_ptr = fg_rows_ptr + candidate * max_fg
        bg_row_ptr = bg_rows_ptr + candidate * max_bg
        run_offsets, shifts, lengths, total = _ball_runs(cell_starts_ptr, point_keys_ptr, cells_ptr, q, dim_y, dim_z,
                                                         reach_bg, COLUMNS)
        fg_kept, bg_kept = _ball_write(run_offsets, shifts, lengths, total, sorted_xyz_ptr, sorted_labels_ptr,
                                       ids_ptr, point_xyz_ptr, point_labels_ptr, num_points, q, radius2,
                                       tl.load(candidate_thresholds_ptr + candidate), fg_row_ptr, max_fg, radius2_bg,
                                       _NO_INDEX, bg_row_ptr, max_bg, True, COLUMNS, BLOCK)
        bg_threshold = _ball_threshold(run_offsets, shifts, lengths, total, sorted_xyz_ptr, sorted_labels_ptr,
                                       ids_ptr, point_xyz_ptr, point_labels_ptr, num_points, q, radius2_bg, bg_kept,
                                       max_bg, False, COLUMNS, BLOCK, DIGIT_BITS, DIGITS)
        if bg_threshold != _NO_INDEX:  # over the cap: the row holds the first max_bg in cell order, rewrite it
            _, bg_kept = _ball_write(run_offsets, shifts, lengths, total, sorted_xyz_ptr, sorted_labels_ptr, ids_ptr,
                                     point_xyz_ptr, point_labels_ptr, num_points, q, radius2, _NO_INDEX, fg_row_ptr,
                                     max_fg, radius2_bg, bg_threshold, bg_row_ptr, max_bg, False, COLUMNS, BLOCK)
        tl.store(fg_counts_ptr + candidate, fg_kept)
        tl.store(bg_counts_ptr + candidate, bg_kept)


class CellGrid:
    """Object points sorted into cubic cells of edge ``cell_m`` >= 2R + 1 mm, so that the 27 cells
    around a point's cell hold its 2R ball, with a dense table of where each cell starts. Built on
    the device with no host sync: the table always has ``max(8 No, 4096)`` cells (+ 1), and the
    edge is the first of 2R + 1 mm, 1.25x that, 1.25² x that, ... whose box of cells (the scene's
    bounding box, one margin cell on each side, one more for rounding) fits in it; it grows only
    for far-flung outliers. ``dims`` (3,) int32 cells per axis, ``reaches`` (2,) float32: R and 2R
    in cell units, the kernels' ball reaches."""

    def __init__(self, xyz_m: torch.Tensor, radius: float):
        num, device = xyz_m.shape[0], xyz_m.device
        self.table_cells = max(8 * num, 4096)
        origin = xyz_m.min(dim=0).values
        extent_m = (xyz_m.max(dim=0).values - origin).double()
        edges_m = (2 * radius + 1e-3) * 1.25 ** torch.arange(GRID_GROWTH_STEPS, dtype=torch.float64, device=device)
        boxes = torch.floor(extent_m / edges_m.unsqueeze(1)) + 4  # (steps, 3) cells per axis
        first_fit = torch.argmax((boxes.prod(dim=1) <= self.table_cells).int())
        self.cell_m = edges_m[first_fit]  # 0-d float64
        self.dims = boxes[first_fit].int()
        self.reaches = torch.stack((radius / self.cell_m, 2 * radius / self.cell_m)).float()
        self.cells = ((xyz_m - origin) / self.cell_m.float()).contiguous()  # (No, 3) float32 in cell units
        index = self.cells.floor().int() + 1  # margins: neighbours of any cell stay inside the box
        self.point_keys = ((index[:, 0] * self.dims[1] + index[:, 1]) * self.dims[2] + index[:, 2]).contiguous()
        keys, by_cell = torch.sort(self.point_keys, stable=True)
        self.by_cell = by_cell  # (No,) int64 object points by cell, then by index
        self.ids = by_cell.to(torch.int32)
        cells = torch.arange(self.table_cells + 1, dtype=torch.int32, device=device)
        self.cell_starts = torch.searchsorted(keys, cells).to(torch.int32)  # (table_cells + 1,)


def programs_for(device: torch.device) -> int:
    """Programs of the visit and row launches: one per SM on CUDA (a chunk has tens to a few
    hundred joiners, K = 150 rows); INTERPRETER_PROGRAMS in the interpreter."""
    if INTERPRETER:
        return INTERPRETER_PROGRAMS
    return torch.cuda.get_device_properties(device).multi_processor_count


def _steps_until_done(step: Callable[[], None], state: torch.Tensor, max_steps: int) -> int:
    """Runs ``step`` (a visit launch and a chunk launch) in batches, FIRST_BATCH and then twice as
    many each time, at most max_steps in all (by then the scan has ended), reading the state (4,)
    int32 after each batch: one host sync per batch. Returns the number of candidates accepted."""
    steps, batch = 0, FIRST_BATCH
    while True:
        for _ in range(max(1, min(batch, max_steps - steps))):
            step()
            steps += 1
        done, accepted = state[[DONE, ACCEPTED]].tolist()
        if done:
            return accepted
        batch *= 2


def mine_candidates(xyz_m: torch.Tensor, labels: torch.Tensor, heat: torch.Tensor, thres: torch.Tensor,
                    radius: float = encoding.RADIUS_M, local_thres: float = encoding.LOCAL_THRESHOLD,
                    max_candidates: int = encoding.MAX_CANDIDATES, max_fg: int = encoding.MAX_FOREGROUND,
                    max_bg: int = encoding.MAX_BACKGROUND, chunk: int = CHUNK) -> PaddedCandidates:
    """``engine.encoding.mine_candidates`` on the device: the same candidates, sizes and lists.

    xyz_m (No, 3) float32, labels (No,) int, heat (No,) float32 and thres (1,) float32 as returned
    by ``engine.encoding.scan_heat``, all on one device; ``chunk``: positions decided per chunk
    (any value >= 1 gives the same result). Host syncs: one per batch of steps (module
    docstring), so one in all for a scene whose scan ends within FIRST_BATCH steps.
    """
    device = xyz_m.device
    require_triton(device)
    num = xyz_m.shape[0]
    rows_fg = torch.full((max_candidates, max_fg), NO_INDEX, dtype=torch.int32, device=device)
    rows_bg = torch.full((max_candidates, max_bg), NO_INDEX, dtype=torch.int32, device=device)
    counts_fg = torch.zeros(max_candidates, dtype=torch.int32, device=device)
    counts_bg = torch.zeros_like(counts_fg)
    points = torch.zeros_like(counts_fg)
    count = 0
    if num:
        xyz_m = xyz_m.float().contiguous()
        labels = labels.to(torch.int32).contiguous()
        heat = heat.float().contiguous()
        order = encoding.heat_order(heat)
        rank = torch.empty(num, dtype=torch.int32, device=device)
        rank[order] = torch.arange(num, dtype=torch.int32, device=device)
        grid = CellGrid(xyz_m, radius)
        radius2 = np.float32(radius) * np.float32(radius)  # the reference's float32 R² and 4R²
        state = torch.zeros(4, dtype=torch.int32, device=device)
        visited = torch.zeros(num, dtype=torch.int8, device=device)
        chunk_points, chunk_thresholds = (torch.empty(chunk, dtype=torch.int32, device=device) for _ in range(2))
        chunk_accepted = torch.zeros(chunk, dtype=torch.int32, device=device)
        candidate_thresholds = torch.empty(max_candidates, dtype=torch.int32, device=device)
        ball_arrays = (heat, grid.point_keys, grid.cells, grid.cell_starts, grid.ids,
                       xyz_m[grid.by_cell].t().contiguous(), labels[grid.by_cell].contiguous(),
                       rank[grid.by_cell].contiguous(), xyz_m, labels, visited)
        constexprs = {"COLUMNS": COLUMNS, "BLOCK": BLOCK, "DIGIT_BITS": DIGIT_BITS, "DIGITS": radix_digits(num)}
        programs = (programs_for(device),)
        chunk_args = (order.to(torch.int32), heat[order].contiguous(), thres.float(), xyz_m, visited, state,
                      torch.empty(chunk, dtype=torch.int32, device=device), chunk_points, chunk_thresholds,
                      chunk_accepted, points, candidate_thresholds, num, chunk, float(radius2), max_candidates)
        visit_args = (state, chunk_points, chunk_thresholds, chunk_accepted, *ball_arrays, num, grid.dims,
                      float(radius2), grid.reaches, local_thres, max_fg)

        def step() -> None:
            _visit_kernel[programs](*visit_args, **constexprs, **LAUNCH_OPTIONS)
            _chunk_kernel[(1,)](*chunk_args, SCAN=SCAN, TILE=TILE, **LAUNCH_OPTIONS)

        _chunk_kernel[(1,)](*chunk_args, SCAN=SCAN, TILE=TILE, **LAUNCH_OPTIONS)
        count = _steps_until_done(step, state, max_steps=-(-num // min(chunk, TILE)))
        _rows_kernel[programs](state, points, candidate_thresholds, *ball_arrays[1:7], xyz_m, labels, rows_fg,
                               counts_fg, rows_bg, counts_bg, num, grid.dims, float(radius2),
                               float(np.float32(4) * radius2), grid.reaches, max_fg, max_bg,
                               **constexprs, **LAUNCH_OPTIONS)
    counts_fg, counts_bg = counts_fg[:count].long(), counts_bg[:count].long()
    return PaddedCandidates(points[:count].long(), counts_fg.clone(),
                            torch.sort(rows_fg[:count], dim=1).values.long(), counts_fg,
                            torch.sort(rows_bg[:count], dim=1).values.long(), counts_bg)


def radix_digits(num_points: int) -> int:
    """Digits of the cap selection: two cover indices below 2^22 (4M object points), three all int32."""
    return 2 if num_points <= 1 << (2 * DIGIT_BITS) else 3


def compile_cases(case: type) -> list:
    """``kernels.compile_check`` specializations of the mining kernels (``case`` is its Case)."""
    ints = ("state_ptr", "members_ptr", "chunk_points_ptr", "chunk_thresholds_ptr", "chunk_accepted_ptr",
            "candidate_points_ptr", "candidate_thresholds_ptr", "order_ptr", "point_keys_ptr", "cell_starts_ptr",
            "ids_ptr", "sorted_labels_ptr", "rank_ptr", "point_labels_ptr", "fg_rows_ptr", "fg_counts_ptr",
            "bg_rows_ptr", "bg_counts_ptr", "grid_dims_ptr")
    floats = ("visit_heat_ptr", "thres_ptr", "heat_ptr", "cells_ptr", "sorted_xyz_ptr", "point_xyz_ptr",
              "reaches_ptr")
    scalars = {**dict.fromkeys(ints, "*i32"), **dict.fromkeys(floats, "*fp32"), "visited_ptr": "*i8",
               **dict.fromkeys(("num_points", "chunk", "max_candidates", "max_fg", "max_bg"), "i32"),
               **dict.fromkeys(("radius2", "radius2_bg", "local_thres"), "fp32")}

    def specialization(name: str, kernel, constexprs: dict) -> object:
        types = {arg: scalars[arg] for arg in kernel.arg_names if arg not in constexprs}
        return case(f"mine_candidates {name}", kernel, types, constexprs, LAUNCH_OPTIONS)

    ball = {"COLUMNS": COLUMNS, "BLOCK": BLOCK, "DIGIT_BITS": DIGIT_BITS}
    return [specialization("chunk", _chunk_kernel, {"SCAN": SCAN, "TILE": TILE}),
            *(specialization(f"{name} DIGITS={digits}", kernel, dict(ball, DIGITS=digits))
              for name, kernel in (("visits", _visit_kernel), ("rows", _rows_kernel)) for digits in (2, 3))]
