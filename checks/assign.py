"""Assignment kernels (``kernels.assign``) against the torch references.

``best_instances`` recomputes the masks with the decode kernel's arithmetic (W1·[f, p - c]);
the reference (``engine.decoding.decode_masks``) folds the centre into the bias, so the two mask
values of a pair differ by float32 rounding, at most ~3e-7 (tests/test_decoding.py). Hence best
values are compared within 1e-6, and the chosen instance must be the reference's except at points
where the reference's value for the kernel's choice is within 1e-6 of its maximum (a near tie),
or where the mask lies within 1e-6 of a threshold. Exact ties (duplicate instances) must resolve
to the first instance, as torch.max does.

CUDA. Compiled, the decoder contracts multiply-adds to FMAs and ``tl.sigmoid`` takes ``exp`` from
``ex2.approx`` (relative error <= 2^-22, <= 2.4e-7 on m <= 1): a mask may differ from the
reference by ~5e-7, still within 1e-6 (rescaled values sqrt(M'·cover) halve a relative error), so
the same tolerances hold on both devices. Exact ties stay exact: identical instances go through
identical instructions. ``instance_sums`` adds without multiplying (no FMA to contract); its
float32 sums keep their tolerance and its float64 comparisons stay exact on both devices.
"""

from __future__ import annotations

import numpy as np
import torch

from checks.case import Cases, Check
from checks.decode import on, random_inputs
from engine import postprocess
from engine.decoding import decode_masks
from engine.postprocess import ZERO_STANDIN, rounded_sqrt_
from kernels.assign import best_instances, instance_sums

TOLERANCE = 1e-6
CASES = Cases("assign")


def random_thresholds(count: int, seed: int) -> torch.Tensor:
    """(I,) float32 Otsu-like thresholds t/100, some exactly 0."""
    g = torch.Generator().manual_seed(seed)
    levels = torch.randint(0, 100, (count,), generator=g)
    return levels.float() / 100


def reference_values(inputs: tuple[torch.Tensor, ...], thresholds: torch.Tensor,
                     cover: torch.Tensor | None = None) -> torch.Tensor:
    """(N, I) float32 M' (cover None) or M'' as the reference post-processing computes them."""
    masks = decode_masks(*inputs)
    values = torch.where(masks >= thresholds, masks, torch.zeros_like(masks))
    if cover is not None:
        values = rounded_sqrt_((values * cover).clamp(min=ZERO_STANDIN))
    return values


