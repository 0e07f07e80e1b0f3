"""C kernels for the CPU path, compiled for this machine on first use (``build``): one ``.c`` file
per kernel beside the module that calls it. Each is an optimized path tested against the PyTorch
reference it replaces; where no C compiler works, the reference runs instead."""

from __future__ import annotations


def unavailable_reason() -> str | None:
    """Why the CPU path's C kernels (decoding, post-processing's walks) do not run here, or None;
    builds them, or finds them in the cache, on first call."""
    from engine.c_kernels import assign, decode

    return decode.KERNELS.unavailable_reason() or assign.KERNELS.unavailable_reason()
