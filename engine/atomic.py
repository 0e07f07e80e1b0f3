"""Atomic file writes: nothing half-written is ever left under the target name.

Every writer of the project (scene outputs, dumps, ground truth, AP JSON, synthetic scenes, ONNX
files) writes through ``atomic_file``. numpy and torch are not imported here.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds,
    delete it if the block fails. Creates ``path``'s folder.

    The caller's writer creates the temporary file with a plain ``open``, so the result gets the
    usual umask-based permissions (``mkstemp`` would leave it private, 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.partial")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
