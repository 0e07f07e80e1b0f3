"""Test oracle: SPEC §10 transcribed step by step, one instance at a time, on instance-major
masks (I, N) — the official test script's structure, with none of the engine's shortcuts."""

from __future__ import annotations

import numpy as np
import torch

from engine.classes import INVALID_CLASS


def _sqrt(values: torch.Tensor) -> torch.Tensor:
    """Correctly rounded, as the official code's CUDA sqrt (NumPy's; torch's CPU sqrt is not)."""
    return torch.from_numpy(np.sqrt(values.numpy()))


def _assign(scores: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    if scores.shape[0] == 0 or not (thresholds != 0).any():
        return torch.full((scores.shape[1],), -1, dtype=torch.int64)
    best, which = scores.max(dim=0)
    which[best < thresholds[thresholds != 0].min()] = -1
    return which


def _classes(assignment, labels, object_idx, count):
    out = []
    for i in range(count):
        members = labels[object_idx][assignment[object_idx] == i]
        out.append(int(torch.bincount(members, minlength=20).argmax()) if members.numel() else INVALID_CLASS)
    return torch.tensor(out, dtype=torch.int64)


def literal_postprocess(masks, semantic_scores, object_idx, superpoints, thresholds):
    """masks (I, N) float32 and Otsu thresholds (I,): returns (masks (M, N) bool, classes, scores, ids)."""
    labels = semantic_scores.argmax(dim=1)
    count, num_points = masks.shape
    kept = torch.where(masks < thresholds.unsqueeze(1), torch.zeros_like(masks), masks)
    assignment = _assign(kept, thresholds)
    classes = _classes(assignment, labels, object_idx, count)
    cover = torch.zeros(count)
    for i in range(count):
        numerator = float(int(masks[i, assignment == i].double().sum()))  # lands in an integer tensor
        cover[i] = min(1.0, numerator / (kept[i].sum() + 1e-6))
    kept = _sqrt(kept * cover.unsqueeze(1))
    thresholds = _sqrt(thresholds * cover)
    assignment = _assign(kept, thresholds)
    sizes = torch.tensor([(assignment == i).sum() for i in range(count)])
    ids = torch.nonzero(sizes > 100).view(-1)
    kept, thresholds, classes = kept[ids], thresholds[ids], classes[ids]
    assignment = _assign(kept, thresholds)
    probs = semantic_scores.softmax(dim=1)
    scores = torch.zeros(ids.numel())
    for i in range(ids.numel()):
        members = assignment == i
        n = members.sum() + 1e-6
        if classes[i] == INVALID_CLASS:
            continue
        scores[i] = kept[i, members].sum() / n * (probs[members, classes[i]].sum() / n)
    scores = _sqrt(scores)
    confident = scores > 0.1
    ids, kept, thresholds, scores = ids[confident], kept[confident], thresholds[confident], scores[confident]
    assignment = _assign(kept, thresholds)
    if superpoints is not None and ids.numel():
        _, sp = torch.unique(superpoints, return_inverse=True)
        refined = assignment.clone()
        for s in range(int(sp.max()) + 1):
            votes = torch.bincount(torch.where(assignment[sp == s] < 0, ids.numel(), assignment[sp == s]),
                                   minlength=ids.numel() + 1)
            winner = int(votes.argmax())
            refined[sp == s] = -1 if winner == ids.numel() else winner
        assignment = refined
    classes = _classes(assignment, labels, object_idx, ids.numel())
    valid = classes != INVALID_CLASS
    out_masks = torch.stack([assignment == i for i in range(ids.numel())]) if ids.numel() else \
        torch.zeros(0, num_points, dtype=torch.bool)
    return out_masks[valid], classes[valid], scores[valid], ids[valid]