def first_maximum(check: Check, best: torch.Tensor, which: torch.Tensor, values: torch.Tensor,
                  masks: torch.Tensor | None = None, thresholds: torch.Tensor | None = None) -> None:
    """best (n,) float32 / which (n,) int64 from the kernel (on CPU) against reference values
    (n, k), with the tolerance above; masks (n, k) and thresholds (k,) widen the near ties to masks
    within the tolerance of their threshold."""
    if not check.that("shapes", best.shape == which.shape == values.shape[:1],
                      f"best {tuple(best.shape)}, which {tuple(which.shape)}, values {tuple(values.shape)}"):
        return
    if values.shape[1] == 0:
        return
    ref_best, ref_which = values.max(dim=1)
    check.close("best values", best, ref_best, rtol=0, atol=TOLERANCE)
    differ = torch.nonzero(which != ref_which).view(-1)
    chosen = values[differ, which[differ]]
    near_tie = chosen >= ref_best[differ] - TOLERANCE
    if masks is not None:  # a mask within the tolerance of its threshold may fall on either side
        near_tie |= ((masks[differ] - thresholds).abs() < TOLERANCE).any(dim=1)
    check.that("a different instance only at near ties", bool(near_tie.all()),
               f"points {differ[~near_tie][:5].tolist()} chose a clearly smaller value")
    check.within("points choosing another instance", differ.numel(), max(1, values.shape[0] // 1000))


@CASES("threshold pass I={count} N={num_points}", count=[0, 1, 3, 17], num_points=[0, 1, 129, 1000])
def threshold_pass(check: Check, device: torch.device, count: int, num_points: int) -> None:
    inputs = random_inputs(count, num_points, seed=count * 101 + num_points)
    thresholds = random_thresholds(count, seed=num_points)
    best, which, sums = best_instances(*on(device, inputs), thresholds.to(device), column_sums=True)
    values = reference_values(inputs, thresholds)
    first_maximum(check, best.cpu(), which.cpu(), values, decode_masks(*inputs), thresholds)
    check.that("column sums dtype", sums.dtype == torch.float32, str(sums.dtype))
    # column sums of up to 1000 values <= 1, each off by <= 3e-7 (~5e-7 on CUDA), summed in other orders
    check.close("column sums", sums, values.sum(dim=0), rtol=1e-5, atol=1e-4)


@CASES("rescale pass I={count} N={num_points}", count=[1, 5], num_points=[1, 300])
def rescale_pass(check: Check, device: torch.device, count: int, num_points: int) -> None:
    inputs = random_inputs(count, num_points, seed=count + num_points)
    thresholds = random_thresholds(count, seed=count)
    cover = torch.rand(count, generator=torch.Generator().manual_seed(num_points))
    best, which, sums = best_instances(*on(device, inputs), thresholds.to(device), cover.to(device))
    check.that("no column sums unless asked", sums is None)
    first_maximum(check, best.cpu(), which.cpu(), reference_values(inputs, thresholds, cover),
                  decode_masks(*inputs), thresholds)


@CASES("subsets of points and instances")
def subsets(check: Check, device: torch.device) -> None:
    inputs = random_inputs(9, 500, seed=4)
    thresholds = random_thresholds(9, seed=4)
    cover = torch.rand(9, generator=torch.Generator().manual_seed(1))
    points = torch.tensor([499, 0, 17, 250, 17])  # any order, repeats allowed
    instances = torch.tensor([2, 5, 8])
    best, which, sums = best_instances(*on(device, (*inputs, thresholds, cover, points, instances)),
                                       column_sums=True)
    values = reference_values(inputs, thresholds, cover)[points][:, instances]
    first_maximum(check, best.cpu(), which.cpu(), values)
    check.close("column sums", sums, values.sum(dim=0), rtol=1e-5, atol=1e-5)


@CASES("exact ties go to the first instance")
def exact_ties(check: Check, device: torch.device) -> None:
    theta, features, xyz_m, centres_m = random_inputs(3, 200, seed=8)
    theta[2], centres_m[2] = theta[0], centres_m[0]  # instances 0 and 2 are identical
    theta[1, -1] = -100.0  # instance 1 never wins
    decoder = on(device, (theta, features, xyz_m, centres_m))
    thresholds = torch.zeros(3, device=device)
    # The interpreter evaluates instance 1's sigmoid as 1 / (1 + exp(>= 100)) in numpy: exp may
    # overflow to inf (a RuntimeWarning), giving m = 0 as intended.
    with np.errstate(over="ignore"):
        _, which, _ = best_instances(*decoder, thresholds)
        _, which_reordered, _ = best_instances(*decoder, thresholds,
                                               instances=torch.tensor([2, 1, 0], device=device))
    check.equal("instances chosen", which.unique(), [0])
    # the first slot of the given order wins, whichever instance it is
    check.equal("slots chosen with instances (2, 1, 0)", which_reordered.unique(), [0])


@CASES("everything below threshold gives zero values")
def everything_below_threshold(check: Check, device: torch.device) -> None:
    decoder = on(device, random_inputs(4, 50, seed=2))
    above_every_mask = torch.full((4,), 2.0, device=device)
    best, which, sums = best_instances(*decoder, above_every_mask, column_sums=True)
    check.equal("best", best, torch.zeros(50))
    check.equal("which", which, torch.zeros(50, dtype=torch.int64))
    check.equal("column sums", sums, torch.zeros(4))
    best, _, _ = best_instances(*decoder, above_every_mask, torch.ones(4, device=device))
    check.close("rescaled best", best, torch.full((50,), ZERO_STANDIN**0.5), rtol=1e-5, atol=1e-8)


@CASES("no instances to compare")
def no_instances(check: Check, device: torch.device) -> None:
    decoder = on(device, random_inputs(3, 10, seed=0))
    best, _, sums = best_instances(*decoder, torch.zeros(3, device=device),
                                   instances=torch.zeros(0, dtype=torch.int64, device=device), column_sums=True)
    check.equal("best", best, torch.full((10,), -1.0))
    check.that("column sums shape", sums.shape == (0,), str(tuple(sums.shape)))


@CASES("instance sums I={count} N={num_points}", count=[0, 1, 7, 150], num_points=[0, 1, 1000, 5000])
def random_instance_sums(check: Check, device: torch.device, count: int, num_points: int) -> None:
    g = torch.Generator().manual_seed(count * 13 + num_points)
    assignment = torch.randint(-1, max(count, 1), (num_points,), generator=g) if count else \
        torch.full((num_points,), -1)
    values = torch.rand(num_points, generator=g)
    got = instance_sums(values.to(device), assignment.to(device), count)
    check.that("dtype", got.dtype == torch.float32, str(got.dtype))
    # float32 sums of <= 5000 values in [0, 1] in two orders: relative error <= ~N·2^-24
    check.close("float32 sums", got, postprocess.instance_sums(values, assignment, count), rtol=1e-4, atol=1e-6)
    ones = torch.ones(num_points, dtype=torch.float64)
    counts = torch.bincount(assignment[assignment >= 0], minlength=count).double()
    check.equal("float64 counts", instance_sums(ones.to(device), assignment.to(device), count), counts)
    # float64 sums of float32 values >= 2^-7 are exact in any order (engine.postprocess, step 3)
    exact = values.clamp(min=0.01).double()
    check.equal("float64 sums", instance_sums(exact.to(device), assignment.to(device), count),
                postprocess.instance_sums(exact, assignment, count))


@CASES("instance sums with every point unassigned")
def all_unassigned(check: Check, device: torch.device) -> None:
    got = instance_sums(torch.rand(100, generator=torch.Generator().manual_seed(0)).to(device),
                        torch.full((100,), -1, device=device), 5)
    check.equal("sums", got, torch.zeros(5))
