"""Assignment kernels against their torch references: the cases of ``checks.assign`` on each device."""

from __future__ import annotations

import pytest

from checks import cases_of


@pytest.mark.parametrize("case", cases_of("assign"), ids=str)
def test_matches_reference(case, device):
    check = case.check(device)
    assert check.passed, check.summary()
