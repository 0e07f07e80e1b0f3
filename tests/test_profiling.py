"""Profiler: report arithmetic, JSON schema, timer bookkeeping, device table, CLI (not timings)."""

from __future__ import annotations

import json

import pytest
import torch

import engine.stage_timer as stage_timer
from engine.budget import RTX3090_BUDGET_MS, RTX3090_TOTAL_MS, STAGES
from engine.synthetic import generate_scene, write_scannet_scene
from profiling.__main__ import main as profiling_main
from profiling.devices import DATASHEET, DeviceThroughput, datasheet_entry
from profiling.report import ProfileReport, StageStats

HALF_3090 = DeviceThroughput("test GPU", DATASHEET["RTX 3090"][0] / 2, 500.0, "datasheet")


def _report(runs):
    return ProfileReport(scene={"name": "s", "points": 10, "voxels": 9, "candidates": 2, "instances": 1},
                         backbone="native", kernels="torch", throughput=HALF_3090, runs=runs,
                         io_ms={"read": 1.0}, peak_memory_mb={"host": 100.0, "device": None})


def test_budget_matches_the_paper():
    # Table S3; its 357.5 ms total is 5.4 ms more than the four stages (time outside them).
    assert RTX3090_BUDGET_MS == {"backbone": 160.6, "encoding": 129.3, "decoding": 16.3, "post_processing": 45.9}
    assert RTX3090_TOTAL_MS == 357.5
    assert STAGES == ("backbone", "encoding", "decoding", "post_processing")


def test_stage_arithmetic():
    runs = [{"backbone": b, "encoding": 100.0, "decoding": 40.0, "post_processing": 10.0}
            for b in (300.0, 100.0, 200.0)]
    report = _report(runs)
    backbone = report.stages()["backbone"]
    assert (backbone.ms, backbone.min_ms, backbone.max_ms) == (200.0, 100.0, 300.0)
    assert backbone.ratio == pytest.approx(200.0 / 160.6)
    assert backbone.normalized_budget_ms == pytest.approx(2 * 160.6)  # half as fast: twice the time
    assert StageStats.verdict(backbone.ratio) == "over"
    assert StageStats.verdict(backbone.normalized_ratio) == "within"
    decoding = report.stages()["decoding"]
    assert StageStats.verdict(decoding.ratio) == "over" and StageStats.verdict(decoding.normalized_ratio) == "over"
    total = report.total()
    assert total.ms == pytest.approx(350.0) and total.budget_ms == RTX3090_TOTAL_MS


def test_json_schema():
    data = _report([{s: 1.0 for s in STAGES}]).to_json()
    assert set(data) == {"schema_version", "scene", "backbone", "kernels", "later_stages", "device", "repeats",
                         "stages", "total", "io_ms", "peak_memory_mb"}
    assert set(data["stages"]) == set(STAGES)
    for entry in [*data["stages"].values(), data["total"]]:
        assert {"ms", "budget_ms", "ratio", "verdict", "normalized_budget_ms", "normalized_ratio",
                "normalized_verdict", "min_ms", "max_ms"} <= set(entry)
    assert data["stages"]["encoding"]["ratio"] == pytest.approx(1.0 / 129.3)
    assert set(data["scene"]) == {"name", "points", "voxels", "candidates", "instances"}
    assert data["device"]["speed_vs_rtx3090"] == pytest.approx(0.5)
    json.dumps(data)  # serializable


def test_timer_accumulates_repeated_stages(monkeypatch):
    ticks = iter([0.0, 0.010, 0.020, 0.050, 0.100, 0.101])
    monkeypatch.setattr(stage_timer.time, "perf_counter", lambda: next(ticks))
    timer = stage_timer.StageTimer(torch.device("cpu"))
    with timer.stage("a"):
        pass
    with timer.stage("b"):
        pass
    with timer.stage("a"):
        pass
    assert timer.ms == pytest.approx({"a": 11.0, "b": 30.0})


