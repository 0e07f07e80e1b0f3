"""Post-processing: Otsu thresholds, assignment, scoring, filtering, superpoint refinement
(SPEC §9–11; the official test script's steps, vectorized).

Masks are instance-major: ``masks (I, N)``. An assignment is ``(N,) int64``: the instance of each
point, or -1 for none.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.classes import INVALID_CLASS, NUM_CLASSES

OTSU_LEVELS = 100
MIN_POINTS = 100  # keep instances with more assigned points than this
MIN_SCORE = 0.1  # keep instances scoring more than this


def otsu_histograms(masks: torch.Tensor, levels: int = OTSU_LEVELS) -> torch.Tensor:
    """Per-instance histograms (I, levels) int64 of ``trunc(m * levels)``, clamped to levels - 1
    **[fix]**, counted exactly. masks (I, N) float32."""
    count = masks.shape[0]
    quantized = (masks * levels).to(torch.int64).clamp_(max=levels - 1)
    quantized += torch.arange(count, device=masks.device).unsqueeze(1) * levels
    return torch.bincount(quantized.view(-1), minlength=count * levels).view(count, levels)


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


def assign(scores: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """Per point the first instance with the largest score; -1 where that score is below the
    smallest non-zero threshold (everywhere if no threshold is non-zero).

    scores (I, N) float32, thresholds (I,) float32 -> (N,) int64.
    """
    nonzero = thresholds[thresholds != 0]
    if scores.shape[0] == 0 or nonzero.numel() == 0:
        return torch.full((scores.shape[1],), -1, dtype=torch.int64, device=scores.device)
    best, which = scores.max(dim=0)
    return torch.where(best < nonzero.min(), torch.full_like(which, -1), which)


def instance_classes(assignment: torch.Tensor, labels: torch.Tensor, object_idx: torch.Tensor,
                     count: int) -> torch.Tensor:
    """Mode of the semantic label over each instance's assigned object points (ties: smallest
    label); ``INVALID_CLASS`` for an instance with none. -> (I,) int64."""
    owner = assignment[object_idx]
    keep = owner >= 0
    votes = torch.bincount(owner[keep] * NUM_CLASSES + labels[object_idx][keep],
                           minlength=count * NUM_CLASSES).view(count, NUM_CLASSES)
    classes = votes.argmax(dim=1)
    return torch.where(votes.sum(dim=1) > 0, classes, torch.full_like(classes, INVALID_CLASS))


def assigned_values(scores: torch.Tensor, assignment: torch.Tensor) -> torch.Tensor:
    """Each point's score for its assigned instance (0 where none): scores (I, N) -> (N,)."""
    if scores.shape[0] == 0:
        return torch.zeros(scores.shape[1], dtype=scores.dtype, device=scores.device)
    values = scores.gather(0, assignment.clamp(min=0).unsqueeze(0)).squeeze(0)
    return torch.where(assignment >= 0, values, torch.zeros_like(values))


def per_instance_sum(values: torch.Tensor, assignment: torch.Tensor, count: int) -> torch.Tensor:
    """Σ of ``values`` (N,) float32 over each instance's assigned points -> (I,) float32."""
    keep = assignment >= 0
    return torch.zeros(count, device=values.device).index_add_(0, assignment[keep], values[keep])


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


def postprocess(masks: torch.Tensor, semantic_scores: torch.Tensor, object_idx: torch.Tensor,
                superpoints: torch.Tensor | None) -> PostResult:
    """The official test script's post-processing (SPEC §10).

    masks (I, N) float32 soft masks; semantic_scores (N, 20) float32 logits; object_idx (No,)
    int64; superpoints (N,) int64 or None.
    """
    count, num_points = masks.shape
    labels = semantic_scores.argmax(dim=1)
    thresholds = otsu_thresholds(otsu_histograms(masks))
    if count == 0:
        return _nothing_kept(thresholds, num_points)

    # 1-2: threshold, assign, vote classes.
    kept = masks * (masks >= thresholds.unsqueeze(1))
    assignment = assign(kept, thresholds)
    classes = instance_classes(assignment, labels, object_idx, count)
    # 3 [quirk]: cover = floor(Σ_assigned m) / Σ_all M', the numerator truncated to an integer.
    covered = per_instance_sum(assigned_values(masks, assignment), assignment, count).floor()
    cover = (covered / (kept.sum(dim=1) + 1e-6)).clamp(max=1.0)
    # 4: rescale by cover and re-assign.
    kept = torch.sqrt(kept * cover.unsqueeze(1))
    scaled_thresholds = torch.sqrt(thresholds * cover)
    assignment = assign(kept, scaled_thresholds)
    # 5: drop instances with too few points.
    sizes = torch.bincount(assignment[assignment >= 0], minlength=count)
    survivors = torch.nonzero(sizes > MIN_POINTS).view(-1)
    kept, scaled_thresholds, classes = kept[survivors], scaled_thresholds[survivors], classes[survivors]
    assignment = assign(kept, scaled_thresholds)
    n = survivors.numel()
    if n == 0:
        return _nothing_kept(thresholds, num_points)
    # 6: score = sqrt(mean mask value * mean class probability), drop low scores.
    sizes = torch.bincount(assignment[assignment >= 0], minlength=n).float() + 1e-6
    mask_mean = per_instance_sum(assigned_values(kept, assignment), assignment, n) / sizes
    probs = semantic_scores.softmax(dim=1)
    prob = probs.gather(1, classes.clamp(max=NUM_CLASSES - 1)[assignment.clamp(min=0)].unsqueeze(1)).squeeze(1)
    prob_mean = per_instance_sum(prob, assignment, n) / sizes
    scores = torch.sqrt(torch.where(classes == INVALID_CLASS, torch.zeros_like(mask_mean), mask_mean * prob_mean))
    confident = torch.nonzero(scores > MIN_SCORE).view(-1)
    survivors, kept = survivors[confident], kept[confident]
    scores, scaled_thresholds = scores[confident], scaled_thresholds[confident]
    assignment = assign(kept, scaled_thresholds)
    # 7: superpoint refinement, classes again, drop invalid ones.
    n = survivors.numel()
    if n == 0:
        return _nothing_kept(thresholds, num_points)
    if superpoints is not None:
        assignment = refine_with_superpoints(assignment, superpoints, n)
    classes = instance_classes(assignment, labels, object_idx, n)
    valid = torch.nonzero(classes != INVALID_CLASS).view(-1)
    return PostResult(
        thresholds=thresholds,
        masks=assignment.unsqueeze(0) == valid.unsqueeze(1),
        classes=classes[valid],
        scores=scores[valid],
        instance_ids=survivors[valid],
    )
