"""Encoding kernels against ``engine.encoding``, in Triton's interpreter.

Tolerances. Description: pooled means of up to 2000 float32 rows summed in another order
(kernel: blocks of 64 entries; reference: index_add in entry order): relative 1e-5. Merge scores:
the kernel folds BatchNorm into the convs (float64 fold, then float32), the reference applies conv
then BN; each of the four layers rounds differently by a few ulps of activations of order 1-10, and
the sigmoid's slope is at most 1/4: 1e-5 absolute. The greedy merge and the instance centres are
exact (integer decisions on the same scores); instance kernels are size-weighted means taken as a
matrix product instead of index_add: relative 1e-5.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine import encoding
from kernels import encode
from tests.stage_helpers import padded_from_host
from tests.tolerances import F32_SUM_ORDER


def random_candidates(count: int, num_points: int, seed: int, empty_every: int = 4) -> encoding.Candidates:
    """Candidates with fg/bg lists of 0..300 random object points (every ``empty_every``-th empty)."""
    rng = np.random.default_rng(seed)
    fg, bg = [], []
    for c in range(count):
        fg.append(np.sort(rng.choice(num_points, rng.integers(1, min(300, num_points) + 1), replace=False)))
        empty = c % empty_every == empty_every - 1
        bg.append(np.array([], np.int64) if empty else rng.integers(0, num_points, rng.integers(0, 300)))
    if count and empty_every == 1:
        fg[0] = np.array([], np.int64)

    def owners(lists):
        owner = np.repeat(np.arange(count), [a.size for a in lists]).astype(np.int64)
        return owner, (np.concatenate(lists) if lists else np.zeros(0)).astype(np.int64)

    points = rng.choice(num_points, count, replace=False).astype(np.int64)
    return encoding.Candidates(points, np.array([a.size for a in fg], np.int64), *owners(fg), *owners(bg))


def object_point_arrays(num_points: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(num_points, 16, generator=g), torch.rand(num_points, 3, generator=g) * 5,
            torch.randn(num_points, 3, generator=g) * 0.1)


@pytest.mark.parametrize("count", [0, 1, 2, 37])
def test_describe_matches_reference(count):
    cands = random_candidates(count, 2500, seed=count, empty_every=1 if count == 1 else 4)
    arrays = object_point_arrays(2500, seed=count)
    got = encode.describe_candidates(padded_from_host(cands, "cpu"), *arrays)
    want = encoding.describe_candidates(cands, *arrays)
    assert got.shape == (count, 35)
    torch.testing.assert_close(got, want, **F32_SUM_ORDER)


def test_describe_empty_lists_take_the_mean_of_all_object_points():
    cands = random_candidates(3, 100, seed=1, empty_every=1)
    features, xyz, offsets = object_point_arrays(100, seed=1)
    got = encode.describe_candidates(padded_from_host(cands, "cpu"), features, xyz, offsets)
    torch.testing.assert_close(got[0, :16], features.mean(dim=0))
    torch.testing.assert_close(got[1, 16:32], features.mean(dim=0))


@pytest.mark.parametrize("count", [0, 1, 2, 33, 150])
def test_merge_probabilities_match_reference(random_model, count):
    g = torch.Generator().manual_seed(count)
    descriptors = torch.randn(count, 35, generator=g)
    descriptors[count // 2:] = descriptors[: count - count // 2].clone()  # duplicates: pairs at the 1e-6 clamp
    got = encode.merge_probabilities(random_model, descriptors)
    want = encoding.merge_probabilities(random_model, descriptors)
    assert got.shape == (count, count)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert torch.equal(got, got.t()), "|d_i - d_j| is symmetric, so must the scores be"


def random_scores(count: int, seed: int, symmetric: bool) -> np.ndarray:
    """(P, P) float32 merge scores quantized to 1/8 (many exact ties), with about 1.2 pairs per
    candidate above 0.5: many groups of several candidates, not one giant component."""
    rng = np.random.default_rng(seed)
    scores = (np.floor(rng.random((count, count)) * 4) / 8).astype(np.float32)  # 0 .. 0.375
    high = rng.random((count, count)) < 1.2 / max(count, 1)
    scores[high] = np.float32(0.5) + np.floor(rng.random(int(high.sum())) * 4).astype(np.float32) / 8  # 0.5 .. 0.875
    if symmetric:
        scores = np.triu(scores) + np.triu(scores, 1).T
    return scores


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("count", [0, 1, 2, 5, 40, 150])
def test_greedy_merge_equals_reference(count, symmetric):
    sizes = []
    for seed in range(3):
        scores = random_scores(count, seed * 1000 + count, symmetric)
        got = encode.greedy_merge(torch.from_numpy(scores))
        want = encoding.greedy_merge(scores)
        assert got.dtype == torch.int64 and got.tolist() == want.tolist(), (count, seed)
        sizes.extend(np.bincount(want).tolist())
    if count >= 40:
        assert max(sizes) > 2 and len(set(sizes)) > 2, "the cases must have groups of several sizes"


def test_greedy_merge_thresholds_strictly():
    scores = np.full((3, 3), 0.5, np.float32)
    assert encode.greedy_merge(torch.from_numpy(scores)).tolist() == [0, 1, 2]
    scores[2, 1] = np.nextafter(np.float32(0.5), np.float32(1))
    assert encode.greedy_merge(torch.from_numpy(scores)).tolist() == [0, 1, 1]


def test_greedy_merge_rejects_too_many_candidates():
    with pytest.raises(ValueError, match="at most"):
        encode.greedy_merge(torch.zeros(257, 257))


@pytest.mark.parametrize("count", [1, 6, 60])
def test_merge_instances_matches_reference(count):
    rng = np.random.default_rng(count)
    cands = random_candidates(count, 500, seed=count)
    heat = torch.from_numpy((rng.integers(0, 4, 500) / 4).astype(np.float32))  # ties between members
    fg_features = torch.randn(count, 16, generator=torch.Generator().manual_seed(count))
    groups = encoding.greedy_merge(random_scores(count, count, symmetric=True))
    got = encode.merge_instances(torch.from_numpy(groups), padded_from_host(cands, "cpu"), heat, fg_features)
    want = encoding.merge_instances(groups, cands, heat, fg_features)
    assert got.group.tolist() == want.group.tolist()
    assert torch.equal(got.centre_points, want.centre_points)
    torch.testing.assert_close(got.kernels, want.kernels, **F32_SUM_ORDER)
