"""Test oracle: the ScanNet v2 instance-segmentation AP, computed from its definition one instance and
one prediction at a time, in plain Python over exact vertex counts.

An independent implementation, written from the benchmark's definition and SPEC §12, that
``engine.instance_ap`` is checked against figure for figure. It shares no code with the engine and
does none of its shortcuts (no per-scene pair arrays, no vectorized matching over scenes).

The definition, as computed here:

- Classes: the 18 nyu40 ids of :data:`CLASSES` (ScanNet's 20 classes less wall and floor). A
  ground-truth vertex holds ``nyu40_id * 1000 + instance``; each distinct value whose nyu40 id is
  one of the 18 is one instance. Every other vertex (0 = unannotated, wall, floor, other nyu40
  ids) is *void*.
- Sizes: instances under :data:`MIN_VERTICES` vertices are *small*: they need not be found, and a
  prediction's vertices on a small instance of its own class count like void. Predictions under
  :data:`MIN_VERTICES` vertices, or labelled outside the 18 classes, are not evaluated.
- A prediction *overlaps* an instance of its own class at threshold ``t`` when their IoU
  (shared vertices / vertices in either) is strictly above ``t``. ``t`` is one of
  :data:`THRESHOLD_PERCENTS` / 100, compared exactly in integers (``100 * shared > percent *
  union``); the benchmark compares float IoUs with the floats ``np.arange(0.5, 0.95, 0.05)``, which
  lie a few ulps above the decimal values, and both comparisons agree for any scene under
  10**12 vertices.
- Per scene, class and threshold, the instances (not small) are visited in ascending id order.
  The predictions of the class that overlap the instance and are not yet *claimed* (visited in
  input order) are its matches. With no match the instance is a miss. Otherwise the first match
  is claimed by this instance (a later instance no longer sees it), the highest confidence among
  the matches is one true positive, and each other match is one false positive at its own
  confidence (those predictions stay unclaimed: below IoU 0.5 they may match a later instance).
- A prediction that overlaps no instance of its class (small ones included) is one false
  positive, unless the share of its vertices on void or on small instances of its class is above
  ``t``. Overlap with instances of other classes is never excused.
- AP of a class at ``t``, over all scenes together: for each distinct confidence ``c`` of the
  scored examples, keep those scoring ``>= c``; precision = true / kept, recall = true / number
  of instances (not small). These points, from the lowest ``c`` (highest recall) to the highest,
  followed by the anchor (recall 0, precision 1), are integrated with midpoint widths: each point
  weighs its precision by half the recall distance between its two neighbours, ``(recall_before
  - recall_after) / 2``, where the first point is its own "before" and the anchor has 0 "after".
  A class with no instance (not small) in any scene has AP NaN; with instances but no scored
  example (no prediction, or every prediction excused) it has AP 0.
- Averages: mAP is the NaN-skipping mean over the thresholds 0.50, 0.55, ..., 0.90 and all
  classes; AP50 and AP25 the NaN-skipping mean over classes at 0.50 and 0.25. Per class: the mean
  over the nine mAP thresholds, and the values at 0.50 and 0.25.

Floating point: the comparison with the engine is exact, so the few float operations are fixed
as the benchmark does them: precision and recall are single divisions of integers; the curve is
summed as one numpy dot product, in the point order above; the averages are numpy means of the
threshold-major table (thresholds as rows).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

# SPEC §12: ScanNet's classes other than wall and floor, nyu40 id -> name, in benchmark order.
CLASSES: dict[int, str] = {
    3: "cabinet", 4: "bed", 5: "chair", 6: "sofa", 7: "table", 8: "door", 9: "window", 10: "bookshelf",
    11: "picture", 12: "counter", 14: "desk", 16: "curtain", 24: "refrigerator", 28: "shower curtain",
    33: "toilet", 34: "sink", 36: "bathtub", 39: "otherfurniture",
}
# IoU thresholds in percent, in the column order of the AP table: the nine of mAP, then AP25's.
THRESHOLD_PERCENTS: tuple[int, ...] = (50, 55, 60, 65, 70, 75, 80, 85, 90, 25)
MAP_ROWS = slice(0, 9)  # rows of the threshold-major table that mAP averages
AP50_ROW = THRESHOLD_PERCENTS.index(50)
AP25_ROW = THRESHOLD_PERCENTS.index(25)
MIN_VERTICES = 100


@dataclass(frozen=True)
class Prediction:
    """One evaluated prediction: a class of :data:`CLASSES` and at least :data:`MIN_VERTICES` vertices."""

    nyu40: int
    confidence: float
    size: int  # vertices in the mask
    shared: dict[int, int]  # instance id -> vertices of the mask on it (instances of any of the 18 classes)
    void: int  # vertices of the mask on void


@dataclass(frozen=True)
class Scene:
    """One scene: its instances of the 18 classes (any size) and its evaluated predictions, in input order."""

    instance_sizes: dict[int, int]  # instance id -> vertices
    predictions: list[Prediction]


def describe_scene(pred_masks, pred_labels, pred_scores, gt_ids) -> Scene:
    """``pred_masks (M, N)`` (non-zero = inside), ``pred_labels (M,)`` nyu40 ids, ``pred_scores (M,)``,
    ``gt_ids (N,)`` ``nyu40_id * 1000 + instance`` per vertex."""
    gt_ids = np.asarray(gt_ids, dtype=np.int64)
    values, counts = np.unique(gt_ids, return_counts=True)
    instance_sizes = {
        value: count for value, count in zip(values.tolist(), counts.tolist(), strict=True) if value // 1000 in CLASSES
    }
    predictions = []
    for mask, nyu40, confidence in zip(pred_masks, pred_labels, pred_scores, strict=True):
        covered = gt_ids[np.asarray(mask) != 0]
        if int(nyu40) not in CLASSES or covered.size < MIN_VERTICES:
            continue
        shared, void = {}, 0
        values, counts = np.unique(covered, return_counts=True)
        for value, count in zip(values.tolist(), counts.tolist(), strict=True):
            if value in instance_sizes:
                shared[value] = count
            else:
                void += count
        predictions.append(Prediction(int(nyu40), float(confidence), int(covered.size), shared, void))
    return Scene(instance_sizes, predictions)


def class_ap(scenes: Iterable[Scene], nyu40: int, percent: int) -> float:
    """AP of one class at the IoU threshold ``percent / 100``, over all scenes."""
    examples: list[tuple[float, bool]] = []  # (confidence, true positive)
    num_instances = 0
    for scene in scenes:
        sizes = {key: size for key, size in scene.instance_sizes.items() if key // 1000 == nyu40}
        candidates = [p for p in scene.predictions if p.nyu40 == nyu40]
        wanted = sorted(key for key, size in sizes.items() if size >= MIN_VERTICES)
        num_instances += len(wanted)
        claimed: set[int] = set()  # positions in candidates
        for key in wanted:
            matches = [k for k, p in enumerate(candidates)
                       if k not in claimed and _overlaps(p, key, sizes[key], percent)]
            if not matches:
                continue
            claimed.add(matches[0])
            confidences = sorted((candidates[k].confidence for k in matches), reverse=True)
            examples.append((confidences[0], True))
            examples.extend((confidence, False) for confidence in confidences[1:])
        for p in candidates:
            if any(_overlaps(p, key, size, percent) for key, size in sizes.items()):
                continue
            excused = p.void + sum(p.shared.get(key, 0) for key, size in sizes.items() if size < MIN_VERTICES)
            if 100 * excused <= percent * p.size:
                examples.append((p.confidence, False))
    if num_instances == 0:
        return math.nan
    return _curve_area(examples, num_instances)


def ap_by_threshold(scenes: Iterable[Scene]) -> np.ndarray:
    """(10, 18): AP per threshold (rows, :data:`THRESHOLD_PERCENTS`) and class (columns, :data:`CLASSES`)."""
    scenes = list(scenes)
    return np.array([[class_ap(scenes, nyu40, percent) for nyu40 in CLASSES] for percent in THRESHOLD_PERCENTS])


def summarize(by_threshold: np.ndarray) -> dict:
    """``{"mAP", "AP50", "AP25", "classes": {name: {"AP", "AP50", "AP25"}}}`` as floats, NaN where undefined."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a mean of nothing but NaN is NaN
        summary = {
            "mAP": float(np.nanmean(by_threshold[MAP_ROWS])),
            "AP50": float(np.nanmean(by_threshold[AP50_ROW])),
            "AP25": float(np.nanmean(by_threshold[AP25_ROW])),
        }
    summary["classes"] = {
        name: {
            "AP": float(np.mean(by_threshold[MAP_ROWS, column])),
            "AP50": float(by_threshold[AP50_ROW, column]),
            "AP25": float(by_threshold[AP25_ROW, column]),
        }
        for column, name in enumerate(CLASSES.values())
    }
    return summary


