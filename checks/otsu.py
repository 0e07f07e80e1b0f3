"""Otsu threshold kernel (``kernels.otsu``) against ``kernels.otsu.otsu_thresholds_reference``.

Exact (bitwise) equality on every device: the kernel performs the reference's float32 operations
in the same order on the same exactly-computed integer sums, with IEEE divisions and no
multiply-add to contract, so no tolerance is needed.
"""

from __future__ import annotations

import torch

from checks.case import Cases, Check
from kernels.otsu import otsu_thresholds, otsu_thresholds_reference

LEVELS = 100
CASES = Cases("otsu")


def bitwise_equal(check: Check, what: str, got: torch.Tensor, expected: torch.Tensor) -> None:
    check.that(f"{what}: dtype", got.dtype == torch.float32, str(got.dtype))
    check.equal(f"{what} (float32 bits)", got.cpu().view(torch.int32), expected.cpu().view(torch.int32))


def random_histograms(count: int, seed: int, max_count: int) -> torch.Tensor:
    """(I, 100) int64 with about half the levels empty, counts up to max_count."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, max_count, (count, LEVELS), generator=g)
    return counts * (torch.rand(count, LEVELS, generator=g) < 0.5)


@CASES("random I={count} counts<{max_count}", count=[0, 1, 3, 17, 64], max_count=[3, 1000, 10**7])
def random_thresholds(check: Check, device: torch.device, count: int, max_count: int) -> None:
    """10**7: n_lo·n_hi far beyond int32."""
    hist = random_histograms(count, seed=count * 31 + max_count, max_count=max_count)
    bitwise_equal(check, "thresholds", otsu_thresholds(hist.to(device)), otsu_thresholds_reference(hist))


def levels_with(counts: dict[int, int]) -> torch.Tensor:
    hist = torch.zeros(LEVELS, dtype=torch.int64)
    for level, points in counts.items():
        hist[level] = points
    return hist


# (histogram, expected threshold): float32 t/100 computed the way both sides do.
SPECIAL: dict[str, tuple[dict[int, int], float]] = {
    "empty": ({}, 0.0),
    "single level 0": ({0: 500}, 0.0),
    "single level 42": ({42: 1}, 0.0),
    "all mass in level 99": ({99: 10**6}, 0.0),
    "levels 0 and 99": ({0: 3, 99: 7}, 1 / 100),
    "levels 98 and 99": ({98: 5, 99: 5}, 99 / 100),
    # splits 11..20 and 21..30 both give σ = 5·10·15² = 11250: the first t (11) wins
    "tie": ({10: 5, 20: 5, 30: 5}, 11 / 100),
}


@CASES("special histogram: {name}", name=list(SPECIAL))
def special_histogram(check: Check, device: torch.device, name: str) -> None:
    counts, threshold = SPECIAL[name]
    hist = levels_with(counts).unsqueeze(0)
    expected = torch.tensor([threshold], dtype=torch.float32)
    bitwise_equal(check, "reference", otsu_thresholds_reference(hist), expected)
    bitwise_equal(check, "kernel", otsu_thresholds(hist.to(device)), expected)


@CASES("all special histograms in one launch")
def special_histograms_together(check: Check, device: torch.device) -> None:
    hist = torch.stack([levels_with(counts) for counts, _ in SPECIAL.values()])
    expected = torch.tensor([t for _, t in SPECIAL.values()], dtype=torch.float32)
    bitwise_equal(check, "thresholds", otsu_thresholds(hist.to(device)), expected)
