"""The fused C decoding kernel (``engine.c_kernels``) against the PyTorch reference, and its build."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine import encoding
from engine.c_kernels import assign as c_assign
from engine.c_kernels import build
from engine.c_kernels import decode as c_decode
from engine.c_kernels.assign import CStoredMasks
from engine.decoding import decode_masks_and_histograms
from engine.environment import C_KERNELS
from engine.pipeline import (
    LaterStages,
    run_backbone,
    run_decoding,
    run_encoding,
    run_post_processing,
    stored_masks,
)
from engine.postprocess import StoredMasks, level_counts, otsu_histograms, postprocess_masks, rounded_sqrt_
from engine.scene_io import read_scene
from engine.session import build_backbone
from tests.test_decoding import literal_masks

REAL_SCENE = Path(__file__).resolve().parents[2] / "shared" / "scannet" / "scene0000_01_vh_clean_2.ply"

# Both paths sum in float32 in different orders (the kernel: channel by channel, then unit by unit;
# the literal transcription: one GEMV per instance, p - c formed first), so a logit differs by a few
# ulps of the largest partial sum (|logit| reaches ~30 here: ulp 2e-6) and a mask by at most a quarter
# of that (the sigmoid's slope). Measured: max 2.0e-6 over these cases. 1e-5 leaves room for other
# compilers' contraction choices and is 1/1000 of an Otsu level's width.
ATOL = 1e-5

pytestmark = pytest.mark.skipif(c_decode.KERNELS.unavailable_reason() is not None,
                                reason=f"C kernels unavailable: {c_decode.KERNELS.unavailable_reason()}")


def random_inputs(count: int, points: int, seed: int):
    """theta (I, 337), mask features (N, 16), xyz_m (N, 3), centres_m (I, 3)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(count, 337, generator=g) * 0.5, torch.randn(points, 16, generator=g),
            torch.randn(points, 3, generator=g) * 3, torch.randn(count, 3, generator=g) * 3)


@pytest.mark.parametrize("count,points", [(0, 7), (1, 0), (1, 1), (3, 15), (2, 17), (5, 1537), (17, 4099),
                                          (150, 2049), (300, 33)])
def test_masks_match_the_literal_transcription(count, points):
    inputs = random_inputs(count, points, seed=count * 7919 + points)
    masks, histograms = c_decode.decode_masks_and_histograms(*inputs)
    assert masks.shape == (points, count) and masks.dtype == torch.float32
    assert histograms.shape == (count, 100) and histograms.dtype == torch.int64
    torch.testing.assert_close(masks, literal_masks(*inputs).t(), rtol=0, atol=ATOL)
    assert torch.equal(histograms, otsu_histograms(masks))  # exact: counted from these masks


def test_masks_match_the_torch_path_on_a_large_block_count():
    inputs = random_inputs(40, 3 * c_decode.BLOCK_POINTS + 5, seed=3)
    masks, histograms = c_decode.decode_masks_and_histograms(*inputs)
    reference, _ = decode_masks_and_histograms(*inputs)
    torch.testing.assert_close(masks, reference, rtol=0, atol=ATOL)
    assert torch.equal(histograms, otsu_histograms(masks)) and histograms.sum() == masks.numel()


def test_levels_at_the_level_edges_equal_the_reference_codes():
    """count_levels against ``level_counts`` on values at and one ulp around every level edge."""
    edges = torch.arange(101, dtype=torch.float32) / 100
    values = torch.cat((edges, torch.nextafter(edges, torch.tensor(2.0)), torch.nextafter(edges, torch.tensor(-1.0))))
    values = values.clamp(0, 1)
    masks = values.view(-1, 1).repeat(1, 3).contiguous()  # three instances, 303 points
    counts = torch.zeros(3 * 100, dtype=torch.int64)
    c_decode.KERNELS.library().count_levels(masks.data_ptr(), masks.shape[0], 3, 100, counts.data_ptr())
    assert torch.equal(counts, level_counts(masks))


def test_pipeline_decodes_with_the_kernel_and_the_switch_turns_it_off(monkeypatch):
    inputs = random_inputs(4, 300, seed=1)
    kernel = stored_masks(*inputs)
    assert isinstance(kernel, CStoredMasks)
    assert torch.equal(kernel.masks, c_decode.decode_masks_and_histograms(*inputs)[0])
    monkeypatch.setenv(C_KERNELS, "0")
    cpu = torch.device("cpu")
    assert not c_decode.KERNELS.runs_on(cpu) and not c_assign.KERNELS.runs_on(cpu)
    assert c_decode.KERNELS.unavailable_reason() == "DKNET_C_KERNELS=0"
    reference = stored_masks(*inputs)
    assert type(reference) is StoredMasks
    assert torch.equal(reference.masks, decode_masks_and_histograms(*inputs)[0])


def test_build_is_cached_and_a_missing_compiler_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    build.load_library("decode")
    built = sorted(build.cache_dir().glob("decode-*.so"))
    assert len(built) == 1 and build.cache_dir().is_relative_to(tmp_path)
    stamp = built[0].stat().st_mtime_ns
    build.load_library("decode")  # cached: not compiled again
    assert built[0].stat().st_mtime_ns == stamp and sorted(build.cache_dir().glob("*")) == built

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty"))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    with pytest.raises(build.BuildError, match="did not run") as failure:
        build.load_library("decode")
    assert "\n" not in str(failure.value)
    assert not list(build.cache_dir().glob("*"))  # no partial library left behind


