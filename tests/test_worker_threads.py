"""Blocks on worker threads (``engine.worker_threads``): every block once, results in block order,
torch's thread count left as it was."""

from __future__ import annotations

import threading

import pytest
import torch

from engine.worker_threads import run_blocks


@pytest.mark.parametrize("threads,blocks", [(1, 5), (2, 0), (2, 1), (2, 37)])
def test_results_in_block_order_and_thread_count_restored(threads, blocks):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        seen = []

        def work(block: int) -> tuple[int, int]:
            seen.append(block)
            return block * block, torch.get_num_threads()

        results = run_blocks(work, blocks)
        assert [r[0] for r in results] == [b * b for b in range(blocks)]
        assert sorted(seen) == list(range(blocks))
        if threads > 1 and blocks > 1:
            assert {r[1] for r in results} == {1}  # one intra-op thread per worker
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)


def test_off_cpu_the_blocks_run_in_the_calling_thread():
    caller = threading.get_ident()
    assert run_blocks(lambda b: threading.get_ident() == caller, 3, on_cpu=False) == [True] * 3


def test_an_exception_in_a_block_reaches_the_caller():
    def work(block: int) -> int:
        if block == 2:
            raise ValueError("block 2")
        return block

    with pytest.raises(ValueError, match="block 2"):
        run_blocks(work, 4)
