"""Encoding stages on hand-checkable cases and against a brute-force transcription of SPEC §4."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine import encoding


def brute_force_mining(xyz, labels, heat, thres, radius=0.3, local=0.5, k=150, max_fg=2000, max_bg=2000):
    """SPEC §4 literally: full scans over all points per visit, no grid."""
    xyz = xyz.astype(np.float32)
    r2 = np.float32(radius) * np.float32(radius)
    visited = np.zeros(len(heat), bool)
    accepted, sizes, fgs, bgs = [], [], [], []
    for q in sorted(range(len(heat)), key=lambda i: (-heat[i], i)):
        if visited[q]:
            continue
        if heat[q] < thres:
            break
        d = xyz - xyz[q]
        d2 = d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1] + d[:, 2] * d[:, 2]
        visited |= d2 < r2
        fg = np.flatnonzero((d2 < r2) & (labels == labels[q]))[:max_fg]
        bg = np.flatnonzero((d2 < np.float32(4) * r2) & (labels != labels[q]))[:max_bg]
        if heat[q] / max(heat[q], heat[fg].max()) < np.float32(local):
            continue
        accepted.append(q)
        sizes.append(len(fg))
        fgs.append(fg)
        bgs.append(bg)
        if len(accepted) == k:
            break
    return accepted, sizes, fgs, bgs


def _split(owner, points, count):
    return [points[owner == i] for i in range(count)]


@pytest.mark.parametrize("num,k,max_fg", [(0, 150, 2000), (1, 150, 2000), (40, 150, 2000),
                                          (3000, 150, 2000), (3000, 5, 2000), (3000, 150, 7)])
def test_mining_matches_brute_force(num, k, max_fg):
    rng = np.random.default_rng(num + k)
    xyz = rng.uniform(0, 3, (num, 3)).astype(np.float32)
    labels = rng.integers(2, 5, num)
    heat = rng.random(num).astype(np.float32)
    heat[rng.integers(0, max(num, 1), num // 3)] = 0.5  # many exact ties
    thres = np.float32(1e-6)
    got = encoding.mine_candidates(xyz, labels, heat, thres, max_candidates=k, max_fg=max_fg, max_bg=max_fg)
    want, sizes, fgs, bgs = brute_force_mining(xyz, labels, heat, thres, k=k, max_fg=max_fg, max_bg=max_fg)
    assert got.points.tolist() == want
    assert got.sizes.tolist() == sizes
    for a, b in zip(_split(got.fg_owner, got.fg_points, len(want)), fgs, strict=True):
        assert a.tolist() == b.tolist()
    for a, b in zip(_split(got.bg_owner, got.bg_points, len(want)), bgs, strict=True):
        assert a.tolist() == b.tolist()


def test_mining_visits_by_heat_then_index():
    # Two far-apart points with equal heat: the lower index is accepted first.
    xyz = np.array([[0, 0, 0], [5, 0, 0], [10, 0, 0]], np.float32)
    heat = np.array([0.2, 0.4, 0.4], np.float32)
    got = encoding.mine_candidates(xyz, np.array([2, 2, 2]), heat, np.float32(1e-6))
    assert got.points.tolist() == [1, 2, 0]


def test_mining_local_threshold_uses_visited_neighbours():
    # Visit 0 (heat 0.9): accepted, marks 0 and 1 visited. Visit 2 (0.3): its foreground is {1, 2}
    # (1 is visited but still counts), max heat 0.8, and 0.3 / 0.8 < 0.5: rejected.
    xyz = np.array([[0, 0, 0], [0.1, 0, 0], [0.35, 0, 0]], np.float32)
    heat = np.array([0.9, 0.8, 0.3], np.float32)
    got = encoding.mine_candidates(xyz, np.array([3, 3, 3]), heat, np.float32(1e-6))
    assert got.points.tolist() == [0]
    heat[1] = 0.5  # 0.3 / 0.5 >= 0.5: now accepted
    got = encoding.mine_candidates(xyz, np.array([3, 3, 3]), heat, np.float32(1e-6))
    assert got.points.tolist() == [0, 2]


def test_mining_stops_below_threshold():
    xyz = np.array([[0, 0, 0], [5, 0, 0]], np.float32)
    got = encoding.mine_candidates(xyz, np.array([2, 2]), np.array([0.5, 1e-7], np.float32), np.float32(1e-6))
    assert got.points.tolist() == [0]


def test_heat_rescaling_quirk():
    heat = torch.tensor([1e-8, 0.5, 0.49999], dtype=torch.float32)
    scaled, thres = encoding.heat_and_threshold(heat)
    assert thres == np.float32(1e-6)
    assert scaled[0] == pytest.approx(1e-6, rel=1e-6)
    assert scaled[1] == pytest.approx(0.5 * 1e-6 / 1e-8, rel=1e-6)
    unscaled, _ = encoding.heat_and_threshold(torch.tensor([0.0, 1.0]))
    assert unscaled.tolist() == [0.0, 1.0]  # a zero minimum is left alone
    _, scaled_thres = encoding.heat_and_threshold(heat, thres=1e-7)
    assert scaled_thres == np.float32(np.float32(1e-7) * (np.float32(1e-6) / np.float32(1e-8)))
    assert encoding.heat_and_threshold(torch.zeros(0))[1] == np.float32(1e-6)


def test_greedy_merge_chains_pairs():
    a = np.zeros((6, 6), np.float32)
    a[0, 1] = a[1, 0] = 0.9
    a[1, 2] = a[2, 1] = 0.8
    a[4, 5] = a[5, 4] = 0.7
    a[3, 4] = 0.6
    a[2, 5] = 0.4  # below threshold: never joins
    assert encoding.greedy_merge(a).tolist() == [0, 0, 0, 3, 3, 3]


def test_greedy_merge_zeroes_scores_inside_the_new_group():
    # After {0,1} merge, (1,0) must not count again; (2,3) then merges; the diagonal never counts.
    a = np.full((4, 4), 0.0, np.float32)
    np.fill_diagonal(a, 0.99)
    a[0, 1], a[1, 0], a[3, 2] = 0.95, 0.97, 0.6
    assert encoding.greedy_merge(a).tolist() == [0, 0, 2, 2]


def test_greedy_merge_takes_first_maximum_row_major():
    a = np.zeros((3, 3), np.float32)
    a[0, 2] = a[1, 2] = 0.8  # tie: (0, 2) first; then (1, 2) joins group 0
    assert encoding.greedy_merge(a).tolist() == [0, 0, 0]
    assert encoding.greedy_merge(np.zeros((0, 0), np.float32)).tolist() == []


def test_pooled_mean_falls_back_to_mean_of_all():
    feats = torch.arange(12, dtype=torch.float32).view(4, 3)
    owner = torch.tensor([0, 0, 2])
    rows = torch.tensor([1, 3, 0])
    out = encoding.pooled_mean(feats, owner, rows, 3)
    torch.testing.assert_close(out[0], feats[[1, 3]].mean(0))
    torch.testing.assert_close(out[1], feats.mean(0))
    torch.testing.assert_close(out[2], feats[0])


def test_merge_instances_centre_and_weighted_kernel():
    cands = encoding.Candidates(points=np.array([7, 3, 9]), sizes=np.array([1, 3, 2]),
                                fg_owner=np.zeros(0, np.int64), fg_points=np.zeros(0, np.int64),
                                bg_owner=np.zeros(0, np.int64), bg_points=np.zeros(0, np.int64))
    heat = torch.zeros(10)
    heat[7], heat[3], heat[9] = 0.5, 0.5, 0.9
    fg = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    inst = encoding.merge_instances(np.array([0, 0, 2]), cands, heat, fg)
    assert inst.centre_points.tolist() == [7, 9]  # tie 0.5/0.5 -> first member (candidate 0)
    torch.testing.assert_close(inst.kernels[0], torch.tensor([0.25, 0.75]))
    torch.testing.assert_close(inst.kernels[1], torch.tensor([2.0, 2.0]))


@pytest.mark.parametrize("count", [0, 1, 5, 150])
def test_merge_probabilities_are_symmetric_bit_for_bit(random_model, count):
    desc = torch.randn(count, 35, generator=torch.Generator().manual_seed(count))
    probs = encoding.merge_probabilities(random_model, desc)
    assert probs.shape == (count, count)
    assert torch.equal(probs, probs.t())
    if count:  # every entry is the MLP of its own pair (the full (P², 35) product, up to GEMM rounding)
        diff = (desc.unsqueeze(1) - desc.unsqueeze(0)).abs().clamp(min=1e-6).view(count * count, 35)
        torch.testing.assert_close(probs, random_model.merge_scores(diff).view(count, count), rtol=0, atol=1e-6)


def test_merge_probabilities_use_clamped_differences(random_model):
    desc = torch.randn(5, 35)
    desc[3] = desc[1]
    probs = encoding.merge_probabilities(random_model, desc)
    same = random_model.merge_scores(torch.full((1, 35), 1e-6))
    torch.testing.assert_close(probs[1, 3], same[0])
