"""``python -m engine.run`` as a new user runs it: other scanners' conventions (y up, georeferenced
offsets), random weights said everywhere, outputs checked before inference and written all or none,
scene-name edge cases, Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from plyfile import PlyData, PlyElement

from engine import run
from engine.synthetic import generate_scene

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def room():
    return generate_scene(2500, seed=5)


def _run(argv, capsys):
    code = run.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _write_mesh(path: Path, xyz: np.ndarray, rgb: np.ndarray, faces: np.ndarray) -> Path:
    vertex = np.empty(len(xyz), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"),
                                       ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    vertex["x"], vertex["y"], vertex["z"] = xyz.T
    vertex["red"], vertex["green"], vertex["blue"] = rgb.T
    face = np.empty(len(faces), dtype=[("vertex_indices", "i4", (3,))])
    face["vertex_indices"] = faces
    PlyData([PlyElement.describe(vertex, "vertex"),
             PlyElement.describe(face, "face", len_types={"vertex_indices": "u1"})]).write(str(path))
    return path


def _same_instances(a: Path, b: Path) -> None:
    a, b = np.load(a), np.load(b)
    for key in ("candidates", "instance_centers", "pred_masks", "pred_labels"):
        assert np.array_equal(a[key], b[key]), key
    np.testing.assert_allclose(a["pred_scores"], b["pred_scores"], atol=1e-6)


def test_y_up_scan_gives_the_instances_of_the_z_up_scan(room, tmp_path, capsys):
    xyz = room.vertices_m
    z_up = _write_mesh(tmp_path / "z_up.ply", xyz, room.colors, room.faces)
    y_up = _write_mesh(tmp_path / "y_up.ply", np.column_stack((xyz[:, 0], xyz[:, 2], -xyz[:, 1])),
                       room.colors, room.faces)  # a phone's frame: y up
    for path, axis in ((z_up, "z"), (y_up, "y")):
        code, stdout, err = _run([path, "--random-weights", "--up-axis", axis, "--out", tmp_path / "out",
                                  "--dump", tmp_path / f"{axis}.npz"], capsys)
        assert code == 0 and "superpoints mesh segmentator" in stdout, err
    _same_instances(tmp_path / "z.npz", tmp_path / "y.npz")


def test_offset_of_1e7_gives_the_instances_at_the_origin(room, tmp_path, capsys):
    points = np.column_stack((room.vertices_m.astype(np.float64), room.colors))
    np.save(tmp_path / "origin.npy", points)
    points[:, :3] += 1e7  # a georeferenced scan, float64
    np.save(tmp_path / "far.npy", points)
    for name in ("origin", "far"):
        code, _, err = _run([tmp_path / f"{name}.npy", "--random-weights", "--out", tmp_path / "out",
                             "--dump", tmp_path / f"{name}.d.npz"], capsys)
        assert code == 0 and "warning" not in err, err
    _same_instances(tmp_path / "origin.d.npz", tmp_path / "far.d.npz")


def test_random_weights_are_said_everywhere(room, tmp_path, capsys, monkeypatch):
    import engine.outputs

    captions = []
    render = engine.outputs.render_instances_png

    def spy(*args, **kwargs):
        captions.append(kwargs.get("caption"))
        return render(*args, **kwargs)

    monkeypatch.setattr(engine.outputs, "render_instances_png", spy)
    path = _write_mesh(tmp_path / "r.ply", room.vertices_m, room.colors, room.faces)
    code, stdout, _ = _run([path, "--random-weights", "--seed", "4", "--out", tmp_path / "o"], capsys)
    assert code == 0 and "RANDOM WEIGHTS (seed 4)" in stdout and "meaningless" in stdout
    assert captions and captions[0].random_weights and "RANDOM WEIGHTS (seed 4)" in captions[0].weights
    comments = PlyData.read(str(tmp_path / "o" / "r_instances.ply")).comments
    assert any("RANDOM WEIGHTS (seed 4)" in c for c in comments), comments


def test_no_colour_warns_once_and_runs(room, tmp_path, capsys):
    np.save(tmp_path / "grey.npy", room.vertices_m)
    code, _, err = _run([tmp_path / "grey.npy", "--random-weights", "--out", tmp_path / "o"], capsys)
    assert code == 0 and err.count("\n") == 1 and err.startswith("warning: ") and "no colour" in err


# ---------------------------------------------------------------------------------------------
# Checked before inference


@pytest.fixture()
def no_inference(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("inference ran")

    monkeypatch.setattr("engine.pipeline.infer_scene", refuse)
    monkeypatch.setattr("engine.session.build_session", refuse)
    monkeypatch.setattr(run, "build_session", refuse)


def test_out_naming_a_file_fails_before_inference(room, tmp_path, capsys, no_inference):
    np.save(tmp_path / "s.npy", room.vertices_m)
    (tmp_path / "taken").write_text("x")
    code, _, err = _run([tmp_path / "s.npy", "--random-weights", "--out", tmp_path / "taken"], capsys)
    assert code == 1 and err.count("\n") == 1 and "is a file, not a folder" in err


def test_unwritable_out_fails_before_inference(room, tmp_path, capsys, no_inference, monkeypatch):
    np.save(tmp_path / "s.npy", room.vertices_m)

    def read_only(*args, **kwargs):  # root ignores chmod, so the OS's refusal is simulated
        raise PermissionError(30, "Read-only file system")

    monkeypatch.setattr(run.tempfile, "NamedTemporaryFile", read_only)
    code, _, err = _run([tmp_path / "s.npy", "--random-weights", "--out", tmp_path / "o"], capsys)
    assert code == 1 and err.count("\n") == 1 and "cannot write there" in err and "Read-only" in err


def test_dump_naming_a_folder_fails_before_inference(room, tmp_path, capsys, no_inference):
    np.save(tmp_path / "s.npy", room.vertices_m)
    (tmp_path / "d.npz").mkdir()
    code, _, err = _run([tmp_path / "s.npy", "--random-weights", "--out", tmp_path / "o", "--dump",
                         tmp_path / "d.npz"], capsys)
    assert code == 1 and "is a folder" in err


@pytest.mark.parametrize("names, needle", [
    ((".ply",), "no scene name"),
    (("a/s.ply", "b/s.ply"), "both give scene name 's'"),
    (("a/s.ply", "a/s.ply"), "is given twice"),
    (("a/s.ply", "a/s.npy"), "both give scene name 's'"),
])
def test_scene_names_refused_up_front(tmp_path, capsys, no_inference, names, needle):
    paths = []
    for name in names:
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"")
        paths.append(path)
    code, _, err = _run([*paths, "--random-weights", "--out", tmp_path / "o"], capsys)
    assert code == 1 and err.count("\n") == 1 and needle in err, err
    assert not (tmp_path / "o").exists()


def test_hidden_and_spaced_names_are_sanitized(room, tmp_path, capsys):
    np.save(tmp_path / ".hidden.npy", np.column_stack((room.vertices_m, room.colors)))
    np.save(tmp_path / "my room.npy", np.column_stack((room.vertices_m, room.colors)))
    code, _, err = _run([tmp_path / ".hidden.npy", tmp_path / "my room.npy", "--random-weights", "--out",
                         tmp_path / "o"], capsys)
    assert code == 0 and err.count("warning: ") == 2
    assert (tmp_path / "o" / "hidden.txt").is_file() and (tmp_path / "o" / "my_room.txt").is_file()


# ---------------------------------------------------------------------------------------------
# All or none, and Ctrl-C


def test_failing_dump_leaves_no_outputs(room, tmp_path, capsys, monkeypatch):
    np.save(tmp_path / "s.npy", np.column_stack((room.vertices_m, room.colors)))

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(run, "_write_dump", full_disk)
    out = tmp_path / "o"
    code, _, err = _run([tmp_path / "s.npy", "--random-weights", "--out", out, "--dump", tmp_path / "d.npz"], capsys)
    assert code == 1 and "No space left" in err and err.count("\n") == 1
    assert not any(out.iterdir()) and not (tmp_path / "d.npz").exists()


def test_failing_outputs_take_the_dump_with_them(room, tmp_path, capsys, monkeypatch):
    np.save(tmp_path / "s.npy", np.column_stack((room.vertices_m, room.colors)))

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("engine.outputs.render_instances_png", full_disk)
    out = tmp_path / "o"
    code, _, err = _run([tmp_path / "s.npy", "--random-weights", "--out", out, "--dump", tmp_path / "d.npz"], capsys)
    assert code == 1 and err.count("\n") == 1
    assert not any(out.iterdir()) and not (tmp_path / "d.npz").exists()


def test_ctrl_c_is_one_line_exit_130_nothing_partial(room, tmp_path, capsys, monkeypatch):
    np.save(tmp_path / "s.npy", np.column_stack((room.vertices_m, room.colors)))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("engine.outputs.render_instances_png", interrupted)  # mid-way through writing
    out = tmp_path / "o"
    code, _, err = _run([tmp_path / "s.npy", "--random-weights", "--out", out, "--dump", tmp_path / "d.npz"], capsys)
    assert code == 130 and err.count("\n") == 1 and "interrupted" in err
    assert not any(out.iterdir()) and not (tmp_path / "d.npz").exists()


def test_sigint_to_the_process(room, tmp_path):
    np.save(tmp_path / "s.npy", np.column_stack((room.vertices_m, room.colors)))
    process = subprocess.Popen([sys.executable, "-m", "engine.run", str(tmp_path / "s.npy"), "--random-weights",
                                "--out", str(tmp_path / "o")], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    time.sleep(3.0)  # inside the run: importing torch, building the model, or inferring
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    if process.returncode == 0:
        pytest.skip("the run finished before the signal")
    assert process.returncode == 130 and "Traceback" not in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
