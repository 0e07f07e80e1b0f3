"""Device candidate mining (``kernels.mine``) against ``engine.encoding.mine_candidates``, in Triton's
interpreter. Mining makes only integer and comparison decisions on the reference's own float32
values (d² in the same order without contraction, the local test with an IEEE division), so
everything must be equal: candidates in acceptance order, sizes, and every fg/bg list."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine import encoding
from kernels import mine
from tests.mining_scenes import room_object_points
from tests.stage_helpers import padded_from_host, padded_to_host

FIELDS = ("points", "sizes", "fg_owner", "fg_points", "bg_owner", "bg_points")


def mine_both(xyz: np.ndarray, labels: np.ndarray, heat: np.ndarray, **limits) -> encoding.Candidates:
    """Mine with both; assert equal; return the reference's candidates."""
    xyz_t = torch.as_tensor(xyz, dtype=torch.float32)
    labels_t = torch.as_tensor(labels, dtype=torch.int64)
    heat_t = torch.as_tensor(heat, dtype=torch.float32)
    scan, thres = encoding.heat_and_threshold(heat_t)
    want = encoding.mine_candidates(xyz_t.numpy(), labels_t.numpy(), scan, thres, **limits)
    device_scan, device_thres = encoding.scan_heat(heat_t)
    got = padded_to_host(mine.mine_candidates(xyz_t, labels_t, device_scan, device_thres, **limits))
    for field in FIELDS:
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field), err_msg=field)
    return want


def list_lengths(owner: np.ndarray, count: int) -> np.ndarray:
    return np.bincount(owner, minlength=count)


def softmax_heat(rng: np.random.Generator, num: int, levels: int | None = None) -> np.ndarray:
    logits = rng.normal(size=num) * 3
    if levels:  # few distinct values: ties in the visit order and in the local-maximum test
        logits = np.round(logits * levels / 6) * 6 / levels
    return torch.softmax(torch.from_numpy(logits).float(), dim=0).numpy()


@pytest.mark.parametrize("num, levels, max_candidates", [(1, None, 150), (2, None, 150), (300, None, 150),
                                                          (1500, None, 40), (1500, 4, 40), (1200, None, 7)])
def test_uniform_scenes_match_reference(num, levels, max_candidates):
    rng = np.random.default_rng(num + (levels or 0))
    xyz = rng.random((num, 3)) * [4.0, 3.0, 2.0]
    want = mine_both(xyz, rng.integers(0, 3, num), softmax_heat(rng, num, levels), max_candidates=max_candidates)
    assert want.points.size == min(num, max_candidates) or num > 1
    if num >= 1200:
        assert want.points.size == max_candidates  # the candidate limit ends the scan


@pytest.fixture(params=[2, 3], ids=["2 digits", "3 digits"])
def radix_digits(request, monkeypatch):
    """The cap selection with two radix digits (scenes under 2^22 object points) and with three
    (larger ones; the same indices, a leading zero digit)."""
    monkeypatch.setattr(mine, "radix_digits", lambda num_points: request.param)


@pytest.mark.usefixtures("radix_digits")
def test_dense_cluster_hits_both_caps_of_2000():
    """~7000 points in a 0.4 m cube: lists over 2000 keep their 2000 smallest indices [fix]."""
    rng = np.random.default_rng(7)
    num = 7000
    want = mine_both(rng.random((num, 3)) * 0.4, rng.choice(2, num, p=[0.7, 0.3]), softmax_heat(rng, num))
    count = want.points.size
    assert list_lengths(want.fg_owner, count).max() == encoding.MAX_FOREGROUND
    assert list_lengths(want.bg_owner, count).max() == encoding.MAX_BACKGROUND


def test_small_caps_can_drop_the_candidate_from_its_own_foreground():
    """One label, caps of 50/10: the heat maximum is taken over the capped foreground, which need
    not contain q (its index is not among the 50 smallest)."""
    rng = np.random.default_rng(3)
    num = 3000
    xyz = rng.random((num, 3)) * [1.5, 1.5, 0.5]
    labels = np.where(np.arange(num) % 9 == 0, 1, 0)
    want = mine_both(xyz, labels, softmax_heat(rng, num, levels=3), max_fg=50, max_bg=10)
    owners = [want.fg_points[want.fg_owner == c] for c in range(want.points.size)]
    assert any(q not in fg for q, fg in zip(want.points, owners, strict=True))
    assert list_lengths(want.fg_owner, want.points.size).max() == 50


