"""The Triton sparse conv against its reference: the conv cases of ``checks.sparse_conv`` on each
device (their oracle and tolerances are derived there), plus argument validation and the launch
heuristic."""

from __future__ import annotations

import pytest
import torch

from checks.sparse_conv import CONV_CASES
from engine.backbone.kernel_maps import SUBM_OFFSETS
from kernels.sparse_conv import FP32_DOT_MIN_K, PRECISIONS, launch_config, sparse_conv


@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_matches_reference(case, device):
    check = case.check(device)
    assert check.passed, check.summary()


def test_rejects_bad_arguments():
    features, neighbours, weight = torch.randn(4, 6), torch.zeros(4, SUBM_OFFSETS, dtype=torch.int64), \
        torch.randn(SUBM_OFFSETS, 6, 8)
    for precision in ("fp64", "FP32", "int8", ""):
        with pytest.raises(ValueError, match="precision must be one of fp32, tf32, fp16, bf16"):
            sparse_conv(features, neighbours, weight, precision=precision)
    with pytest.raises(ValueError, match="does not match"):
        sparse_conv(features, neighbours, torch.randn(8, 6, 8))
    with pytest.raises(ValueError, match="int32 or int64"):
        sparse_conv(features, neighbours.float(), weight)


def test_launch_configs_fit_the_dot():
    """Every DKNet channel pair gets tiles the installed Triton's tl.dot accepts (M, N >= 16; K >= 8
    for 32-bit operands from Triton 3.8, 16 before and for 16-bit ones) and one channel tile up to
    128 output channels."""
    widths = [32 * level for level in range(1, 8)]
    pairs = [(6, 32)] + [(c, c) for c in widths] + [(2 * c, c) for c in widths] + [(c, c + 32) for c in widths]
    for cin, cout in pairs:
        for precision in PRECISIONS:
            config = launch_config(cin, cout, precision)
            assert config.block_m >= 16 and config.block_n >= 16
            assert config.block_k >= (FP32_DOT_MIN_K if precision in ("fp32", "tf32") else 16)
            assert (cout <= 128) == (config.block_n >= cout)
