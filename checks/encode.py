"""Encoding kernels (``kernels.encode``) against ``engine.encoding`` (references on the host).

Tolerances, the same on every device unless stated:

* Descriptions: pooled means of up to 2000 float32 rows summed in another order (kernel: blocks
  of 64 entries; reference: index_add in entry order): ``F32_SUM_ORDER`` (relative 1e-5). On CUDA
  the blocks are reduced in another tree order and the all-points fallback mean is torch's CUDA
  reduction: still a sum order, well inside the bound. The fallback itself is compared with the
  host's mean at torch's float32 defaults (rtol 1.3e-6, atol 1e-5): means of order 0.1 of 100
  unit-scale values, whose sum orders differ by ~1e-7 absolute.
* Merge scores: the kernel folds BatchNorm into the convs (float64 fold, then float32), the
  reference applies conv then BN; each of the four layers rounds differently by a few ulps of
  activations of order 1-10, and the sigmoid's slope is at most 1/4: 1e-5 absolute. Compiled, the
  kernel's layers contract to FMAs and ``tl.sigmoid`` uses ``ex2.approx`` (relative error ~2^-22 on
  a score <= 1): ~1e-7 more, covered by the same bound. The score matrix is symmetric bit for bit
  on every device (each unordered pair is scored once and mirrored): exact.
* Greedy merge: exact on every device (integer decisions, ``>`` against float32 0.5, on the same
  scores). The kernel computes connected components (``kernels.encode`` docstring), so the cases
  hold chains (long components), tied scores, exact 0.5 entries, asymmetric matrices, NaN and inf.
* Instances: groups and centres are exact (group ids, and a maximum and first-index choice on the
  same heat values); kernels are size-weighted means taken as a matrix product instead of
  index_add: ``F32_SUM_ORDER``. (torch keeps float32 matrix products in float32 on CUDA unless
  TF32 is allowed, which nothing here does.)
"""

from __future__ import annotations

import copy
import functools

import numpy as np
import torch

from checks.candidates import padded_from_host
from checks.case import Cases, Check
from checks.tolerances import F32_SUM_ORDER
from engine import encoding
from engine.checkpoint import randomize_weights
from engine.model import DKNet, build_model
from kernels import encode

CASES = Cases("encode")
MERGE_SCORE_ATOL = 1e-5  # four float32 layers rounded differently, sigmoid slope <= 1/4 (module docstring)
TORCH_F32_DEFAULT = {"rtol": 1.3e-6, "atol": 1e-5}  # torch.testing.assert_close's float32 defaults


@functools.cache
def random_model() -> DKNet:
    """The DKNet with ``randomize_weights(seed=0)``, on the host (built once)."""
    model = build_model()
    randomize_weights(model, seed=0)
    return model


@functools.cache
def random_model_on(device: torch.device) -> DKNet:
    """``random_model()`` on ``device`` (a copy, so the host's stays where the references run)."""
    if device.type == "cpu":
        return random_model()
    return copy.deepcopy(random_model()).to(device)


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


def object_point_arrays(num_points: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Host float32 kernel features (No, 16), xyz_m (No, 3) in [0, 5) and offsets (No, 3)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(num_points, 16, generator=g), torch.rand(num_points, 3, generator=g) * 5,
            torch.randn(num_points, 3, generator=g) * 0.1)


def on(device: torch.device, *tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.to(device) for t in tensors]


@CASES("describe P={count}", count=[0, 1, 2, 37])
def describe(check: Check, device: torch.device, count: int) -> None:
    """P=1: its only fg list is empty (every list may be; the fallback mean)."""
    cands = random_candidates(count, 2500, seed=count, empty_every=1 if count == 1 else 4)
    arrays = object_point_arrays(2500, seed=count)
    got = encode.describe_candidates(padded_from_host(cands, device), *on(device, *arrays))
    check.close("descriptors", got, encoding.describe_candidates(cands, *arrays), **F32_SUM_ORDER)


@CASES("describe: empty lists take the mean of all object points")
def describe_empty_lists(check: Check, device: torch.device) -> None:
    cands = random_candidates(3, 100, seed=1, empty_every=1)
    features, xyz, offsets = object_point_arrays(100, seed=1)
    got = encode.describe_candidates(padded_from_host(cands, device), *on(device, features, xyz, offsets)).cpu()
    check.close("empty fg list: Fn", got[0, :16], features.mean(dim=0), **TORCH_F32_DEFAULT)
    check.close("empty bg list: Fb", got[1, 16:32], features.mean(dim=0), **TORCH_F32_DEFAULT)


