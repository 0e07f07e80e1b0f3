"""``python -m engine.eval --pred PRED_DIR --gt GT_DIR [--json FILE]``: ScanNet instance AP.

Inputs, as the ScanNet benchmark takes them (SPEC §12):

- ``PRED_DIR/<scene>.txt``: one line per predicted instance, ``<mask path> <nyu40 id> <confidence>``,
  the mask path relative to ``PRED_DIR`` and inside it; each mask file holds one integer per line
  and per mesh vertex, non-zero inside the instance. Every ``*.txt`` directly in ``PRED_DIR``
  (except the benchmark's own ``semantic_instance_evaluation.txt``) is a scene.
- ``GT_DIR/<scene>.txt``: one integer per vertex, ``nyu40_id * 1000 + instance`` (0 = unannotated),
  as written by ``python -m engine.prepare_gt``.

The figures are the official script's (engine.instance_ap). As there, only the scenes with a
prediction file are evaluated; ground-truth scenes without one are named in a note on stderr.

Bad input ends the run with one line on stderr and exit status 1, before anything is printed or
written. Stricter than the official script (which would crash, or guess): NYU40 ids outside
1..40 in predictions or 0..40 in ground truth, non-integer label ids, non-finite confidences, a
mask file listed twice, and missing mask files even for predictions of classes not evaluated.
Blank lines in a prediction file are skipped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

from engine.atomic import atomic_file
from engine.errors import UserError, print_error
from engine.instance_ap import EVAL_CLASS_NAMES, EVAL_NYU40_IDS, APResult, InstanceAP

__all__ = ["main", "read_gt_ids", "read_mask", "read_predictions", "scene_files"]

_OFFICIAL_RESULT_FILE = "semantic_instance_evaluation.txt"
_MAX_NYU40 = 40
_ASCII_0, _ASCII_1, _ASCII_NEWLINE = 48, 49, 10
_POWERS_OF_TEN = 10 ** np.arange(18, dtype=np.int64)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine.eval",
        description="ScanNet 3D instance segmentation AP (mAP over IoU 0.50..0.90, AP50, AP25), "
        "figure for figure the official benchmark script.",
        epilog="PRED_DIR: <scene>.txt lines '<relative mask path> <nyu40 id> <confidence>', mask files with "
        "one 0/1 per vertex. GT_DIR: <scene>.txt with nyu40_id * 1000 + instance per vertex "
        "(python -m engine.prepare_gt writes them).",
    )
    parser.add_argument("--pred", type=Path, required=True, metavar="PRED_DIR", help="predictions (ScanNet format)")
    parser.add_argument("--gt", type=Path, required=True, metavar="GT_DIR", help="ground truth, one file per scene")
    parser.add_argument("--json", type=Path, metavar="FILE",
                        help='also write {"mAP", "AP50", "AP25", "classes": {...}} here (null: no ground truth)')
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from rich.console import Console

    console = Console()
    try:
        scenes, unevaluated = scene_files(args.pred, args.gt)
        running, claimed = InstanceAP(), {}
        with console.status("") as status:
            for index, (name, pred_file, gt_file) in enumerate(scenes, start=1):
                status.update(f"[{index}/{len(scenes)}] {name}")
                gt_ids = read_gt_ids(gt_file)
                running.add_scene(*read_predictions(pred_file, args.pred, gt_ids.size, claimed), gt_ids)
        result = running.result()
        if args.json is not None:
            _write_json(args.json, result)
    except UserError as exc:
        print_error(exc)
        return 1
    if unevaluated:
        print(f"note: {len(unevaluated)} ground-truth scene(s) have no prediction file and are not evaluated "
              f"(as in the official script): {_listing(unevaluated)}", file=sys.stderr)
    print_table(console, result, len(scenes))
    return 0


def scene_files(pred_dir: Path, gt_dir: Path) -> tuple[list[tuple[str, Path, Path]], list[str]]:
    """(name, prediction file, ground-truth file) per scene, by name; and GT scenes with no prediction."""
    for folder, what in ((pred_dir, "prediction"), (gt_dir, "ground-truth")):
        if not folder.is_dir():
            raise UserError(f"{folder}: {what} folder not found" if not folder.exists()
                            else f"{folder}: not a folder")
    pred_files = sorted(path for path in pred_dir.glob("*.txt")
                        if path.is_file() and path.name != _OFFICIAL_RESULT_FILE)
    gt_names = {path.stem for path in gt_dir.glob("*.txt") if path.is_file()}
    if not pred_files:
        raise UserError(f"{pred_dir}: no prediction files (<scene>.txt)")
    if not gt_names:
        raise UserError(f"{gt_dir}: no ground-truth files (<scene>.txt)")
    missing = [path.stem for path in pred_files if path.stem not in gt_names]
    if missing:
        raise UserError(f"{gt_dir}: no ground truth for {len(missing)} predicted scene(s): {_listing(missing)}")
    scenes = [(path.stem, path, gt_dir / path.name) for path in pred_files]
    unevaluated = sorted(gt_names - {path.stem for path in pred_files})
    return scenes, unevaluated


def read_gt_ids(path: Path) -> np.ndarray:
    """(N,) int64 ground-truth ids, one per line; UserError for anything but ids of NYU40 labels 0..40."""
    ids = _read_integers(path)
    if ids.size == 0:
        raise UserError(f"{path}: no vertices (the file is empty)")
    labels = ids // 1000
    bad = np.flatnonzero((ids < 0) | (labels > _MAX_NYU40))
    if bad.size:
        raise UserError(f"{path} line {bad[0] + 1}: id {ids[bad[0]]} is not nyu40_id * 1000 + instance "
                        f"with a NYU40 id in 0..{_MAX_NYU40} ({bad.size} such lines)")
    return ids


def read_predictions(
    path: Path, pred_dir: Path, num_vertices: int, claimed: dict[Path, str] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One scene's predictions: masks (M, N) bool, NYU40 ids (M,) int64, confidences (M,) float64.

    Predictions of classes the benchmark does not evaluate are left out (their mask files must
    exist but are not read). ``pred_dir`` is the folder mask paths must stay inside. ``claimed``
    (mask file -> where it was listed) is shared across scenes to reject a mask listed twice.
    """
    root = Path(os.path.abspath(pred_dir))
    claimed = {} if claimed is None else claimed
    masks, labels, scores = [], [], []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path} line {number}"
        if len(fields) != 3:
            raise UserError(f"{where}: expected '<mask path> <nyu40 id> <confidence>', got {line.strip()!r}")
        relative, label_text, score_text = fields
        mask_path = Path(os.path.abspath(path.parent / relative))
        if Path(relative).is_absolute() or not mask_path.is_relative_to(root):
            raise UserError(f"{where}: mask path {relative!r} must be relative and inside {pred_dir}")
        if mask_path in claimed:
            raise UserError(f"{where}: mask file {relative} is listed twice (also {claimed[mask_path]})")
        claimed[mask_path] = where
        label, score = _label(where, label_text), _score(where, score_text)
        if not mask_path.is_file():
            raise UserError(f"{where}: mask file {mask_path} not found")
        if label in EVAL_NYU40_IDS:
            masks.append(read_mask(mask_path, num_vertices))
            labels.append(label)
            scores.append(score)
    mask_array = np.array(masks, dtype=bool).reshape(len(masks), num_vertices)
    return mask_array, np.array(labels, dtype=np.int64), np.array(scores, dtype=np.float64)


