"""Fused decode + histogram kernel (``kernels.decode``) against the engine's two steps
(``decode_masks`` then ``otsu_histograms``: ``decode_histograms_reference``).

Tolerance. Both sides compute the masks in float32 but group the first layer differently (the
kernel subtracts the centre first, W1·[f, p - c]; the reference folds W1p·c into the bias) and sum
in other orders, so a mask differs by a few ulps (<= 3e-7 measured in tests/test_decoding.py).
A point changes level only when 100·m lies within a few ulps of an integer; measured on these
inputs in the interpreter: 13 moved points in 4.8M (instance, point) pairs (240 instances x 20,000
points), about 3e-6, and 12 of the 240 instances differed at all. A moved point adds 2 to the L1
distance between histograms. Hence: counts per instance must total N exactly; the L1 distance per
instance may be at most 2 per 1000 points started (one moved point, ~300x the measured rate); and
at most a tenth of the instances of a case may differ (most cases match exactly).

CUDA. Compiled, the kernel contracts multiply-adds to FMAs and ``tl.sigmoid`` takes ``exp`` from
``ex2.approx`` (relative error <= 2^-22, ~2.4e-7 on m <= 1): a mask may then differ from the
reference by about twice the interpreter's deviation, which at most doubles the rate of moved
points. The same bounds hold on both devices: the L1 bound keeps a ~150x margin, and at <= 4099
points an instance differs with probability ~2.5% at twice the measured rate, well under a tenth.
The constant masks stay exact on CUDA: with θ = 0 but b2 the logit is b2 itself (no product to
round), exp(-0) = 1 exactly (so m = 1/2), and exp(∓100) is 0 or inf, giving m = 1 or 0.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from checks.case import Cases, Check
from engine.decoding import decode_masks
from engine.model import DYNAMIC_PARAMS
from engine.postprocess import OTSU_LEVELS, otsu_histograms
from kernels.decode import decode_histograms

CASES = Cases("decode")


def decode_histograms_reference(theta: torch.Tensor, mask_features: torch.Tensor, xyz_m: torch.Tensor,
                                centres_m: torch.Tensor, levels: int = OTSU_LEVELS) -> torch.Tensor:
    """The engine's two steps in plain torch: ``otsu_histograms(decode_masks(...))`` -> (I, levels) int64."""
    return otsu_histograms(decode_masks(theta, mask_features, xyz_m, centres_m), levels)


def random_inputs(count: int, num_points: int, seed: int) -> tuple[torch.Tensor, ...]:
    """theta (I, 337), mask_features (N, 16), xyz_m (N, 3), centres_m (I, 3) float32 on CPU, as in
    tests/test_decoding.py."""
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(count, DYNAMIC_PARAMS, generator=g) * 0.5
    features = torch.randn(num_points, 16, generator=g)
    xyz_m = torch.randn(num_points, 3, generator=g) * 3
    centres_m = torch.randn(count, 3, generator=g) * 3
    return theta, features, xyz_m, centres_m


def on(device: torch.device, tensors: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The same tensors on ``device``."""
    return tuple(t.to(device) for t in tensors)


def first_mismatch(got: torch.Tensor, expected: torch.Tensor) -> str:
    index = tuple(torch.nonzero(got != expected)[0].tolist())
    return (f"first mismatch at (instance, level) {index}: kernel {got[index].item()}, "
            f"reference {expected[index].item()}")


@CASES("random I={count} N={num_points}", count=[0, 1, 3, 17], num_points=[0, 1, 129, 1000, 4099])
def random_histograms(check: Check, device: torch.device, count: int, num_points: int) -> None:
    inputs = random_inputs(count, num_points, seed=count * 7919 + num_points)
    got = decode_histograms(*on(device, inputs)).cpu()
    expected = decode_histograms_reference(*inputs)
    check.that("dtype", got.dtype == torch.int64, str(got.dtype))
    if not check.that("shape", got.shape == (count, OTSU_LEVELS), str(tuple(got.shape))):
        return
    check.equal("points per instance (every point counted exactly once)", got.sum(1),
                torch.full((count,), num_points))
    if count == 0:
        return
    distance = (got - expected).abs().sum(1)  # (I,) L1 per instance; 2 per moved point
    where = f" ({first_mismatch(got, expected)})" if bool(distance.any()) else ""
    check.within("L1 distance per instance" + where, int(distance.max()), 2 * math.ceil(num_points / 1000))
    check.within("instances that differ" + where, int((distance > 0).sum()), math.ceil(count / 10))


# The output bias b2 of a constant mask -> the level all its points land in.
CONSTANT_LEVEL = {0.0: 50, 100.0: OTSU_LEVELS - 1, -100.0: 0}


@CASES("constant masks b2={bias_out}", bias_out=list(CONSTANT_LEVEL))
def constant_masks(check: Check, device: torch.device, bias_out: float) -> None:
    """θ = 0 except b2: m = sigmoid(b2) for every point; sigmoid(100) = 1.0 exactly, whose
    trunc(100·m) = 100 must be clamped to level 99."""
    theta, features, xyz_m, centres_m = random_inputs(2, 77, seed=3)
    theta.zero_()
    theta[:, -1] = bias_out
    expected = torch.zeros(2, OTSU_LEVELS, dtype=torch.int64)
    expected[:, CONSTANT_LEVEL[bias_out]] = 77
    # The interpreter evaluates sigmoid(-100) as 1 / (1 + exp(100)) in numpy: exp overflows to inf
    # (a RuntimeWarning) and the mask is 0, level 0, as intended.
    with np.errstate(over="ignore"):
        got = decode_histograms(*on(device, (theta, features, xyz_m, centres_m)))
    check.equal("kernel", got, expected)
    check.equal("reference", decode_histograms_reference(theta, features, xyz_m, centres_m), expected)
