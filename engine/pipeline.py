"""One scene through DKNet, stage by stage (SPEC §0): backbone, encoding, decoding, post-processing.

Each stage is one function here; ``infer_scene`` times them with the stage boundaries of the
paper's Table S3, and the benchmarks call the same functions. A ``Session`` holds the two
independent choices of a run: the backbone (``engine.backbone``: native, spconv, or an exported
graph) and the kernels of the later stages: ``torch`` (plain, vectorized PyTorch and NumPy for
the sequential mining scan; the reference every optimized path is tested against; on CPU,
decoding and post-processing's passes over the masks run the C kernels of ``engine.c_kernels``
where they build, tested against that reference) or ``triton`` (the Triton kernels of ``kernels``
for encoding, mining included, decoding and post-processing).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from engine import encoding
from engine.c_kernels import assign as c_assign
from engine.c_kernels import decode as c_decode
from engine.c_kernels.assign import CStoredMasks
from engine.classes import NYU40_IDS
from engine.decoding import decode_masks_and_histograms
from engine.model import DKNet, PointOutputs
from engine.postprocess import MaskSource, PostResult, StoredMasks, postprocess_masks
from engine.preprocess import Voxelized, voxelize
from engine.stage_timer import StageTimer

if TYPE_CHECKING:
    from kernels.mine import PaddedCandidates


class Backbone(Protocol):
    """Backbone and point heads (SPEC §2–3) of a scene: (features (V, 6) float32, coords (V, 3) int,
    spatial_shape, point_to_voxel (N,) int64) -> ``PointOutputs``. ``name``: the ``--backbone``
    choice; ``provider``: what runs it, for reports."""

    name: str
    provider: str

    def __call__(self, features: torch.Tensor, coords: torch.Tensor, spatial_shape: list[int],
                 point_to_voxel: torch.Tensor) -> PointOutputs: ...


MaskFactory = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], MaskSource]


def stored_masks(theta: torch.Tensor, mask_features: torch.Tensor, xyz_m: torch.Tensor,
                 centres_m: torch.Tensor) -> StoredMasks:
    """SPEC §8: the soft masks (N, I) float32 of all instances, computed and stored, with their Otsu
    histograms (SPEC §9) counted on the way. On CPU, where the C kernels build (``engine.c_kernels``),
    the fused decoding kernel computes them and C row passes run post-processing's passes over them;
    elsewhere torch does both."""
    device = theta.device
    decode = c_decode.decode_masks_and_histograms if c_decode.KERNELS.runs_on(device) else decode_masks_and_histograms
    stored = CStoredMasks if c_assign.KERNELS.runs_on(device) else StoredMasks
    return stored(*decode(theta, mask_features, xyz_m, centres_m))


@dataclass(frozen=True)
class LaterStages:
    """How encoding, decoding and post-processing run (``--kernels``): ``encoding``, a module with
    the encoding steps (``mine_scene``, ``describe_candidates``, ``merge_probabilities``,
    ``greedy_merge``, ``merge_instances``); ``masks``, what decoding hands to post-processing:
    (theta (I, 337), mask features (N, 16), xyz_m (N, 3), centres_m (I, 3)) -> ``MaskSource``."""

    name: str  # "torch" or "triton"
    encoding: ModuleType
    masks: MaskFactory


TORCH_STAGES = LaterStages("torch", encoding, stored_masks)


@dataclass
class Session:
    """What a run needs for every scene: the weights, the backbone that runs the sparse U-Net and
    point heads, and the later stages' kernels, on one device."""

    model: DKNet
    backbone: Backbone
    kernels: LaterStages
    device: torch.device


@dataclass
class BackboneResult:
    vox: Voxelized
    points: PointOutputs
    heat: torch.Tensor  # (No,) float32 softmax over the scene's object points


@dataclass
class EncodingResult:
    candidates: encoding.Candidates | PaddedCandidates  # host lists (reference) or device rows (Triton)
    instances: encoding.Instances
    theta: torch.Tensor  # (I, 337) float32 dynamic-conv parameters
    instance_centers: torch.Tensor  # (I,) int64 point index of each instance centre


def run_backbone(backbone: Backbone, xyz: np.ndarray, rgb: np.ndarray, device: torch.device) -> BackboneResult:
    """SPEC §1–3: voxelize, sparse U-Net, point heads, heatmap."""
    vox = voxelize(xyz, rgb, device)
    points = backbone(vox.voxel_features, vox.voxel_coords, vox.spatial_shape, vox.point_to_voxel)
    return BackboneResult(vox, points, torch.softmax(points.heat_logits, dim=0))


