"""Post-processing on recomputed masks against the reference on stored masks: the cases of
``checks.postprocess`` on each device, plus a check that those cases exercise the filtering."""

from __future__ import annotations

import pytest

from checks import cases_of
from checks.postprocess import postprocess_stored, scene
from engine.decoding import decode_masks


@pytest.mark.parametrize("case", cases_of("postprocess"), ids=str)
def test_matches_reference(case, device):
    check = case.check(device)
    assert check.passed, check.summary()


def test_cases_keep_instances():
    """The cases exercise filtering: the scene I=12 N=2500 keeps some instances and drops some."""
    decoder, logits, object_idx, _ = scene(12, 2500, 4)
    result = postprocess_stored(decode_masks(*decoder), logits, object_idx, None)
    assert 0 < result.instance_ids.numel() < 12
