"""Device candidate mining (``kernels.mine``) against ``engine.encoding.mine_candidates``.

Exact equality on every device: candidates in acceptance order, sizes, and every fg/bg list.
Mining makes only integer and comparison decisions on the reference's own float32 values: the scan
heat and threshold are ``engine.encoding.scan_heat``'s (a minimum, an IEEE division and
multiplies, which torch rounds alike on either device), d² is evaluated in the reference's order
with floating-point contraction switched off for the kernels (``kernels.mine.LAUNCH_OPTIONS``:
``enable_fp_fusion=False``), and the local-maximum test divides with ``div_rn``. So the compiled
kernels take the reference's decisions bit for bit, as the interpreter does. Only a CUDA run
exercises the chunk kernel's barriers (no-ops in the interpreter, which also runs the programs of
a launch one after another).

Cases with ``radix digits`` in their name run the cap selection with two radix digits (the choice
for scenes under 2^22 object points) and with three (larger ones; the same indices, a leading zero
digit), through ``forced_radix_digits``; those with ``chunks of`` decide a few positions per chunk
instead of ``kernels.mine.CHUNK``, which must not change anything.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from checks.candidates import padded_to_host
from checks.case import Cases, Check
from checks.mining_scenes import room_object_points
from engine import encoding
from kernels import mine

FIELDS = ("points", "sizes", "fg_owner", "fg_points", "bg_owner", "bg_points")
CASES = Cases("mine")


@contextmanager
def forced_radix_digits(digits: int) -> Iterator[None]:
    """Launches inside use ``digits`` radix digits for the cap selection, whatever the scene size
    (``kernels.mine.radix_digits`` swapped, and restored on exit)."""
    chosen = mine.radix_digits
    mine.radix_digits = lambda num_points: digits
    try:
        yield
    finally:
        mine.radix_digits = chosen


def mine_both(check: Check, device: torch.device, xyz: np.ndarray, labels: np.ndarray, heat: np.ndarray,
              chunk: int = mine.CHUNK, **limits: int) -> encoding.Candidates:
    """Mine with the reference (host) and the kernels (on ``device``, ``chunk`` positions per
    chunk), compare every field exactly, and return the reference's candidates. xyz (No, 3),
    labels (No,) int, heat (No,) softmax."""
    xyz_t = torch.as_tensor(xyz, dtype=torch.float32)
    labels_t = torch.as_tensor(labels, dtype=torch.int64)
    heat_t = torch.as_tensor(heat, dtype=torch.float32)
    scan, thres = encoding.heat_and_threshold(heat_t)
    want = encoding.mine_candidates(xyz_t.numpy(), labels_t.numpy(), scan, thres, **limits)
    device_scan, device_thres = encoding.scan_heat(heat_t.to(device))
    got = padded_to_host(mine.mine_candidates(xyz_t.to(device), labels_t.to(device), device_scan, device_thres,
                                              chunk=chunk, **limits))
    for field in FIELDS:
        check.equal(field, getattr(got, field), getattr(want, field))
    return want


def list_lengths(owner: np.ndarray, count: int) -> np.ndarray:
    return np.bincount(owner, minlength=count)


def softmax_heat(rng: np.random.Generator, num: int, levels: int | None = None) -> np.ndarray:
    """(num,) float32 softmax of normal logits; with ``levels``, few distinct values: ties in the
    visit order and in the local-maximum test."""
    logits = rng.normal(size=num) * 3
    if levels:
        logits = np.round(logits * levels / 6) * 6 / levels
    return torch.softmax(torch.from_numpy(logits).float(), dim=0).numpy()


# (object points, distinct heat levels or None, candidate limit K)
UNIFORM_SCENES = [(1, None, 150), (2, None, 150), (300, None, 150), (1500, None, 40), (1500, 4, 40), (1200, None, 7)]


@CASES("uniform scene No={scene[0]} heat levels={scene[1]} K={scene[2]}", scene=UNIFORM_SCENES)
def uniform_scene(check: Check, device: torch.device, scene: tuple[int, int | None, int]) -> None:
    num, levels, max_candidates = scene
    rng = np.random.default_rng(num + (levels or 0))
    xyz = rng.random((num, 3)) * [4.0, 3.0, 2.0]
    want = mine_both(check, device, xyz, rng.integers(0, 3, num), softmax_heat(rng, num, levels),
                     max_candidates=max_candidates)
    check.that("a one-point scene has its point as candidate", want.points.size == min(num, max_candidates) or num > 1)
    if num >= 1200:
        check.that("the candidate limit ends the scan", want.points.size == max_candidates, str(want.points.size))


@CASES("dense cluster hits both caps of 2000, {digits} radix digits", digits=[2, 3])
def dense_cluster(check: Check, device: torch.device, digits: int) -> None:
    """~7000 points in a 0.4 m cube: lists over 2000 keep their 2000 smallest indices [fix]."""
    rng = np.random.default_rng(7)
    num = 7000
    with forced_radix_digits(digits):
        want = mine_both(check, device, rng.random((num, 3)) * 0.4, rng.choice(2, num, p=[0.7, 0.3]),
                         softmax_heat(rng, num))
    count = want.points.size
    check.that("a foreground list reaches the cap", list_lengths(want.fg_owner, count).max() == encoding.MAX_FOREGROUND)
    check.that("a background list reaches the cap", list_lengths(want.bg_owner, count).max() == encoding.MAX_BACKGROUND)


@CASES("small caps can drop the candidate from its own foreground")
def small_caps(check: Check, device: torch.device) -> None:
    """One label, caps of 50/10: the heat maximum is taken over the capped foreground, which need
    not contain q (its index is not among the 50 smallest)."""
    rng = np.random.default_rng(3)
    num = 3000
    xyz = rng.random((num, 3)) * [1.5, 1.5, 0.5]
    labels = np.where(np.arange(num) % 9 == 0, 1, 0)
    want = mine_both(check, device, xyz, labels, softmax_heat(rng, num, levels=3), max_fg=50, max_bg=10)
    owners = [want.fg_points[want.fg_owner == c] for c in range(want.points.size)]
    check.that("some candidate is not in its capped foreground",
               any(q not in fg for q, fg in zip(want.points, owners, strict=True)))
    check.that("a foreground list reaches the cap of 50", list_lengths(want.fg_owner, want.points.size).max() == 50)


@CASES("cap boundary at the end of a radix bin, {digits} radix digits", digits=[2, 3])
def cap_boundary(check: Check, device: torch.device, digits: int) -> None:
    """The 10th smallest foreground index is 9, the last of the first high-digit bin (indices
    < 2^11): exactly the 10 points 0..9 are kept, not the first entry of the next bin."""
    blob_low, spread, blob_high = 10, 2038, 50  # indices 0..9 | 10..2047 | 2048..2097
    rng = np.random.default_rng(4)
    grid = np.stack(np.meshgrid(np.arange(46), np.arange(46), [0], indexing="ij"), -1).reshape(-1, 3)
    xyz = np.concatenate([rng.random((blob_low, 3)) * 0.1, 5.0 + grid[:spread] * 1.0,
                          rng.random((blob_high, 3)) * 0.1])
    heat = np.full(len(xyz), 0.001, np.float32)
    heat[-1] = 0.9  # the blob's last point is visited first
    with forced_radix_digits(digits):
        want = mine_both(check, device, xyz, np.zeros(len(xyz), np.int64), heat, max_candidates=1, max_fg=blob_low)
    check.equal("reference candidates", want.points, [len(xyz) - 1])
    check.equal("reference foreground", want.fg_points, np.arange(blob_low))


@CASES("a rejected visit leaves nothing in the next candidate's lists")
def rejected_visit(check: Check, device: torch.device) -> None:
    """q (x = 0.5) is rejected: p (x = 0.25, twice its heat) is in its ball, marked by the first
    candidate at x = 0, which q is too far from. q's 22-point foreground must not leak into the
    row of the next candidate, r, whose foreground is r alone."""
    extras = np.stack([np.linspace(0.36, 0.64, 20), np.zeros(20), np.zeros(20)], axis=1)
    xyz = np.concatenate([extras, [[0.0, 0, 0], [0.25, 0, 0], [0.5, 0, 0], [5.0, 0, 0]]])
    heat = np.concatenate([np.full(20, 0.01), [1.0, 0.9, 0.3, 0.2]]).astype(np.float32)
    want = mine_both(check, device, xyz, np.zeros(len(xyz), np.int64), heat)
    first, _, q, r = 20, 21, 22, 23
    check.equal("reference candidates", want.points, [first, r])
    check.that("q is rejected", q not in want.points)
    check.equal("reference foreground of r", want.fg_points[want.fg_owner == 1], [r])


@CASES("a chunk that stops at K joiners hands its undecided members on")
def joiner_limit(check: Check, device: torch.device) -> None:
    """22 copies, 5 m apart, of the rejected-visit triple (a at x = 0, p at 0.25, q at 0.5; heat
    1.0, 0.9, 0.3), then 50 isolated points (heat 0.1). The first tile of the first chunk (a's,
    p's, then 20 q's) has 42 joiners, past the K - 0 = 23 still missing, so the chunk stops there;
    but the q's are rejected, and the 23rd candidate is the first isolated point, after the last
    two q's, which the next chunk must take up."""
    copies, isolated = 22, 50
    triple = np.array([[0.0, 0, 0], [0.25, 0, 0], [0.5, 0, 0]])
    shifts = np.stack([np.zeros(copies), np.arange(copies) * 5.0, np.zeros(copies)], axis=1)
    xyz = np.concatenate([(triple[:, None] + shifts[None]).reshape(-1, 3),  # a's, then p's, then q's
                          np.stack([np.arange(isolated) * 5.0, np.full(isolated, -20.0), np.zeros(isolated)], 1)])
    heat = np.repeat([1.0, 0.9, 0.3, 0.1], [copies, copies, copies, isolated]).astype(np.float32)
    want = mine_both(check, device, xyz, np.zeros(len(xyz), np.int64), heat / heat.sum(), max_candidates=23)
    check.equal("the a's, then the first isolated point", want.points, np.append(np.arange(copies), 3 * copies))