def read_mask(path: Path, num_vertices: int) -> np.ndarray:
    """(N,) bool from a mask file, one integer per vertex (non-zero = inside)."""
    data = _read_bytes(path)
    raw = np.frombuffer(data, dtype=np.uint8)
    if raw.size == 2 * num_vertices:  # the usual "0\n"/"1\n" layout, read without parsing
        digits = raw[0::2]
        if (raw[1::2] == _ASCII_NEWLINE).all() and ((digits == _ASCII_0) | (digits == _ASCII_1)).all():
            return digits == _ASCII_1
    values = _parse_integers(path, data)
    if values.size != num_vertices:
        raise UserError(f"{path}: {values.size} lines, but the ground truth has {num_vertices} vertices "
                        "(one line per vertex of the scene's _vh_clean_2.ply)")
    return values != 0


# ----------------------------------------------------------------------------------------------
# Implementation


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _read_text(path: Path) -> str:
    try:
        return _read_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file") from None


def _read_integers(path: Path) -> np.ndarray:
    return _parse_integers(path, _read_bytes(path))


def _parse_integers(path: Path, data: bytes) -> np.ndarray:
    """(L,) int64, one integer per line; UserError naming the first line that is not one."""
    values = _parse_digit_lines(data)
    if values is not None:
        return values
    lines = data.splitlines()
    try:
        return np.array(lines, dtype=np.int64)
    except (ValueError, OverflowError):
        number = next(n for n, line in enumerate(lines, start=1) if not _is_int64(line))
    text = lines[number - 1].decode("utf-8", "replace").strip()
    raise UserError(f"{path} line {number}: {text!r} is not an integer (64-bit)")


