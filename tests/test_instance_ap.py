"""Instance AP (engine.instance_ap): hand-built cases with known AP, and random cases against an
independent per-instance implementation of the definition (tests/instance_ap_oracle.py), figure
for figure."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.instance_ap import (
    EVAL_CLASS_NAMES,
    EVAL_NYU40_IDS,
    OVERLAPS,
    InstanceAP,
    average_precisions,
    match_scene,
)
from tests.instance_ap_oracle import oracle_instance_ap

CHAIR, TABLE, DESK = 5, 7, 14
COLUMN = {round(float(t), 2): i for i, t in enumerate(OVERLAPS)}


# ----------------------------------------------------------------------------------------------
# Random cases


def random_scene(rng: np.random.Generator, num_vertices: int | None = None):
    """A random scene: (pred_masks (M, N) bool, pred_labels (M,), pred_scores (M,), gt_ids (N,)).

    Ground truth: instances of a few classes (so that classes collide), wall, floor, a
    non-benchmark class (29) and unannotated vertices, some instances under 100 vertices.
    Predictions: noisy copies of instances, exact duplicates, unions of two instances, random
    blobs, tiny masks; labels mostly right, sometimes wrong or non-benchmark; scores rounded so
    that ties are common.
    """
    n = int(num_vertices or rng.integers(300, 2500))
    num_instances = int(rng.integers(0, 14))
    labels = rng.choice([CHAIR, CHAIR, TABLE, DESK, 1, 2, 29, 0], size=num_instances)
    weights = rng.dirichlet(np.full(num_instances + 1, 0.7))
    owner = rng.choice(num_instances + 1, size=n, p=weights) - 1  # -1: unannotated
    gt_ids = np.zeros(n, dtype=np.int64)
    for k in range(num_instances):
        gt_ids[owner == k] = labels[k] * 1000 + k + 1 if labels[k] else 0
    instances = [np.flatnonzero(owner == k) for k in range(num_instances)]

    masks, pred_labels = [], []
    for _ in range(int(rng.integers(0, 16))):
        kind = rng.random()
        mask = np.zeros(n, dtype=bool)
        source = int(rng.integers(num_instances)) if num_instances else -1
        if source >= 0 and kind < 0.55:  # noisy copy of an instance
            members = instances[source]
            mask[members[rng.random(members.size) < rng.uniform(0.3, 1.0)]] = True
            mask[rng.random(n) < rng.uniform(0.0, 0.15)] = True
        elif source >= 0 and kind < 0.7 and masks:  # exact duplicate of an earlier prediction
            mask = masks[int(rng.integers(len(masks)))].copy()
        elif source >= 0 and kind < 0.85:  # parts of two instances, same class if any (conflicts at IoU 0.25)
            same = np.flatnonzero(labels == labels[source])
            other = int(rng.choice(same[same != source])) if same.size > 1 else int(rng.integers(num_instances))
            for members in (instances[source], instances[other]):
                mask[members[rng.random(members.size) < rng.uniform(0.4, 0.9)]] = True
        elif kind < 0.95:  # random blob
            mask[rng.random(n) < rng.uniform(0.02, 0.4)] = True
        else:  # tiny
            mask[rng.choice(n, size=min(n, int(rng.integers(1, 100))), replace=False)] = True
        right = labels[source] if source >= 0 else CHAIR
        pred_labels.append(int(right if rng.random() < 0.8 else rng.choice([CHAIR, TABLE, DESK, 1, 29, 0])))
        masks.append(mask)
    num_preds = len(masks)
    pred_masks = np.array(masks, dtype=bool).reshape(num_preds, n)
    scores = np.round(rng.random(num_preds), int(rng.integers(1, 3)))
    return pred_masks, np.array(pred_labels, dtype=np.int64), scores, gt_ids


def crowded_scene(rng: np.random.Generator):
    """Chairs of similar sizes side by side, predictions spanning 1-3 neighbours: at IoU 0.25 many
    predictions match several chairs, so the greedy order (taken predictions) decides the result."""
    sizes = rng.integers(90, 260, size=int(rng.integers(2, 9)))
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    gt_ids = np.repeat(CHAIR * 1000 + np.arange(1, sizes.size + 1), sizes).astype(np.int64)
    masks = np.zeros((int(rng.integers(1, 12)), gt_ids.size), dtype=bool)
    for mask in masks:
        first = int(rng.integers(sizes.size))
        for k in range(first, min(sizes.size, first + int(rng.integers(1, 4)))):
            inside = np.arange(bounds[k], bounds[k + 1])
            mask[inside[rng.random(inside.size) < rng.uniform(0.4, 1.0)]] = True
    labels = np.full(masks.shape[0], CHAIR, dtype=np.int64)
    return masks, labels, np.round(rng.random(masks.shape[0]), 1), gt_ids


def _vectorized(scenes):
    return average_precisions([match_scene(*scene) for scene in scenes])


def _assert_same(result, expected_ap, expected):
    mismatch = ~((result.ap == expected_ap) | (np.isnan(result.ap) & np.isnan(expected_ap)))
    if mismatch.any():
        c, t = np.argwhere(mismatch)[0]
        pytest.fail(f"AP differs first at class {EVAL_CLASS_NAMES[c]}, IoU {OVERLAPS[t]:.2f}: "
                    f"{result.ap[c, t]!r} vs oracle {expected_ap[c, t]!r}")
    summary = result.to_json_dict()
    for key in ("mAP", "AP50", "AP25"):
        _assert_float(summary[key], expected[key], key)
    for name in EVAL_CLASS_NAMES:
        for key in ("AP", "AP50", "AP25"):
            _assert_float(summary["classes"][name][key], expected["classes"][name][key], f"{name} {key}")


def _assert_float(value, expected, what):
    if math.isnan(expected):
        assert value is None, f"{what}: {value!r}, oracle NaN"
    else:
        assert value == expected, f"{what}: {value!r} vs oracle {expected!r}"


@pytest.mark.parametrize("seed", range(60))
def test_random_cases_equal_the_oracle(seed):
    rng = np.random.default_rng(seed)
    scenes = [random_scene(rng) for _ in range(int(rng.integers(1, 5)))]
    expected_ap, expected = oracle_instance_ap(scenes)
    _assert_same(_vectorized(scenes), expected_ap, expected)


@pytest.mark.parametrize("seed", range(30))
def test_crowded_cases_equal_the_oracle(seed):
    rng = np.random.default_rng(1000 + seed)
    scenes = [crowded_scene(rng) for _ in range(int(rng.integers(1, 4)))]
    expected_ap, expected = oracle_instance_ap(scenes)
    _assert_same(_vectorized(scenes), expected_ap, expected)


def test_random_cases_include_the_hard_paths():
    """The random cases reach what the comparison must cover: predictions matching several
    instances at IoU 0.25, ignored overlaps, classes without predictions or ground truth."""
    seen = {"conflict": 0, "nan": 0, "zero": 0, "ignored": 0}
    for seed in range(60):
        rng = np.random.default_rng(seed)
        scenes = [random_scene(rng) for _ in range(int(rng.integers(1, 5)))]
        matches = [match_scene(*scene) for scene in scenes]
        for scene in matches:
            iou = scene.pair_intersection / (scene.gt_vertices[scene.pair_gt] + scene.pred_vertices[scene.pair_pred]
                                             - scene.pair_intersection)
            big = scene.gt_vertices[scene.pair_gt] >= 100
            per_pred = np.bincount(scene.pair_pred[(iou > 0.25) & big], minlength=scene.pred_class.size)
            seen["conflict"] += int((per_pred >= 2).sum())
            seen["ignored"] += int((scene.pred_ignored > 0).sum())
        ap = average_precisions(matches).ap
        seen["nan"] += int(np.isnan(ap).any())
        seen["zero"] += int((ap == 0).any())
    assert min(seen.values()) >= 5, seen


def test_scene_order_and_accumulator():
    rng = np.random.default_rng(7)
    scenes = [random_scene(rng) for _ in range(5)]
    forward = _vectorized(scenes)
    backward = _vectorized(scenes[::-1])
    assert np.array_equal(forward.ap, backward.ap, equal_nan=True)
    running = InstanceAP()
    for scene in scenes:
        running.add_scene(*scene)
    assert running.num_scenes == 5
    assert running.result().to_json_dict() == forward.to_json_dict()


# ----------------------------------------------------------------------------------------------
# Hand-built cases with known AP


def _scene(gt_segments, preds):
    """gt_segments: [(nyu40 id or 0, size)] laid out one after another; preds: [(vertex ranges, label, score)]."""
    gt_ids = np.concatenate([np.full(size, label * 1000 + k + 1 if label else 0)
                             for k, (label, size) in enumerate(gt_segments)]).astype(np.int64)
    masks = np.zeros((len(preds), gt_ids.size), dtype=bool)
    for row, (ranges, _, _) in enumerate(preds):
        for start, stop in ranges:
            masks[row, start:stop] = True
    labels = np.array([label for _, label, _ in preds], dtype=np.int64)
    scores = np.array([score for _, _, score in preds], dtype=np.float64)
    return masks, labels, scores, gt_ids


def _class_ap(result, nyu40: int) -> np.ndarray:
    return result.ap[EVAL_NYU40_IDS.index(nyu40)]


def test_perfect_predictions():
    scene = _scene([(CHAIR, 200), (CHAIR, 150), (TABLE, 300), (0, 100)],
                   [([(0, 200)], CHAIR, 0.9), ([(200, 350)], CHAIR, 0.4), ([(350, 650)], TABLE, 0.7)])
    result = _vectorized([scene])
    assert np.all(_class_ap(result, CHAIR) == 1.0) and np.all(_class_ap(result, TABLE) == 1.0)
    assert np.isnan(_class_ap(result, DESK)).all()
    assert (result.mean_ap, result.mean_ap50, result.mean_ap25) == (1.0, 1.0, 1.0)
    summary = result.to_json_dict()
    assert summary["classes"]["desk"] == {"AP": None, "AP50": None, "AP25": None}
    assert summary["classes"]["chair"] == {"AP": 1.0, "AP50": 1.0, "AP25": 1.0}


def test_no_predictions_and_no_scenes():
    result = _vectorized([_scene([(CHAIR, 200)], [])])
    assert np.all(_class_ap(result, CHAIR) == 0.0) and result.mean_ap == 0.0
    empty = average_precisions([])
    assert np.isnan(empty.ap).all() and math.isnan(empty.mean_ap)
    assert empty.to_json_dict()["mAP"] is None


def test_predictions_without_ground_truth_are_nan():
    result = _vectorized([_scene([(CHAIR, 200)], [([(0, 200)], CHAIR, 0.9), ([(0, 200)], DESK, 0.9)])])
    assert np.isnan(_class_ap(result, DESK)).all() and result.mean_ap == 1.0


def test_duplicates_take_the_highest_score():
    # Two copies of one chair: true positive at the higher score, false positive at the lower: AP 1.
    scene = _scene([(CHAIR, 200)], [([(0, 200)], CHAIR, 0.3), ([(0, 200)], CHAIR, 0.8)])
    assert np.all(_class_ap(_vectorized([scene]), CHAIR) == 1.0)
    # A false positive (a chair on the table) scored above the true positive: points (p 0.5, r 1),
    # (p 0, r 0), then (1, 0) -> 0.25.
    scene = _scene([(CHAIR, 200), (TABLE, 300)], [([(0, 200)], CHAIR, 0.8), ([(200, 400)], CHAIR, 0.9)])
    assert np.all(_class_ap(_vectorized([scene]), CHAIR) == 0.25)


def test_ties_in_confidence():
    # A true and a false positive with the same score: one point (p 0.5, r 1), then (1, 0) -> 0.75.
    scene = _scene([(CHAIR, 200), (TABLE, 300)], [([(0, 200)], CHAIR, 0.5), ([(200, 400)], CHAIR, 0.5)])
    assert np.all(_class_ap(_vectorized([scene]), CHAIR) == 0.75)


@pytest.mark.parametrize("void_vertices", [150, 100])
def test_void_overlap_is_ignored_up_to_the_threshold(void_vertices):
    # A chair prediction on 200 vertices, void_vertices of them unannotated and the rest on a
    # table, scored above the true positive: ignored while the void fraction (0.75, or exactly
    # 0.5) exceeds the IoU threshold, else a false positive that brings AP from 1 to 0.25.
    scene = _scene([(CHAIR, 200), (0, void_vertices), (TABLE, 200 - void_vertices)],
                   [([(0, 200)], CHAIR, 0.8), ([(200, 400)], CHAIR, 0.9)])
    ap = _class_ap(_vectorized([scene]), CHAIR)
    for threshold, column in COLUMN.items():
        assert ap[column] == (1.0 if void_vertices / 200 > OVERLAPS[column] else 0.25), threshold


@pytest.mark.parametrize("void_label", [1, 2, 29])
def test_wall_floor_and_other_classes_are_void(void_label):
    scene = _scene([(CHAIR, 200), (void_label, 150), (TABLE, 50)],
                   [([(0, 200)], CHAIR, 0.8), ([(200, 400)], CHAIR, 0.9)])
    assert _class_ap(_vectorized([scene]), CHAIR)[COLUMN[0.5]] == 1.0


def test_iou_must_exceed_the_threshold():
    # A prediction on half of a chair: IoU exactly 0.5, a match at 0.25 but not at 0.5.
    ap = _class_ap(_vectorized([_scene([(CHAIR, 200)], [([(0, 100)], CHAIR, 0.9)])]), CHAIR)
    assert ap[COLUMN[0.25]] == 1.0 and ap[COLUMN[0.5]] == 0.0


def test_small_regions():
    # Ground truth under 100 vertices is neither a miss nor a match; a prediction on it is ignored.
    scene = _scene([(CHAIR, 200), (CHAIR, 99)], [([(0, 200)], CHAIR, 0.5), ([(200, 299)], CHAIR, 0.9)])
    assert np.all(_class_ap(_vectorized([scene]), CHAIR) == 1.0)
    only_small = _scene([(DESK, 99)], [([(0, 99)], DESK, 0.9)])
    assert np.isnan(_class_ap(_vectorized([only_small]), DESK)).all()
    # A prediction under 100 vertices is dropped: the class has ground truth and no prediction.
    tiny = _scene([(DESK, 200)], [([(0, 99)], DESK, 0.9)])
    assert np.all(_class_ap(_vectorized([tiny]), DESK) == 0.0)
    assert match_scene(*tiny).pred_class.size == 0


def test_greedy_order_at_low_iou():
    # Prediction 0 covers chairs A and B (IoU 0.4 each); prediction 1 is exactly B. At IoU 0.25,
    # A takes prediction 0; B gets prediction 1 alone: two true positives. If prediction 0 were
    # still free, B would count it as a false positive.
    scene = _scene([(CHAIR, 200), (CHAIR, 200)],
                   [([(0, 160), (200, 360)], CHAIR, 0.9), ([(200, 400)], CHAIR, 0.6)])
    ap = _class_ap(_vectorized([scene]), CHAIR)
    assert ap[COLUMN[0.25]] == 1.0
    # At 0.5 prediction 0 matches nothing: a false positive at 0.9, A missed, B found at 0.6:
    # points (p 0.5, r 0.5), (p 0, r 0), then (1, 0) -> 0.125.
    assert ap[COLUMN[0.5]] == 0.125
    expected_ap, expected = oracle_instance_ap([scene])
    _assert_same(_vectorized([scene]), expected_ap, expected)


KNOWN_CHAIR_AP = [  # (ground truth, predictions, chair AP at IoU 0.25, at 0.5): the cases above
    ([(CHAIR, 200), (TABLE, 300)], [([(0, 200)], CHAIR, 0.8), ([(200, 400)], CHAIR, 0.9)], 0.25, 0.25),
    ([(CHAIR, 200), (TABLE, 300)], [([(0, 200)], CHAIR, 0.5), ([(200, 400)], CHAIR, 0.5)], 0.75, 0.75),
    ([(CHAIR, 200)], [([(0, 200)], CHAIR, 0.3), ([(0, 200)], CHAIR, 0.8)], 1.0, 1.0),
    ([(CHAIR, 200), (CHAIR, 99)], [([(0, 200)], CHAIR, 0.5), ([(200, 299)], CHAIR, 0.9)], 1.0, 1.0),
    ([(CHAIR, 200), (0, 100), (TABLE, 100)], [([(0, 200)], CHAIR, 0.8), ([(200, 400)], CHAIR, 0.9)], 1.0, 0.25),
    ([(CHAIR, 200)], [([(0, 100)], CHAIR, 0.9)], 1.0, 0.0),
    ([(CHAIR, 200), (CHAIR, 200)], [([(0, 160), (200, 360)], CHAIR, 0.9), ([(200, 400)], CHAIR, 0.6)], 1.0, 0.125),
]


@pytest.mark.parametrize(("gt_segments", "preds", "ap25", "ap50"), KNOWN_CHAIR_AP)
def test_oracle_gives_the_known_figures(gt_segments, preds, ap25, ap50):
    """The oracle on its own, against the hand-derived figures of the tests above."""
    expected_ap, _ = oracle_instance_ap([_scene(gt_segments, preds)])
    chair = expected_ap[EVAL_NYU40_IDS.index(CHAIR)]
    assert (chair[COLUMN[0.25]], chair[COLUMN[0.5]]) == (ap25, ap50)


def test_match_scene_rejects_inconsistent_inputs():
    masks, labels, scores, gt_ids = _scene([(CHAIR, 200)], [([(0, 200)], CHAIR, 0.9)])
    with pytest.raises(ValueError, match="pred_masks"):
        match_scene(masks[:, :-1], labels, scores, gt_ids)
    with pytest.raises(ValueError, match="finite"):
        match_scene(masks, labels, np.array([np.nan]), gt_ids)
    with pytest.raises(ValueError, match="gt_ids"):
        match_scene(masks, labels, scores, gt_ids.astype(np.float64))
    for bad_id in (-1, 41_000):
        with pytest.raises(ValueError, match="0..40999"):
            match_scene(masks, labels, scores, np.where(np.arange(gt_ids.size) == 3, bad_id, gt_ids))
    integer_masks = match_scene(masks.astype(np.int32) * 7, labels, scores, gt_ids)
    assert integer_masks.pred_vertices.tolist() == [200]