def oracle_instance_ap(scenes) -> tuple[np.ndarray, dict]:
    """``scenes``: iterable of (pred_masks (M, N), pred_labels (M,), pred_scores (M,), gt_ids (N,)).

    Returns the AP table (18 classes x 10 thresholds, :data:`THRESHOLD_PERCENTS` order) and
    :func:`summarize`'s dict.
    """
    by_threshold = ap_by_threshold(describe_scene(*scene) for scene in scenes)
    return by_threshold.T.copy(), summarize(by_threshold)


def _overlaps(prediction: Prediction, key: int, size: int, percent: int) -> bool:
    """IoU of the prediction with instance ``key`` (of ``size`` vertices) strictly above ``percent`` %."""
    shared = prediction.shared.get(key, 0)
    return 100 * shared > percent * (size + prediction.size - shared)


def _curve_area(examples: list[tuple[float, bool]], num_instances: int) -> float:
    """Area under the precision-recall curve of scored examples (see the module docstring)."""
    ranked = sorted(examples, key=lambda example: example[0], reverse=True)
    points = []  # (precision, recall), one per distinct confidence, highest confidence first
    true = false = 0
    for k, (confidence, is_true) in enumerate(ranked):
        true += is_true
        false += not is_true
        if k + 1 == len(ranked) or ranked[k + 1][0] != confidence:
            points.append((true / (true + false), true / num_instances))
    curve = points[::-1] + [(1.0, 0.0)]  # lowest confidence first, then the anchor
    recalls = [recall for _, recall in curve]
    widths = [((recalls[k - 1] if k else recalls[0]) - (recalls[k + 1] if k + 1 < len(curve) else 0.0)) / 2
              for k in range(len(curve))]
    return float(np.dot([precision for precision, _ in curve], widths))
