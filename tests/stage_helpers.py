"""Helpers the tests and benchmarks need around the engine's stages, kept out of production code:
the assignment of a stored mask matrix."""

from __future__ import annotations

import torch

from engine.postprocess import assign_blocks


def assign(scores: torch.Tensor, thresholds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per point the first instance with the largest score; -1 where that score is below the
    smallest non-zero threshold (everywhere if no threshold is non-zero).

    scores (N, I) float32, thresholds (I,) float32 -> (assignment (N,) int64, best score (N,) float32).
    """
    assignment, best, _ = assign_blocks(scores, thresholds)
    return assignment, best
