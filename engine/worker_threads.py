"""Blocks of CPU work on Python threads whose torch ops run single-threaded (a leaf module).

A loop of many small torch ops (decoding and post-processing walk millions of points in
cache-sized blocks) parallelises each op over OpenMP threads: one fork and one barrier per op,
tens of thousands per scene. On 2 cores that other processes share, a descheduled OpenMP thread
stalls every barrier: decoding a 2M-point scene took 4-17 s where its arithmetic needs under 1 s
(docs/performance.md). ``run_blocks`` instead gives each of T Python threads whole blocks, with one
intra-op thread each: torch releases the GIL inside its ops, so T blocks run at once, a thread
takes the next block when it is done (a slower core just takes fewer), and no thread ever waits on
another. Serial ops (``torch.bincount``) run in parallel too.

T is torch's intra-op thread count (``torch.get_num_threads()``, so ``OMP_NUM_THREADS`` and
``torch.set_num_threads`` still decide); with T = 1 or non-CPU tensors the blocks run in order in
the calling thread. Results come back in block order, so a caller that combines them in that
order gets the same bits on any thread count and schedule.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

Result = TypeVar("Result")


def run_blocks(work: Callable[[int], Result], num_blocks: int, on_cpu: bool = True) -> list[Result]:
    """``[work(0), work(1), ..., work(num_blocks - 1)]``, on ``torch.get_num_threads()`` worker
    threads when ``on_cpu`` (each with one intra-op thread), else in order here. ``work`` must
    only write memory no other block writes."""
    intra_op_threads = torch.get_num_threads()
    threads = min(intra_op_threads, num_blocks)
    if not on_cpu or threads <= 1:
        return [work(block) for block in range(num_blocks)]
    try:
        with ThreadPoolExecutor(threads, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            return list(pool.map(work, range(num_blocks)))
    finally:
        # The workers' torch.set_num_threads(1) also set the count new threads start with: restore it.
        torch.set_num_threads(intra_op_threads)
