"""``python -m engine.batch`` on a local Ray instance (2 CPUs): outputs (``--html`` included)
byte-identical to ``engine.run``'s, bad scenes recorded while the rest complete, resume, a killed worker, ``--gt``,
and joining a cluster started with ``ray start --head`` on loopback."""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from plyfile import PlyData, PlyElement

from engine import run
from engine.batch import cli, stages
from engine.batch.inputs import expand_inputs
from engine.batch.markers import MARKER_DIR
from engine.errors import UserError
from engine.synthetic import generate_scene, write_scannet_scene

ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]
GOOD = [f"scene000{i}_00" for i in range(4)]
POINTS = 2000


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """``scans/`` with 4 good scenes; ``bad/`` with a corrupt PLY and one with a NaN coordinate,
    named by ``bad.txt`` (a list file)."""
    root = tmp_path_factory.mktemp("batch")
    for seed, name in enumerate(GOOD):
        write_scannet_scene(generate_scene(POINTS, seed=seed), root / "scans" / name, name)
    (root / "bad").mkdir()
    (root / "bad" / "corrupt.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 10\n")
    vertex = np.zeros(5, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    vertex["y"][2] = np.nan
    PlyData([PlyElement.describe(vertex, "vertex")]).write(str(root / "bad" / "nan.ply"))
    (root / "bad.txt").write_text("# two bad scans\nbad/corrupt.ply\n\nbad/nan.ply\n")
    from engine.prepare_gt import main as prepare_gt

    assert prepare_gt([str(root / "scans"), "--out", str(root / "gt")]) == 0
    return root


def _batch(argv: list, capsys) -> tuple[int, str, dict]:
    code = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    return code, err, json.loads((Path(argv[argv.index("--out") + 1]) / "report.json").read_text())


@pytest.fixture(scope="module")
def first_run(data, tmp_path_factory) -> tuple[int, dict, Path]:
    """One batch run over all six scenes with --gt and two workers: (exit status, report, DIR)."""
    out = tmp_path_factory.mktemp("out") / "batch"
    code = cli.main([str(data / "scans"), str(data / "bad.txt"), "--out", str(out), "--random-weights",
                     "--workers", "2", "--gt", str(data / "gt"), "--quiet", "--html"])
    return code, json.loads((out / "report.json").read_text()), out


def _tree(folder: Path, names: list[str]) -> dict[str, bytes]:
    files = [p for p in folder.rglob("*") if p.is_file() and any(p.name.startswith(n) for n in names)
             and p.parent.name != MARKER_DIR]
    return {str(p.relative_to(folder)): p.read_bytes() for p in files}


def test_bad_scenes_recorded_others_identical_to_engine_run(first_run, data, tmp_path, capsys):
    code, report, out = first_run
    assert code == 1
    status = {r["scene"]: r["status"] for r in report["scenes"]}
    assert status == {**dict.fromkeys(GOOD, "done"), "corrupt": "failed", "nan": "failed"}
    errors = {r["scene"]: r["error"] for r in report["scenes"] if r["error"]}
    assert "corrupt.ply" in errors["corrupt"] and "NaN" in errors["nan"] and "\n" not in "".join(errors.values())
    assert report["totals"]["done"] == 4 and report["totals"]["failed"] == 2
    done = [r for r in report["scenes"] if r["status"] == "done"]
    assert all(r["points"] > 0 and r["worker"] and r["stage_ms"]["backbone"] > 0 and r["finished_s"] > 0 for r in done)
    assert report["totals"]["steady_scenes_per_s"] > 0
    assert all(r["bytes_read_to_infer"] > 0 and r["bytes_infer_to_write"] > 0 for r in done)
    assert not list(out.glob("corrupt*")) and not list(out.glob("nan*"))

    reference = tmp_path / "run"
    plys = [data / "scans" / name / f"{name}_vh_clean_2.ply" for name in GOOD]
    assert run.main([*map(str, plys), "--random-weights", "--out", str(reference), "--html"]) == 0
    capsys.readouterr()
    expected = _tree(reference, GOOD)
    assert len(expected) > 4 * len(GOOD)  # txt, ply, png, html and the mask files
    assert _tree(out, GOOD) == expected


def test_gt_ap_equals_engine_eval(first_run, data, tmp_path, capsys):
    from engine.eval import main as eval_main

    _, report, out = first_run
    assert eval_main(["--pred", str(out), "--gt", str(data / "gt"), "--json", str(tmp_path / "ap.json")]) == 0
    capsys.readouterr()
    assert report["ap"] == json.loads((tmp_path / "ap.json").read_text())


def test_second_run_skips_complete_scenes(first_run, data, capsys):
    _, _, out = first_run
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "report.json"}
    code, err, report = _batch([data / "scans", data / "bad.txt", "--out", out, "--random-weights", "--quiet"],
                               capsys)
    assert code == 1  # the two bad scenes are tried again and fail again
    status = {r["scene"]: r["status"] for r in report["scenes"]}
    assert status == {**dict.fromkeys(GOOD, "skipped"), "corrupt": "failed", "nan": "failed"}
    assert {p: p.stat().st_mtime_ns for p in before} == before
    errors = [r["error"] for r in report["scenes"] if r["error"]]
    assert err.splitlines() == [f"error: {error}" for error in errors]