@pytest.mark.parametrize("name,expected", [("NVIDIA H100 PCIe", "H100 PCIe"), ("NVIDIA H100 80GB HBM3", "H100"),
                                           ("NVIDIA GeForce RTX 3090", "RTX 3090"), ("NVIDIA H200", "H200"),
                                           ("Some Future GPU", None)])
def test_datasheet_matching(name, expected):
    assert datasheet_entry(name) == (DATASHEET[expected] if expected else None)


def test_cli_writes_json(tmp_path, capsys):
    scene = generate_scene(3000, seed=4)
    path = write_scannet_scene(scene, tmp_path, "scene0042_00")
    code = profiling_main([str(path), "--random-weights", "--device", "cpu", "--repeats", "2",
                           "--json", str(tmp_path / "p.json")])
    assert code == 0
    out = capsys.readouterr().out
    assert "post_processing" in out and "norm. budget" not in out and "no device-normalized verdict" in out
    data = json.loads((tmp_path / "p.json").read_text())
    assert data["device"]["type"] == "cpu" and data["stages"]["backbone"]["normalized_verdict"] is None
    assert data["repeats"] == 2 and data["scene"]["points"] == scene.num_points
    assert data["backbone"].startswith("native") and data["kernels"] == "torch"
    assert data["later_stages"].startswith("PyTorch") and f"kernels torch ({data['later_stages']})" in out
    assert data["peak_memory_mb"]["host"] > 0
    assert set(data["io_ms"]) == {"read", "superpoints", "write"}


def test_cli_bad_scene_is_one_line(tmp_path, capsys):
    assert profiling_main([str(tmp_path / "none.ply"), "--random-weights", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "none.ply" in err


@pytest.mark.parametrize("argv", [["--repeats", "0"], ["--backbone", "tensorrt"],
                                  ["--backbone", "native", "--engine-file", "x.onnx"], ["--kernels", "numba"]])
def test_cli_usage_errors(tmp_path, argv):
    with pytest.raises(SystemExit) as info:
        profiling_main([str(tmp_path / "x.ply"), "--random-weights", *argv])
    assert info.value.code == 2


def test_fit_exponent():
    from profiling.scaling import fit_exponent

    assert fit_exponent([1e4, 1e5, 1e6], [2.0, 20.0, 200.0]) == pytest.approx(1.0)
    assert fit_exponent([10, 20, 40], [1.0, 4.0, 16.0]) == pytest.approx(2.0)
    assert fit_exponent([10, 20], [5.0, 5.0]) == pytest.approx(0.0)


def test_cpu_report_has_no_normalized_verdict():
    cpu = DeviceThroughput("test CPU", 0.047, None, "measured", "cpu")
    report = ProfileReport(scene={}, backbone="native", kernels="torch", throughput=cpu,
                           runs=[{s: 1.0 for s in STAGES}])
    entry = report.to_json()["stages"]["backbone"]
    assert not report.normalized and entry["normalized_verdict"] is None and entry["verdict"] == "within"
    assert _report([{s: 1.0 for s in STAGES}]).normalized  # a GPU keeps it


def test_fit_warning():
    from profiling.scaling import fit_warning

    assert fit_warning([1e4, 1e5, 1e6], [20.0, 200.0, 2000.0]) is None
    assert "span only 2.0x" in fit_warning([1e4, 2e4], [20.0, 40.0])
    assert "timer noise" in fit_warning([1e4, 1e5], [0.5, 5.0])
    assert "not a power law" in fit_warning([1e4, 3e4, 1e5, 3e5], [20.0, 300.0, 40.0, 900.0])


def test_scaling_help_describes_every_option(capsys):
    from profiling.scaling import main as scaling_main

    with pytest.raises(SystemExit):
        scaling_main(["--help"])
    text = capsys.readouterr().out
    for option, words in (("--sizes", "scene sizes"), ("--instances", "instance counts"), ("--repeats", "median"),
                          ("--plot", "draw")):
        assert option in text and words in text, option
