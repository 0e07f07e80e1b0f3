"""ScanNet 3D instance-segmentation AP, equal to the official benchmark script, vectorized. numpy only.

The official script is ScanNet's ``BenchmarkScripts/3d_evaluation/evaluate_semantic_instance.py``
(DKNet ships a copy as ``utils/eval.py``). It loops in Python over scenes, classes, thresholds,
ground-truth instances and predictions, comparing full-scene arrays for every (prediction, ground
truth) pair. Here a scene is reduced once to per-instance counts (:func:`match_scene`), and the
AP of every class and threshold is computed from those counts over all scenes at once
(:func:`average_precisions`). Every figure is meant to equal the official one bit for bit: the
float operations are the benchmark's. The tests check every figure exactly against an independent
per-instance implementation of the definition, ``tests/instance_ap_oracle.py``.

The algorithm, restated:

- Classes: the 18 benchmark classes other than wall and floor (:data:`EVAL_NYU40_IDS`). A ground
  truth vertex id is ``nyu40 * 1000 + instance``; vertices whose class is not one of the 18 are
  *void*. Each distinct id of the 18 classes is one ground-truth instance.
- Predictions with a label outside the 18 classes, or with fewer than :data:`MIN_REGION_VERTICES`
  vertices, are dropped. Ground-truth instances below that size are not matched, and the overlap
  of a prediction with them is ignored, like void.
- For each IoU threshold ``t`` in :data:`OVERLAPS` (strictly greater than ``t`` counts):

  * Greedy matching, per scene and class: ground-truth instances in ascending id order, and for
    each, the predictions of its class in input order that overlap it above ``t`` and are not
    taken yet. The first such prediction takes the instance (and is taken); the instance becomes
    one true positive scored with the highest confidence among all its matching predictions,
    every other matching prediction one false positive (those stay untaken, so for ``t < 0.5``
    they may also match a later instance). An instance with no match is a false negative.
  * A prediction whose IoU with every same-class instance (small ones included) is at most ``t``
    is a false positive, unless more than a fraction ``t`` of its vertices is ignored (void, or
    inside small same-class instances).
  * AP: examples sorted by confidence; one precision / recall point per distinct confidence
    (counting examples at or above it), plus the point (recall 0, precision 1); the area is
    ``sum_i precision_i * (recall_{i-1} - recall_{i+1}) / 2`` (recall_{-1} = recall_0, beyond the
    end 0). A class without ground truth has AP NaN; with ground truth but no prediction, 0.

- mAP averages the thresholds 0.50..0.90 (NaN-skipping mean over classes and thresholds); AP50 and
  AP25 take one threshold each.

One case is not covered by the official ScanNet script: a class with ground truth and
predictions where no example survives (every prediction ignored, no instance matched). The
official ScanNet script then crashes (an index into an empty array); like DKNet's copy, the AP is 0.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.classes import CLASS_NAMES, FIRST_OBJECT_CLASS, NYU40_IDS

__all__ = [
    "EVAL_CLASS_NAMES",
    "EVAL_NYU40_IDS",
    "GT_ID_LIMIT",
    "MIN_REGION_VERTICES",
    "OVERLAPS",
    "APResult",
    "InstanceAP",
    "SceneMatches",
    "average_precisions",
    "match_scene",
]

EVAL_NYU40_IDS: tuple[int, ...] = NYU40_IDS[FIRST_OBJECT_CLASS:]
EVAL_CLASS_NAMES: tuple[str, ...] = CLASS_NAMES[FIRST_OBJECT_CLASS:]
# IoU thresholds: 0.50, 0.55, ..., 0.90 for mAP, then 0.25. Built with arange so that each value
# is the very float the benchmark compares with (0.6000000000000001, 0.7000000000000002, ...).
OVERLAPS: np.ndarray = np.append(np.arange(0.5, 0.95, 0.05), 0.25)
MIN_REGION_VERTICES = 100
GT_ID_LIMIT = 41_000  # ground-truth ids are below: NYU40 ids 0..40, instances 0..999

_NUM_CLASSES = len(EVAL_NYU40_IDS)
_MAP_COLUMNS = np.flatnonzero(~np.isclose(OVERLAPS, 0.25))  # the 9 thresholds of mAP
_AP50_COLUMN = int(np.flatnonzero(np.isclose(OVERLAPS, 0.5))[0])
_AP25_COLUMN = int(np.flatnonzero(np.isclose(OVERLAPS, 0.25))[0])


@dataclass(frozen=True)
class SceneMatches:
    """One scene reduced to what the AP needs: instance sizes and same-class intersections.

    Predictions (P) are those kept for evaluation, in input order; ground-truth instances (G) are
    all instances of the 18 classes (any size), in ascending id order. Pairs (K) are every
    (instance, prediction) of the same class with a non-empty intersection, sorted by instance,
    then prediction. Class indices are positions in :data:`EVAL_NYU40_IDS`.
    """

    pred_class: np.ndarray  # (P,) int64 class index
    pred_score: np.ndarray  # (P,) float64 confidence
    pred_vertices: np.ndarray  # (P,) int64 mask size, >= MIN_REGION_VERTICES
    pred_ignored: np.ndarray  # (P,) int64 mask vertices on void or on small same-class instances
    gt_class: np.ndarray  # (G,) int64 class index
    gt_vertices: np.ndarray  # (G,) int64 instance size
    pair_gt: np.ndarray  # (K,) int64 index into the instances
    pair_pred: np.ndarray  # (K,) int64 index into the predictions
    pair_intersection: np.ndarray  # (K,) int64, > 0


@dataclass(frozen=True)
class APResult:
    """AP per class and threshold, and the benchmark's averages (NaN where undefined)."""

    ap: np.ndarray  # (18, 10) float64: EVAL_CLASS_NAMES x OVERLAPS
    class_ap: np.ndarray  # (18,) mean over the mAP thresholds 0.50..0.90
    class_ap50: np.ndarray  # (18,)
    class_ap25: np.ndarray  # (18,)
    mean_ap: float
    mean_ap50: float
    mean_ap25: float

    def to_json_dict(self) -> dict:
        """``{"mAP", "AP50", "AP25", "classes": {name: {"AP", "AP50", "AP25"}}}``, None for NaN."""
        return {
            "mAP": _json_float(self.mean_ap),
            "AP50": _json_float(self.mean_ap50),
            "AP25": _json_float(self.mean_ap25),
            "classes": {
                name: {"AP": _json_float(ap), "AP50": _json_float(ap50), "AP25": _json_float(ap25)}
                for name, ap, ap50, ap25 in zip(
                    EVAL_CLASS_NAMES, self.class_ap, self.class_ap50, self.class_ap25, strict=True
                )
            },
        }


