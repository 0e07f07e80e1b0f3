"""Scan readers, one module per file format, chosen by the file's extension (any case).

Each reader is ``read_<format>(path, colour_max) -> RawScan`` and raises ``SceneInputError`` (one
line naming the file) for anything it cannot use. PCD and LAS/LAZ need optional extras
(``.[pcd]``, ``.[las]``); their readers import the library only when called.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from engine.readers.arrays import read_npy, read_npz
from engine.readers.common import COLOUR_MAXIMA, RawScan, SceneInputError
from engine.readers.las import read_las
from engine.readers.pcd import read_pcd
from engine.readers.ply import read_ply

__all__ = ["COLOUR_MAXIMA", "EXTENSIONS", "RawScan", "SceneInputError", "read_raw"]

READERS: dict[str, Callable[[Path, int | None], RawScan]] = {
    ".ply": read_ply,
    ".pcd": read_pcd,
    ".las": read_las,
    ".laz": read_las,
    ".npy": read_npy,
    ".npz": read_npz,
}
EXTENSIONS = tuple(READERS)


def read_raw(path: Path, colour_max: int | None = None) -> RawScan:
    """The file's points by its format's reader; SceneInputError for an unknown extension, a missing,
    empty or unreadable file, or anything the reader refuses."""
    path = Path(path)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise SceneInputError(path, f"unknown scan format '{path.suffix}' (readable: {' '.join(EXTENSIONS)})")
    if not path.exists():
        raise SceneInputError(path, "file not found")
    if path.is_dir():
        raise SceneInputError(path, "is a directory, not a scan file")
    try:
        if path.stat().st_size == 0:
            raise SceneInputError(path, "the file is empty")
    except OSError as error:
        raise SceneInputError(path, f"cannot read the file: {error.strerror or error}") from error
    return reader(path, colour_max)
