"""Kernel tests run on CPU tensors in Triton's interpreter.

``TRITON_INTERPRET=1`` must be set before triton is first imported (``triton.jit`` decides between
compiling and interpreting when a kernel is decorated), so it is set here, at conftest import,
before any test module imports ``kernels``. Every test is skipped, with the reason, when triton
cannot be imported or was already imported in compiled mode (e.g. by a benchmark module importing
``kernels`` at collection time, which the benchmark modules avoid).
"""

from __future__ import annotations

import os

import pytest

os.environ["TRITON_INTERPRET"] = "1"

from kernels._triton import INTERPRETER, TRITON_IMPORTED  # noqa: E402  (after setting the variable)

if not TRITON_IMPORTED:
    SKIP_REASON = "triton is not installed (pip install 'dknet-engine[test]')"
elif not INTERPRETER:
    SKIP_REASON = "kernels._triton was imported before TRITON_INTERPRET=1 was set: run tests/kernels on its own"
else:
    SKIP_REASON = ""


@pytest.fixture(autouse=True)
def _triton_interpreter():
    if SKIP_REASON:
        pytest.skip(SKIP_REASON)