@CASES("merge scores P={count}", count=[0, 1, 2, 33, 150])
def merge_scores(check: Check, device: torch.device, count: int) -> None:
    """The second half of the descriptors repeats the first: pairs at the 1e-6 clamp."""
    g = torch.Generator().manual_seed(count)
    descriptors = torch.randn(count, 35, generator=g)
    descriptors[count // 2:] = descriptors[: count - count // 2].clone()
    with torch.no_grad():
        got = encode.merge_probabilities(random_model_on(device), descriptors.to(device)).cpu()
        want = encoding.merge_probabilities(random_model(), descriptors)
    check.close("scores", got, want, rtol=0, atol=MERGE_SCORE_ATOL)
    check.equal("symmetric: |d_i - d_j| is, so must the scores be", got, got.t())


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


@CASES("greedy merge P={count} symmetric={symmetric}", count=[0, 1, 2, 5, 40, 150], symmetric=[True, False])
def greedy_merge(check: Check, device: torch.device, count: int, symmetric: bool) -> None:
    """Three seeds per case; from 40 candidates on, the groups must come in several sizes."""
    sizes = []
    for seed in range(3):
        scores = random_scores(count, seed * 1000 + count, symmetric)
        got = encode.greedy_merge(torch.from_numpy(scores).to(device))
        want = encoding.greedy_merge(scores)
        check.that(f"seed {seed}: dtype", got.dtype == torch.int64, str(got.dtype))
        check.equal(f"seed {seed}: groups", got, want)
        sizes.extend(np.bincount(want).tolist())
    if count >= 40:
        check.that("the cases have groups of several sizes", max(sizes) > 2 and len(set(sizes)) > 2, str(sizes))


def chain_scores(count: int, seed: int, symmetric: bool) -> np.ndarray:
    """(P, P) float32 scores whose above-0.5 pairs form long chains: the candidates in a random
    order (seed 0: descending index, the longest way for the smallest label to travel) cut into
    3 paths, each link scoring one of 0.625, 0.75 (ties) or the next float32 above 0.5; on top, a
    tenth of all entries exactly 0.5 (no link) and the rest ``random_scores`` below 0.5. Not
    symmetric: each link is above 0.5 in one direction only, the other direction holds 0.5 or less."""
    rng = np.random.default_rng(seed)
    scores = np.floor(rng.random((count, count)) * 4).astype(np.float32) / 8  # 0 .. 0.375
    scores[rng.random((count, count)) < 0.1] = np.float32(0.5)
    order = np.arange(count)[::-1] if seed == 0 else rng.permutation(count)
    cuts = set(rng.choice(max(count - 1, 1), min(2, max(count - 1, 0)), replace=False).tolist())
    link_values = np.array([0.625, 0.75, np.nextafter(np.float32(0.5), np.float32(1))], np.float32)
    for k in range(count - 1):
        if k in cuts:
            continue
        a, b = (order[k], order[k + 1]) if rng.random() < 0.5 else (order[k + 1], order[k])
        scores[a, b] = link_values[rng.integers(0, 3)]
        scores[b, a] = scores[a, b] if symmetric else min(scores[b, a], np.float32(0.5))
    if symmetric:
        scores = np.triu(scores) + np.triu(scores, 1).T
    return scores


@CASES("greedy merge chains P={count} symmetric={symmetric}", count=[0, 1, 2, 150, 256], symmetric=[True, False])
def greedy_merge_chains(check: Check, device: torch.device, count: int, symmetric: bool) -> None:
    """Long chains (a component's diameter up to P - 1), tied link scores and exact 0.5 entries:
    the components equal the greedy Algorithm 2's groups, whatever its merge order."""
    for seed in range(3):
        scores = chain_scores(count, seed, symmetric)
        want = encoding.greedy_merge(scores)
        check.equal(f"seed {seed}: groups", encode.greedy_merge(torch.from_numpy(scores).to(device)), want)
        if count >= 150:
            check.that(f"seed {seed}: a chain of over 40 candidates", np.bincount(want).max() > 40,
                       str(np.bincount(want).max()))


@CASES("greedy merge with {special} scores", special=["NaN", "inf"])
def greedy_merge_special_values(check: Check, device: torch.device, special: str) -> None:
    """A NaN off the diagonal makes the reference's maximum NaN, so it merges nothing; a NaN on the
    diagonal is zeroed first; +inf is a score above 0.5 like any other."""
    scores = random_scores(40, 7, symmetric=True)
    scores[3, 3] = np.nan
    scores[5, 9] = np.float32(special.lower())
    got = encode.greedy_merge(torch.from_numpy(scores).to(device))
    want = encoding.greedy_merge(scores)
    check.equal("groups", got, want)
    if special == "NaN":
        check.equal("nothing merged", want, np.arange(40))
    else:
        check.that("5 and 9 joined", want[5] == want[9])
    scores[5, 9] = 0.0
    check.equal("only the diagonal NaN", encode.greedy_merge(torch.from_numpy(scores).to(device)),
                encoding.greedy_merge(scores))


@CASES("greedy merge thresholds strictly")
def greedy_merge_strict(check: Check, device: torch.device) -> None:
    """Scores of exactly 0.5 join nothing; the next float32 above joins its pair."""
    scores = np.full((3, 3), 0.5, np.float32)
    check.equal("all at 0.5", encode.greedy_merge(torch.from_numpy(scores).to(device)), [0, 1, 2])
    scores[2, 1] = np.nextafter(np.float32(0.5), np.float32(1))
    check.equal("(2, 1) just above 0.5", encode.greedy_merge(torch.from_numpy(scores).to(device)), [0, 1, 1])


@CASES("merge instances P={count}", count=[1, 6, 60])
def merge_instances(check: Check, device: torch.device, count: int) -> None:
    """Heat in quarters: ties between the members of a group."""
    rng = np.random.default_rng(count)
    cands = random_candidates(count, 500, seed=count)
    heat = torch.from_numpy((rng.integers(0, 4, 500) / 4).astype(np.float32))
    fg_features = torch.randn(count, 16, generator=torch.Generator().manual_seed(count))
    groups = encoding.greedy_merge(random_scores(count, count, symmetric=True))
    got = encode.merge_instances(torch.from_numpy(groups).to(device), padded_from_host(cands, device),
                                 heat.to(device), fg_features.to(device))
    want = encoding.merge_instances(groups, cands, heat, fg_features)
    check.equal("groups", got.group, want.group)
    check.equal("centre points", got.centre_points, want.centre_points)
    check.close("kernels", got.kernels, want.kernels, **F32_SUM_ORDER)
