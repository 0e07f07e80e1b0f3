"""Decoding (SPEC §8) on CPU with the fused kernel ``decode.c``, and the Otsu histograms (SPEC §9)
of its masks counted in the same walk: ``engine.decoding.decode_masks_and_histograms``'s result
without its (points, 16·I) hidden activations ever leaving registers.

The PyTorch reference computes the first layer as a K = 19 GEMM whose (n, 16·I) output must be
written and read back twice; this kernel is bound by its multiply-adds instead (docs/performance.md).
Points go in blocks of ``BLOCK_POINTS`` over ``engine.worker_threads``: per block the inputs are
transposed to channel-major in cache, the kernel writes the logits, ``torch.sigmoid_`` turns them
into masks (the reference's own sigmoid), and ``count_levels`` counts them while they are in cache.
The masks equal the reference's to float32 rounding (the sums run in another order:
tests/test_c_kernels.py states the tolerance); the histograms are exactly those of these masks.

``DKNET_C_KERNELS=0`` turns the C kernels off (the reference runs).
"""

from __future__ import annotations

from ctypes import c_int64, c_void_p

import torch

from engine.c_kernels.build import Kernels
from engine.decoding import IN_CHANNELS, centred_parameters
from engine.postprocess import OTSU_LEVELS
from engine.worker_threads import run_blocks

BLOCK_POINTS = 2048  # points per worker-thread task: masks (2048, I=150) float32 = 1.2 MB, cache-sized

KERNELS = Kernels("decode", {
    "decode_logits": [c_void_p, c_int64, c_void_p, c_void_p, c_void_p, c_void_p, c_int64, c_void_p, c_int64, c_int64],
    "count_levels": [c_void_p, c_int64, c_int64, c_int64, c_void_p],
})


def decode_masks_and_histograms(theta: torch.Tensor, mask_features: torch.Tensor, xyz_m: torch.Tensor,
                                centres_m: torch.Tensor, levels: int = OTSU_LEVELS
                                ) -> tuple[torch.Tensor, torch.Tensor]:
    """theta (I, 337), mask_features (N, 16), xyz_m (N, 3), centres_m (I, 3), float32 on CPU
    -> (masks (N, I) float32, histograms (I, levels) int64). Raises BuildError where the kernel
    cannot run (``KERNELS.runs_on``)."""
    if any(t.device.type != "cpu" for t in (theta, mask_features, xyz_m, centres_m)):
        raise ValueError("the C decoding kernel takes CPU tensors")
    library = KERNELS.library()
    count, num_points = theta.shape[0], xyz_m.shape[0]
    if count * levels >= 2**31:
        raise ValueError(f"{count} instances x {levels} levels overflow the kernel's int32 level slots")
    masks = torch.empty(num_points, count, dtype=torch.float32)
    histograms = torch.zeros(count * levels, dtype=torch.int64)
    if count == 0 or num_points == 0:
        return masks, histograms.view(count, levels)
    weight, bias, w2, b2 = (t.float().contiguous() for t in centred_parameters(theta, centres_m))
    mask_features, xyz_m = mask_features.float(), xyz_m.float()
    if mask_features.shape[1] + xyz_m.shape[1] != IN_CHANNELS or mask_features.shape[0] != num_points:
        raise ValueError(f"mask features and coordinates of {num_points} points: {IN_CHANNELS} channels expected")

    def block(index: int) -> torch.Tensor:
        start, stop = index * BLOCK_POINTS, min((index + 1) * BLOCK_POINTS, num_points)
        # The block's inputs channel-major (19, n), transposed here in cache, on this block's thread.
        inputs_t = torch.cat((mask_features[start:stop].t(), xyz_m[start:stop].t())).contiguous()
        rows = masks[start:stop]
        library.decode_logits(inputs_t.data_ptr(), stop - start, weight.data_ptr(), bias.data_ptr(), w2.data_ptr(),
                              b2.data_ptr(), count, rows.data_ptr(), 0, stop - start)
        rows.sigmoid_()
        counts = torch.zeros(count * levels, dtype=torch.int64)
        library.count_levels(rows.data_ptr(), stop - start, count, levels, counts.data_ptr())
        return counts

    for counts in run_blocks(block, -(-num_points // BLOCK_POINTS)):
        histograms += counts
    return masks, histograms.view(count, levels)
