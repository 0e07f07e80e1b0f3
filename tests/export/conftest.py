"""Shared fixtures of the export tests (tolerances: ``checks/tolerances.py``, ``EXPORTED``)."""

from __future__ import annotations

import numpy as np
import pytest

from checks.tolerances import EXPORTED
from export.onnx import export_backbone

TOLERANCE = EXPORTED


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
