"""The native backbone's Triton form (its CUDA default) against its torch form, whole backbone and
point heads, in Triton's interpreter on small scenes (the conv kernel itself: test_sparse_conv.py).

Tolerance: the two forms sum each convolution's products in different orders (per tile and Cin
chunk against per offset through oneDNN) through ~60 layers: float32 rounding, 1e-4 as for the
backbone against spconv (tests/backbone/test_native.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.backbone.native import NativeBackbone
from engine.preprocess import voxelize
from tests.tolerances import F32_NETWORK

FIELDS = ("semantic_scores", "offsets", "heat_logits", "mask_features", "kernel_features")


@pytest.mark.parametrize("num_points,seed", [(1, 0), (120, 1)])
def test_triton_form_equals_torch_form(random_model, cpu, num_points, seed):
    rng = np.random.default_rng(seed)
    xyz, rgb = rng.uniform(0, 0.3, (num_points, 3)), rng.integers(0, 256, (num_points, 3)).astype(np.uint8)
    vox = voxelize(xyz, rgb, cpu)
    args = (vox.voxel_features, vox.voxel_coords, vox.spatial_shape, vox.point_to_voxel)
    triton_form = NativeBackbone.from_model(random_model, cpu, triton=True)
    torch_form = NativeBackbone.from_model(random_model, cpu, triton=False)
    assert triton_form.provider.startswith("native (Triton") and torch_form.provider.startswith("native (torch")
    got, want = triton_form(*args), torch_form(*args)
    assert torch.equal(got.object_idx, want.object_idx)
    for field in FIELDS:
        torch.testing.assert_close(getattr(got, field), getattr(want, field), **F32_NETWORK)


def test_reduced_precision_needs_the_triton_form(random_model, cpu):
    with pytest.raises(ValueError, match="needs the Triton form"):
        NativeBackbone.from_model(random_model, cpu, triton=False, precision="fp16")
