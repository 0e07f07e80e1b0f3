"""Completion markers: ``DIR/.complete/<scene>.json``, written atomically after all of a scene's
outputs are in place, holding its report record. A scene is complete (a later run skips it) when
its marker and the files this run asks for exist (``<scene>.txt``, ``_instances.ply``, and ``.png`` /
``.html`` as ``--no-picture`` / ``--html`` say); a run killed at any point leaves each scene either
complete or to be redone. No torch, no ray."""

from __future__ import annotations

import json
from pathlib import Path

from engine.atomic import atomic_file
from engine.outputs import scene_files

__all__ = ["MARKER_DIR", "completed_record", "mark_complete"]

MARKER_DIR = ".complete"


def _marker(out_dir: Path, scene: str) -> Path:
    return out_dir / MARKER_DIR / f"{scene}.json"


def _outputs(out_dir: Path, scene: str, pictures: tuple[bool, bool]) -> list[Path]:
    return [out_dir / name for name in scene_files(scene, *pictures)]


def mark_complete(out_dir: Path, scene: str, record: dict) -> None:
    """Write the scene's marker (its report record as JSON), after its outputs."""
    with atomic_file(_marker(out_dir, scene)) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")


def completed_record(out_dir: Path, scene: str, pictures: tuple[bool, bool] = (True, False)) -> dict | None:
    """The record a finished run stored for the scene, or None when the scene is not complete
    (no marker, an unreadable one, or an output missing; ``pictures``: (png, html) wanted)."""
    try:
        record = json.loads(_marker(out_dir, scene).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not all(path.is_file() for path in _outputs(out_dir, scene, pictures)):
        return None
    return record
