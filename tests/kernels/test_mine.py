"""Device candidate mining against its reference: the cases of ``checks.mine`` on each device,
and the host <-> device forms of candidates (``checks.candidates``) the cases compare through."""

from __future__ import annotations

import numpy as np
import pytest

from checks import cases_of
from checks.candidates import padded_from_host, padded_to_host
from checks.mine import FIELDS
from engine import encoding


@pytest.mark.parametrize("case", cases_of("mine"), ids=str)
def test_matches_reference(case, device):
    check = case.check(device)
    assert check.passed, check.summary()


def test_padded_candidates_round_trip():
    cands = encoding.Candidates(np.array([4, 1, 7]), np.array([2, 0, 3]), np.array([0, 0, 2, 2, 2]),
                                np.array([1, 4, 0, 5, 7]), np.array([1]), np.array([9]))
    rows = padded_from_host(cands, "cpu")
    assert rows.fg_counts.tolist() == [2, 0, 3] and rows.bg_counts.tolist() == [0, 1, 0]
    back = padded_to_host(rows)
    for field in FIELDS:
        np.testing.assert_array_equal(getattr(back, field), getattr(cands, field), err_msg=field)
