"""``python -m engine.eval`` on submissions written by engine.outputs: the figures of the AP oracle
(tests/instance_ap_oracle.py), the table, the JSON, and every bad input as one line on stderr."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine import eval as evaluation
from engine.instance_ap import EVAL_CLASS_NAMES
from engine.outputs import write_scannet_submission
from tests.instance_ap_oracle import oracle_instance_ap
from tests.test_instance_ap import random_scene

ROOT = Path(__file__).resolve().parents[1]
SCENES = ("scene0000_00", "scene0001_00", "scene0002_00")


def _write_case(root: Path, scenes, names=SCENES) -> tuple[Path, Path]:
    """Submission (engine.outputs) and ground truth files for in-memory scenes; returns (pred, gt)."""
    pred, gt = root / "pred", root / "gt"
    gt.mkdir(parents=True, exist_ok=True)
    for name, (masks, labels, scores, gt_ids) in zip(names, scenes, strict=True):
        known = labels > 0  # the CLI rejects label 0; the benchmark skips it anyway
        write_scannet_submission(pred, name, masks[known], labels[known], scores[known])
        np.savetxt(gt / f"{name}.txt", gt_ids, fmt="%d")
    return pred, gt


def _run(argv, capsys):
    code = evaluation.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def case(tmp_path):
    """Three random scenes of 1500 vertices, each starting with a chair prediction (evaluated: its
    mask is read) on its first 300 vertices."""
    rng = np.random.default_rng(11)
    scenes = []
    for _ in SCENES:
        masks, labels, scores, gt_ids = random_scene(rng, num_vertices=1500)
        chair = np.zeros((1, gt_ids.size), dtype=bool)
        chair[0, :300] = True
        scenes.append((np.concatenate([chair, masks]), np.concatenate([[5], labels]),
                       np.concatenate([[0.5], scores]), gt_ids))
    pred, gt = _write_case(tmp_path, scenes)
    return scenes, pred, gt


@pytest.mark.parametrize("seed", range(4))
def test_figures_equal_the_oracle(tmp_path, capsys, seed):
    rng = np.random.default_rng(100 + seed)
    scenes = [random_scene(rng) for _ in SCENES]
    pred, gt = _write_case(tmp_path, scenes)
    code, out, err = _run(["--pred", pred, "--gt", gt, "--json", tmp_path / "ap.json"], capsys)
    assert code == 0, err
    figures = json.loads((tmp_path / "ap.json").read_text())
    _, expected = oracle_instance_ap(scenes)
    for key in ("mAP", "AP50", "AP25"):
        assert figures[key] == _json(expected[key]), key
    for name in EVAL_CLASS_NAMES:
        assert figures["classes"][name] == {key: _json(value) for key, value in expected["classes"][name].items()}


def _json(value: float):
    return None if math.isnan(value) else float(value)


def test_table_and_json(case, tmp_path, capsys):
    _, pred, gt = case
    code, out, err = _run(["--pred", pred, "--gt", gt, "--json", tmp_path / "out" / "ap.json"], capsys)
    assert code == 0 and err == ""
    for word in ("class", "AP50", "AP25", "mean", "3 scene(s)", *EVAL_CLASS_NAMES):
        assert word in out
    figures = json.loads((tmp_path / "out" / "ap.json").read_text())
    assert set(figures) == {"mAP", "AP50", "AP25", "classes"}
    assert list(figures["classes"]) == list(EVAL_CLASS_NAMES)
    assert figures["classes"]["bathtub"] == {"AP": None, "AP50": None, "AP25": None}  # no ground truth
    assert f"{figures['mAP']:.3f}" in out


def test_ground_truth_without_prediction_is_noted_and_skipped(case, tmp_path, capsys):
    scenes, pred, gt = case
    (pred / f"{SCENES[2]}.txt").unlink()
    code, _, err = _run(["--pred", pred, "--gt", gt, "--json", tmp_path / "ap.json"], capsys)
    assert code == 0 and err.startswith("note: 1 ground-truth scene") and SCENES[2] in err
    _, expected = oracle_instance_ap(scenes[:2])
    assert json.loads((tmp_path / "ap.json").read_text())["mAP"] == _json(expected["mAP"])


def test_mask_files_in_any_integer_layout(case, tmp_path, capsys):
    """Masks without a final newline, or with other non-zero values, read as the benchmark reads them."""
    _, pred, gt = case
    assert _run(["--pred", pred, "--gt", gt, "--json", tmp_path / "a.json"], capsys)[0] == 0
    for mask in (pred / "predicted_masks").iterdir():
        values = np.loadtxt(mask, dtype=np.int64)
        mask.write_text("\r\n".join(str(v * 7) for v in values))
    assert _run(["--pred", pred, "--gt", gt, "--json", tmp_path / "b.json"], capsys)[0] == 0
    assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()


@pytest.mark.parametrize("layout", ["\n", "\n-last", "\r\n", " padded"])
def test_ground_truth_in_any_integer_layout(tmp_path, layout):
    """The digit-table parser (plain lines) and the general one (anything else) read the same ids."""
    ids = np.random.default_rng(0).integers(0, 41000, 500)
    ids[:3] = (0, 40999, 7)
    text = {"\n": "\n".join(map(str, ids)) + "\n", "\n-last": "\n".join(map(str, ids)),
            "\r\n": "\r\n".join(map(str, ids)), " padded": "\n".join(f" {i} " for i in ids)}[layout]
    (tmp_path / "gt.txt").write_bytes(text.encode())
    assert np.array_equal(evaluation.read_gt_ids(tmp_path / "gt.txt"), ids)


def _first_line(pred: Path, scene: str = SCENES[0]) -> tuple[Path, str]:
    path = pred / f"{scene}.txt"
    return path, path.read_text().splitlines()[0]


def _replace_first_line(pred: Path, new_line: str) -> None:
    path, _ = _first_line(pred)
    lines = path.read_text().splitlines()
    path.write_text("\n".join([new_line] + lines[1:]))


def _set_label(pred: Path, label: str) -> None:
    _, line = _first_line(pred)
    mask, _, score = line.split()
    _replace_first_line(pred, f"{mask} {label} {score}")


def _set_score(pred: Path, score: str) -> None:
    _, line = _first_line(pred)
    mask, label, _ = line.split()
    _replace_first_line(pred, f"{mask} {label} {score}")


def _first_mask(pred: Path) -> Path:
    return pred / _first_line(pred)[1].split()[0]


BAD_INPUTS = {
    "missing prediction folder": (lambda pred, gt: _rmtree(pred), "prediction folder not found"),
    "empty prediction folder": (lambda pred, gt: _empty(pred), "no prediction files"),
    "empty ground-truth folder": (lambda pred, gt: _empty(gt), "no ground-truth files"),
    "scene without ground truth": (lambda pred, gt: (gt / f"{SCENES[1]}.txt").unlink(), "no ground truth for 1"),
    "mask of the wrong length": (lambda pred, gt: _first_mask(pred).write_text("0\n1\n"),
                                 "2 lines, but the ground truth has 1500 vertices"),
    "missing mask file": (lambda pred, gt: _first_mask(pred).unlink(), "not found"),
    "mask not integers": (lambda pred, gt: _first_mask(pred).write_text("0\n" * 1499 + "x\n"),
                          "line 1500: 'x' is not an integer"),
    "label 0": (lambda pred, gt: _set_label(pred, "0"), "label '0' is not a NYU40 id"),
    "label 41": (lambda pred, gt: _set_label(pred, "41"), "label '41' is not a NYU40 id"),
    "label 5.5": (lambda pred, gt: _set_label(pred, "5.5"), "label '5.5' is not a NYU40 id"),
    "label name": (lambda pred, gt: _set_label(pred, "chair"), "label 'chair' is not a NYU40 id"),
    "confidence nan": (lambda pred, gt: _set_score(pred, "nan"), "confidence 'nan' is not finite"),
    "confidence text": (lambda pred, gt: _set_score(pred, "high"), "confidence 'high' is not a number"),
    "two fields": (lambda pred, gt: _replace_first_line(pred, "predicted_masks/x.txt 5"), "expected '<mask path>"),
    "absolute mask path": (lambda pred, gt: _replace_first_line(pred, f"{_first_mask(pred)} 5 0.5"),
                           "must be relative and inside"),
    "mask outside the folder": (lambda pred, gt: _replace_first_line(pred, "../gt/scene0000_00.txt 5 0.5"),
                                "must be relative and inside"),
    "mask listed twice": (lambda pred, gt: _replace_first_line(pred, _first_line(pred, SCENES[0])[1] + "\n"
                                                               + _first_line(pred, SCENES[0])[1]), "listed twice"),
    "mask listed by two scenes": (lambda pred, gt: (pred / f"{SCENES[1]}.txt").write_text(_first_line(pred)[1]),
                                  "listed twice (also"),
    "ground truth not integers": (lambda pred, gt: (gt / f"{SCENES[1]}.txt").write_text("3001\nchair\n"),
                                  "line 2: 'chair' is not an integer"),
    "ground truth label 41": (lambda pred, gt: (gt / f"{SCENES[1]}.txt").write_text("3001\n41001\n"),
                              "line 2: id 41001 is not nyu40_id * 1000 + instance"),
    "ground truth 19 digits": (lambda pred, gt: (gt / f"{SCENES[1]}.txt").write_text("3001\n1234567890123456789\n"),
                               "line 2: id 1234567890123456789 is not"),
    "ground truth over 64 bits": (lambda pred, gt: (gt / f"{SCENES[1]}.txt").write_text("3001\n" + "9" * 20),
                                  "line 2: '99999999999999999999' is not an integer (64-bit)"),
    "ground truth negative": (lambda pred, gt: (gt / f"{SCENES[1]}.txt").write_text("-1\n"), "line 1: id -1"),
    "empty ground truth": (lambda pred, gt: (gt / f"{SCENES[1]}.txt").write_text(""), "no vertices"),
}


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path)


def _empty(path: Path) -> None:
    _rmtree(path)
    path.mkdir()


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_is_one_line(case, tmp_path, capsys, name):
    damage, message = BAD_INPUTS[name]
    _, pred, gt = case
    damage(pred, gt)
    code, out, err = _run(["--pred", pred, "--gt", gt, "--json", tmp_path / "ap.json"], capsys)
    assert code == 1 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "ap.json").exists()


def test_unwritable_json(case, tmp_path, capsys):
    _, pred, gt = case
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = _run(["--pred", pred, "--gt", gt, "--json", blocker / "ap.json"], capsys)
    assert code == 1 and err.startswith("error: ") and "cannot write" in err


def test_module_entry_point_and_fast_help(case, tmp_path):
    _, pred, gt = case
    done = subprocess.run([sys.executable, "-m", "engine.eval", "--pred", str(pred), "--gt", str(gt / "absent")],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 1 and "Traceback" not in done.stderr and "ground-truth folder not found" in done.stderr
    probe = "import sys, runpy\nsys.argv = ['engine.eval', '--help']\ntry:\n    runpy.run_module('engine.eval', " \
            "run_name='__main__')\nexcept SystemExit:\n    pass\nprint('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and "--pred PRED_DIR" in done.stdout and done.stdout.strip().endswith("False")
