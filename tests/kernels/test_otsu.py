"""Otsu threshold kernel against ``engine.postprocess.otsu_thresholds``, in Triton's interpreter.

Exact (bitwise) equality: the kernel performs the reference's float32 operations in the same
order on the same exactly-computed integer sums, so no tolerance is needed.
"""

from __future__ import annotations

import pytest
import torch

from kernels.otsu import otsu_thresholds, otsu_thresholds_reference

LEVELS = 100


def assert_bitwise_equal(got: torch.Tensor, expected: torch.Tensor) -> None:
    assert got.shape == expected.shape and got.dtype == torch.float32
    differ = torch.nonzero(got.view(torch.int32) != expected.view(torch.int32)).view(-1)
    assert differ.numel() == 0, (f"first mismatch at instance {differ[0].item()}: kernel {got[differ[0]].item()!r}, "
                                 f"reference {expected[differ[0]].item()!r}")


def random_histograms(count: int, seed: int, max_count: int) -> torch.Tensor:
    """(I, 100) int64 with about half the levels empty, counts up to max_count."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, max_count, (count, LEVELS), generator=g)
    return counts * (torch.rand(count, LEVELS, generator=g) < 0.5)


@pytest.mark.parametrize("max_count", [3, 1000, 10**7])  # 10**7: n_lo·n_hi far beyond int32
@pytest.mark.parametrize("count", [0, 1, 3, 17, 64])
def test_random_histograms_bitwise(count, max_count):
    hist = random_histograms(count, seed=count * 31 + max_count, max_count=max_count)
    assert_bitwise_equal(otsu_thresholds(hist), otsu_thresholds_reference(hist))


def single_level(level: int, points: int) -> torch.Tensor:
    hist = torch.zeros(LEVELS, dtype=torch.int64)
    hist[level] = points
    return hist


def levels_with(counts: dict[int, int]) -> torch.Tensor:
    hist = torch.zeros(LEVELS, dtype=torch.int64)
    for level, points in counts.items():
        hist[level] = points
    return hist


# (histogram, expected threshold): float32 t/100 computed the way both sides do.
SPECIAL = {
    "empty": (torch.zeros(LEVELS, dtype=torch.int64), 0.0),
    "single level 0": (single_level(0, 500), 0.0),
    "single level 42": (single_level(42, 1), 0.0),
    "all mass in level 99": (single_level(99, 10**6), 0.0),
    "levels 0 and 99": (levels_with({0: 3, 99: 7}), 1 / 100),
    "levels 98 and 99": (levels_with({98: 5, 99: 5}), 99 / 100),
    # splits 11..20 and 21..30 both give σ = 5·10·15² = 11250: the first t (11) wins
    "tie": (levels_with({10: 5, 20: 5, 30: 5}), 11 / 100),
}


@pytest.mark.parametrize("name", list(SPECIAL))
def test_special_histograms(name):
    hist, threshold = SPECIAL[name]
    expected = torch.tensor([threshold], dtype=torch.float32)
    assert_bitwise_equal(otsu_thresholds_reference(hist.unsqueeze(0)), expected)
    assert_bitwise_equal(otsu_thresholds(hist.unsqueeze(0)), expected)


def test_all_special_histograms_in_one_launch():
    hist = torch.stack([h for h, _ in SPECIAL.values()])
    expected = torch.tensor([t for _, t in SPECIAL.values()], dtype=torch.float32)
    assert_bitwise_equal(otsu_thresholds(hist), expected)


def test_rejects_zero_levels():
    with pytest.raises(ValueError, match="K >= 1"):
        otsu_thresholds(torch.zeros(2, 0, dtype=torch.int64))