def run_encoding(model: DKNet, backbone: BackboneResult, kernels: LaterStages = TORCH_STAGES) -> EncodingResult:
    """SPEC §4–7: candidate mining, description, merging, kernel generation, with ``kernels``'
    encoding steps."""
    points, obj = backbone.points, backbone.points.object_idx
    obj_xyz = backbone.vox.xyz_m[obj]
    stages = kernels.encoding
    cands = stages.mine_scene(obj_xyz, points.labels[obj], backbone.heat)
    descriptors = stages.describe_candidates(cands, points.kernel_features, obj_xyz, points.offsets[obj])
    merge_probs = stages.merge_probabilities(model, descriptors)
    group = stages.greedy_merge(merge_probs)
    fg_features = descriptors[:, : points.kernel_features.shape[1]]
    instances = stages.merge_instances(group, cands, backbone.heat, fg_features)
    theta = model.weight_generator(instances.kernels)
    return EncodingResult(cands, instances, theta, obj[instances.centre_points])


def run_decoding(backbone: BackboneResult, encoded: EncodingResult,
                 kernels: LaterStages = TORCH_STAGES) -> MaskSource:
    """SPEC §8: the soft masks (N, I) of all instances as ``kernels`` hand them to post-processing
    (torch: computed and stored; Triton: only the Otsu histograms now, the masks recomputed by each
    post-processing pass)."""
    xyz_m = backbone.vox.xyz_m
    return kernels.masks(encoded.theta, backbone.points.mask_features, xyz_m, xyz_m[encoded.instance_centers])


def run_post_processing(masks: MaskSource, backbone: BackboneResult, superpoints: np.ndarray | None) -> PostResult:
    """SPEC §9–11 on the soft masks (a stored matrix is overwritten)."""
    device = backbone.points.semantic_scores.device
    sp = None if superpoints is None else torch.from_numpy(np.asarray(superpoints, np.int64)).to(device)
    return postprocess_masks(masks, backbone.points.semantic_scores, backbone.points.object_idx, sp)


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
    backbone: str  # what ran the backbone, e.g. "native (torch gather-GEMM-scatter)"

    def dump_arrays(self) -> dict[str, np.ndarray]:
        """The ``--dump`` keys (``backbone``: a 0-d string array)."""
        keys = ("semantic_scores", "offsets", "heatmap", "candidates", "instance_centers", "thresholds",
                "pred_masks", "pred_labels", "pred_scores")
        return {**{k: getattr(self, k) for k in keys}, "backbone": np.array(self.backbone)}


@torch.no_grad()
def infer_scene(session: Session, xyz: np.ndarray, rgb: np.ndarray, superpoints: np.ndarray | None,
                timer: StageTimer) -> SceneResult:
    """Run DKNet on one scene: xyz (N, 3) float, rgb (N, 3) uint8, superpoints (N,) int or None,
    with the session's backbone and kernels (Triton: CUDA, or CPU in the interpreter)."""
    model, device, kernels = session.model, session.device, session.kernels
    with timer.stage("backbone"):
        backbone = run_backbone(session.backbone, xyz, rgb, device)
    with timer.stage("encoding"):
        encoded = run_encoding(model, backbone, kernels)
    with timer.stage("decoding"):
        masks = run_decoding(backbone, encoded, kernels)
    with timer.stage("post_processing"):
        post = run_post_processing(masks, backbone, superpoints)

    obj = backbone.points.object_idx
    heatmap = torch.zeros(xyz.shape[0], device=device)
    heatmap[obj] = backbone.heat
    nyu40 = torch.tensor(NYU40_IDS, device=device)
    return SceneResult(
        semantic_scores=backbone.points.semantic_scores.cpu().numpy(),
        offsets=backbone.points.offsets.cpu().numpy(),
        heatmap=heatmap.cpu().numpy(),
        candidates=obj[torch.as_tensor(encoded.candidates.points, device=obj.device)].cpu().numpy(),
        instance_centers=encoded.instance_centers.cpu().numpy(),
        thresholds=post.thresholds.cpu().numpy(),
        pred_masks=post.masks.cpu().numpy(),
        pred_labels=nyu40[post.classes].cpu().numpy(),
        pred_scores=post.scores.cpu().numpy(),
        num_voxels=int(backbone.vox.voxel_coords.shape[0]),
        backbone=session.backbone.provider,
    )
