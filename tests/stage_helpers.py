"""Helpers the tests and benchmarks need around the engine's stages, kept out of production code:
the assignment of a stored mask matrix and the host <-> device forms of mining candidates."""

from __future__ import annotations

import numpy as np
import torch

from engine import encoding
from engine.postprocess import assign_blocks
from kernels.mine import PaddedCandidates


def assign(scores: torch.Tensor, thresholds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per point the first instance with the largest score; -1 where that score is below the
    smallest non-zero threshold (everywhere if no threshold is non-zero).

    scores (N, I) float32, thresholds (I,) float32 -> (assignment (N,) int64, best score (N,) float32).
    """
    assignment, best, _ = assign_blocks(scores, thresholds)
    return assignment, best


def padded_from_host(cands: encoding.Candidates, device: torch.device | str) -> PaddedCandidates:
    """``PaddedCandidates`` rows from ``engine.encoding.Candidates``' CSR lists."""
    count = cands.points.size

    def rows(owner: np.ndarray, entries: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        counts = np.bincount(owner, minlength=count).astype(np.int64)
        padded = np.full((count, max(int(counts.max(initial=0)), 1)), -1, np.int64)
        slots = np.arange(entries.size) - np.repeat(np.cumsum(counts) - counts, counts)
        padded[owner, slots] = entries
        return torch.from_numpy(padded).to(device), torch.from_numpy(counts).to(device)

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(a, np.int64)).to(device)

    return PaddedCandidates(t(cands.points), t(cands.sizes), *rows(cands.fg_owner, cands.fg_points),
                            *rows(cands.bg_owner, cands.bg_points))


def padded_to_host(padded: PaddedCandidates) -> encoding.Candidates:
    """The same candidates as ``engine.encoding.Candidates`` (CSR lists, numpy)."""

    def csr(rows: torch.Tensor, counts: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        counts = counts.cpu()
        filled = torch.arange(rows.shape[1]).unsqueeze(0) < counts.unsqueeze(1)
        owner = torch.repeat_interleave(torch.arange(counts.numel()), counts)
        return owner.numpy(), rows.cpu()[filled].numpy()

    return encoding.Candidates(padded.points.cpu().numpy(), padded.sizes.cpu().numpy(),
                               *csr(padded.fg_rows, padded.fg_counts), *csr(padded.bg_rows, padded.bg_counts))