@CASES("points exactly at R and 2R are outside")
def points_at_r_and_2r(check: Check, device: torch.device) -> None:
    """A cross of points at 0, ±R, ±2R on each axis (d² == R² and == 4R² exactly in float32),
    labels alternating by index: the ball tests are strict, as in the reference."""
    step = np.float32(encoding.RADIUS_M)
    offsets = [np.zeros(3, np.float32)]
    for axis in range(3):
        for k in (-2, -1, 1, 2):
            point = np.zeros(3, np.float32)
            point[axis] = k * step
            offsets.append(point)
    xyz = np.stack(offsets)  # differences from point 0 are the offsets themselves, exactly
    labels = np.arange(len(xyz)) % 2  # -R points share point 0's label, +R and ±2R alternate
    heat = np.full(len(xyz), 0.01, np.float32)
    heat[0] = 0.5
    want = mine_both(check, device, xyz, labels, heat)
    check.that("point 0 is the first candidate", want.points[0] == 0)
    check.equal("same label at R: outside the R ball", want.fg_points[want.fg_owner == 0], [0])
    check.equal("other label at R in, at 2R out", want.bg_points[want.bg_owner == 0], [3, 7, 11])


@CASES("a long chain of overlapping balls, spacing {spacing_m} m", spacing_m=[0.2, 0.29])
def overlapping_chain(check: Check, device: torch.device, spacing_m: float) -> None:
    """600 points on a line (with slight jitter), each ball reaching the next point: whether a point
    is visited depends on every visit before it along the chain (the longest dependency for
    parallel rounds); labels alternate in runs of 3 and the heat is random, so a few visits are
    rejected (2 and 3 of the first ~150 on these seeds)."""
    rng = np.random.default_rng(int(spacing_m * 100))
    num = 600
    xyz = np.stack([np.arange(num) * spacing_m, rng.random(num) * 0.01, np.zeros(num)], axis=1)
    labels = np.arange(num) // 3 % 2
    want = mine_both(check, device, xyz, labels, softmax_heat(rng, num), max_candidates=150)
    check.that("the candidate limit ends the scan", want.points.size == 150, str(want.points.size))