def _parse_digit_lines(data: bytes) -> np.ndarray | None:
    """(L,) int64 from lines of 1..18 ASCII digits, each ended by a newline (optional after the
    last), parsed one decimal place at a time over all lines (10x faster than ``int`` per line);
    None for any other layout, which the general parser handles."""
    raw = np.frombuffer(data, dtype=np.uint8)
    if raw.size and raw[-1] != _ASCII_NEWLINE:
        raw = np.append(raw, np.uint8(_ASCII_NEWLINE))
    newline = raw == _ASCII_NEWLINE
    digits = raw - np.uint8(_ASCII_0)  # wraps above 9 for anything but a digit
    ends = np.flatnonzero(newline)
    lengths = np.diff(ends, prepend=-1) - 1
    if not ((digits <= 9) | newline).all() or lengths.min(initial=1) < 1 or lengths.max(initial=0) > 18:
        return None
    values = np.zeros(ends.size, dtype=np.int64)
    for place in range(int(lengths.max(initial=0))):  # characters right to left, all lines at once
        # ends - 1 - place may point before the line (or wrap below 0): masked out by lengths.
        values += np.where(lengths > place, digits[ends - 1 - place], 0) * _POWERS_OF_TEN[place]
    return values


def _is_int64(line: bytes) -> bool:
    try:
        np.array([line], dtype=np.int64)
    except (ValueError, OverflowError):
        return False
    return True


def _label(where: str, text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{where}: label {text!r} is not a NYU40 id") from None
    if not value.is_integer() or not 1 <= value <= _MAX_NYU40:
        raise UserError(f"{where}: label {text!r} is not a NYU40 id (an integer in 1..{_MAX_NYU40})")
    return int(value)


def _score(where: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{where}: confidence {text!r} is not a number") from None
    if not math.isfinite(value):
        raise UserError(f"{where}: confidence {text!r} is not finite")
    return value


def _write_json(path: Path, result: APResult) -> None:
    try:
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps(result.to_json_dict(), indent=2) + "\n")
    except OSError as exc:
        raise UserError(f"{path}: cannot write ({exc.strerror or exc})") from None


def print_table(console, result: APResult, num_scenes: int) -> None:
    from rich.table import Table

    table = Table(title=f"ScanNet instance AP, {num_scenes} scene(s)", caption="-: no ground truth for the class")
    for column, justify in (("class", "left"), ("AP", "right"), ("AP50", "right"), ("AP25", "right")):
        table.add_column(column, justify=justify)
    for name, ap, ap50, ap25 in zip(EVAL_CLASS_NAMES, result.class_ap, result.class_ap50, result.class_ap25,
                                    strict=True):
        table.add_row(name, _cell(ap), _cell(ap50), _cell(ap25))
    table.add_section()
    table.add_row("mean", _cell(result.mean_ap), _cell(result.mean_ap50), _cell(result.mean_ap25), style="bold")
    console.print(table)


def _cell(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"


def _listing(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


if __name__ == "__main__":
    sys.exit(main())