def match_scene(
    pred_masks: np.ndarray, pred_labels: np.ndarray, pred_scores: np.ndarray, gt_ids: np.ndarray
) -> SceneMatches:
    """Reduce one scene's predictions and ground truth to :class:`SceneMatches`.

    ``pred_masks (M, N)`` bool (or integers, non-zero = inside), ``pred_labels (M,)`` NYU40 ids,
    ``pred_scores (M,)`` finite floats, ``gt_ids (N,)`` integers ``nyu40 * 1000 + instance``
    (0 = unannotated, all below :data:`GT_ID_LIMIT`). Predictions whose label is not one of the
    18 classes, or with fewer than :data:`MIN_REGION_VERTICES` vertices, are left out. Raises
    ValueError on inconsistent shapes, ids out of range or non-finite scores.
    """
    masks, labels, scores, gt_ids = _checked(pred_masks, pred_labels, pred_scores, gt_ids)
    # Ground-truth instances: the ids of the 18 classes present; vertex_gt maps void to num_gt.
    id_vertices = np.bincount(gt_ids, minlength=GT_ID_LIMIT)
    present = np.flatnonzero(id_vertices)
    instance_ids = present[_class_index(present // 1000) >= 0]
    num_gt = instance_ids.size
    id_to_instance = np.full(GT_ID_LIMIT, num_gt, dtype=np.int64)
    id_to_instance[instance_ids] = np.arange(num_gt)
    vertex_gt = id_to_instance[gt_ids]
    gt_class = _class_index(instance_ids // 1000)
    gt_vertices = id_vertices[instance_ids]

    # (P, G + 1) vertex counts of each prediction of the 18 classes per instance, void last. One
    # bincount per prediction: measured faster than batched forms (nonzero + bincount, a float
    # matmul with a one-hot matrix) for ScanNet-sized scenes, and memory independent of mask sizes.
    pred_class = _class_index(labels)
    evaluated = np.flatnonzero(pred_class >= 0)
    counts = np.zeros((evaluated.size, num_gt + 1), dtype=np.int64)
    for row, pred in enumerate(evaluated):
        counts[row] = np.bincount(vertex_gt[masks[pred]], minlength=num_gt + 1)
    pred_vertices = counts.sum(axis=1)
    large = pred_vertices >= MIN_REGION_VERTICES
    kept, counts, pred_vertices = evaluated[large], counts[large], pred_vertices[large]
    pred_class = pred_class[kept]
    same_class = pred_class[None, :] == gt_class[:, None]  # (G, P)
    pair_gt, pair_pred = np.nonzero(same_class & (counts[:, :num_gt].T > 0))  # sorted by instance
    pair_intersection = counts[pair_pred, pair_gt]
    small = gt_vertices[pair_gt] < MIN_REGION_VERTICES
    pred_ignored = counts[:, num_gt] + np.bincount(
        pair_pred[small], weights=pair_intersection[small], minlength=kept.size
    ).astype(np.int64)
    return SceneMatches(
        pred_class=pred_class,
        pred_score=scores[kept],
        pred_vertices=pred_vertices,
        pred_ignored=pred_ignored,
        gt_class=gt_class,
        gt_vertices=gt_vertices,
        pair_gt=pair_gt.astype(np.int64),
        pair_pred=pair_pred.astype(np.int64),
        pair_intersection=pair_intersection,
    )


def average_precisions(scenes: Sequence[SceneMatches]) -> APResult:
    """AP of every class and threshold over all scenes, and the benchmark's averages.

    The order of the scenes does not change any figure.
    """
    batch = _concatenate(scenes)
    has_gt = np.bincount(batch.gt_class[batch.gt_vertices >= MIN_REGION_VERTICES], minlength=_NUM_CLASSES) > 0
    has_pred = np.bincount(batch.pred_class, minlength=_NUM_CLASSES) > 0
    ap = np.full((_NUM_CLASSES, OVERLAPS.size), np.nan)
    ap[has_gt & ~has_pred] = 0.0
    evaluated = np.flatnonzero(has_gt & has_pred)
    for column, threshold in enumerate(OVERLAPS):
        example_class, example_true, example_score, false_negatives = _examples(batch, float(threshold))
        order = np.argsort(example_class, kind="stable")
        bounds = np.searchsorted(example_class[order], np.arange(_NUM_CLASSES + 1))
        for cls in evaluated:
            members = order[bounds[cls] : bounds[cls + 1]]
            ap[cls, column] = _average_precision(example_true[members], example_score[members],
                                                 int(false_negatives[cls]))
    return _summarize(ap)


class InstanceAP:
    """Running AP over scenes: ``add_scene`` per scene, ``result`` at any time (cheap to repeat)."""

    def __init__(self) -> None:
        self._scenes: list[SceneMatches] = []

    def add_scene(
        self, pred_masks: np.ndarray, pred_labels: np.ndarray, pred_scores: np.ndarray, gt_ids: np.ndarray
    ) -> SceneMatches:
        """Match one scene (shapes as in :func:`match_scene`) and keep it; returns its matches."""
        matches = match_scene(pred_masks, pred_labels, pred_scores, gt_ids)
        self._scenes.append(matches)
        return matches

    @property
    def num_scenes(self) -> int:
        return len(self._scenes)

    def result(self) -> APResult:
        return average_precisions(self._scenes)


# ----------------------------------------------------------------------------------------------
# Implementation


def _checked(pred_masks, pred_labels, pred_scores, gt_ids):
    gt_ids = np.asarray(gt_ids)
    masks = np.asarray(pred_masks)
    labels = np.asarray(pred_labels)
    scores = np.asarray(pred_scores, dtype=np.float64)
    if gt_ids.ndim != 1 or gt_ids.dtype.kind not in "iu":
        raise ValueError(f"gt_ids must be a 1-D integer array, got {gt_ids.dtype} {gt_ids.shape}")
    if gt_ids.size and not (0 <= gt_ids.min() and gt_ids.max() < GT_ID_LIMIT):
        raise ValueError(f"gt_ids must be nyu40_id * 1000 + instance in 0..{GT_ID_LIMIT - 1}, "
                         f"got {gt_ids.min()}..{gt_ids.max()}")
    num_preds = labels.shape[0] if labels.ndim == 1 else -1
    if masks.ndim != 2 or masks.shape != (num_preds, gt_ids.size) or scores.shape != (num_preds,):
        raise ValueError(
            f"expected pred_masks (M, {gt_ids.size}), pred_labels (M,), pred_scores (M,); got "
            f"{masks.shape}, {labels.shape}, {scores.shape}"
        )
    if labels.size and labels.dtype.kind not in "iu":
        raise ValueError(f"pred_labels must be integers (NYU40 ids), got {labels.dtype}")
    if not np.isfinite(scores).all():
        raise ValueError("pred_scores must be finite")
    if masks.dtype != bool:
        masks = masks != 0
    return masks, labels.astype(np.int64), scores, gt_ids.astype(np.int64)


def _class_index(nyu40_ids: np.ndarray) -> np.ndarray:
    """NYU40 ids (any integers) -> class index in EVAL_NYU40_IDS, -1 for any other id."""
    valid = np.asarray(EVAL_NYU40_IDS)
    position = np.minimum(np.searchsorted(valid, nyu40_ids), valid.size - 1)
    return np.where(valid[position] == nyu40_ids, position, -1).astype(np.int64)


def _concatenate(scenes: Sequence[SceneMatches]) -> SceneMatches:
    """All scenes as one, with instance and prediction indices offset (pair order is kept)."""
    if not scenes:
        empty_int, empty_float = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        return SceneMatches(empty_int, empty_float, empty_int, empty_int, empty_int, empty_int,
                            empty_int, empty_int, empty_int)
    gt_offsets = np.cumsum([0] + [scene.gt_class.size for scene in scenes])
    pred_offsets = np.cumsum([0] + [scene.pred_class.size for scene in scenes])

    def joined(name: str) -> np.ndarray:
        return np.concatenate([getattr(scene, name) for scene in scenes])

    return SceneMatches(
        pred_class=joined("pred_class"),
        pred_score=joined("pred_score"),
        pred_vertices=joined("pred_vertices"),
        pred_ignored=joined("pred_ignored"),
        gt_class=joined("gt_class"),
        gt_vertices=joined("gt_vertices"),
        pair_gt=np.concatenate([s.pair_gt + o for s, o in zip(scenes, gt_offsets[:-1], strict=True)]),
        pair_pred=np.concatenate([s.pair_pred + o for s, o in zip(scenes, pred_offsets[:-1], strict=True)]),
        pair_intersection=joined("pair_intersection"),
    )


def _examples(batch: SceneMatches, threshold: float):
    """Scored examples and false negatives at one IoU threshold, all classes together.

    Returns ``example_class (E,)`` int64, ``example_true (E,)`` bool (true positive or false
    positive), ``example_score (E,)`` float64 and ``false_negatives (18,)`` int64.
    """
    pair_gt, pair_pred, inter = batch.pair_gt, batch.pair_pred, batch.pair_intersection
    iou = inter / (batch.gt_vertices[pair_gt] + batch.pred_vertices[pair_pred] - inter)
    above = iou > threshold
    candidate = above & (batch.gt_vertices[pair_gt] >= MIN_REGION_VERTICES)
    match_gt, match_pred = pair_gt[candidate], pair_pred[candidate]
    survives = _untaken(match_gt, match_pred, batch.pred_class.size)
    match_gt, match_pred = match_gt[survives], match_pred[survives]

    # Per instance: the best-scored matching prediction is the true positive, the others false.
    order = np.lexsort((-batch.pred_score[match_pred], match_gt))
    match_gt, match_pred = match_gt[order], match_pred[order]
    is_best = np.ones(match_gt.size, dtype=bool)
    is_best[1:] = match_gt[1:] != match_gt[:-1]

    matched = np.zeros(batch.gt_class.size, dtype=bool)
    matched[match_gt] = True
    missed = ~matched & (batch.gt_vertices >= MIN_REGION_VERTICES)
    false_negatives = np.bincount(batch.gt_class[missed], minlength=_NUM_CLASSES)

    overlaps_any = np.zeros(batch.pred_class.size, dtype=bool)
    overlaps_any[pair_pred[above]] = True
    unmatched = np.flatnonzero(~overlaps_any & (batch.pred_ignored / batch.pred_vertices <= threshold))

    example_class = np.concatenate([batch.gt_class[match_gt], batch.pred_class[unmatched]])
    example_true = np.concatenate([is_best, np.zeros(unmatched.size, dtype=bool)])
    example_score = np.concatenate([batch.pred_score[match_pred], batch.pred_score[unmatched]])
    return example_class, example_true, example_score, false_negatives


def _untaken(match_gt: np.ndarray, match_pred: np.ndarray, num_preds: int) -> np.ndarray:
    """(K,) bool: which candidate matches the greedy pass keeps (its prediction not taken earlier).

    Candidates are (instance, prediction) pairs above the threshold, sorted by instance then
    prediction. Walking the instances in order, an instance's first kept candidate *takes* its
    prediction; a taken prediction is skipped at every later instance. Solved as a fixed point:
    given the candidates dropped so far, find each instance's taker, then drop every candidate
    whose prediction was taken at an earlier instance; repeat until nothing changes. The first
    instance's taker is final after one round, the next one's after two, and so on, so this ends
    with the greedy result; a prediction that matches a single instance (always the case at
    thresholds >= 0.5, where instances are disjoint) is never dropped, and one round suffices.
    """
    dropped = np.zeros(match_gt.size, dtype=bool)
    while True:
        kept = np.flatnonzero(~dropped)
        first = np.ones(kept.size, dtype=bool)
        first[1:] = match_gt[kept[1:]] != match_gt[kept[:-1]]
        takers = kept[first]
        taken_at = np.full(num_preds, np.iinfo(np.int64).max)
        np.minimum.at(taken_at, match_pred[takers], match_gt[takers])
        now_dropped = match_gt > taken_at[match_pred]
        if np.array_equal(now_dropped, dropped):
            return ~dropped
        dropped = now_dropped


def _average_precision(example_true: np.ndarray, example_score: np.ndarray, false_negatives: int) -> float:
    """Area under one class's precision-recall curve, computed as the benchmark does (same floats).

    ``example_true (E,)`` bool, ``example_score (E,)`` float64. For each distinct score ``s``
    (ascending), with ``tp`` / ``fp`` the true / false examples scoring ``>= s``: precision
    ``tp / (tp + fp)``, recall ``tp / (tp + fn)`` where ``fn`` counts the true examples below
    ``s`` plus the unmatched instances. The final point is (recall 0, precision 1).
    """
    order = np.argsort(example_score, kind="stable")
    scores = example_score[order]
    trues_before = np.concatenate([[0], np.cumsum(example_true[order])])  # (E + 1,) trues in scores[:i]
    distinct = np.ones(scores.size, dtype=bool)
    distinct[1:] = scores[1:] != scores[:-1]
    starts = np.flatnonzero(distinct)  # first index of each distinct score
    tp = (trues_before[-1] - trues_before[starts]).astype(np.float64)
    fp = (scores.size - starts) - tp
    fn = trues_before[starts] + false_negatives
    precision = np.append(tp / (tp + fp), 1.0)
    recall = np.append(tp / (tp + fn), 0.0)
    previous = np.concatenate([recall[:1], recall[:-1]])
    following = np.append(recall[1:], 0.0)
    widths = 0.5 * previous - 0.5 * following
    return float(np.dot(precision, widths))


def _summarize(ap: np.ndarray) -> APResult:
    """Per-class and overall averages, each summed in the benchmark's element order (same floats)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of all-NaN: NaN, as intended
        mean_ap = float(np.nanmean(np.ascontiguousarray(ap[:, _MAP_COLUMNS].T)))  # threshold-major
        mean_ap50 = float(np.nanmean(ap[:, _AP50_COLUMN]))
        mean_ap25 = float(np.nanmean(ap[:, _AP25_COLUMN]))
    return APResult(
        ap=ap,
        class_ap=np.array([np.mean(row[_MAP_COLUMNS]) for row in ap]),
        class_ap50=ap[:, _AP50_COLUMN].copy(),
        class_ap25=ap[:, _AP25_COLUMN].copy(),
        mean_ap=mean_ap,
        mean_ap50=mean_ap50,
        mean_ap25=mean_ap25,
    )


def _json_float(value: float) -> float | None:
    return None if np.isnan(value) else float(value)
