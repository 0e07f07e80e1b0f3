"""Fused decode + histogram kernel against the engine's two steps (``decode_masks`` then
``otsu_histograms``), in Triton's interpreter.

Tolerance. Both sides compute the masks in float32 but group the first layer differently (the
kernel subtracts the centre first, W1·[f, p - c]; the reference folds W1p·c into the bias) and sum
in other orders, so a mask differs by a few ulps (<= 3e-7 measured in tests/test_decoding.py).
A point changes level only when 100·m lies within a few ulps of an integer; measured on these
inputs: 13 moved points in 4.8M (instance, point) pairs (240 instances x 20,000 points), about
3e-6, and 12 of the 240 instances differed at all. A moved point adds 2 to the L1 distance
between histograms. Hence: counts per instance must total N exactly; the L1 distance per instance
may be at most 2 per 1000 points started (one moved point, ~300x the measured rate); and at most a
tenth of the instances of a case may differ (most cases match exactly).
"""

from __future__ import annotations

import math

import pytest
import torch

from engine.model import DYNAMIC_PARAMS
from kernels.decode import block_points_for, decode_histograms
from tests.stage_helpers import decode_histograms_reference

LEVELS = 100


def random_inputs(count: int, num_points: int, seed: int) -> tuple[torch.Tensor, ...]:
    """theta (I, 337), mask_features (N, 16), xyz_m (N, 3), centres_m (I, 3) float32, as in test_decoding."""
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(count, DYNAMIC_PARAMS, generator=g) * 0.5
    features = torch.randn(num_points, 16, generator=g)
    xyz_m = torch.randn(num_points, 3, generator=g) * 3
    centres_m = torch.randn(count, 3, generator=g) * 3
    return theta, features, xyz_m, centres_m


def first_mismatch(got: torch.Tensor, expected: torch.Tensor) -> str:
    index = tuple(torch.nonzero(got != expected)[0].tolist())
    return (f"first mismatch at (instance, level) {index}: kernel {got[index].item()}, "
            f"reference {expected[index].item()}")


@pytest.mark.parametrize("num_points", [0, 1, 129, 1000, 4099])
@pytest.mark.parametrize("count", [0, 1, 3, 17])
def test_histograms_match_reference(count, num_points):
    inputs = random_inputs(count, num_points, seed=count * 7919 + num_points)
    got = decode_histograms(*inputs)
    expected = decode_histograms_reference(*inputs)
    assert got.shape == (count, LEVELS) and got.dtype == torch.int64
    assert torch.equal(got.sum(1), torch.full((count,), num_points)), "every point counted exactly once"
    distance = (got - expected).abs().sum(1)  # (I,) L1 per instance; 2 per moved point
    allowed = 2 * math.ceil(num_points / 1000)
    if count == 0:
        return
    assert int(distance.max()) <= allowed, first_mismatch(got, expected)
    differing = int((distance > 0).sum())
    assert differing <= math.ceil(count / 10), (f"{differing} of {count} instances differ; "
                                                f"{first_mismatch(got, expected)}")


# The interpreter evaluates sigmoid(-100) as 1 / (1 + exp(100)) in numpy: exp overflows to inf
# (a RuntimeWarning) and the mask is 0, level 0, as intended.
@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")
@pytest.mark.parametrize("bias_out,level", [(0.0, 50), (100.0, LEVELS - 1), (-100.0, 0)])
def test_constant_masks_land_in_one_level(bias_out, level):
    """θ = 0 except b2: m = sigmoid(b2) for every point; sigmoid(100) = 1.0 exactly, whose
    trunc(100·m) = 100 must be clamped to level 99."""
    theta, features, xyz_m, centres_m = random_inputs(2, 77, seed=3)
    theta.zero_()
    theta[:, -1] = bias_out
    expected = torch.zeros(2, LEVELS, dtype=torch.int64)
    expected[:, level] = 77
    got = decode_histograms(theta, features, xyz_m, centres_m)
    assert torch.equal(got, expected), first_mismatch(got, expected)
    assert torch.equal(decode_histograms_reference(theta, features, xyz_m, centres_m), expected)


def test_block_size_heuristic():
    assert [block_points_for(n) for n in (0, 1, 16, 17, 100, 128, 129, 10**6)] == [16, 16, 16, 32, 128, 128, 128, 128]


def test_rejects_wrong_shapes():
    theta, features, xyz_m, centres_m = random_inputs(2, 5, seed=0)
    with pytest.raises(ValueError, match="expected"):
        decode_histograms(theta[:, :-1], features, xyz_m, centres_m)
