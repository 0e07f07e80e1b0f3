"""What the pictures draw of a scene's result: per point its instance, per instance its class,
confidence, size and colour."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.classes import CLASS_NAMES, NYU40_IDS
from engine.pictures.palette import instance_colors

__all__ = ["InstanceSummary", "drawn_points", "instance_per_point"]

_NYU40_TO_NAME = dict(zip(NYU40_IDS, CLASS_NAMES, strict=True))


def instance_per_point(masks: np.ndarray, num_points: int) -> np.ndarray:
    """(N,) int32: first instance holding each point (argmax over the (M, N) bool masks), -1 for none."""
    if masks.shape[0] == 0:
        return np.full(num_points, -1, dtype=np.int32)
    first = masks.argmax(axis=0).astype(np.int32)
    first[~masks.any(axis=0)] = -1
    return first


def drawn_points(num_points: int, max_points: int) -> np.ndarray:
    """(n,) int64 indices of the points a picture draws: all, or a fixed-seed random subset of
    ``max_points`` (the same every time, in index order)."""
    if num_points <= max_points:
        return np.arange(num_points)
    return np.sort(np.random.default_rng(0).choice(num_points, size=max_points, replace=False))


@dataclass(frozen=True)
class InstanceSummary:
    """M predicted instances over N points. Instance i is the i-th mask (the submission's
    ``predicted_masks/<scene>_<iii>.txt``) and is drawn as number ``i``."""

    instance: np.ndarray  # (N,) int32 first instance holding each point, -1 for none
    class_names: list[str]  # (M,) e.g. "chair"; an unknown nyu40 id as its number
    scores: np.ndarray  # (M,) float64 confidence
    point_counts: np.ndarray  # (M,) int64 points in each mask
    colors: np.ndarray  # (M, 3) uint8, engine.pictures.palette.instance_colors

    @classmethod
    def of(cls, masks: np.ndarray, nyu40_ids: np.ndarray, scores: np.ndarray) -> InstanceSummary:
        """masks (M, N) bool, nyu40_ids (M,) int, scores (M,) float."""
        num_instances, num_points = masks.shape
        return cls(
            instance=instance_per_point(masks, num_points),
            class_names=[_NYU40_TO_NAME.get(int(c), str(int(c))) for c in np.asarray(nyu40_ids).reshape(-1)],
            scores=np.asarray(scores, dtype=np.float64).reshape(-1),
            point_counts=masks.sum(axis=1, dtype=np.int64),
            colors=instance_colors(num_instances),
        )

    @property
    def num_instances(self) -> int:
        return len(self.class_names)

    @property
    def num_points(self) -> int:
        return self.instance.shape[0]

    def label(self, i: int) -> str:
        """``"12 chair 0.87"``: number, class and confidence of instance i."""
        return f"{i} {self.class_names[i]} {self.scores[i]:.2f}"

    def by_size(self) -> np.ndarray:
        """(M,) int64 instance indices, largest mask first (ties: lower index first)."""
        return np.argsort(-self.point_counts, kind="stable")
