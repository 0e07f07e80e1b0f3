"""Assignment kernels against the torch references, in Triton's interpreter.

``best_instances`` recomputes the masks with the decode kernel's arithmetic (W1·[f, p - c]);
the reference (``engine.decoding.decode_masks``) folds the centre into the bias, so the two mask
values of a pair differ by float32 rounding, at most ~3e-7 (tests/test_decoding.py). Hence best
values are compared within 1e-6, and the chosen instance must be the reference's except at points
where the reference's value for the kernel's choice is within 1e-6 of its maximum (a near tie),
or where the mask lies within 1e-6 of a threshold. Exact ties (duplicate instances) must resolve
to the first instance, as torch.max does.
"""

from __future__ import annotations

import pytest
import torch

from engine import postprocess
from engine.decoding import decode_masks
from engine.postprocess import ZERO_STANDIN
from kernels.assign import best_instances, instance_sums
from tests.kernels.test_decode import random_inputs

TOLERANCE = 1e-6


def random_thresholds(count: int, seed: int) -> torch.Tensor:
    """(I,) float32 Otsu-like thresholds t/100, some exactly 0."""
    g = torch.Generator().manual_seed(seed)
    levels = torch.randint(0, 100, (count,), generator=g)
    return levels.float() / 100


def reference_values(inputs, thresholds, cover=None) -> torch.Tensor:
    """(N, I) M' (cover None) or M'' as the reference post-processing computes them."""
    masks = decode_masks(*inputs)
    values = torch.where(masks >= thresholds, masks, torch.zeros_like(masks))
    if cover is not None:
        values = torch.sqrt((values * cover).clamp(min=ZERO_STANDIN))
    return values