def test_a_compile_error_names_the_source(monkeypatch, tmp_path):
    broken = tmp_path / "broken.c"
    broken.write_text("int f( {\n")
    monkeypatch.setattr(build, "SOURCE_DIR", tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(build.BuildError, match="failed on broken.c") as failure:
        build.load_library("broken")
    assert "\n" not in str(failure.value)
    assert not list(build.cache_dir().glob("*"))


def reference_stages() -> LaterStages:
    return LaterStages("torch", encoding, lambda *inputs: StoredMasks(*decode_masks_and_histograms(*inputs)))


@pytest.mark.skipif(not REAL_SCENE.is_file(), reason=f"real ScanNet scene not found at {REAL_SCENE}")
def test_same_instances_as_the_torch_decoding_on_a_real_scannet_scene(random_model):
    scene = read_scene(REAL_SCENE)
    cpu = torch.device("cpu")
    with torch.no_grad():
        backbone = run_backbone(build_backbone("native", random_model, cpu), scene.xyz, scene.rgb, cpu)
        encoded = run_encoding(random_model, backbone)
        assert encoded.theta.shape[0] > 1, "the case must have several instances"
        ours = run_post_processing(run_decoding(backbone, encoded), backbone, None)
        ref = run_post_processing(run_decoding(backbone, encoded, reference_stages()), backbone, None)
    for key in ("thresholds", "masks", "classes", "instance_ids"):
        np.testing.assert_array_equal(getattr(ours, key).numpy(), getattr(ref, key).numpy(), err_msg=key)
    np.testing.assert_allclose(ours.scores.numpy(), ref.scores.numpy(), rtol=1e-5)


def tied_masks(points: int, count: int, seed: int) -> torch.Tensor:
    """(N, I) masks in [0, 1] on a coarse grid (many exact ties within a row), with exact zeros and ones."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 9, (points, count), generator=g).float() / 8).contiguous()


@pytest.mark.parametrize("points,count", [(0, 3), (1, 1), (5, 1), (7, 15), (9, 16), (33, 17), (4097, 40), (300, 150)])
def test_row_passes_give_the_reference_bits(points, count):
    g = torch.Generator().manual_seed(points * 31 + count)
    masks = tied_masks(points, count, seed=points + count)
    thresholds = torch.randint(0, 8, (count,), generator=g).float() / 8  # some 0, some equal to mask values
    cover = torch.rand(count, generator=g)
    cover[: count // 3] = 0  # every value of those instances goes to ZERO_STANDIN
    ours, ref = CStoredMasks(masks.clone()), StoredMasks(masks.clone())
    for got, expected in zip(ours.threshold_pass(thresholds), ref.threshold_pass(thresholds), strict=True):
        assert torch.equal(got, expected)
    assert torch.equal(ours.masks, ref.masks)
    scaled = rounded_sqrt_(thresholds * cover)
    for got, expected in zip(ours.rescale_pass(cover, scaled), ref.rescale_pass(cover, scaled), strict=True):
        assert torch.equal(got, expected)
    assert torch.equal(ours.masks, ref.masks)


def test_post_processing_with_the_row_passes_equals_the_reference():
    inputs = random_inputs(30, 6000, seed=11)
    g = torch.Generator().manual_seed(12)
    semantic_scores = torch.randn(6000, 20, generator=g)
    object_idx = torch.nonzero(torch.rand(6000, generator=g) < 0.8).view(-1)
    superpoints = torch.randint(0, 300, (6000,), generator=g)
    masks, histograms = c_decode.decode_masks_and_histograms(*inputs)
    ours = postprocess_masks(CStoredMasks(masks.clone(), histograms), semantic_scores, object_idx, superpoints)
    ref = postprocess_masks(StoredMasks(masks.clone(), histograms), semantic_scores, object_idx, superpoints)
    assert ours.masks.shape[0] > 0, "the case must keep instances"
    for key in ("thresholds", "masks", "classes", "scores", "instance_ids"):
        assert torch.equal(getattr(ours, key), getattr(ref, key)), key


def test_inputs_the_kernel_cannot_take_are_refused():
    theta, features, xyz, centres = random_inputs(2, 10, seed=4)
    with pytest.raises(ValueError, match="19 channels"):
        c_decode.decode_masks_and_histograms(theta, features[:, :15], xyz, centres)
    with pytest.raises(ValueError, match="int32 level slots"):
        c_decode.decode_masks_and_histograms(theta, features, xyz, centres, levels=2**30)
    with pytest.raises(ValueError, match="contiguous float32 CPU"):
        CStoredMasks(tied_masks(5, 4, seed=0).t()).threshold_pass(torch.zeros(5))


def test_rounded_sqrt_rounds_correctly():
    """Against float64 square roots rounded to float32 (correctly rounded: double rounding is
    harmless for the square root of a float32), on [0, 1), tiny, huge and special values."""
    g = torch.Generator().manual_seed(5)
    values = torch.cat((torch.rand(200_000, generator=g), torch.rand(1000, generator=g) * 1e-38,
                        torch.rand(1000, generator=g) * 3e38, torch.tensor([0.0, 1e-45, 1.0, 4.0, 0.25])))
    expected = torch.from_numpy(np.sqrt(values.double().numpy())).float()
    assert torch.equal(rounded_sqrt_(values.clone()), expected)
