"""``--kernels triton`` against ``--kernels torch`` on whole scenes, in Triton's interpreter.

Same model, same scene: the backbone is shared and mining is exact (test_mine.py), so candidates
and instance centres must be identical. Decoding and post-processing use recomputed masks that differ from the
reference's by float32 rounding (see test_assign.py): thresholds may move by one Otsu level
(0.01); on these seeded scenes none does, and the masks and labels come out identical, scores
within 1e-5.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine.pipeline import infer_scene
from engine.stage_timer import StageTimer
from engine.synthetic import generate_scene
from tests.sessions import cpu_session
from tests.tolerances import SCORES


def _infer(session, scene):
    timer = StageTimer(session.device)
    result = infer_scene(session, scene.vertices_m, scene.colors, scene.segments, timer)
    assert set(timer.ms) == {"backbone", "encoding", "decoding", "post_processing"}
    return result


@pytest.mark.parametrize("num_points,seed", [(1500, 1), (1000, 3)])
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


def test_cli_triton_kernels_on_cpu(tmp_path, capsys):
    """``engine.run --kernels triton --device cpu`` runs the kernels in the interpreter and writes
    the same submission files as ``--kernels torch``."""
    from engine import run
    from engine.synthetic import write_scannet_scene

    ply = write_scannet_scene(generate_scene(1500, seed=1), tmp_path / "scene")
    outputs = {}
    for kernels in ("torch", "triton"):
        out = tmp_path / kernels
        code = run.main([str(ply), "--random-weights", "--device", "cpu", "--kernels", kernels, "--out", str(out)])
        assert code == 0, capsys.readouterr().err
        outputs[kernels] = out
    assert "later stages on Triton interpreter" in capsys.readouterr().out
    want = sorted(p.relative_to(outputs["torch"]) for p in outputs["torch"].rglob("*.txt"))
    got = sorted(p.relative_to(outputs["triton"]) for p in outputs["triton"].rglob("*.txt"))
    assert got == want and len(want) > 1
    for name in want:
        assert (outputs["triton"] / name).read_text() == (outputs["torch"] / name).read_text(), name


def test_exported_backbone_with_triton_kernels_equals_spconv_with_torch_kernels(tmp_path, capsys):
    """Any --backbone goes with any --kernels: the ONNX graph with the Triton kernels (interpreter)
    gives the same candidates, instances, thresholds, labels and masks as spconv with torch."""
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
    want, got = dumps["spconv-torch"], dumps["ort-triton"]
    assert want["instance_centers"].size > 1
    for key in ("candidates", "instance_centers", "thresholds", "pred_labels", "pred_masks"):
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
