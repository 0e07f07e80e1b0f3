"""The native backbone against spconv: each conv kind, the whole U-Net and heads, whole scenes.

Tolerances (outputs are unit-scale: random weights keep activations near 1):

* one conv, float32: a sum of up to 27·Cin products in another order than spconv's (offset by
  offset here, spconv's own order there): rounding of a few ulps, so 1e-5 relative (and 1e-6
  absolute for sums that cancel to near zero).
* the whole backbone and heads: ~60 convs in sequence plus BatchNorm folded in float64 (spconv
  applies it unfolded in float32): measured <= 6e-7 on the 150k-point scene, so 1e-4 is float32
  rounding with a wide margin, and small enough that a wrong offset, weight or BN would fail it.
* whole scenes: candidates, instance centres, thresholds, labels and masks are compared exactly
  (they are discrete; the backbone's rounding does not reach them on these scenes), scores to 1e-5.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from checks.tolerances import F32_NETWORK, F32_SUM_ORDER, SCORES
from engine.backbone import kernel_maps
from engine.backbone.folded import Conv1x1
from engine.backbone.kernel_maps import SUBM_CENTRE, build_kernel_maps, down_level, submanifold_map
from engine.backbone.native import NativeConv
from engine.backbone.sparse_conv import OffsetPairs, sparse_conv, sparse_conv_reference
from engine.pipeline import infer_scene
from engine.preprocess import voxelize
from engine.scene_io import read_scene
from engine.stage_timer import StageTimer
from engine.synthetic import generate_scene
from tests.backbone.spconv_oracle import CASES, CPU, down_up_case, random_voxels, subm_case
from tests.sessions import cpu_session

CONV = F32_SUM_ORDER
BACKBONE = F32_NETWORK
CIN, COUT = 5, 7  # odd channel counts
FIELDS = ("semantic_scores", "offsets", "heat_logits", "mask_features", "kernel_features")
REAL_SCENE = Path(__file__).resolve().parents[3] / "shared" / "scannet" / "scene0000_01_vh_clean_2.ply"


@pytest.mark.parametrize("num,shape", CASES)
def test_submanifold_conv_equals_spconv(num, shape):
    case = subm_case(num, shape, 3, CIN, COUT, seed=num)
    pairs = OffsetPairs.from_neighbours(submanifold_map(case.coords), case.coords.shape[0], identity=SUBM_CENTRE)
    torch.testing.assert_close(NativeConv(case.weight, torch.float32)(case.features, pairs), case.expected, **CONV)


@pytest.mark.parametrize("num,shape", CASES)
def test_pointwise_conv_reads_weights_as_spconv(num, shape):
    case = subm_case(num, shape, 1, CIN, COUT, seed=num + 1)
    with torch.no_grad():
        torch.testing.assert_close(Conv1x1(case.weight, torch.float32)(case.features), case.expected, **CONV)


@pytest.mark.parametrize("num,shape", CASES)
def test_down_and_inverse_conv_equal_spconv(num, shape):
    case = down_up_case(num, shape, CIN, COUT, seed=num + 2)
    _, down_map, _, _ = down_level(case.coords, shape)
    pairs = OffsetPairs.from_neighbours(down_map, case.coords.shape[0])
    ours_down = NativeConv(case.down_weight, torch.float32)(case.features, pairs)
    ours_up = NativeConv(case.up_weight, torch.float32)(case.expected_down, pairs.transposed())
    torch.testing.assert_close(ours_down, case.expected_down, **CONV)
    torch.testing.assert_close(ours_up, case.expected_up, **CONV)


@pytest.mark.parametrize("num_in,num_out,offsets,fill", [(0, 0, 27, 0.5), (1, 1, 27, 1.0), (40, 0, 8, 0.5),
                                                         (0, 9, 8, 0.5), (57, 33, 27, 0.3), (300, 120, 8, 0.9),
                                                         (20, 20, 3, 0.0)])
def test_sparse_conv_equals_its_definition(num_in, num_out, offsets, fill):
    """Random maps (any row may repeat across offsets, at most once per offset), none-markers both
    -1 and V_in; with and without bias."""
    g = torch.Generator().manual_seed(num_in * 7 + num_out)
    neighbours = torch.randint(0, max(num_in, 1), (num_out, offsets), generator=g)
    absent = torch.rand(num_out, offsets, generator=g) >= fill
    neighbours[absent] = torch.where(torch.rand(int(absent.sum()), generator=g) < 0.5, -1, num_in)
    if num_in == 0:
        neighbours.fill_(-1)
    features = torch.randn(num_in, 6, generator=g)
    weight = torch.randn(offsets, 6, 5, generator=g)
    bias = torch.randn(5, generator=g)
    pairs = OffsetPairs.from_neighbours(neighbours, num_in)
    assert pairs.num_pairs == int(((neighbours >= 0) & (neighbours < num_in)).sum())
    for b in (None, bias):
        got = sparse_conv(features, pairs, weight.transpose(1, 2).contiguous(), b)
        torch.testing.assert_close(got, sparse_conv_reference(features, neighbours, weight, b), **CONV)
        assert got.shape == (num_out, 5)


def test_identity_offset_is_checked():
    neighbours = torch.tensor([[1, 0], [0, 1]])  # offset 1 is the identity, offset 0 is not
    assert OffsetPairs.from_neighbours(neighbours, 2, identity=1).identity == 1
    with pytest.raises(ValueError, match="does not pair every row with itself"):
        OffsetPairs.from_neighbours(neighbours, 2, identity=0)


def test_dense_and_sorted_lookups_give_the_same_map(monkeypatch):
    coords, _, _ = random_voxels(4000, [40, 41, 39], 1, seed=11)
    dense = submanifold_map(coords)
    monkeypatch.setattr(kernel_maps, "DENSE_LOOKUP_CELLS", 0)
    assert torch.equal(submanifold_map(coords), dense)


def _voxelized(xyz, rgb):
    vox = voxelize(xyz, rgb, CPU)
    return vox.voxel_features, vox.voxel_coords, vox.spatial_shape, vox.point_to_voxel


@pytest.mark.parametrize("num_points,seed", [(1, 0), (3000, 1), (20000, 2)])
def test_backbone_equals_spconv_and_repeats_bit_for_bit(native_backbone, spconv_backbone, num_points, seed):
    room = generate_scene(num_points, seed=seed) if num_points > 1 else None
    xyz, rgb = ((room.vertices_m.astype(np.float64), room.colors) if room is not None
                else (np.zeros((1, 3)), np.zeros((1, 3), np.uint8)))
    args = _voxelized(xyz, rgb)
    ours, again, ref = native_backbone(*args), native_backbone(*args), spconv_backbone(*args)
    assert torch.equal(ours.object_idx, ref.object_idx)
    for field in FIELDS:
        torch.testing.assert_close(getattr(ours, field), getattr(ref, field), **BACKBONE,
                                   msg=lambda m, f=field: f"{f}: {m}")
        assert torch.equal(getattr(ours, field), getattr(again, field)), field


def test_native_backbone_needs_no_spconv_level_to_be_non_empty(native_backbone):
    """Two voxels whose parents fall outside the level-2 grid: levels 2-7 are empty (spconv cannot
    run this); the native backbone gives level 1's blocks only."""
    xyz = np.array([[0.0, 2.605, 0.0], [2.605, 0.0, 0.0]])
    args = _voxelized(xyz, np.array([[1, 2, 3], [4, 5, 6]], np.uint8))
    assert build_kernel_maps(args[1], args[2]).num_voxels[1:] == [0] * 6
    outputs = native_backbone(*args)
    assert outputs.semantic_scores.shape == (2, 20) and torch.isfinite(outputs.semantic_scores).all()


