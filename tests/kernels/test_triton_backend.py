"""``--kernels triton`` against ``--kernels torch`` on whole scenes, in Triton's interpreter.

Same model, same scene: the backbone is shared and mining is exact (test_mine.py), so candidates
and instance centres must be identical. Decoding and post-processing use recomputed masks that differ from the
reference's by float32 rounding (see checks/assign.py): thresholds may move by one Otsu level
(0.01); on these seeded scenes none does, and the masks and labels come out identical, scores
within 1e-5.
"""

from __future__ import annotations

import numpy as np
import pytest

from checks.tolerances import SCORES
from engine.pipeline import infer_scene
from engine.stage_timer import StageTimer
from engine.synthetic import generate_scene
from tests.sessions import cpu_session


def _infer(session, scene):
    timer = StageTimer(session.device)
    result = infer_scene(session, scene.vertices_m, scene.colors, scene.segments, timer)
    assert set(timer.ms) == {"backbone", "encoding", "decoding", "post_processing"}
    return result


# One scene here; profiling.gpu_check's end-to-end step makes the same comparison on another
# (1000 points, seed 1; tests/test_gpu_check.py runs it in the interpreter).
@pytest.mark.parametrize("num_points,seed", [(1000, 3)])
def test_triton_kernels_equal_torch_kernels(random_model, num_points, seed):
    scene = generate_scene(num_points, seed=seed)
    want = _infer(cpu_session(random_model, kernels="torch"), scene)
    got = _infer(cpu_session(random_model, kernels="triton"), scene)
    assert want.instance_centers.size > 1, "the case must have several instances"
    np.testing.assert_array_equal(got.candidates, want.candidates)
    np.testing.assert_array_equal(got.instance_centers, want.instance_centers)
    assert np.abs(got.thresholds - want.thresholds).max(initial=0) <= 0.01 + 1e-6
    np.testing.assert_array_equal(got.thresholds, want.thresholds)
    np.testing.assert_array_equal(got.pred_labels, want.pred_labels)
    np.testing.assert_array_equal(got.pred_masks, want.pred_masks)
    np.testing.assert_allclose(got.pred_scores, want.pred_scores, **SCORES)


def test_exported_backbone_with_triton_kernels_equals_spconv_with_torch_kernels(tmp_path, capsys):
    """Any --backbone goes with any --kernels: ``engine.run`` with the ONNX graph and the Triton
    kernels (in the interpreter on CPU) writes the same submission files, candidates, instances,
    thresholds, labels and masks as with spconv and the torch kernels."""
    from engine import run
    from engine.synthetic import write_scannet_scene
    from export.onnx import main as export_main

    ply = write_scannet_scene(generate_scene(1000, seed=3), tmp_path / "scene")
    onnx_file = tmp_path / "backbone.onnx"
    assert export_main(["--random-weights", "--out", str(onnx_file)]) == 0
    dumps = {}
    for name, pair in {"spconv-torch": ["--backbone", "spconv", "--kernels", "torch"],
                       "ort-triton": ["--backbone", "onnxruntime", "--engine-file", str(onnx_file),
                                      "--kernels", "triton"]}.items():
        code = run.main([str(ply), "--random-weights", "--device", "cpu", *pair, "--out", str(tmp_path / name),
                         "--dump", str(tmp_path / f"{name}.npz")])
        assert code == 0, capsys.readouterr().err
        dumps[name] = np.load(tmp_path / f"{name}.npz")
    assert "later stages on Triton interpreter" in capsys.readouterr().out
    submissions = {name: sorted((tmp_path / name).rglob("*.txt")) for name in dumps}
    assert [p.relative_to(tmp_path / "ort-triton") for p in submissions["ort-triton"]] == \
        [p.relative_to(tmp_path / "spconv-torch") for p in submissions["spconv-torch"]]
    for ours, theirs in zip(submissions["ort-triton"], submissions["spconv-torch"], strict=True):
        if ours.parent.name == "predicted_masks":
            assert ours.read_text() == theirs.read_text(), ours.name
        else:  # mask file, label, confidence: confidences agree within SCORES, printed to 4 decimals
            rows = [line.split() for line in ours.read_text().splitlines()]
            expected = [line.split() for line in theirs.read_text().splitlines()]
            assert [r[:2] for r in rows] == [r[:2] for r in expected]
            np.testing.assert_allclose([float(r[2]) for r in rows], [float(r[2]) for r in expected], atol=1e-4)
    want, got = dumps["spconv-torch"], dumps["ort-triton"]
    assert want["instance_centers"].size > 1
    for key in ("candidates", "instance_centers", "thresholds", "pred_labels", "pred_masks"):
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
