"""Post-processing on recomputed masks (``kernels.postprocess.RecomputedMasks``) against the
reference on stored masks (``engine.postprocess.postprocess``), in Triton's interpreter.

Both run the same steps; only the mask values differ, by float32 rounding (<= ~3e-7, see
test_assign.py). That moves a point across an Otsu level or a threshold only when its mask lies
within ulps of one, which none of these seeded cases hits: thresholds, kept instances, classes and
masks must be identical, scores equal within 1e-5 (means of ~10^3 values each off by ~1e-7,
summed in other orders).
"""

from __future__ import annotations

import pytest
import torch

from engine.decoding import decode_masks
from engine.postprocess import postprocess_masks
from kernels.postprocess import RecomputedMasks
from tests.kernels.test_decode import random_inputs
from tests.stage_helpers import postprocess


def scene(count: int, num_points: int, seed: int):
    """Decoder inputs with compact masks (instances about centres), logits, object points, superpoints."""
    theta, features, xyz_m, centres_m = random_inputs(count, num_points, seed)
    theta[:, 16 * 19 - 3:16 * 19] = 0  # the last input column of W1 (z offset) is zero; x, y shape the blob
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_points, 20, generator=g) * 3
    object_idx = torch.nonzero(logits.argmax(dim=1) >= 2).view(-1)
    superpoints = torch.randint(0, num_points // 5 + 1, (num_points,), generator=g)
    return (theta, features, xyz_m, centres_m), logits, object_idx, superpoints


def assert_same_result(got, want):
    assert torch.equal(got.thresholds, want.thresholds)
    assert torch.equal(got.instance_ids, want.instance_ids)
    assert torch.equal(got.classes, want.classes)
    assert torch.equal(got.masks, want.masks)
    assert torch.allclose(got.scores, want.scores, rtol=0, atol=1e-5)


@pytest.mark.parametrize("with_superpoints", [False, True])
@pytest.mark.parametrize("count,num_points,seed", [(0, 500, 0), (1, 1, 1), (1, 800, 2), (6, 3000, 3),
                                                   (12, 2500, 4), (30, 1500, 5)])
def test_recomputed_equals_stored(count, num_points, seed, with_superpoints):
    decoder, logits, object_idx, superpoints = scene(count, num_points, seed)
    sp = superpoints if with_superpoints else None
    want = postprocess(decode_masks(*decoder), logits, object_idx, sp)
    got = postprocess_masks(RecomputedMasks(*decoder), logits, object_idx, sp)
    assert_same_result(got, want)


def test_cases_keep_instances():
    """The cases above exercise filtering: some keep instances, some drop some."""
    decoder, logits, object_idx, _ = scene(12, 2500, 4)
    result = postprocess(decode_masks(*decoder), logits, object_idx, None)
    assert 0 < result.instance_ids.numel() < 12


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")
def test_all_points_unassigned():
    decoder, logits, object_idx, _ = scene(4, 600, 7)
    decoder[0][:, -1] = -100.0  # every mask is 0: Otsu finds no split, no threshold is non-zero
    got = postprocess_masks(RecomputedMasks(*decoder), logits, object_idx, None)
    assert got.masks.shape == (0, 600) and torch.equal(got.thresholds, torch.zeros(4))
