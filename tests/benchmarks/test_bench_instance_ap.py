"""Instance AP on 100 synthetic ScanNet-sized scenes: the per-instance oracle written from the
definition (tests/instance_ap_oracle.py, the reference) against engine.instance_ap.

Three groups, each with the two variants side by side: ``match`` (scene -> per-instance counts),
``ap`` (counts -> AP table and means) and ``total`` (both). Masks are in memory; reading text files
is the same work for both and is left out. Run with ``pytest --benchmark-only``.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine.instance_ap import EVAL_NYU40_IDS, average_precisions, match_scene
from engine.synthetic import generate_scene, instance_gt
from tests.instance_ap_oracle import ap_by_threshold, describe_scene, oracle_instance_ap, summarize

NUM_SCENES = 100
POINTS = 150_000
FALSE_POSITIVES = 5
BLOB_RADIUS_M = 0.4


def _predictions(scene, gt_ids: np.ndarray, rng: np.random.Generator):
    """A plausible prediction set: each object instance found with ~8% of its vertices missed and a
    few stray ones, the class right 85% of the time; plus blobs of wall/floor/furniture as false
    positives. Returns (masks (M, N) bool, labels (M,), scores (M,))."""
    masks, labels = [], []
    for instance_id in np.unique(gt_ids[np.isin(gt_ids // 1000, EVAL_NYU40_IDS)]):
        masks.append(((gt_ids == instance_id) & (rng.random(gt_ids.size) < 0.92)) | (rng.random(gt_ids.size) < 2e-4))
        labels.append(instance_id // 1000 if rng.random() < 0.85 else rng.choice(EVAL_NYU40_IDS))
    for centre in rng.choice(gt_ids.size, size=FALSE_POSITIVES, replace=False):
        masks.append(np.linalg.norm(scene.vertices_m - scene.vertices_m[centre], axis=1) < BLOB_RADIUS_M)
        labels.append(rng.choice(EVAL_NYU40_IDS))
    return np.array(masks), np.array(labels, dtype=np.int64), np.round(rng.random(len(labels)), 3)


@pytest.fixture(scope="module")
def scenes():
    rng = np.random.default_rng(0)
    out = []
    for seed in range(NUM_SCENES):
        scene = generate_scene(POINTS, seed=seed)
        gt_ids = instance_gt(scene)
        out.append((*_predictions(scene, gt_ids, rng), gt_ids))
    return out


@pytest.fixture(scope="module")
def same_figures(scenes):
    """Checked once, outside the timings: both variants give the same AP table."""
    expected_ap, _ = oracle_instance_ap(scenes)
    result = average_precisions([match_scene(*scene) for scene in scenes])
    assert np.array_equal(result.ap, expected_ap, equal_nan=True)
    return True


def _info(benchmark, scenes) -> None:
    benchmark.extra_info.update(
        scenes=len(scenes),
        vertices=int(sum(scene[3].size for scene in scenes)),
        predictions=int(sum(scene[1].size for scene in scenes)),
    )


def _oracle_match(scenes):
    return [describe_scene(*scene) for scene in scenes]


def _vectorized_match(scenes):
    return [match_scene(*scene) for scene in scenes]


MATCH = {"oracle": _oracle_match, "vectorized": _vectorized_match}
AP = {"oracle": lambda matched: summarize(ap_by_threshold(matched)), "vectorized": average_precisions}


@pytest.mark.parametrize("variant", ["oracle", "vectorized"])
@pytest.mark.benchmark(group="instance_ap: match, 100 scenes")
def test_match(benchmark, scenes, same_figures, variant):
    _info(benchmark, scenes)
    benchmark.pedantic(MATCH[variant], args=(scenes,), rounds=3, warmup_rounds=0)


@pytest.mark.parametrize("variant", ["oracle", "vectorized"])
@pytest.mark.benchmark(group="instance_ap: ap from matches, 100 scenes")
def test_ap(benchmark, scenes, same_figures, variant):
    _info(benchmark, scenes)
    matched = MATCH[variant](scenes)
    benchmark.pedantic(AP[variant], args=(matched,), rounds=5, warmup_rounds=1)


@pytest.mark.parametrize("variant", ["oracle", "vectorized"])
@pytest.mark.benchmark(group="instance_ap: total, 100 scenes")
def test_total(benchmark, scenes, same_figures, variant):
    _info(benchmark, scenes)
    benchmark.pedantic(lambda: AP[variant](MATCH[variant](scenes)), rounds=3, warmup_rounds=0)
