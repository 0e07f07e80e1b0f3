"""The native backbone's Triton form (its CUDA default) against its torch form, whole backbone and
point heads on small scenes: the backbone cases of ``checks.sparse_conv`` on each device (the torch
form on CPU; tolerances derived there; the conv kernel itself: test_sparse_conv.py)."""

from __future__ import annotations

import pytest

from checks.sparse_conv import BACKBONE_CASES
from engine.backbone.native import NativeBackbone


@pytest.mark.parametrize("case", BACKBONE_CASES, ids=str)
def test_matches_reference(case, device):
    check = case.check(device)
    assert check.passed, check.summary()


def test_reduced_precision_needs_the_triton_form(random_model, cpu):
    with pytest.raises(ValueError, match="needs the Triton form"):
        NativeBackbone.from_model(random_model, cpu, triton=False, precision="fp16")
