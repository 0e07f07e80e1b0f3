"""Post-processing: Otsu against a brute-force search, assignment ties, the cover quirk, superpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from checks.postprocess import postprocess_stored
from checks.tolerances import F32_SUM_ORDER
from engine import postprocess as pp
from engine.classes import INVALID_CLASS
from tests.literal_postprocess import literal_postprocess
from tests.stage_helpers import assign


def brute_force_otsu(hist: np.ndarray) -> float:
    """SPEC §9 as a double loop, float32 level means (the official op's arithmetic)."""
    best, threshold = np.float32(0), 0.0
    levels = len(hist)
    for t in range(levels):
        n_lo, n_hi = int(hist[:t].sum()), int(hist[t:].sum())
        if n_lo == 0 or n_hi == 0:
            continue
        w_lo = int((np.arange(t) * hist[:t]).sum())
        w_hi = int((np.arange(t, levels) * hist[t:]).sum())
        gap = np.float32(np.float32(w_hi) / np.float32(n_hi)) - np.float32(np.float32(w_lo) / np.float32(n_lo))
        sigma = np.float32(n_lo * n_hi) * np.float32(gap * gap)
        if sigma > best:
            best, threshold = sigma, float(np.float32(t) / np.float32(levels))
    return threshold


@pytest.mark.parametrize("count,points", [(0, 10), (1, 1), (1, 500), (7, 3000), (20, 20000)])
def test_otsu_matches_brute_force(count, points):
    g = torch.Generator().manual_seed(count * 1000 + points)
    masks = torch.rand(count, points, generator=g) ** 3
    if count > 1:
        masks[1] = 1.0  # m == 1 lands in level 99 [fix]
        masks[0, : points // 2] = 0.42  # a two-spike histogram
    hist = pp.otsu_histograms(masks.t().contiguous())
    levels = (masks.numpy() * 100).astype(np.int64).clip(max=99)
    for i in range(count):
        assert hist[i].tolist() == np.bincount(levels[i], minlength=100).tolist()
    got = pp.otsu_thresholds(hist)
    want = [brute_force_otsu(h) for h in hist.numpy()]
    assert got.tolist() == pytest.approx(want, abs=0)


def test_otsu_single_level_gives_zero_and_first_strict_maximum_wins():
    hist = torch.zeros(2, 100, dtype=torch.int64)
    hist[0, 37] = 50  # one level: no split has both sides
    hist[1, 10] = hist[1, 30] = 5  # every t in 11..30 gives the same sigma: first (t=11) wins
    assert pp.otsu_thresholds(hist).tolist() == pytest.approx([0.0, 0.11])


def test_assign_ties_take_first_instance_and_threshold_uses_min_nonzero():
    scores = torch.tensor([[0.5, 0.2, 0.0, 0.3],
                           [0.5, 0.6, 0.0, 0.1]]).t()
    thresholds = torch.tensor([0.0, 0.25])
    # point 0: tie 0.5/0.5 -> instance 0; point 2: best 0.0 < 0.25 -> none; point 3: 0.3 >= 0.25
    assignment, best = assign(scores, thresholds)
    assert assignment.tolist() == [0, 1, -1, 0]
    assert best.tolist() == pytest.approx([0.5, 0.6, 0.0, 0.3])
    assert assign(scores, torch.zeros(2))[0].tolist() == [-1] * 4
    assert assign(torch.zeros(3, 0), torch.zeros(0))[0].tolist() == [-1] * 3


def test_restrict_equals_assigning_over_the_kept_instances():
    g = torch.Generator().manual_seed(5)
    scores = (torch.rand(2000, 9, generator=g) * 4).floor() / 4  # many exact ties
    thresholds = torch.tensor([0.0, 0.25, 0.5, 0.25, 0.0, 0.75, 0.5, 0.25, 0.5])
    assignment, best = assign(scores, thresholds)
    for keep in ([0, 2, 5], [1, 3, 4, 8], [4], [0, 4], list(range(9))):
        keep = torch.tensor(keep)
        got, _ = pp.restrict(assignment, best, pp.StoredMasks(scores), keep, thresholds[keep])
        want, _ = assign(scores[:, keep], thresholds[keep])
        assert got.tolist() == want.tolist(), keep.tolist()


def test_instance_classes_mode_with_smallest_label_on_ties():
    assignment = torch.tensor([0, 0, 0, 0, 1, -1, 2])
    labels = torch.tensor([5, 3, 3, 5, 1, 4, 7])
    object_idx = torch.tensor([0, 1, 2, 3, 5, 6])  # point 4 (label 1) is not an object point
    classes = pp.instance_classes(assignment, labels, object_idx, 4)
    assert classes.tolist() == [3, INVALID_CLASS, 7, INVALID_CLASS]


def test_cover_quirk_truncates_the_numerator():
    # One instance: assigned mask values sum to 2.7 -> floor 2; thresholded sum 3.0 -> cover 2/3.
    # The second instance takes no point but its M' row sum is 1.2: cover 0.
    masks = torch.tensor([[0.9, 0.9, 0.9, 0.3, 0.0],
                          [0.6, 0.6, 0.0, 0.0, 0.0]]).t()
    logits = torch.zeros(5, 20)
    logits[:, 3] = 1.0
    result = literal_postprocess(masks.t().clone(), logits, torch.arange(5), None, torch.tensor([0.5, 0.5]))
    assert result[0].shape[0] == 0  # 3 points only: dropped by the size filter, as it should
    kept = masks * (masks >= 0.5)
    assignment, best = assign(kept, torch.tensor([0.5, 0.5]))
    covered = pp.instance_sums(best, assignment, 2).floor()
    assert covered.tolist() == [2.0, 0.0]  # 2.7 truncated to 2


def test_refine_with_superpoints_majority_and_none_last():
    assignment = torch.tensor([0, 0, 1, -1, -1, 1, 1, -1])
    superpoints = torch.tensor([10, 10, 10, 20, 20, 20, 30, 30])
    # sp 10: {0: 2, 1: 1} -> 0; sp 20: {1: 1, none: 2} -> none; sp 30: tie 1 vs none -> 1 (none last)
    assert pp.refine_with_superpoints(assignment, superpoints, 2).tolist() == [0, 0, 0, -1, -1, -1, 1, 1]


def _two_blob_scene(num_points=1000):
    """masks (I, N) instance-major, as the literal oracle takes them."""
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(3, num_points, generator=g) * 0.05
    masks[0, :400] = 0.9
    masks[1, 500:800] = 0.8
    masks[2, 900:950] = 0.95  # too small (50 points): dropped in step 5
    logits = torch.zeros(num_points, 20)
    logits[:400, 5] = 4.0
    logits[500:800, 7] = 4.0
    logits[400:500, 0] = 4.0  # wall
    object_idx = torch.nonzero(logits.argmax(1) >= 2).view(-1)
    return masks, logits, object_idx


def test_postprocess_end_to_end_small_scene():
    masks, logits, object_idx = _two_blob_scene()
    result = postprocess_stored(masks.t().contiguous(), logits, object_idx, None)
    assert result.thresholds.shape == (3,)
    assert result.instance_ids.tolist() == [0, 1]
    assert result.classes.tolist() == [5, 7]
    assert result.masks.shape == (2, 1000)
    assert result.masks[0, :400].all() and not result.masks[0, 400:].any()
    assert result.masks[1, 500:800].all() and result.masks[1].sum() == 300
    assert (result.scores > 0.1).all() and (result.scores <= 1).all()


def test_postprocess_with_no_instances():
    logits = torch.zeros(10, 20)
    result = postprocess_stored(torch.zeros(10, 0), logits, torch.arange(10), torch.arange(10))
    assert result.masks.shape == (0, 10) and result.scores.numel() == 0 and result.thresholds.numel() == 0


def test_postprocess_when_every_instance_is_filtered_out():
    masks, logits, object_idx = _two_blob_scene()
    result = postprocess_stored(masks[2:].t().contiguous(), logits, object_idx, torch.arange(1000) // 10)
    assert result.masks.shape == (0, 1000) and result.classes.numel() == 0
    assert result.thresholds.shape == (1,)


def _random_scene(count, points, seed):
    """Blobs of high mask values on random point sets, random logits, sometimes quantized."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.rand(count, points, generator=g) * 0.3
    for i in range(count):
        start = int(torch.randint(0, points, (1,), generator=g))
        size = int(torch.randint(1, max(2, points // 3), (1,), generator=g))
        masks[i, start:start + size] += torch.rand(min(size, points - start), generator=g) * 0.7
    if seed % 2:
        masks = (masks * 20).floor() / 20  # exact ties between instances
    logits = torch.randn(points, 20, generator=g) * 2
    object_idx = torch.nonzero(logits.argmax(1) >= 2).view(-1)
    superpoints = torch.randint(0, max(1, points // 7), (points,), generator=g) if seed % 3 else None
    return masks, logits, object_idx, superpoints


@pytest.mark.parametrize("count,points,seed", [(1, 1, 0), (1, 300, 1), (4, 1000, 2), (12, 3000, 3),
                                               (30, 5000, 4), (30, 5000, 5), (60, 8000, 6)])
def test_postprocess_matches_literal_oracle(count, points, seed):
    masks, logits, object_idx, superpoints = _random_scene(count, points, seed)
    thresholds = pp.otsu_thresholds(pp.otsu_histograms(masks.t().contiguous()))
    want = literal_postprocess(masks.clone(), logits, object_idx, superpoints, thresholds)
    got = postprocess_stored(masks.t().contiguous(), logits, object_idx, superpoints)
    assert got.thresholds.tolist() == thresholds.tolist()
    assert got.instance_ids.tolist() == want[3].tolist()
    assert got.classes.tolist() == want[1].tolist()
    assert torch.equal(got.masks, want[0])
    # Scores: same formula, sums in a different order: float32 rounding only.
    torch.testing.assert_close(got.scores, want[2], **F32_SUM_ORDER)
