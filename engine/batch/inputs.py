"""INPUTS of ``engine.batch`` -> the scenes to segment, by name (no torch, no ray).

An input is a PLY file (``*.ply``, any case), a folder (a ScanNet ``scans/`` tree: every
``<scene>/<scene>_vh_clean_2.ply`` under it, or one such scene folder), or a list file (any other
file): one path per line, relative paths taken from the list file's folder, blank lines and lines
starting with ``#`` skipped; a listed path is a PLY or a folder. A PLY path that does not exist is
still a scene (it fails on its own, recorded in the report); a folder or list file that does not
exist ends the command.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.errors import UserError
from engine.scene_io import SceneInputError, safe_scene_name

__all__ = ["SceneJob", "expand_inputs"]

@dataclass(frozen=True)
class SceneJob:
    """One scene to segment: its output name (``engine.scene_io.safe_scene_name``, as ``engine.run``
    names it) and input PLY."""

    name: str
    path: Path


def expand_inputs(inputs: list[Path]) -> list[SceneJob]:
    """The scenes of INPUTS in the order given (each path once); UserError for an input that names
    no scene, or two different files with the same scene name (their outputs would collide)."""
    jobs: dict[str, SceneJob] = {}
    for path in (ply for item in inputs for ply in _plys(item, listed_in=None)):
        try:
            job = SceneJob(safe_scene_name(path)[0], path)
        except SceneInputError as exc:
            raise UserError(str(exc)) from None
        seen = jobs.setdefault(job.name, job)
        if seen.path.resolve() != job.path.resolve():
            raise UserError(f"two inputs have the scene name {job.name}: {seen.path} and {job.path}")
    return list(jobs.values())


def _plys(item: Path, listed_in: Path | None) -> list[Path]:
    if item.suffix.lower() == ".ply":
        return [item]
    if item.is_dir():
        return _scannet_tree(item)
    where = f" (listed in {listed_in})" if listed_in else ""
    if not item.exists():
        raise UserError(f"{item}: not found{where}; an input is a .ply file, a scans/ folder or a list file")
    if listed_in is not None:
        raise UserError(f"{item}{where}: a list file may name .ply files and folders, not other list files")
    return _list_file(item)


def _scannet_tree(folder: Path) -> list[Path]:
    if _scene_ply(folder).is_file():
        return [_scene_ply(folder)]
    plys = sorted(_scene_ply(sub) for sub in folder.iterdir() if sub.is_dir() and _scene_ply(sub).is_file())
    if not plys:
        raise UserError(f"{folder}: no scenes in this folder (expected <scene>/<scene>_vh_clean_2.ply, "
                        "the layout of ScanNet's scans/)")
    return plys


def _scene_ply(folder: Path) -> Path:
    """``<folder>/<folder name>_vh_clean_2.ply``: a ScanNet scene folder's mesh."""
    return folder / f"{folder.name}_vh_clean_2.ply"


def _list_file(path: Path) -> list[Path]:
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the list file ({exc})") from None
    entries = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    if not entries:
        raise UserError(f"{path}: the list file names no scenes")
    return [ply for entry in entries for ply in _plys(path.parent / entry, listed_in=path)]
