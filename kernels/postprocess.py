"""Post-processing on recomputed masks: the ``MaskSource`` of ``--kernels triton`` (SPEC §9–10).

The decoding stage leaves only the per-instance level histograms (``kernels.decode``); every
later read of the masks recomputes them inside a kernel (``kernels.assign``), which costs less
than writing and re-reading the (N, I) float matrix. The steps themselves (classes, cover,
filtering, scores, superpoints) are ``engine.postprocess.postprocess_masks``, shared with
``--kernels torch``.
"""

from __future__ import annotations

import torch

from engine.postprocess import apply_floor
from kernels.assign import best_instances, instance_sums
from kernels.decode import decode_histograms
from kernels.otsu import otsu_thresholds


class RecomputedMasks:
    """``engine.postprocess.MaskSource`` over the dynamic-conv parameters of I instances.

    theta (I, 337), mask_features (N, 16), xyz_m (N, 3), centres_m (I, 3) float32 on one device;
    hist (I, 100) int64 the level histograms (``decode_histograms``), computed here when not given.
    """

    def __init__(self, theta: torch.Tensor, mask_features: torch.Tensor, xyz_m: torch.Tensor,
                 centres_m: torch.Tensor, hist: torch.Tensor | None = None):
        self.decoder = (theta.float().contiguous(), mask_features.float().contiguous(),
                        xyz_m.float().contiguous(), centres_m.float().contiguous())
        self.hist = decode_histograms(*self.decoder) if hist is None else hist
        self.num_points, self.count = xyz_m.shape[0], theta.shape[0]
        self._thresholds: torch.Tensor | None = None
        self._cover: torch.Tensor | None = None

    def thresholds(self) -> torch.Tensor:
        return otsu_thresholds(self.hist)

    def threshold_pass(self, thresholds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self._thresholds = thresholds
        best, which, column_sums = best_instances(*self.decoder, thresholds, column_sums=True)
        assignment, best = apply_floor(which, best, thresholds)
        return assignment, best, column_sums

    def rescale_pass(self, cover: torch.Tensor, scaled_thresholds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._cover = cover
        best, which, _ = best_instances(*self.decoder, self._thresholds, cover)
        return apply_floor(which, best, scaled_thresholds)

    def best_among(self, points: torch.Tensor, instances: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        best, which, _ = best_instances(*self.decoder, self._thresholds, self._cover, points, instances)
        return best, which

    def instance_sums(self, values: torch.Tensor, assignment: torch.Tensor, count: int) -> torch.Tensor:
        return instance_sums(values, assignment, count)

