"""``python -m profiling.gpu_check``: its CPU form (``--interpret``) end to end, the refusal without
CUDA, per-step time limits, and the report built from step results."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from checks import KERNELS
from profiling.gpu_check.__main__ import Step, run_steps
from profiling.gpu_check.report import build_report, render_markdown


def _command(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "profiling.gpu_check", *args], capture_output=True, text=True,
                          env=env, timeout=900)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible")
def test_without_cuda_it_says_so_in_one_line(tmp_path):
    done = _command("--out", str(tmp_path / "out"))
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "no CUDA device" in done.stderr and "--interpret" in done.stderr
    assert not (tmp_path / "out").exists()


def test_interpret_runs_every_step_and_writes_both_reports(tmp_path):
    out = tmp_path / "out"
    done = _command("--interpret", "--out", str(out), env=dict(os.environ, TRITON_INTERPRET="1"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] and report["failures"] == []
    assert {s["status"] for s in report["steps"].values()} == {"ok"}
    assert list(report["kernels"]) == list(KERNELS)
    for name, kernel in report["kernels"].items():
        assert kernel["passed"] and kernel["cases"] > 0 and kernel["failed"] == 0, name
    assert set(report["end_to_end"]) == set(report["timings"]) == {"1000"}
    e2e = report["end_to_end"]["1000"]
    assert e2e["kernels"]["checks"]["candidates identical"] and e2e["kernels"]["instances"] > 1
    assert any(name.startswith("native (Triton") for name in e2e["backbones"]["compared"])
    stages = report["timings"]["1000"]["kernels"]["torch"]  # interpreted Triton is not timed
    assert set(stages) == {"backbone", "encoding", "decoding", "post_processing", "total_ms"}
    markdown = (out / "report.md").read_text()
    assert markdown.startswith("# gpu_check: PASSED") and all(f"| {kernel} |" in markdown for kernel in KERNELS)
    assert "gpu_check PASSED" in done.stdout


def test_a_step_past_its_limit_is_killed_and_the_next_still_runs(tmp_path):
    seen = []
    results = run_steps([Step("environment", 0.05), Step("kernels:otsu", 300)], tmp_path, interpret=True,
                        quick=False, progress=lambda step, entry: seen.append((step.name, entry["status"])))
    assert seen == [("environment", "timeout"), ("kernels:otsu", "ok")]
    assert "killed" in results["environment"]["error"] and results["kernels:otsu"]["result"]["passed"]


def test_report_counts_every_failure():
    results = {
        "environment": {"status": "ok", "seconds": 1, "limit_s": 60, "result": {"gpu": "Test GPU"}},
        "kernels:otsu": {"status": "ok", "seconds": 1, "limit_s": 60,
                         "result": {"passed": False, "cases": 3, "failed": 1, "worst_error": 1.0, "worst_ratio": None,
                                    "seconds": 0.1, "failures": ["tie: thresholds differ"]}},
        "kernels:mine": {"status": "timeout", "seconds": 61, "limit_s": 60, "error": "no result within 60 s (killed)"},
        "end_to_end:1000": {"status": "crashed", "seconds": 2, "limit_s": 60, "error": "RuntimeError: boom"},
    }
    meta = {"command": "python -m profiling.gpu_check", "started": "2026-12-01T00:00:00+00:00", "wall_s": 1.0,
            "mode": "compiled (CUDA)", "quick": False}
    report = build_report(meta, ["environment", "kernels:otsu", "kernels:mine", "end_to_end:1000"], results)
    assert not report["passed"]
    assert [f.split(":")[0] for f in report["failures"]] == ["step kernels", "step end_to_end", "kernel otsu",
                                                               "kernel mine", "end to end 1000"]
    assert report["kernels"]["mine"]["passed"] is False and "timeout" in report["kernels"]["mine"]["failures"][0]
    markdown = render_markdown(report)
    assert "# gpu_check: FAILED" in markdown and "| otsu | FAIL | 2/3 |" in markdown
