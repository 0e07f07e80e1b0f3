"""Test oracle: ScanNet's instance-AP evaluation (``evaluate_semantic_instance.py``) transcribed
literally, one instance at a time, with the benchmark's record-per-instance structure and its
numpy calls (``argsort``, ``unique``, ``convolve``, ``dot``, ``nanmean``) — none of the engine's
shortcuts. Inputs are arrays in memory instead of files; predictions are visited in input order.

Single deviation, shared with DKNet's copy of the script: a class with ground truth and
predictions but no scored example gets AP 0 (the ScanNet script indexes an empty array there).
"""

from __future__ import annotations

import warnings

import numpy as np

CLASS_NAMES = ("cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture", "counter",
               "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink", "bathtub", "otherfurniture")
CLASS_IDS = (3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)
NAME_OF_ID = dict(zip(CLASS_IDS, CLASS_NAMES, strict=True))
THRESHOLDS = np.append(np.arange(0.5, 0.95, 0.05), 0.25)
MIN_SIZE = 100


def scene_records(scene: str, pred_masks, pred_labels, pred_scores, gt_ids) -> dict:
    """One scene: {"gt": {class: [instance records]}, "pred": {class: [prediction records]}}."""
    gt_ids = np.asarray(gt_ids, dtype=np.int64)
    gt_records = {name: [] for name in CLASS_NAMES}
    for instance_id in np.unique(gt_ids):
        if instance_id == 0:
            continue
        label = int(instance_id // 1000)
        if label in NAME_OF_ID:
            gt_records[NAME_OF_ID[label]].append({
                "instance_id": int(instance_id),
                "vert_count": int((gt_ids == instance_id).sum()),
                "matched_pred": [],
            })
    is_void = np.logical_not(np.isin(gt_ids // 1000, CLASS_IDS))
    pred_records = {name: [] for name in CLASS_NAMES}
    for index in range(len(pred_labels)):
        label = int(pred_labels[index])
        if label not in NAME_OF_ID:
            continue
        name = NAME_OF_ID[label]
        mask = np.not_equal(pred_masks[index], 0)
        size = np.count_nonzero(mask)
        if size < MIN_SIZE:
            continue
        pred = {
            "key": (scene, index),
            "vert_count": int(size),
            "confidence": float(pred_scores[index]),
            "void_intersection": int(np.count_nonzero(np.logical_and(is_void, mask))),
        }
        matched_gt = []
        for gt in gt_records[name]:
            intersection = int(np.count_nonzero(np.logical_and(gt_ids == gt["instance_id"], mask)))
            if intersection > 0:
                gt_seen = dict(gt, intersection=intersection)
                pred_seen = dict(pred, intersection=intersection)
                matched_gt.append(gt_seen)
                gt["matched_pred"].append(pred_seen)
        pred["matched_gt"] = matched_gt
        pred_records[name].append(pred)
    return {"gt": gt_records, "pred": pred_records}


def evaluate(scenes: list[dict]) -> np.ndarray:
    """AP (18 classes, 10 thresholds) from scene records, loop by loop."""
    ap = np.zeros((len(CLASS_NAMES), len(THRESHOLDS)), np.float64)
    for t_index, threshold in enumerate(THRESHOLDS):
        taken = {}
        for scene in scenes:
            for name in CLASS_NAMES:
                for pred in scene["pred"][name]:
                    taken[pred["key"]] = False
        for c_index, name in enumerate(CLASS_NAMES):
            y_true = np.empty(0)
            y_score = np.empty(0)
            hard_false_negatives = 0
            has_gt = False
            has_pred = False
            for scene in scenes:
                preds = scene["pred"][name]
                gts = [gt for gt in scene["gt"][name] if gt["instance_id"] >= 1000 and gt["vert_count"] >= MIN_SIZE]
                if gts:
                    has_gt = True
                if preds:
                    has_pred = True
                cur_true = np.ones(len(gts))
                cur_score = np.ones(len(gts)) * (-float("inf"))
                cur_match = np.zeros(len(gts), dtype=bool)
                for g_index, gt in enumerate(gts):
                    found = False
                    for pred in gt["matched_pred"]:
                        if taken[pred["key"]]:
                            continue
                        union = gt["vert_count"] + pred["vert_count"] - pred["intersection"]
                        iou = float(pred["intersection"]) / union
                        if iou > threshold:
                            confidence = pred["confidence"]
                            if cur_match[g_index]:
                                # a second match: the lower of the two scores becomes a false positive
                                higher = max(cur_score[g_index], confidence)
                                lower = min(cur_score[g_index], confidence)
                                cur_score[g_index] = higher
                                cur_true = np.append(cur_true, 0)
                                cur_score = np.append(cur_score, lower)
                                cur_match = np.append(cur_match, True)
                            else:
                                found = True
                                cur_match[g_index] = True
                                cur_score[g_index] = confidence
                                taken[pred["key"]] = True
                    if not found:
                        hard_false_negatives += 1
                cur_true = cur_true[cur_match]
                cur_score = cur_score[cur_match]
                for pred in preds:
                    overlaps_gt = False
                    for gt in pred["matched_gt"]:
                        iou = float(gt["intersection"]) / (gt["vert_count"] + pred["vert_count"] - gt["intersection"])
                        if iou > threshold:
                            overlaps_gt = True
                            break
                    if not overlaps_gt:
                        ignored = pred["void_intersection"]
                        for gt in pred["matched_gt"]:
                            if gt["instance_id"] < 1000:
                                ignored += gt["intersection"]
                            if gt["vert_count"] < MIN_SIZE:
                                ignored += gt["intersection"]
                        if float(ignored) / pred["vert_count"] <= threshold:
                            cur_true = np.append(cur_true, 0)
                            cur_score = np.append(cur_score, pred["confidence"])
                y_true = np.append(y_true, cur_true)
                y_score = np.append(y_score, cur_score)
            if has_gt and has_pred:
                ap[c_index, t_index] = _curve_area(y_true, y_score, hard_false_negatives)
            elif has_gt:
                ap[c_index, t_index] = 0.0
            else:
                ap[c_index, t_index] = float("nan")
    return ap


def _curve_area(y_true: np.ndarray, y_score: np.ndarray, hard_false_negatives: int) -> float:
    order = np.argsort(y_score)
    sorted_score = y_score[order]
    sorted_true = y_true[order]
    cumulative_true = np.cumsum(sorted_true)
    _, first_indices = np.unique(sorted_score, return_index=True)
    num_points = len(first_indices) + 1
    num_examples = len(sorted_score)
    num_true = cumulative_true[-1] if len(cumulative_true) else 0
    precision = np.zeros(num_points)
    recall = np.zeros(num_points)
    cumulative_true = np.append(cumulative_true, 0)  # index -1 reads 0
    for point, first in enumerate(first_indices):
        true_below = cumulative_true[first - 1]
        tp = num_true - true_below
        fp = num_examples - first - tp
        fn = true_below + hard_false_negatives
        precision[point] = float(tp) / (tp + fp)
        recall[point] = float(tp) / (tp + fn)
    precision[-1] = 1.0
    recall[-1] = 0.0
    padded = np.append(np.append(recall[0], recall), 0.0)
    widths = np.convolve(padded, [-0.5, 0, 0.5], "valid")
    return np.dot(precision, widths)


def averages(ap: np.ndarray) -> dict:
    """The benchmark's summary, with its indexing (and so its summation order)."""
    table = ap[None]  # (distance thresholds = 1, classes, thresholds), as the benchmark holds it
    at_50 = np.where(np.isclose(THRESHOLDS, 0.5))
    at_25 = np.where(np.isclose(THRESHOLDS, 0.25))
    but_25 = np.where(np.logical_not(np.isclose(THRESHOLDS, 0.25)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN means, as in the benchmark
        result = {
            "mAP": np.nanmean(table[0, :, but_25]),
            "AP50": np.nanmean(table[0, :, at_50]),
            "AP25": np.nanmean(table[0, :, at_25]),
            "classes": {},
        }
    for c_index, name in enumerate(CLASS_NAMES):
        result["classes"][name] = {
            "AP": np.average(table[0, c_index, but_25]),
            "AP50": np.average(table[0, c_index, at_50]),
            "AP25": np.average(table[0, c_index, at_25]),
        }
    return result


def official_instance_ap(scenes) -> tuple[np.ndarray, dict]:
    """``scenes``: iterable of (pred_masks (M, N), pred_labels (M,), pred_scores (M,), gt_ids (N,)).

    Returns the AP table (18, 10) and the summary (floats, NaN where undefined).
    """
    records = [scene_records(f"scene{i}", *scene) for i, scene in enumerate(scenes)]
    ap = evaluate(records)
    return ap, averages(ap)