@CASES("a chain visited in its own order: {heat_kind} heat", heat_kind=["falling", "tied"])
def chain_in_order(check: Check, device: torch.device, heat_kind: str) -> None:
    """A far point, then 200 points on a line 0.2 m apart visited from one end (heat falling along
    the line, or equal: the index order): each chain point's only earlier neighbour is the one
    before it, so a tile's rounds decide one or two members each (the longest dependency inside a
    tile), and every other chain point is a candidate. The far point shifts the chain by one
    member, so each tile ends with a joiner whose neighbour opens the next tile. Labels alternate:
    every foreground is the point itself."""
    num = 200
    xyz = np.concatenate([np.stack([np.arange(num) * 0.2, np.zeros(num), np.zeros(num)], axis=1), [[-10.0, 0, 0]]])
    heat = np.append(np.linspace(1.0, 0.5, num) if heat_kind == "falling" else np.ones(num), 2.0)
    want = mine_both(check, device, xyz, np.arange(num + 1) % 2, (heat / heat.sum()).astype(np.float32))
    check.equal("the far point, then every other chain point", want.points, np.append(num, np.arange(0, num, 2)))


@CASES("chunks of {chunk} position(s) give the same result", chunk=[1, 5, 100])
def small_chunks(check: Check, device: torch.device, chunk: int) -> None:
    """A 150-point chain (0.2 m apart, slight jitter) with random heat in two levels, decided a few
    positions at a time: chunk edges cut the chain's dependencies, a chunk of 100 ends mid-tile,
    and one position per chunk runs more steps than the first batch of launches (a second batch)."""
    rng = np.random.default_rng(chunk)
    num = 150
    xyz = np.stack([np.arange(num) * 0.2, rng.random(num) * 0.01, np.zeros(num)], axis=1)
    want = mine_both(check, device, xyz, np.arange(num) // 3 % 2, softmax_heat(rng, num, levels=2), chunk=chunk)
    check.that("more candidates than the first batch has steps", want.points.size > mine.FIRST_BATCH,
               str(want.points.size))


@CASES("exact heat ties: {levels} level(s)", levels=[1, 2])
def heat_ties(check: Check, device: torch.device, levels: int) -> None:
    """2000 points in a 2 x 2 x 1 m box whose heat takes 1 or 2 values: the visit order is the
    index order within a level, and every local-maximum test compares equal heats."""
    rng = np.random.default_rng(levels)
    num = 2000
    heat = (1.0 + rng.integers(0, levels, num)).astype(np.float32)
    heat /= heat.sum()
    want = mine_both(check, device, rng.random((num, 3)) * [2.0, 2.0, 1.0], rng.integers(0, 3, num), heat,
                     max_candidates=60)
    check.that("candidates in index order within the top level",
               levels > 1 or bool(np.all(np.diff(want.points) > 0)), str(want.points[:10]))


@CASES("every point inside one ball")
def one_ball(check: Check, device: torch.device) -> None:
    """800 points in a 0.17 m cube (every distance below R): the first visit marks them all, so
    there is exactly one visit and one candidate, whose foreground is its label's points."""
    rng = np.random.default_rng(12)
    num = 800
    labels = rng.integers(0, 2, num)
    want = mine_both(check, device, rng.random((num, 3)) * 0.17, labels, softmax_heat(rng, num))
    check.equal("one candidate", want.points.size, 1)
    check.equal("its foreground: every point of its label", want.sizes, [(labels == labels[want.points[0]]).sum()])


@CASES("a far outlier coarsens the grid")
def far_outlier(check: Check, device: torch.device) -> None:
    rng = np.random.default_rng(11)
    xyz = rng.random((600, 3)) * 2
    xyz[0] = [1e4, -1e4, 3e3]
    grid = mine.CellGrid(torch.as_tensor(xyz, dtype=torch.float32, device=device), encoding.RADIUS_M)
    cell_m, dims = float(grid.cell_m), grid.dims.tolist()
    check.that("the cells grew", cell_m > 2 * encoding.RADIUS_M + 1e-3, f"{cell_m} m")
    check.that("the box of cells fits the table", math.prod(dims) <= grid.table_cells, f"{dims}")
    check.that("the cell table stays O(No)", grid.cell_starts.numel() <= 8 * 600 + 1, str(grid.cell_starts.numel()))
    mine_both(check, device, xyz, rng.integers(0, 4, 600), softmax_heat(rng, 600), max_candidates=40)


@CASES("tiny heat is rescaled like the official op")
def tiny_heat(check: Check, device: torch.device) -> None:
    rng = np.random.default_rng(5)
    heat = (rng.random(400) * 1e-9).astype(np.float32)
    want = mine_both(check, device, rng.random((400, 3)) * 2, rng.integers(0, 4, 400), heat, max_candidates=30)
    check.that("the candidate limit ends the scan", want.points.size == 30, str(want.points.size))


@CASES("the scan stops below the threshold: heat {heat_kind}", heat_kind=["all zero", "a third zero"])
def scan_stops(check: Check, device: torch.device, heat_kind: str) -> None:
    rng = np.random.default_rng(2)
    heat = np.zeros(200, np.float32)
    if heat_kind == "a third zero":
        heat[:] = 1.0
        heat[::3] = 0.0
    want = mine_both(check, device, rng.random((200, 3)) * 2, rng.integers(0, 4, 200), heat)
    zero = np.flatnonzero(heat == 0)
    check.that("no zero-heat point is a candidate", not np.isin(want.points, zero).any())
    check.that("candidates exist exactly when some heat is not zero",
               (want.points.size == 0) == (heat_kind == "all zero"), str(want.points.size))


@CASES("empty scene has no candidates")
def empty_scene(check: Check, device: torch.device) -> None:
    got = mine.mine_candidates(torch.zeros(0, 3, device=device), torch.zeros(0, dtype=torch.int64, device=device),
                               torch.zeros(0, device=device), torch.full((1,), 1e-6, device=device))
    check.equal("candidates", got.points.numel(), 0)
    check.equal("foreground rows", got.fg_rows.shape[0], 0)


@CASES("synthetic room with a peaked heatmap")
def synthetic_room(check: Check, device: torch.device) -> None:
    """A 60k-point furnished room's object points with a heat peaked at each object's centroid
    (as DKNet's is): realistic neighbourhood sizes, the background cap reached."""
    want = mine_both(check, device, *room_object_points(60_000, seed=3), max_bg=500)
    check.that("more than 20 candidates", want.points.size > 20, str(want.points.size))
    check.that("a background list reaches the cap of 500", list_lengths(want.bg_owner, want.points.size).max() == 500)