def _scene_results(model, xyz, rgb, superpoints):
    return [infer_scene(cpu_session(model, backbone), xyz, rgb, superpoints, StageTimer(CPU))
            for backbone in ("native", "spconv")]


def _assert_same_instances(ours, ref):
    assert ref.instance_centers.size > 1, "the case must have several instances"
    for key in ("candidates", "instance_centers", "thresholds", "pred_labels", "pred_masks"):
        np.testing.assert_array_equal(getattr(ours, key), getattr(ref, key), err_msg=key)
    np.testing.assert_allclose(ours.pred_scores, ref.pred_scores, **SCORES)


@pytest.mark.parametrize("num_points,seed", [(6000, 5), (20000, 7)])
def test_same_instances_as_spconv_on_synthetic_rooms(random_model, num_points, seed):
    room = generate_scene(num_points, seed=seed)
    ours, ref = _scene_results(random_model, room.vertices_m.astype(np.float64), room.colors,
                               room.segments.astype(np.int64))
    _assert_same_instances(ours, ref)


@pytest.mark.skipif(not REAL_SCENE.is_file(), reason=f"real ScanNet scene not found at {REAL_SCENE}")
def test_same_instances_as_spconv_on_a_real_scannet_scene(random_model):
    scene = read_scene(REAL_SCENE)
    ours, ref = _scene_results(random_model, scene.xyz, scene.rgb, None)
    assert ours.num_voxels > 70_000
    _assert_same_instances(ours, ref)