def _killer(flag: Path, victim: str) -> type:
    """An InferActor whose process kills itself (SIGKILL) the first time it starts on ``victim``."""

    class KillOnce(stages.InferActor):
        def _infer(self, raw: bytes) -> bytes:
            if pickle.loads(raw).name == victim and not flag.exists():
                flag.write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)
            return super()._infer(raw)

    return KillOnce


def test_killed_worker_is_replaced_and_its_scene_retried(data, tmp_path, capsys, monkeypatch):
    flag = tmp_path / "killed"
    monkeypatch.setattr(stages, "InferActor", _killer(flag, GOOD[1]))
    plys = [data / "scans" / name / f"{name}_vh_clean_2.ply" for name in GOOD[:2]]
    code, err, report = _batch([*plys, "--out", tmp_path / "out", "--random-weights", "--quiet"], capsys)
    assert code == 0, err
    assert flag.exists()
    victim = next(r for r in report["scenes"] if r["scene"] == GOOD[1])
    assert victim["status"] == "done" and not victim["worker"].endswith(f":{flag.read_text()}")
    assert (tmp_path / "out" / f"{GOOD[1]}.txt").exists()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_joins_a_running_cluster(data, tmp_path):
    port = _free_port()
    ray_cli = Path(sys.executable).with_name("ray")
    head = subprocess.Popen([str(ray_cli), "start", "--head", "--block", f"--port={port}",
                             "--node-ip-address=127.0.0.1", "--num-cpus=2", "--include-dashboard=false",
                             "--disable-usage-stats"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        address = f"127.0.0.1:{port}"
        result = None
        for _ in range(60):  # the head takes a few seconds to accept drivers
            result = subprocess.run([sys.executable, "-m", "engine.batch", str(data / "scans" / GOOD[0]),
                                     "--out", str(tmp_path / "out"), "--random-weights", "--ray-address", address,
                                     "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=300)
            if "cannot join" not in result.stderr:
                break
            time.sleep(2)
        assert result.returncode == 0, result.stderr
        report = json.loads((tmp_path / "out" / "report.json").read_text())
        assert report["ray"]["address"] == address and report["totals"]["done"] == 1
    finally:
        head.send_signal(signal.SIGTERM)
        head.wait(timeout=60)
        current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"  # the head's, left behind
        if current.is_file() and current.read_text().strip().endswith(f":{port}"):
            current.unlink()


def test_inputs_folders_list_files_and_collisions(data, tmp_path):
    jobs = expand_inputs([data / "scans", data / "bad.txt", data / "scans" / GOOD[0]])
    assert [job.name for job in jobs] == [*GOOD, "corrupt", "nan"]
    (tmp_path / GOOD[0]).mkdir()
    other = tmp_path / GOOD[0] / f"{GOOD[0]}_vh_clean_2.ply"
    other.write_bytes(b"")
    with pytest.raises(UserError, match="two inputs have the scene name"):
        expand_inputs([data / "scans", other])
    with pytest.raises(UserError, match="not found"):
        expand_inputs([tmp_path / "nowhere"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no scenes"):
        expand_inputs([tmp_path / "empty"])


@pytest.mark.parametrize("argv,needle", [(["--device", "cuda"], "--gpus-per-worker"),
                                         (["--device", "cpu", "--gpus-per-worker", "0.5"], "--device cpu"),
                                         (["--workers", "0"], "--workers")])
def test_usage_errors(data, tmp_path, capsys, argv, needle):
    with pytest.raises(SystemExit) as info:
        cli.main([str(data / "scans"), "--out", str(tmp_path), "--random-weights", *argv])
    assert info.value.code == 2 and needle in capsys.readouterr().err


def test_help_imports_neither_torch_nor_ray():
    code = "import sys, runpy; sys.argv=['engine.batch','--help']\n" \
           "try:\n runpy.run_module('engine.batch', run_name='__main__')\nexcept SystemExit: pass\n" \
           "assert 'torch' not in sys.modules and 'ray' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--ray-address" in result.stdout


def test_more_gpus_than_the_cluster_has_is_one_line(data, tmp_path, capsys):
    code = cli.main([str(data / "scans" / GOOD[0]), "--out", str(tmp_path), "--random-weights", "--device", "cuda",
                     "--gpus-per-worker", "64", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "error: --gpus-per-worker 64: the Ray cluster has" in err
