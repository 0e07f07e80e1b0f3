"""``python -m engine.run`` on synthetic scenes: outputs, dump, and every bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from plyfile import PlyData

from checks.tolerances import F32_LAYERS
from engine import run
from engine.synthetic import generate_scene, write_scannet_scene

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scene_path(tmp_path_factory) -> Path:
    return write_scannet_scene(generate_scene(4000, seed=2), tmp_path_factory.mktemp("scene"), "scene0007_00")


def _run(argv, capsys):
    code = run.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_end_to_end_outputs_and_dump(scene_path, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = _run([scene_path, "--random-weights", "--seed", "1", "--out", out,
                              "--dump", tmp_path / "d.npz"], capsys)
    assert code == 0, err
    for stage in ("backbone", "encoding", "decoding", "post_processing", "160.6", "129.3", "16.3", "45.9"):
        assert stage in stdout
    assert "backbone native" in stdout and "segs.json" in stdout
    dump = np.load(tmp_path / "d.npz")
    n = PlyData.read(str(scene_path))["vertex"].count
    assert dump["semantic_scores"].shape == (n, 20) and dump["semantic_scores"].dtype == np.float32
    assert dump["offsets"].shape == (n, 3) and dump["heatmap"].shape == (n,)
    objects = dump["semantic_scores"].argmax(1) >= 2
    assert dump["heatmap"][~objects].max(initial=0) == 0
    assert dump["heatmap"][objects].sum() == pytest.approx(1.0, rel=1e-4)
    assert objects[dump["candidates"]].all() and len(set(dump["candidates"].tolist())) == dump["candidates"].size
    assert dump["thresholds"].shape == dump["instance_centers"].shape
    masks = dump["pred_masks"]
    assert masks.dtype == bool and masks.shape[1] == n and masks.sum(0).max(initial=0) <= 1  # disjoint
    assert dump["pred_labels"].shape == dump["pred_scores"].shape == (masks.shape[0],)
    assert str(dump["backbone"]).startswith("native")
    assert set(dump["pred_labels"].tolist()) <= {3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39}
    lines = (out / "scene0007_00.txt").read_text().splitlines()
    assert len(lines) == masks.shape[0]
    for i, line in enumerate(lines):
        rel, label, score = line.split()
        assert rel == f"predicted_masks/scene0007_00_{i:03d}.txt"
        assert int(label) == dump["pred_labels"][i] and float(score) == pytest.approx(dump["pred_scores"][i], abs=1e-4)
        assert np.array_equal(np.loadtxt(out / rel, dtype=int), masks[i].astype(int))
    assert (out / "scene0007_00_instances.ply").exists() and (out / "scene0007_00.png").stat().st_size > 0


def test_same_result_every_run(scene_path, tmp_path, capsys):
    for k in range(2):
        assert _run([scene_path, "--random-weights", "--out", tmp_path / f"o{k}", "--dump", tmp_path / f"{k}.npz"],
                    capsys)[0] == 0
    a, b = np.load(tmp_path / "0.npz"), np.load(tmp_path / "1.npz")
    for key in a.files:
        assert np.array_equal(a[key], b[key]), key


def test_pictures_flags(scene_path, tmp_path, capsys):
    """--html adds the viewer beside the PNG; --no-picture writes neither; the two exclude each other."""
    code, stdout, err = _run([scene_path, "--random-weights", "--out", tmp_path / "html", "--html"], capsys)
    assert code == 0, err
    assert {p.suffix for p in (tmp_path / "html").iterdir()} == {".txt", ".ply", ".png", ".html", ""}
    assert "scene0007_00.png, scene0007_00.html" in stdout
    assert "RANDOM WEIGHTS (seed 0)" in (tmp_path / "html" / "scene0007_00.html").read_text()
    code, stdout, err = _run([scene_path, "--random-weights", "--out", tmp_path / "none", "--no-picture"], capsys)
    assert code == 0, err
    assert {p.suffix for p in (tmp_path / "none").iterdir()} == {".txt", ".ply", ""}
    with pytest.raises(SystemExit) as exit_:
        run.main([str(scene_path), "--random-weights", "--html", "--no-picture"])
    assert exit_.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_no_superpoints_flag(scene_path, tmp_path, capsys):
    code, stdout, _ = _run([scene_path, "--random-weights", "--no-superpoints", "--out", tmp_path], capsys)
    assert code == 0 and "superpoints off" in stdout


def test_several_scenes_one_bad(scene_path, tmp_path, capsys):
    bad = tmp_path / "broken.ply"
    bad.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 10\n")
    out = tmp_path / "out"
    code, _, err = _run([bad, scene_path, "--random-weights", "--out", out, "--dump", tmp_path / "d.npz"], capsys)
    assert code == 1
    assert err.count("\n") == 1 and "broken.ply" in err
    assert (out / "scene0007_00.txt").exists() and (tmp_path / "d.scene0007_00.npz").exists()
    assert not list(out.glob("broken*"))


def _bad_ply(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.ply"
    if kind == "missing":
        return path
    if kind == "garbage":
        path.write_bytes(os.urandom(300))
        return path
    n = 0 if kind == "empty" else 5
    xyz = np.zeros((n, 3), np.float32)
    if kind == "nan":
        xyz[2, 1] = np.nan
    if kind == "inf":
        xyz[0, 0] = np.inf
    vertex = np.zeros(n, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    for i, axis in enumerate("xyz"):
        vertex[axis] = xyz[:, i]
    from plyfile import PlyElement
    PlyData([PlyElement.describe(vertex, "vertex")]).write(str(path))
    return path


@pytest.mark.parametrize("kind,needle", [("missing", "not found"), ("garbage", ""), ("empty", "zero vertices"),
                                         ("nan", "NaN"), ("inf", "infinit")])
def test_bad_scene_one_line_no_outputs(tmp_path, capsys, kind, needle):
    path = _bad_ply(tmp_path, kind)
    out = tmp_path / "out"
    code, stdout, err = _run([path, "--random-weights", "--out", out, "--dump", tmp_path / "d.npz"], capsys)
    assert code == 1
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert path.name in err and needle.lower() in err.lower()
    assert not (tmp_path / "d.npz").exists()
    assert not out.exists() or not any(out.iterdir())


def test_wrong_checkpoint_names_tensors(tmp_path, scene_path, capsys):
    ckpt = tmp_path / "other.pth"
    torch.save({"model": {"encoder.weight": torch.zeros(3)}}, ckpt)
    code, _, err = _run([scene_path, "--checkpoint", ckpt, "--out", tmp_path / "o"], capsys)
    assert code == 1 and err.count("\n") == 1
    assert "527 missing" in err and "encoder.weight" in err and "input_conv.0.weight" in err


def test_no_weights_says_where_the_checkpoint_comes_from(scene_path, capsys, monkeypatch):
    monkeypatch.delenv("DKNET_CHECKPOINT", raising=False)
    code, _, err = _run([scene_path], capsys)
    assert code == 1 and "--checkpoint" in err and "DKNET_CHECKPOINT" in err and "W1zheng/DKNet" in err


def test_checkpoint_from_environment(tmp_path, scene_path, capsys, monkeypatch, random_model):
    ckpt = tmp_path / "c.pth"
    torch.save({"model": {f"module.{k}": v for k, v in random_model.state_dict().items()}}, ckpt)
    monkeypatch.setenv("DKNET_CHECKPOINT", str(ckpt))
    assert _run([scene_path, "--out", tmp_path / "o"], capsys)[0] == 0


@pytest.mark.parametrize("error", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
    MemoryError(),
    RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                 "you tried to allocate 80000000000000 bytes. Error code 12 (Cannot allocate memory)")],
    ids=["cuda", "python", "cpu-allocator"])
def test_out_of_memory_is_one_line(scene_path, tmp_path, capsys, monkeypatch, error):
    def exhausted(*_args, **_kwargs):
        raise error

    monkeypatch.setattr("engine.pipeline.infer_scene", exhausted)
    out = tmp_path / "o"
    code, _, err = _run([scene_path, "--random-weights", "--out", out], capsys)
    assert code == 1 and "out of memory" in err and err.count("\n") == 1
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("argv,needle", [(["--engine-file", "x.onnx"], "--engine-file"),
                                         (["--backbone", "onnxruntime"], "needs --engine-file"),
                                         (["--random-weights", "--checkpoint", "c.pth"], "not both"),
                                         (["--backbone", "spconv", "--precision", "fp16"], "--precision"),
                                         (["--kernels", "cuda"], "--kernels")])
def test_usage_errors(scene_path, capsys, argv, needle):
    with pytest.raises(SystemExit) as info:
        run.main([str(scene_path), *argv])
    assert info.value.code == 2 and needle in capsys.readouterr().err


def test_cuda_request_without_gpu(scene_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    code, _, err = _run([scene_path, "--random-weights", "--device", "cuda"], capsys)
    assert code == 1 and "no CUDA device" in err


def test_help_does_not_import_torch():
    code = "import sys, runpy; sys.argv=['engine.run','--help']\n" \
           "try:\n runpy.run_module('engine.run', run_name='__main__')\nexcept SystemExit: pass\n" \
           "assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--random-weights" in result.stdout


def test_subprocess_bad_input_has_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "engine.run", str(tmp_path / "nope.ply"), "--random-weights"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "nope.ply" in result.stderr


def test_running_ap_equals_engine_eval_on_the_written_outputs(scene_path, tmp_path, capsys):
    from engine.eval import main as eval_main
    from engine.prepare_gt import main as prepare_main

    assert prepare_main([str(scene_path.parent), "--out", str(tmp_path / "gt")]) == 0
    capsys.readouterr()
    out = tmp_path / "out"
    code, stdout, err = _run([scene_path, "--random-weights", "--out", out, "--gt", tmp_path / "gt"], capsys)
    assert code == 0, err
    assert "running AP over 1 scene(s)" in stdout and "ScanNet instance AP" in stdout
    running = stdout.split("running AP over 1 scene(s): ")[1].splitlines()[0]
    assert eval_main(["--pred", str(out), "--gt", str(tmp_path / "gt"), "--json", str(tmp_path / "ap.json")]) == 0
    import json

    ap = json.loads((tmp_path / "ap.json").read_text())
    fmt = lambda v: "nan" if v is None else f"{v:.3f}"  # noqa: E731
    assert running == f"mAP {fmt(ap['mAP'])}, AP50 {fmt(ap['AP50'])}, AP25 {fmt(ap['AP25'])}"


def test_running_ap_with_missing_or_wrong_ground_truth(scene_path, tmp_path, capsys):
    gt = tmp_path / "gt"
    gt.mkdir()
    code, _, err = _run([scene_path, "--random-weights", "--out", tmp_path / "o", "--gt", gt], capsys)
    assert code == 1 and "no ground truth for scene scene0007_00" in err and err.count("\n") == 1
    assert (tmp_path / "o" / "scene0007_00.txt").exists()  # outputs are complete, only not evaluated
    (gt / "scene0007_00.txt").write_text("0\n" * 7)
    code, _, err = _run([scene_path, "--random-weights", "--out", tmp_path / "o", "--gt", gt], capsys)
    assert code == 1 and "scene0007_00.txt" in err and err.count("\n") == 1


def test_onnxruntime_backbone_gives_the_spconv_results(scene_path, tmp_path, capsys):
    from export.onnx import main as export_main

    onnx_file = tmp_path / "backbone.onnx"
    assert export_main(["--random-weights", "--seed", "3", "--out", str(onnx_file)]) == 0
    dumps = {}
    for backend in ("spconv", "onnxruntime"):
        extra = ["--engine-file", onnx_file] if backend == "onnxruntime" else []
        code, stdout, err = _run([scene_path, "--random-weights", "--seed", "3", "--out", tmp_path / backend,
                                  "--dump", tmp_path / f"{backend}.npz", "--backbone", backend, *extra], capsys)
        assert code == 0, err
        dumps[backend] = np.load(tmp_path / f"{backend}.npz")
    assert "onnxruntime CPUExecutionProvider" in stdout
    ref, ort = dumps["spconv"], dumps["onnxruntime"]
    assert str(ref["backbone"]).startswith("spconv") and str(ort["backbone"]).startswith("onnxruntime")
    np.testing.assert_allclose(ort["semantic_scores"], ref["semantic_scores"], **F32_LAYERS)
    np.testing.assert_allclose(ort["offsets"], ref["offsets"], **F32_LAYERS)
    for key in ("candidates", "instance_centers", "thresholds", "pred_masks", "pred_labels"):
        assert np.array_equal(ort[key], ref[key]), key


def test_onnxruntime_backbone_with_a_missing_engine_file(scene_path, tmp_path, capsys):
    code, _, err = _run([scene_path, "--random-weights", "--backbone", "onnxruntime", "--engine-file",
                         tmp_path / "none.onnx", "--out", tmp_path / "o"], capsys)
    assert code == 1 and err.count("\n") == 1 and "none.onnx" in err


def test_exported_backbone_failure_is_one_line(scene_path, tmp_path, capsys, monkeypatch):
    from export.onnx import main as export_main
    from export.runtime import BackendError, OnnxRuntimeBackbone

    onnx_file = tmp_path / "b.onnx"
    assert export_main(["--random-weights", "--out", str(onnx_file)]) == 0

    def refuse(self, *args, **kwargs):
        raise BackendError("input voxels_1 has 4000 rows, above the profile's 1000")

    monkeypatch.setattr(OnnxRuntimeBackbone, "__call__", refuse)
    out = tmp_path / "o"
    code, _, err = _run([scene_path, "--random-weights", "--backbone", "onnxruntime", "--engine-file", onnx_file,
                         "--out", out], capsys)
    assert code == 1 and err.count("\n") == 1 and "above the profile" in err
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("argv,needle", [(["--precision", "fp16", "--device", "cpu"], "needs the Triton form"),
                                         (["--backbone", "tensorrt", "--engine-file", "x.plan"], "")])
def test_unavailable_backbones_are_one_line_errors(scene_path, tmp_path, capsys, argv, needle):
    """Every --backbone x --kernels pair parses; what this machine cannot run (reduced precision
    without CUDA, TensorRT without a GPU or the package) is one line on stderr, exit status 1."""
    code, _, err = _run([scene_path, "--random-weights", "--out", tmp_path / "o", *argv], capsys)
    assert code == 1 and err.count("\n") == 1 and err.startswith("error: ") and needle in err


def test_default_backbone_runs_without_spconv(scene_path, tmp_path):
    """A plain ``pip install -e .`` has no spconv: the default (native) backbone never imports it."""
    code = ("import sys; sys.modules['spconv'] = None; from engine import run; "
            f"sys.exit(run.main([{str(scene_path)!r}, '--random-weights', '--out', {str(tmp_path / 'o')!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "backbone native" in done.stdout and (tmp_path / "o" / "scene0007_00.txt").is_file()
    blocked = subprocess.run([sys.executable, "-c", code.replace("'--random-weights'", "'--random-weights', "
                                                                  "'--backbone', 'spconv'")],
                             capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert blocked.returncode == 1 and blocked.stderr.count("\n") == 1 and "spconv" in blocked.stderr
