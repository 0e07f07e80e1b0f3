"""One scene through DKNet, stage by stage (SPEC §0): backbone, encoding, decoding, post-processing.

This is the reference path: plain, vectorized PyTorch (and NumPy for the sequential mining scan).
Every optimized backend is tested against it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine import encoding
from engine.classes import NYU40_IDS
from engine.decoding import decode_masks
from engine.model import DKNet
from engine.postprocess import postprocess
from engine.preprocess import voxelize
from profiling.stage_timer import StageTimer


@dataclass
class SceneResult:
    """Outputs and intermediates of one scene (N points, V voxels, P candidates, I instances,
    M predicted masks). Point indices refer to the input vertices, in input order."""

    semantic_scores: np.ndarray  # (N, 20) float32 logits
    offsets: np.ndarray  # (N, 3) float32
    heatmap: np.ndarray  # (N,) float32 softmax heat, 0 for non-object points
    candidates: np.ndarray  # (P,) int64 in acceptance order
    instance_centers: np.ndarray  # (I,) int64
    thresholds: np.ndarray  # (I,) float32 raw Otsu thresholds
    pred_masks: np.ndarray  # (M, N) bool
    pred_labels: np.ndarray  # (M,) int64 nyu40 ids
    pred_scores: np.ndarray  # (M,) float32
    num_voxels: int

    def dump_arrays(self) -> dict[str, np.ndarray]:
        """The ``--dump`` keys."""
        keys = ("semantic_scores", "offsets", "heatmap", "candidates", "instance_centers", "thresholds",
                "pred_masks", "pred_labels", "pred_scores")
        return {k: getattr(self, k) for k in keys}


@torch.no_grad()
def infer_scene(model: DKNet, xyz: np.ndarray, rgb: np.ndarray, superpoints: np.ndarray | None,
                device: torch.device, timer: StageTimer) -> SceneResult:
    """Run DKNet on one scene: xyz (N, 3) float, rgb (N, 3) uint8, superpoints (N,) int or None."""
    with timer.stage("backbone"):
        vox = voxelize(xyz, rgb, device)
        out = model(vox.voxel_features, vox.voxel_coords, vox.spatial_shape, vox.point_to_voxel)
        heat = torch.softmax(out.heat_logits, dim=0)  # over all object points of the scene

    with timer.stage("encoding"):
        obj = out.object_idx
        obj_xyz = vox.xyz_m[obj]
        scan_heat, thres = encoding.heat_and_threshold(heat)
        labels = out.semantic_scores.argmax(dim=1)
        cands = encoding.mine_candidates(obj_xyz.cpu().numpy(), labels[obj].cpu().numpy(), scan_heat, thres)
        descriptors = encoding.describe_candidates(cands, out.kernel_features, obj_xyz, out.offsets[obj])
        probs = encoding.merge_probabilities(model, descriptors)
        group = encoding.greedy_merge(probs.cpu().numpy())
        instances = encoding.merge_instances(group, cands, heat, descriptors[:, : out.kernel_features.shape[1]])
        theta = model.weight_generator(instances.kernels)

    with timer.stage("decoding"):
        centres = obj[instances.centre_points]
        masks = decode_masks(theta, out.mask_features, vox.xyz_m, vox.xyz_m[centres])

    with timer.stage("post_processing"):
        sp = None if superpoints is None else torch.from_numpy(np.asarray(superpoints, np.int64)).to(device)
        post = postprocess(masks, out.semantic_scores, obj, sp)

    heatmap = torch.zeros(xyz.shape[0], device=device)
    heatmap[obj] = heat
    nyu40 = torch.tensor(NYU40_IDS, device=device)
    return SceneResult(
        semantic_scores=out.semantic_scores.cpu().numpy(),
        offsets=out.offsets.cpu().numpy(),
        heatmap=heatmap.cpu().numpy(),
        candidates=obj.cpu().numpy()[cands.points],
        instance_centers=centres.cpu().numpy(),
        thresholds=post.thresholds.cpu().numpy(),
        pred_masks=post.masks.cpu().numpy(),
        pred_labels=nyu40[post.classes].cpu().numpy(),
        pred_scores=post.scores.cpu().numpy(),
        num_voxels=int(vox.voxel_coords.shape[0]),
    )
