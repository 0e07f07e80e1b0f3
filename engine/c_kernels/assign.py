"""Post-processing's two passes over the stored masks with the C row walks of ``assign.c``, each one
walk over a block of rows instead of the reference's four to five torch ops: the threshold pass
(M', then each row's first largest value and its column) and the rescale pass (M'' with a correctly
rounded sqrt, then the same). ``torch.max`` over the rows alone took 935 us per 4096 x 150 block
here, the C walk about 60 us. The arithmetic is the reference's element by element, so the results
are the same bits (tests/test_c_kernels.py checks equality); the blocks, worker threads and column
sums are ``engine.postprocess.assign_blocks``'s.
"""

from __future__ import annotations

from ctypes import c_float, c_int64, c_void_p

import torch

from engine.c_kernels.build import Kernels
from engine.postprocess import ZERO_STANDIN, StoredMasks, assign_blocks

KERNELS = Kernels("assign", {
    "threshold_rows": [c_void_p, c_int64, c_int64, c_void_p, c_void_p, c_void_p],
    "rescale_rows": [c_void_p, c_int64, c_int64, c_void_p, c_float, c_void_p, c_void_p],
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
        library, cover = KERNELS.library(), cover.float().contiguous()

        def rescale(rows: torch.Tensor, best: torch.Tensor, which: torch.Tensor) -> None:
            library.rescale_rows(rows.data_ptr(), rows.shape[0], self.count, cover.data_ptr(), ZERO_STANDIN,
                                 best.data_ptr(), which.data_ptr())

        assignment, best, _ = assign_blocks(self._contiguous(), scaled_thresholds, rescale)
        return assignment, best

    def _contiguous(self) -> torch.Tensor:
        if not (self.masks.is_contiguous() and self.masks.dtype == torch.float32 and self.masks.device.type == "cpu"):
            raise ValueError("CStoredMasks needs contiguous float32 CPU masks")
        return self.masks
