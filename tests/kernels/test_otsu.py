"""Otsu threshold kernel against its reference: the cases of ``checks.otsu`` on each device."""

from __future__ import annotations

import pytest
import torch

from checks import cases_of
from kernels.otsu import otsu_thresholds


@pytest.mark.parametrize("case", cases_of("otsu"), ids=str)
def test_matches_reference(case, device):
    check = case.check(device)
    assert check.passed, check.summary()


def test_rejects_zero_levels(device):
    with pytest.raises(ValueError, match="K >= 1"):
        otsu_thresholds(torch.zeros(2, 0, dtype=torch.int64, device=device))
