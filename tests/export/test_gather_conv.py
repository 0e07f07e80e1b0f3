"""The Gather + MatMul formulation against spconv: its own conv kinds (the 1³ conv is shared with
the native backbone and tested in ``tests/backbone/test_native.py``), then the whole backbone and
heads against the spconv backbone (float32 tolerance from ``conftest.TOLERANCE``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.backbone.kernel_maps import build_kernel_maps, down_level, submanifold_map
from engine.preprocess import voxelize
from engine.synthetic import generate_scene
from export.gather_conv import GatherBackbone, GatherConv, GatherInverseConv
from tests.backbone.spconv_oracle import CASES, CPU, down_up_case, subm_case
from tests.export.conftest import TOLERANCE, random_scene

F32 = TOLERANCE[torch.float32]
CIN, COUT = 5, 7  # odd channel counts


@pytest.mark.parametrize("num,shape", CASES)
def test_submanifold_conv_equals_spconv(num, shape):
    case = subm_case(num, shape, 3, CIN, COUT, seed=num)
    with torch.no_grad():
        ours = GatherConv(case.weight, torch.float32)(case.features, submanifold_map(case.coords))
    torch.testing.assert_close(ours, case.expected, **F32)


@pytest.mark.parametrize("num,shape", CASES)
def test_down_and_inverse_conv_equal_spconv(num, shape):
    case = down_up_case(num, shape, CIN, COUT, seed=num + 2)
    _, down_map, up_index, _ = down_level(case.coords, shape)
    with torch.no_grad():
        ours_down = GatherConv(case.down_weight, torch.float32)(case.features, down_map)
        ours_up = GatherInverseConv(case.up_weight, torch.float32)(case.expected_down, up_index)
    torch.testing.assert_close(ours_down, case.expected_down, **F32)
    torch.testing.assert_close(ours_up, case.expected_up, **F32)  # rows of the inverse: the input's order


def _reference_and_ours(spconv_backbone, gather, xyz, rgb):
    vox = voxelize(xyz, rgb, CPU)
    with torch.no_grad():
        ref = spconv_backbone(vox.voxel_features, vox.voxel_coords, vox.spatial_shape, vox.point_to_voxel)
        maps = build_kernel_maps(vox.voxel_coords, vox.spatial_shape)
        ours = gather(vox.voxel_features, vox.point_to_voxel, *maps.tensors())
    return ref, ours


def assert_matches_reference(ref, semantic, offsets, heat, mask, kernel, tolerance):
    """All-point outputs of an exported backbone against the spconv backbone's ``PointOutputs``."""
    obj = ref.object_idx
    torch.testing.assert_close(semantic, ref.semantic_scores, **tolerance)
    torch.testing.assert_close(offsets, ref.offsets, **tolerance)
    torch.testing.assert_close(heat[obj], ref.heat_logits, **tolerance)
    torch.testing.assert_close(mask, ref.mask_features, **tolerance)
    torch.testing.assert_close(kernel[obj], ref.kernel_features, **tolerance)


@pytest.fixture(scope="module")
def gather_backbone(random_model):
    return GatherBackbone(random_model.state_dict())


@pytest.mark.parametrize("scene", ["one point", "random 2000", "synthetic room"])
def test_backbone_and_heads_equal_reference(spconv_backbone, gather_backbone, scene):
    if scene == "one point":
        xyz, rgb = random_scene(1, seed=0)
    elif scene == "random 2000":
        xyz, rgb = random_scene(2000, seed=1, extent_m=1.0)
    else:  # spatial shape [412, 467, 128]: odd, so stride-2 drops voxels at level 1 -> 2
        room = generate_scene(3000, seed=1)
        xyz, rgb = room.vertices_m.astype(np.float64), room.colors
    ref, ours = _reference_and_ours(spconv_backbone, gather_backbone, xyz, rgb)
    assert all(t.dtype == torch.float32 and t.shape[0] == xyz.shape[0] for t in ours)
    assert_matches_reference(ref, *ours, F32)