def assert_first_maximum(best, which, values, masks=None, thresholds=None):
    """best/which (n,) from the kernel against reference values (n, k), with the tolerance above."""
    assert best.shape == which.shape == values.shape[:1]
    if values.shape[1] == 0:
        return
    ref_best, ref_which = values.max(dim=1)
    assert torch.allclose(best, ref_best, rtol=0, atol=TOLERANCE), (best - ref_best).abs().max()
    differ = torch.nonzero(which != ref_which).view(-1)
    chosen = values[differ, which[differ]]
    near_tie = chosen >= ref_best[differ] - TOLERANCE
    if masks is not None:  # a mask within the tolerance of its threshold may fall on either side
        near_tie |= ((masks[differ] - thresholds).abs() < TOLERANCE).any(dim=1)
    assert bool(near_tie.all()), f"points {differ[~near_tie][:5].tolist()} chose a clearly smaller value"
    assert differ.numel() <= max(1, values.shape[0] // 1000)


@pytest.mark.parametrize("num_points", [0, 1, 129, 1000])
@pytest.mark.parametrize("count", [0, 1, 3, 17])
def test_threshold_pass_matches_reference(count, num_points):
    inputs = random_inputs(count, num_points, seed=count * 101 + num_points)
    thresholds = random_thresholds(count, seed=num_points)
    best, which, sums = best_instances(*inputs, thresholds, column_sums=True)
    values = reference_values(inputs, thresholds)
    assert_first_maximum(best, which, values, decode_masks(*inputs), thresholds)
    assert sums.shape == (count,) and sums.dtype == torch.float32
    # column sums of up to 1000 values <= 1, each off by <= 3e-7, summed in other orders
    assert torch.allclose(sums, values.sum(dim=0), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("num_points", [1, 300])
@pytest.mark.parametrize("count", [1, 5])
def test_rescale_pass_matches_reference(count, num_points):
    inputs = random_inputs(count, num_points, seed=count + num_points)
    thresholds = random_thresholds(count, seed=count)
    cover = torch.rand(count, generator=torch.Generator().manual_seed(num_points))
    best, which, sums = best_instances(*inputs, thresholds, cover)
    assert sums is None
    assert_first_maximum(best, which, reference_values(inputs, thresholds, cover), decode_masks(*inputs), thresholds)


def test_subsets_of_points_and_instances():
    inputs = random_inputs(9, 500, seed=4)
    thresholds = random_thresholds(9, seed=4)
    cover = torch.rand(9, generator=torch.Generator().manual_seed(1))
    points = torch.tensor([499, 0, 17, 250, 17])  # any order, repeats allowed
    instances = torch.tensor([2, 5, 8])
    best, which, sums = best_instances(*inputs, thresholds, cover, points, instances, column_sums=True)
    values = reference_values(inputs, thresholds, cover)[points][:, instances]
    assert_first_maximum(best, which, values)
    assert torch.allclose(sums, values.sum(dim=0), rtol=1e-5, atol=1e-5)


def test_exact_ties_go_to_the_first_instance():
    theta, features, xyz_m, centres_m = random_inputs(3, 200, seed=8)
    theta[2], centres_m[2] = theta[0], centres_m[0]  # instances 0 and 2 are identical
    theta[1, -1] = -100.0  # instance 1 never wins
    thresholds = torch.zeros(3)
    best, which, _ = best_instances(theta, features, xyz_m, centres_m, thresholds)
    assert set(which.tolist()) == {0}
    reordered = torch.tensor([2, 1, 0])
    _, which, _ = best_instances(theta, features, xyz_m, centres_m, thresholds, instances=reordered)
    assert set(which.tolist()) == {0}, "the first slot of the given order wins, whichever instance it is"


def test_everything_below_threshold_gives_zero_values():
    inputs = random_inputs(4, 50, seed=2)
    best, which, sums = best_instances(*inputs, torch.full((4,), 2.0), column_sums=True)
    assert torch.equal(best, torch.zeros(50)) and torch.equal(which, torch.zeros(50, dtype=torch.int64))
    assert torch.equal(sums, torch.zeros(4))
    best, _, _ = best_instances(*inputs, torch.full((4,), 2.0), torch.ones(4))
    assert torch.allclose(best, torch.full((50,), ZERO_STANDIN**0.5))


def test_no_instances_to_compare():
    inputs = random_inputs(3, 10, seed=0)
    best, which, sums = best_instances(*inputs, torch.zeros(3), instances=torch.zeros(0, dtype=torch.int64),
                                       column_sums=True)
    assert torch.equal(best, torch.full((10,), -1.0)) and sums.shape == (0,)


@pytest.mark.parametrize("num_points", [0, 1, 1000, 5000])
@pytest.mark.parametrize("count", [0, 1, 7, 150])
def test_instance_sums_match_reference(count, num_points):
    g = torch.Generator().manual_seed(count * 13 + num_points)
    assignment = torch.randint(-1, max(count, 1), (num_points,), generator=g) if count else \
        torch.full((num_points,), -1)
    values = torch.rand(num_points, generator=g)
    got = instance_sums(values, assignment, count)
    assert got.shape == (count,) and got.dtype == torch.float32
    # float32 sums of <= 5000 values in [0, 1] in two orders: relative error <= ~N·2^-24
    assert torch.allclose(got, postprocess.instance_sums(values, assignment, count), rtol=1e-4, atol=1e-6)
    ones = torch.ones(num_points, dtype=torch.float64)
    counts = torch.bincount(assignment[assignment >= 0], minlength=count).double()
    assert torch.equal(instance_sums(ones, assignment, count), counts)
    # float64 sums of float32 values >= 2^-7 are exact in any order (engine.postprocess, step 3)
    exact = (values.clamp(min=0.01)).double()
    assert torch.equal(instance_sums(exact, assignment, count), postprocess.instance_sums(exact, assignment, count))


def test_instance_sums_all_unassigned():
    assert torch.equal(instance_sums(torch.rand(100), torch.full((100,), -1), 5), torch.zeros(5))
