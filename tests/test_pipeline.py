"""The whole pipeline on degenerate scenes: one point, no object points, one candidate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.model import build_model
from engine.pipeline import infer_scene
from engine.stage_timer import StageTimer
from tests.sessions import cpu_session


def _scene(num: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 2, (num, 3)), rng.integers(0, 256, (num, 3)).astype(np.uint8)


def _run(model, xyz, rgb, cpu, superpoints=None):
    timer = StageTimer(cpu)
    result = infer_scene(cpu_session(model), xyz, rgb, superpoints, timer)
    assert set(timer.ms) == {"backbone", "encoding", "decoding", "post_processing"}
    return result


def _biased(model, class_index: int):
    """A copy of the model whose semantic head always predicts ``class_index``."""
    biased = build_model()
    biased.load_state_dict(model.state_dict())
    with torch.no_grad():
        biased.linear[6].bias.zero_()
        biased.linear[6].bias[class_index] = 1e4
    return biased


def test_single_point_scene(random_model, cpu):
    xyz, rgb = _scene(1)
    r = _run(_biased(random_model, 5), xyz, rgb, cpu, superpoints=np.zeros(1, np.int64))
    assert r.semantic_scores.shape == (1, 20) and r.heatmap.tolist() == [1.0]
    assert r.candidates.tolist() == [0] and r.instance_centers.tolist() == [0]
    assert r.pred_masks.shape == (0, 1)  # one point is below the 100-point minimum


@pytest.mark.parametrize("num", [1, 50, 3000])
def test_no_object_points(random_model, cpu, num):
    xyz, rgb = _scene(num, seed=num)
    r = _run(_biased(random_model, 1), xyz, rgb, cpu)  # everything is floor
    assert r.heatmap.max() == 0 and r.candidates.size == 0 and r.instance_centers.size == 0
    assert r.thresholds.size == 0 and r.pred_masks.shape == (0, num) and r.pred_labels.size == 0


def test_every_point_one_class_gives_disjoint_masks_of_that_class(random_model, cpu):
    xyz, rgb = _scene(6000, seed=3)
    r = _run(_biased(random_model, 4), xyz, rgb, cpu)  # class index 4 = chair, nyu40 id 5
    assert r.candidates.size > 0
    assert r.heatmap.sum() == pytest.approx(1.0, rel=1e-4)
    assert set(r.pred_labels.tolist()) <= {5}
    assert r.pred_masks.sum(0).max(initial=0) <= 1
    assert (r.pred_masks.sum(1) > 0).all()
