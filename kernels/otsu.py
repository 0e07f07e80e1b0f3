"""Otsu thresholds of all instances in one launch (SPEC §9), bitwise equal to
``engine.postprocess.otsu_thresholds``.

For histogram h (K,) of instance i and each split t ∈ [0, K):

    n_lo = Σ_{l<t} h_l,  w_lo = Σ_{l<t} l·h_l,  n_hi = Σ_{l≥t} h_l,  w_hi = Σ_{l≥t} l·h_l   (exact int64)
    σ_t  = float32(n_lo·n_hi) · (w_hi/n_hi - w_lo/n_lo)²   where n_lo > 0 and n_hi > 0, else 0
    T_i  = t*/K for the first t* with the largest σ when that σ > 0, else 0

with every float operation in the reference's order: counts and weighted sums rounded to float32,
IEEE-rounded divisions (``tl.math.div_rn``), the gap squared before the multiply by the count
product (two plain multiplies, nothing to contract into an FMA). Determinism and precision: see
``kernels._triton``; this kernel has no atomics.
"""

from __future__ import annotations

import torch

from engine.postprocess import otsu_thresholds as otsu_thresholds_reference
from kernels._triton import jit, require_triton, tl, triton


@jit
def _otsu_kernel(hist_ptr, thresholds_ptr, LEVELS: tl.constexpr, BLOCK_LEVELS: tl.constexpr):
    """One program per instance; grid (I,). hist (I, LEVELS) int64 contiguous -> thresholds (I,) float32.

    Exclusive prefix sums over the BLOCK_LEVELS ≥ LEVELS lanes (padding lanes hold 0 counts and
    are never valid splits), σ per split as in the module docstring, first-maximum argmax.
    """
    instance = tl.program_id(0)
    level_ids = tl.arange(0, BLOCK_LEVELS)
    in_range = level_ids < LEVELS
    counts = tl.load(hist_ptr + instance * LEVELS + level_ids, mask=in_range, other=0)  # (L,) int64
    weighted = counts * level_ids.to(tl.int64)
    n_lo = tl.cumsum(counts, axis=0) - counts  # exclusive: Σ_{l<t}
    w_lo = tl.cumsum(weighted, axis=0) - weighted
    n_hi = tl.sum(counts, axis=0) - n_lo
    w_hi = tl.sum(weighted, axis=0) - w_lo
    valid = in_range & (n_lo > 0) & (n_hi > 0)
    one = tl.full(n_lo.shape, 1, tl.int64)  # divisor stand-in where a side is empty (masked out below)
    mean_lo = tl.math.div_rn(w_lo.to(tl.float32), tl.where(valid, n_lo, one).to(tl.float32))
    mean_hi = tl.math.div_rn(w_hi.to(tl.float32), tl.where(valid, n_hi, one).to(tl.float32))
    mean_gap = mean_hi - mean_lo
    sigma = (n_lo * n_hi).to(tl.float32) * (mean_gap * mean_gap)
    sigma = tl.where(valid, sigma, 0.0)
    # tie_break_left makes the first t win on hardware (the interpreter always breaks ties left)
    best_sigma, best_split = tl.max(sigma, axis=0, return_indices=True, return_indices_tie_break_left=True)
    threshold = tl.math.div_rn(best_split.to(tl.float32), tl.full((), LEVELS, tl.float32))
    tl.store(thresholds_ptr + instance, tl.where(best_sigma > 0, threshold, 0.0))


def otsu_thresholds(hist: torch.Tensor) -> torch.Tensor:
    """Otsu thresholds (I,) float32 from histograms hist (I, K) int64, K ≥ 1, all instances in one
    launch (one program per instance; K is padded to the next power of two, 128 for K = 100, so a
    program holds its whole histogram in registers). Device: CUDA, or CPU under TRITON_INTERPRET=1.
    """
    require_triton(hist.device)
    if hist.dim() != 2 or hist.shape[1] == 0:
        raise ValueError(f"hist must be (I, K) with K >= 1, got {tuple(hist.shape)}")
    count, levels = hist.shape
    thresholds = torch.zeros(count, dtype=torch.float32, device=hist.device)
    if count:
        _otsu_kernel[(count,)](hist.to(torch.int64).contiguous(), thresholds, LEVELS=levels,
                               BLOCK_LEVELS=triton.next_power_of_2(levels))
    return thresholds


__all__ = ["otsu_thresholds", "otsu_thresholds_reference"]
