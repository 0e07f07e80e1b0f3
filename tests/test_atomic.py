"""atomic_file: the target holds either its old content or the complete new one."""

from __future__ import annotations

import pytest

from engine.atomic import atomic_file


def test_atomic_file_keeps_old_content_on_failure(tmp_path):
    target = tmp_path / "keep.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        tmp.write_text("half-writ")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert {p.name for p in tmp_path.iterdir()} == {"keep.txt"}


def test_atomic_file_replaces_and_creates_the_folder(tmp_path):
    target = tmp_path / "new" / "file.txt"
    with atomic_file(target) as tmp:
        tmp.write_text("complete")
        assert not target.exists()
    assert target.read_text() == "complete"
    assert {p.name for p in target.parent.iterdir()} == {"file.txt"}
