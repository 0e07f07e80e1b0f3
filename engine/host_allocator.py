"""Host memory for the CPU backbone: keep large freed blocks in the process (glibc), a leaf module.

The native CPU backbone allocates and frees tens of large temporary tensors per convolution
(gathered rows, products, outputs: up to tens of MiB each). glibc serves blocks above its mmap
threshold (128 KiB, adapting up to 32 MiB) with fresh ``mmap`` pages and returns them on ``free``,
so every temporary pays the kernel's page faults and zeroing again. Measured interleaved in one
process (2-core AMD EPYC, torch 2.13; ``docs/performance.md``), the native backbone took 1.7–1.8x
longer that way, on scenes of 18k to 145k voxels, than with ``keep_freed_blocks``: it raises the
mmap and trim thresholds (``mallopt``), so freed blocks are reused from the heap. Peak memory is
unchanged, but the process keeps its peak after a scene instead of returning it to the system.
The threshold is just under 2 GiB (the most ``mallopt`` takes), so the next scene's decoding
reuses the pages of the last one's (N, I) masks too (1.2 GB at 2M points x 150 instances): fresh
pages cost the C decoding 0.35-0.5 s there on 2 cores (docs/performance.md).

Process-wide and idempotent; a no-op (returning False) where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = (1 << 31) - 1  # mallopt takes an int: just under 2 GiB
_TRIM_THRESHOLD_BYTES = (1 << 31) - 1


@cache
def keep_freed_blocks() -> bool:
    """Serve allocations below 2 GiB from the heap and never trim it (glibc ``mallopt``)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt; macOS, Windows)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES))
