"""Helpers the tests and benchmarks need around the engine's stages, kept out of production code:
the assignment and post-processing of a stored mask matrix, and the decode kernel's two-step torch
reference."""

from __future__ import annotations

import torch

from engine.decoding import decode_masks
from engine.postprocess import OTSU_LEVELS, PostResult, StoredMasks, assign_blocks, otsu_histograms, postprocess_masks


def assign(scores: torch.Tensor, thresholds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per point the first instance with the largest score; -1 where that score is below the
    smallest non-zero threshold (everywhere if no threshold is non-zero).

    scores (N, I) float32, thresholds (I,) float32 -> (assignment (N,) int64, best score (N,) float32).
    """
    assignment, best, _ = assign_blocks(scores, thresholds)
    return assignment, best


def postprocess(masks: torch.Tensor, semantic_scores: torch.Tensor, object_idx: torch.Tensor,
                superpoints: torch.Tensor | None) -> PostResult:
    """``postprocess_masks`` of a stored (N, I) float32 soft-mask matrix, which it **overwrites**."""
    return postprocess_masks(StoredMasks(masks), semantic_scores, object_idx, superpoints)


def decode_histograms_reference(theta: torch.Tensor, mask_features: torch.Tensor, xyz_m: torch.Tensor,
                                centres_m: torch.Tensor, levels: int = OTSU_LEVELS) -> torch.Tensor:
    """The engine's two steps in plain torch: ``otsu_histograms(decode_masks(...))`` -> (I, levels) int64."""
    return otsu_histograms(decode_masks(theta, mask_features, xyz_m, centres_m), levels)
