"""Shared fixtures and the tolerance table of the export tests.

Tolerances, one row per dtype (outputs are unit-scale: random weights keep activations near 1):

* float32: the exported graph sums in another order than spconv (gathered 27-neighbour matmuls
  against spconv's per-offset accumulation) and folds BatchNorm in float64; measured differences
  are <= 1e-6 through the 7 levels, so 1e-5 is float32 rounding with a 10x margin.
* float16: weights and activations rounded to 11-bit mantissas through ~60 layers; measured
  <= 6e-4 on ONNX Runtime CPU, 1e-2 leaves room for fp16 accumulation on GPUs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from export.onnx import export_backbone

TOLERANCE = {torch.float32: {"atol": 1e-5, "rtol": 1e-5}, torch.float16: {"atol": 1e-2, "rtol": 1e-2}}


def random_scene(num_points: int, seed: int, extent_m: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Uniform points in a box: xyz (N, 3) float64, rgb (N, 3) uint8."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0, extent_m, (num_points, 3)), rng.integers(0, 256, (num_points, 3)).astype(np.uint8)


@pytest.fixture(scope="session")
def onnx_fp32(random_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "backbone.onnx"
    export_backbone(random_model.state_dict(), path, weights="random (seed 0)")
    return path


@pytest.fixture(scope="session")
def onnx_fp16(random_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx16") / "backbone_fp16.onnx"
    export_backbone(random_model.state_dict(), path, fp16=True, weights="random (seed 0)")
    return path