@pytest.mark.usefixtures("radix_digits")
def test_cap_boundary_at_the_end_of_a_radix_bin():
    """The 10th smallest foreground index is 9, the last of the first high-digit bin (indices
    < 2^11): exactly the 10 points 0..9 are kept, not the first entry of the next bin."""
    blob_low, spread, blob_high = 10, 2038, 50  # indices 0..9 | 10..2047 | 2048..2097
    rng = np.random.default_rng(4)
    grid = np.stack(np.meshgrid(np.arange(46), np.arange(46), [0], indexing="ij"), -1).reshape(-1, 3)
    xyz = np.concatenate([rng.random((blob_low, 3)) * 0.1, 5.0 + grid[:spread] * 1.0,
                          rng.random((blob_high, 3)) * 0.1])
    heat = np.full(len(xyz), 0.001, np.float32)
    heat[-1] = 0.9  # the blob's last point is visited first
    want = mine_both(xyz, np.zeros(len(xyz), np.int64), heat, max_candidates=1, max_fg=blob_low)
    assert want.points.tolist() == [len(xyz) - 1]
    assert want.fg_points.tolist() == list(range(blob_low))


def test_a_rejected_visit_leaves_nothing_in_the_next_candidates_lists():
    """q (x = 0.5) is rejected: p (x = 0.25, twice its heat) is in its ball, marked by the first
    candidate at x = 0, which q is too far from. q's 22-point foreground must not leak into the
    row of the next candidate, r, whose foreground is r alone."""
    extras = np.stack([np.linspace(0.36, 0.64, 20), np.zeros(20), np.zeros(20)], axis=1)
    xyz = np.concatenate([extras, [[0.0, 0, 0], [0.25, 0, 0], [0.5, 0, 0], [5.0, 0, 0]]])
    heat = np.concatenate([np.full(20, 0.01), [1.0, 0.9, 0.3, 0.2]]).astype(np.float32)
    want = mine_both(xyz, np.zeros(len(xyz), np.int64), heat)
    first, _, q, r = 20, 21, 22, 23
    assert want.points.tolist() == [first, r] and q not in want.points
    assert want.fg_points[want.fg_owner == 1].tolist() == [r]


def test_points_exactly_at_r_and_2r_are_outside():
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
    want = mine_both(xyz, labels, heat)
    assert want.points[0] == 0
    assert want.fg_points[want.fg_owner == 0].tolist() == [0]  # same label at R: outside the R ball
    assert want.bg_points[want.bg_owner == 0].tolist() == [3, 7, 11]  # other label at R in, at 2R out


def test_far_outlier_coarsens_the_grid_and_still_matches():
    rng = np.random.default_rng(11)
    xyz = rng.random((600, 3)) * 2
    xyz[0] = [1e4, -1e4, 3e3]
    grid = mine.CellGrid(torch.as_tensor(xyz, dtype=torch.float32), encoding.RADIUS_M)
    assert grid.cell_m > 2 * encoding.RADIUS_M + 1e-3 and grid.cell_starts.numel() <= 8 * 600 + 1
    mine_both(xyz, rng.integers(0, 4, 600), softmax_heat(rng, 600), max_candidates=40)


def test_tiny_heat_is_rescaled_like_the_official_op():
    rng = np.random.default_rng(5)
    heat = (rng.random(400) * 1e-9).astype(np.float32)
    want = mine_both(rng.random((400, 3)) * 2, rng.integers(0, 4, 400), heat, max_candidates=30)
    assert want.points.size == 30


@pytest.mark.parametrize("heat_kind", ["all zero", "a third zero"])
def test_scan_stops_below_the_threshold(heat_kind):
    rng = np.random.default_rng(2)
    heat = np.zeros(200, np.float32)
    if heat_kind == "a third zero":
        heat[:] = 1.0
        heat[::3] = 0.0
    want = mine_both(rng.random((200, 3)) * 2, rng.integers(0, 4, 200), heat)
    zero = np.flatnonzero(heat == 0)
    assert not np.isin(want.points, zero).any()
    assert (want.points.size == 0) == (heat_kind == "all zero")


def test_empty_scene_has_no_candidates():
    got = mine.mine_candidates(torch.zeros(0, 3), torch.zeros(0, dtype=torch.int64), torch.zeros(0),
                               torch.full((1,), 1e-6))
    assert got.points.numel() == 0 and got.fg_rows.shape[0] == 0


def test_padded_candidates_round_trip():
    cands = encoding.Candidates(np.array([4, 1, 7]), np.array([2, 0, 3]), np.array([0, 0, 2, 2, 2]),
                                np.array([1, 4, 0, 5, 7]), np.array([1]), np.array([9]))
    rows = padded_from_host(cands, "cpu")
    assert rows.fg_counts.tolist() == [2, 0, 3] and rows.bg_counts.tolist() == [0, 1, 0]
    back = padded_to_host(rows)
    for field in FIELDS:
        np.testing.assert_array_equal(getattr(back, field), getattr(cands, field), err_msg=field)


def test_synthetic_room_with_a_peaked_heatmap():
    """A 60k-point furnished room's object points with a heat peaked at each object's centroid
    (as DKNet's is): realistic neighbourhood sizes, the background cap reached."""
    want = mine_both(*room_object_points(60_000, seed=3), max_bg=500)
    assert want.points.size > 20
    assert list_lengths(want.bg_owner, want.points.size).max() == 500
