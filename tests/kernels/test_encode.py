"""Encoding kernels against their references: the cases of ``checks.encode`` on each device, and
the greedy merge's argument validation."""

from __future__ import annotations

import pytest
import torch

from checks import cases_of
from kernels import encode


@pytest.mark.parametrize("case", cases_of("encode"), ids=str)
def test_matches_reference(case, device):
    check = case.check(device)
    assert check.passed, check.summary()


def test_greedy_merge_rejects_too_many_candidates(device):
    with pytest.raises(ValueError, match="at most"):
        encode.greedy_merge(torch.zeros(257, 257, device=device))
