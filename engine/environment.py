"""Every environment variable the project reads or sets, in one place (a leaf module).

* ``DKNET_CHECKPOINT`` (read by the commands, ``checkpoint_from_environment``): the checkpoint
  when ``--checkpoint`` is not given.
* ``TRITON_INTERPRET`` (set before triton is imported, unless already set: by ``kernels._triton``
  through ``choose_triton_mode``, and to ``1`` by ``engine.session`` for ``--device cpu --kernels
  triton``): ``1`` runs the Triton kernels in Triton's interpreter on CPU tensors, ``0`` compiles
  them for CUDA. Default ``0`` where a CUDA device is visible, else ``1``: the mode never depends on
  which module imported triton first.
* ``TRITON_DEFAULT_FP_FUSION`` (set by ``choose_triton_mode`` unless already set): ``1`` lets Triton
  contract a·b + c into FMAs, its current default, set explicitly (Triton 3.9 warns it will change).
* ``RAY_DATA_LOG_LEVEL`` (set to ``ERROR`` by ``engine.batch`` before it imports Ray Data, unless
  already set): Ray Data's own start/finish lines would otherwise interleave with the progress bar.

Tests and tools that need a mode set the variable before anything imports ``kernels``
(``tests/kernels/conftest.py``: ``1``; ``kernels.compile_check``: ``0``, it compiles for GPUs
that this machine may not have).
"""

from __future__ import annotations

import os
from pathlib import Path

CHECKPOINT = "DKNET_CHECKPOINT"
TRITON_INTERPRET = "TRITON_INTERPRET"
TRITON_DEFAULT_FP_FUSION = "TRITON_DEFAULT_FP_FUSION"
RAY_DATA_LOG_LEVEL = "RAY_DATA_LOG_LEVEL"


def checkpoint_from_environment() -> Path | None:
    """``$DKNET_CHECKPOINT`` as a path, None when unset or empty."""
    value = os.environ.get(CHECKPOINT)
    return Path(value) if value else None


def choose_triton_mode(cuda_available: bool) -> bool:
    """Before triton is imported: keep the user's ``TRITON_INTERPRET``, else interpret exactly when
    no CUDA device is visible; fix Triton's FMA default. Returns whether kernels are interpreted."""
    os.environ.setdefault(TRITON_INTERPRET, "0" if cuda_available else "1")
    os.environ.setdefault(TRITON_DEFAULT_FP_FUSION, "1")
    return os.environ[TRITON_INTERPRET] == "1"
