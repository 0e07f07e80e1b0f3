"""``engine.batch --gt``: ScanNet instance AP over a batch's complete scenes, read back from the
written outputs exactly as ``engine.eval`` reads them (same functions, same figures)."""

from __future__ import annotations

from pathlib import Path

from engine.errors import UserError
from engine.eval import read_gt_ids, read_predictions
from engine.instance_ap import APResult, InstanceAP

__all__ = ["batch_ap"]


def batch_ap(out_dir: Path, gt_dir: Path, scenes: list[str]) -> APResult:
    """AP of ``scenes`` (``out_dir/<scene>.txt`` against ``gt_dir/<scene>.txt``); UserError for a
    scene without ground truth or unreadable files."""
    running, claimed = InstanceAP(), {}
    for name in scenes:
        gt_file = gt_dir / f"{name}.txt"
        if not gt_file.is_file():
            raise UserError(f"{gt_file}: no ground truth for scene {name}; its outputs are written, not evaluated")
        gt_ids = read_gt_ids(gt_file)
        running.add_scene(*read_predictions(out_dir / f"{name}.txt", out_dir, gt_ids.size, claimed), gt_ids)
    return running.result()
