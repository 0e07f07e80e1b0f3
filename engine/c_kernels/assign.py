"""Post-processing's passes over the stored masks with the C row walks of ``assign.c``: each row's
first largest value and its column (torch.max over rows, the passes' slowest op, 5x slower on a
block here), and the threshold pass fused into that walk. The arithmetic is the reference's element
by element, so the results are the same bits (tests/test_c_kernels.py checks equality); the
rescale pass keeps torch's own multiply, clamp and sqrt (whose vectorized sqrt is not always
correctly rounded: a C sqrt would differ in the last bit). The blocks, worker threads and column
sums are ``engine.postprocess.assign_blocks``'s.
"""

from __future__ import annotations

from ctypes import c_int64, c_void_p

import torch

from engine.c_kernels.build import Kernels
from engine.postprocess import ZERO_STANDIN, StoredMasks, assign_blocks

KERNELS = Kernels("assign", {
    "threshold_rows": [c_void_p, c_int64, c_int64, c_void_p, c_void_p, c_void_p],
    "first_max_rows": [c_void_p, c_int64, c_int64, c_void_p, c_void_p],
})


class CStoredMasks(StoredMasks):
    """``StoredMasks`` whose threshold and rescale passes run the C row walks (CPU, float32,
    contiguous masks; ``KERNELS.runs_on``)."""

    def threshold_pass(self, thresholds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        library, kept = KERNELS.library(), thresholds.float().contiguous()

        def threshold(rows: torch.Tensor, best: torch.Tensor, which: torch.Tensor) -> None:
            library.threshold_rows(rows.data_ptr(), rows.shape[0], self.count, kept.data_ptr(), best.data_ptr(),
                                   which.data_ptr())

        return assign_blocks(self._contiguous(), thresholds, threshold, with_column_sums=True)

    def rescale_pass(self, cover: torch.Tensor, scaled_thresholds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        library = KERNELS.library()

        def rescale(rows: torch.Tensor, best: torch.Tensor, which: torch.Tensor) -> None:
            torch.sqrt(rows.mul_(cover).clamp_(min=ZERO_STANDIN), out=rows)
            library.first_max_rows(rows.data_ptr(), rows.shape[0], self.count, best.data_ptr(), which.data_ptr())

        assignment, best, _ = assign_blocks(self._contiguous(), scaled_thresholds, rescale)
        return assignment, best

    def _contiguous(self) -> torch.Tensor:
        if not (self.masks.is_contiguous() and self.masks.dtype == torch.float32 and self.masks.device.type == "cpu"):
            raise ValueError("CStoredMasks needs contiguous float32 CPU masks")
        return self.masks
