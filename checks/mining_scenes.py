"""Mining inputs from a synthetic room: its object points with a heatmap shaped like DKNet's."""

from __future__ import annotations

import numpy as np
import torch

from engine.synthetic import generate_scene

NOT_OBJECTS = (0, 1, 2)  # NYU40 unannotated, wall, floor


def room_object_points(num_points: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The object points of ``generate_scene(num_points, seed)``: xyz_m (No, 3) float32, labels
    (No,) int64 NYU40 ids, and heat (No,) float32, a softmax of -4·(distance in metres to the
    point's object centroid): peaked at each object's centre, as DKNet's heatmap is."""
    scene = generate_scene(num_points, seed=seed)
    objects = ~np.isin(scene.nyu40, NOT_OBJECTS)
    xyz, instance = scene.vertices_m[objects], scene.instance_ids[objects]
    centroids = np.zeros((instance.max() + 1, 3))
    np.add.at(centroids, instance, xyz)
    centroids /= np.maximum(np.bincount(instance, minlength=len(centroids)), 1)[:, None]
    logits = torch.from_numpy(-4.0 * np.linalg.norm(xyz - centroids[instance], axis=1)).float()
    return xyz, scene.nyu40[objects].astype(np.int64), torch.softmax(logits, dim=0).numpy()
