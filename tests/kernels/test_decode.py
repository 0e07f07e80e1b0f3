"""Fused decode + histogram kernel against its reference: the cases of ``checks.decode`` on each
device, plus its block-size heuristic and argument validation."""

from __future__ import annotations

import pytest

from checks import cases_of
from checks.decode import on, random_inputs
from kernels.decode import block_points_for, decode_histograms


@pytest.mark.parametrize("case", cases_of("decode"), ids=str)
def test_matches_reference(case, device):
    check = case.check(device)
    assert check.passed, check.summary()


def test_block_size_heuristic():
    assert [block_points_for(n) for n in (0, 1, 16, 17, 100, 128, 129, 10**6)] == [16, 16, 16, 32, 128, 128, 128, 128]


def test_rejects_wrong_shapes(device):
    theta, features, xyz_m, centres_m = on(device, random_inputs(2, 5, seed=0))
    with pytest.raises(ValueError, match="expected"):
        decode_histograms(theta[:, :-1], features, xyz_m, centres_m)
