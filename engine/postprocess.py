"""Post-processing: Otsu thresholds, assignment, scoring, filtering, superpoint refinement
(SPEC §9–11: the official test script's steps, vectorized).

Masks are point-major, ``masks (N, I)``, so per-point reductions over instances are contiguous.
An assignment is ``(N,) int64``: the instance of each point, or -1 for none.

The script re-assigns points after each filtering step (too few points, low score). Dropping
instances cannot change the first maximum of a point whose instance survives, and cannot assign
a point that was unassigned (the smallest non-zero threshold can only rise), so only the points
of dropped instances are re-assigned, over the survivors (``restrict``); everything else is O(N).
The steps read the masks through a ``MaskSource``: ``StoredMasks`` walks a stored (N, I) matrix
three times, in cache-sized blocks of points (histograms; thresholding fused with the first
assignment and the column sums; rescaling fused with the second); the Triton backend
(``kernels.postprocess``) recomputes the masks on each pass instead of storing them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from engine.classes import INVALID_CLASS, NUM_CLASSES
from engine.worker_threads import run_blocks

OTSU_LEVELS = 100
MIN_POINTS = 100  # keep instances with more assigned points than this
MIN_SCORE = 0.1  # keep instances scoring more than this
HISTOGRAM_CHUNK = 4096  # points per bincount call (keeps the int16 level codes cache-sized)
ASSIGN_CHUNK = 4096  # points per block in the fused threshold/rescale + assignment passes
ZERO_STANDIN = 1e-30


def level_counts(masks: torch.Tensor, levels: int = OTSU_LEVELS) -> torch.Tensor:
    """Counts (I·levels,) int64 of ``trunc(m * levels)``, clamped to levels - 1 **[fix]**, per
    instance (instance i's at i·levels...): masks (n, I) float32 in [0, 1], n <= HISTOGRAM_CHUNK
    keeps the level codes cache-sized."""
    count = masks.shape[1]
    codes_dtype = torch.int16 if count * levels < 2**15 else torch.int64
    offsets = (torch.arange(count, device=masks.device) * levels).to(codes_dtype)
    codes = (masks * levels).to(codes_dtype).clamp_(max=levels - 1)
    return torch.bincount(codes.add_(offsets).view(-1), minlength=count * levels)


def otsu_histograms(masks: torch.Tensor, levels: int = OTSU_LEVELS) -> torch.Tensor:
    """Per-instance histograms (I, levels) int64 of ``trunc(m * levels)``, clamped to levels - 1
    **[fix]**, counted exactly. masks (N, I) float32 in [0, 1]. Blocks of points run on
    ``engine.worker_threads`` (``torch.bincount`` is serial)."""
    num_points, count = masks.shape
    hist = torch.zeros(count * levels, dtype=torch.int64, device=masks.device)
    blocks = run_blocks(lambda b: level_counts(masks[b * HISTOGRAM_CHUNK:(b + 1) * HISTOGRAM_CHUNK], levels),
                        -(-num_points // HISTOGRAM_CHUNK), on_cpu=masks.device.type == "cpu")
    for block_counts in blocks:
        hist += block_counts
    return hist.view(count, levels)


def otsu_thresholds(hist: torch.Tensor) -> torch.Tensor:
    """Otsu thresholds (I,) float32 from histograms (I, K) int64 (SPEC §9).

    For each t: n_lo = Σ_{l<t} h, n_hi = Σ_{l≥t} h; where both are non-zero,
    σ_t = n_lo·n_hi·(mean_hi - mean_lo)² with the level means in float32 (as the official op).
    T = t/K for the first t with the strictly largest σ > 0, else 0. n_lo·n_hi is the exact
    product (the official op multiplies two int32 counts, which overflows beyond ~46k points a
    side; we do not reproduce that undefined behaviour).
    """
    count, levels = hist.shape
    level_ids = torch.arange(levels, device=hist.device)
    zero = torch.zeros(count, 1, dtype=torch.int64, device=hist.device)
    n_lo = torch.cat((zero, hist.cumsum(1)[:, :-1]), dim=1)
    w_lo = torch.cat((zero, (hist * level_ids).cumsum(1)[:, :-1]), dim=1)
    n_hi = hist.sum(1, keepdim=True) - n_lo
    w_hi = (hist * level_ids).sum(1, keepdim=True) - w_lo
    valid = (n_lo > 0) & (n_hi > 0)
    mean_gap = w_hi.float() / n_hi.float() - w_lo.float() / n_lo.float()
    sigma = (n_lo * n_hi).float() * (mean_gap * mean_gap)
    sigma = torch.where(valid, sigma, torch.zeros_like(sigma))
    best_sigma, best_t = sigma.max(dim=1)
    thresholds = best_t.float() / levels
    return torch.where(best_sigma > 0, thresholds, torch.zeros_like(thresholds))


def rounded_sqrt_(values: torch.Tensor) -> torch.Tensor:
    """``values`` <- their square roots, correctly rounded (IEEE 754), in place; returns ``values``.

    The official code's CUDA ``sqrt`` and the Triton kernels' ``sqrt_rn`` round correctly; torch's
    CPU ``sqrt`` (MKL's vector math) does not: one float32 input in five of [0, 1) came out an ulp
    off on an AMD Zen 5, and which ones can depend on the CPU MKL dispatches for. On CPU this is
    NumPy's (the hardware instruction); elsewhere torch's."""
    if values.device.type == "cpu":
        array = values.numpy()
        np.sqrt(array, out=array)
        return values
    return values.sqrt_()


def _min_nonzero(thresholds: torch.Tensor) -> torch.Tensor | None:
    nonzero = thresholds[thresholds != 0]
    return nonzero.min() if nonzero.numel() else None


def restrict(assignment: torch.Tensor, best: torch.Tensor, masks: MaskSource, keep: torch.Tensor,
             thresholds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``assign`` over the kept instances only, computed from the assignment over all of them.

    assignment, best (N,): ``assign`` of the current mask values over all I instances; keep (K,)
    int64 ascending indices of the kept instances; thresholds (K,) their thresholds. Only points
    whose instance was dropped are re-assigned (``masks.best_among``). Returns the assignment in
    kept numbering (0..K-1, -1 for none) and the best kept score per point.
    """
    renumber = torch.full((masks.count + 1,), -1, dtype=torch.int64, device=assignment.device)
    renumber[keep] = torch.arange(keep.numel(), device=assignment.device)
    new = renumber[assignment]  # -1 (none) maps through the last slot to -1
    best = best.clone()
    lost = torch.nonzero((assignment >= 0) & (new < 0)).view(-1)
    if lost.numel() and keep.numel():
        best[lost], new[lost] = masks.best_among(lost, keep)
    floor = _min_nonzero(thresholds)
    if floor is None:
        return torch.full_like(new, -1), best
    return torch.where((new >= 0) & (best >= floor), new, torch.full_like(new, -1)), best


class MaskSource(Protocol):
    """The soft masks m (N, I) as post-processing reads them, whether stored (``StoredMasks``) or
    recomputed from the dynamic-conv parameters on every pass (``kernels.postprocess``).

    Post-processing calls, in this order: ``thresholds``; ``threshold_pass`` (the values become
    M' = m where m >= T else 0); ``rescale_pass`` (they become M'' = sqrt(M' · cover)); then any
    number of ``best_among`` and ``instance_sums``. A pass returns, per point, the first instance
    with the largest value and that value (``assign``).
    """

    num_points: int  # N
    count: int  # I

    def thresholds(self) -> torch.Tensor:
        """Otsu thresholds T (I,) float32 of the soft masks (SPEC §9)."""

    def threshold_pass(self, thresholds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Values ← M'; ``assign`` over them. -> (assignment (N,) int64, best (N,) float32,
        column sums Σ_n M'[n, i] (I,) float32)."""

    def rescale_pass(self, cover: torch.Tensor, scaled_thresholds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Values ← sqrt(max(M' · cover, ZERO_STANDIN)) (cover (I,); the sqrt correctly rounded, as
        ``rounded_sqrt_``); ``assign`` with the scaled
        thresholds (I,). -> (assignment (N,) int64, best (N,) float32)."""

    def best_among(self, points: torch.Tensor, instances: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per point of ``points`` (n,) int64 the first largest current value among ``instances``
        (k,) int64, k >= 1 -> (best (n,) float32, position in ``instances`` (n,) int64)."""

    def instance_sums(self, values: torch.Tensor, assignment: torch.Tensor, count: int) -> torch.Tensor:
        """Σ of ``values`` (N,) over each instance's assigned points -> (count,), dtype of ``values``."""


class StoredMasks:
    """``MaskSource`` over a stored (N, I) float32 matrix, rewritten in place by the passes;
    ``histograms`` (I, OTSU_LEVELS) int64: its ``otsu_histograms`` when already counted (by
    ``engine.decoding.decode_masks_and_histograms``), else None."""

    def __init__(self, masks: torch.Tensor, histograms: torch.Tensor | None = None):
        self.masks = masks
        self.histograms = histograms
        self.num_points, self.count = masks.shape

    def thresholds(self) -> torch.Tensor:
        hist = otsu_histograms(self.masks) if self.histograms is None else self.histograms
        return otsu_thresholds(hist)

    def threshold_pass(self, thresholds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        def threshold(block: torch.Tensor, best: torch.Tensor, which: torch.Tensor) -> None:
            block.mul_(torch.ge(block, thresholds, out=torch.empty_like(block)))
            torch_first_max(block, best, which)

        return assign_blocks(self.masks, thresholds, threshold, with_column_sums=True)

    def rescale_pass(self, cover: torch.Tensor, scaled_thresholds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        def rescale(block: torch.Tensor, best: torch.Tensor, which: torch.Tensor) -> None:
            rounded_sqrt_(block.mul_(cover).clamp_(min=ZERO_STANDIN))
            torch_first_max(block, best, which)

        assignment, best, _ = assign_blocks(self.masks, scaled_thresholds, rescale)
        return assignment, best

    def best_among(self, points: torch.Tensor, instances: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.masks[points.unsqueeze(1), instances.unsqueeze(0)].max(dim=1)

    def instance_sums(self, values: torch.Tensor, assignment: torch.Tensor, count: int) -> torch.Tensor:
        return instance_sums(values, assignment, count)


RowPass = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]


def torch_first_max(rows: torch.Tensor, best: torch.Tensor, which: torch.Tensor) -> None:
    """best (n,), which (n,) <- each row's first largest value and its column (rows (n, I))."""
    torch.max(rows, dim=1, out=(best, which))


def assign_blocks(scores: torch.Tensor, thresholds: torch.Tensor, row_pass: RowPass = torch_first_max,
                  with_column_sums: bool = False):
    """``assign``, in cache-sized blocks of ``ASSIGN_CHUNK`` points: ``row_pass(rows, best, which)``
    rewrites each block of rows in place and writes each row's first largest value and its column
    (by default it only finds them).

    scores (N, I) float32 (overwritten by the row pass). Returns (assignment (N,), best (N,),
    column sums (I,) float32 of the rewritten scores, or None). Blocks keep every temporary in
    cache and avoid boolean intermediates (slow on CPU); they run on ``engine.worker_threads``,
    and the column sums add the blocks' sums in block order (the same bits on any schedule).
    """
    num_points, count = scores.shape
    device = scores.device
    if count == 0:
        none = torch.full((num_points,), -1, dtype=torch.int64, device=device)
        return none, torch.zeros(num_points, device=device), torch.zeros(0, device=device) if with_column_sums else None
    best = torch.empty(num_points, device=device)
    which = torch.empty(num_points, dtype=torch.int64, device=device)

    def block(index: int) -> torch.Tensor | None:
        start = index * ASSIGN_CHUNK
        stop = min(start + ASSIGN_CHUNK, num_points)
        rows = scores[start:stop]
        row_pass(rows, best[start:stop], which[start:stop])
        return rows.sum(dim=0) if with_column_sums else None

    block_sums = run_blocks(block, -(-num_points // ASSIGN_CHUNK), on_cpu=device.type == "cpu")
    sums = None
    if with_column_sums:
        sums = torch.zeros(count, device=device)
        for block_sum in block_sums:
            sums += block_sum
    assignment, best = apply_floor(which, best, thresholds)
    return assignment, best, sums


def apply_floor(which: torch.Tensor, best: torch.Tensor, thresholds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``assign``'s last step: which (N,) int64 first-maximum instance, best (N,) float32 its value
    -> (assignment, best) with -1 where best < the smallest non-zero threshold; with no non-zero
    threshold every point is unassigned and best is 0 (both rewritten in place)."""
    floor = _min_nonzero(thresholds)
    if floor is None:
        return which.fill_(-1), best.zero_()
    return torch.where(best < floor, torch.full_like(which, -1), which), best


def instance_classes(assignment: torch.Tensor, labels: torch.Tensor, object_idx: torch.Tensor,
                     count: int) -> torch.Tensor:
    """Mode of the semantic label over each instance's assigned object points (ties: smallest
    label); ``INVALID_CLASS`` for an instance with none. -> (I,) int64."""
    owner = assignment[object_idx] + 1  # 0: none, counted in a row of its own and dropped
    votes = torch.bincount(owner * NUM_CLASSES + labels[object_idx], minlength=(count + 1) * NUM_CLASSES)
    votes = votes.view(count + 1, NUM_CLASSES)[1:]
    classes = votes.argmax(dim=1)
    return torch.where(votes.sum(dim=1) > 0, classes, torch.full_like(classes, INVALID_CLASS))


def instance_sizes(assignment: torch.Tensor, count: int) -> torch.Tensor:
    """Assigned points per instance -> (I,) int64."""
    return torch.bincount(assignment + 1, minlength=count + 1)[1:]


def instance_sums(values: torch.Tensor, assignment: torch.Tensor, count: int) -> torch.Tensor:
    """Σ of ``values`` (N,) over each instance's assigned points -> (I,), in the dtype of ``values``.
    Unassigned points (-1) are summed into a slot of their own, then dropped (no boolean indexing);
    each instance's points are added in point order."""
    sums = torch.zeros(count + 1, dtype=values.dtype, device=values.device)
    return sums.index_add_(0, assignment + 1, values)[1:]


def refine_with_superpoints(assignment: torch.Tensor, superpoints: torch.Tensor, count: int) -> torch.Tensor:
    """Each superpoint takes the assignment most of its points have (instances first, "none"
    last; first maximum wins) (SPEC §11). superpoints (N,) int64 -> assignment (N,) int64."""
    _, sp = torch.unique(superpoints, return_inverse=True)
    num_sp = int(sp.max()) + 1 if sp.numel() else 0
    label = torch.where(assignment < 0, torch.full_like(assignment, count), assignment)
    votes = torch.bincount(sp * (count + 1) + label, minlength=num_sp * (count + 1)).view(num_sp, count + 1)
    winner = votes.argmax(dim=1)
    winner = torch.where(winner == count, torch.full_like(winner, -1), winner)
    return winner[sp]


@dataclass
class PostResult:
    thresholds: torch.Tensor  # (I,) float32 raw Otsu thresholds
    masks: torch.Tensor  # (M, N) bool final masks
    classes: torch.Tensor  # (M,) int64 class index 0..19
    scores: torch.Tensor  # (M,) float32
    instance_ids: torch.Tensor  # (M,) int64 index of each output among the I merged instances


def _nothing_kept(thresholds: torch.Tensor, num_points: int) -> PostResult:
    device = thresholds.device
    empty = torch.zeros(0, dtype=torch.int64, device=device)
    return PostResult(thresholds=thresholds, masks=torch.zeros(0, num_points, dtype=torch.bool, device=device),
                      classes=empty, scores=torch.zeros(0, device=device), instance_ids=empty)


def postprocess_masks(masks: MaskSource, semantic_scores: torch.Tensor, object_idx: torch.Tensor,
                      superpoints: torch.Tensor | None) -> PostResult:
    """The official test script's post-processing (SPEC §10).

    masks: the (N, I) soft masks (``MaskSource``); semantic_scores (N, 20) float32 logits;
    object_idx (No,) int64; superpoints (N,) int64 or None.
    """
    num_points, count = masks.num_points, masks.count
    labels = semantic_scores.argmax(dim=1)
    thresholds = masks.thresholds()
    if count == 0:
        return _nothing_kept(thresholds, num_points)

    # 1-2: M' = m where m >= T else 0; assign; vote classes.
    assignment, best, kept_sums = masks.threshold_pass(thresholds)
    classes = instance_classes(assignment, labels, object_idx, count)
    # 3 [quirk]: cover = floor(Σ_assigned m) / Σ_all M', the numerator truncated to an integer
    # (assigned points have m >= T, so their m is their M'). The numerator is summed in float64,
    # where it is exact in any order: every summand is a float32 >= T >= 1/100 > 2^-7, hence a
    # multiple of 2^-30, and N < 2^22 of them need at most 52 significant bits.
    covered = masks.instance_sums(best.double(), assignment, count).floor().float()
    cover = (covered / (kept_sums + 1e-6)).clamp(max=1.0)
    # 4: M'' = sqrt(M' * cover), T'' = sqrt(T * cover); assign.
    # Every sqrt here is correctly rounded (``rounded_sqrt_``), as the official code's on CUDA.
    # Zeros are raised to ZERO_STANDIN before the sqrt (MKL's CPU sqrt of 0.0 was ~7x slower than of
    # a normal number). This changes no result: sqrt(ZERO_STANDIN) = 1e-15 is below every non-zero
    # T'' (>= sqrt(0.01 / N)), so such a point stays unassigned whichever instance wins the tie,
    # and only assigned points' values are used afterwards.
    scaled_thresholds = rounded_sqrt_(thresholds * cover)
    assignment, best = masks.rescale_pass(cover, scaled_thresholds)
    # 5: keep instances with more than MIN_POINTS points; assign among them.
    sizes = instance_sizes(assignment, count)
    ids = torch.nonzero(sizes > MIN_POINTS).view(-1)
    if ids.numel() == 0:
        return _nothing_kept(thresholds, num_points)
    assignment, best = restrict(assignment, best, masks, ids, scaled_thresholds[ids])
    # 6: score = sqrt(mean M'' * mean class probability) over assigned points; keep > MIN_SCORE.
    n = ids.numel()
    classes = classes[ids]
    sizes = instance_sizes(assignment, n).float() + 1e-6
    mask_mean = masks.instance_sums(best, assignment, n) / sizes
    prob = torch.zeros(num_points, device=best.device)
    members = torch.nonzero(assignment >= 0).view(-1)  # softmax only where a probability is used
    member_class = classes.clamp(max=NUM_CLASSES - 1)[assignment[members]]
    prob[members] = semantic_scores[members].softmax(dim=1).gather(1, member_class.unsqueeze(1)).squeeze(1)
    prob_mean = masks.instance_sums(prob, assignment, n) / sizes
    scores = rounded_sqrt_(torch.where(classes == INVALID_CLASS, torch.zeros_like(mask_mean), mask_mean * prob_mean))
    confident = torch.nonzero(scores > MIN_SCORE).view(-1)
    if confident.numel() == 0:
        return _nothing_kept(thresholds, num_points)
    global_assignment = torch.where(assignment >= 0, ids[assignment.clamp(min=0)], assignment)
    ids, scores = ids[confident], scores[confident]
    assignment, _ = restrict(global_assignment, best, masks, ids, scaled_thresholds[ids])
    # 7: superpoint refinement, classes again, drop invalid ones.
    n = ids.numel()
    if superpoints is not None:
        assignment = refine_with_superpoints(assignment, superpoints, n)
    classes = instance_classes(assignment, labels, object_idx, n)
    valid = torch.nonzero(classes != INVALID_CLASS).view(-1)
    return PostResult(
        thresholds=thresholds,
        masks=assignment.unsqueeze(0) == valid.unsqueeze(1),
        classes=classes[valid],
        scores=scores[valid],
        instance_ids=ids[valid],
    )
