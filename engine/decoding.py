"""Decoding: dynamic-convolution masks of all instances at once (SPEC §7 layout, §8).

For instance i with parameters θ_i (337,) and centre c_i, and point n with mask feature f_n (16,)
and coordinate p_n (3,):

    m[n, i] = sigmoid(W2_i · relu(W1_i [f_n, p_n - c_i] + b1_i) + b2_i)

W1_i [f, p - c] = W1_i [f, p] - W1p_i c, so the first layer of every instance is one GEMM of
``[f, p]`` (N, 19) with the stacked W1 (19, 16·I), the centre folded into the bias, the ReLU fused
(oneDNN on CPU, ``engine.onednn.linear_relu``). Its hidden columns are unit-major (column k·I + i: unit k of
instance i), so the second layer is a sum of 16 contiguous (n, I) slices weighted by W2 that lands
point-major, the layout post-processing reads, with no transpose.

Points go in blocks of ``BLOCK_POINTS`` over ``engine.worker_threads`` (each block on one core),
each block in chunks of ``chunk_points`` whose (chunk, 16·I) hidden activations stay in that
core's cache. ``decode_masks_and_histograms`` also counts each block's Otsu levels while the block
is still in cache (post-processing's first pass over the masks, SPEC §9).
"""

from __future__ import annotations

import torch

from engine.model import EMBED
from engine.onednn import linear_relu
from engine.postprocess import OTSU_LEVELS, level_counts
from engine.worker_threads import run_blocks

HIDDEN = EMBED  # hidden channels of the dynamic conv
IN_CHANNELS = EMBED + 3
CHUNK_POINTS = 128  # hidden (128, 16·150) float32 = 1.2 MB: about one core's L2 (measured best here)
BLOCK_POINTS = 1024  # points per task of a worker thread (and per histogram update)


def split_parameters(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """θ (I, 337) -> W1 (I, 16, 19), b1 (I, 16), W2 (I, 16), b2 (I,) (supplementary Eq. S3–S5)."""
    count = theta.shape[0]
    w1_end = HIDDEN * IN_CHANNELS
    w1 = theta[:, :w1_end].reshape(count, HIDDEN, IN_CHANNELS)
    b1 = theta[:, w1_end:w1_end + HIDDEN]
    w2 = theta[:, w1_end + HIDDEN:w1_end + 2 * HIDDEN]
    b2 = theta[:, w1_end + 2 * HIDDEN]
    return w1, b1, w2, b2


def centred_parameters(theta: torch.Tensor, centres_m: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``split_parameters`` with each centre folded into the first layer's bias:
    W1 (I, 16, 19), b1 - W1p c (I, 16), W2 (I, 16), b2 (I,) for the inputs ``[f, p]``."""
    w1, b1, w2, b2 = split_parameters(theta)
    return w1, b1 - torch.einsum("ihk,ik->ih", w1[:, :, EMBED:], centres_m), w2, b2


def decode_masks(theta: torch.Tensor, mask_features: torch.Tensor, xyz_m: torch.Tensor,
                 centres_m: torch.Tensor, chunk_points: int = CHUNK_POINTS) -> torch.Tensor:
    """Soft masks of all instances.

    theta (I, 337), mask_features (N, 16), xyz_m (N, 3), centres_m (I, 3), all float32.
    Returns masks (N, I) float32 in [0, 1], point-major (post-processing reduces over instances).
    """
    return _decode(theta, mask_features, xyz_m, centres_m, chunk_points, levels=None)[0]


def decode_masks_and_histograms(theta: torch.Tensor, mask_features: torch.Tensor, xyz_m: torch.Tensor,
                                centres_m: torch.Tensor, chunk_points: int = CHUNK_POINTS,
                                levels: int = OTSU_LEVELS) -> tuple[torch.Tensor, torch.Tensor]:
    """``decode_masks`` and ``engine.postprocess.otsu_histograms`` of its result in one walk over
    the points -> (masks (N, I) float32, histograms (I, levels) int64)."""
    masks, counts = _decode(theta, mask_features, xyz_m, centres_m, chunk_points, levels)
    return masks, counts.view(theta.shape[0], levels)


def _decode(theta: torch.Tensor, mask_features: torch.Tensor, xyz_m: torch.Tensor, centres_m: torch.Tensor,
            chunk_points: int, levels: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Masks (N, I) and, when ``levels`` is given, their level counts (I·levels,) int64.

    Per chunk of n points: hidden (n, 16·I) = relu([f, p] @ W1ᵀ + bias), unit-major columns;
    masks rows = sigmoid(Σ_k hidden[:, k] ⊙ W2[:, k] + b2), the sum written straight into them.
    """
    count, num_points, device = theta.shape[0], xyz_m.shape[0], theta.device
    masks = torch.empty(num_points, count, dtype=torch.float32, device=device)
    counts = None if levels is None else torch.zeros(count * levels, dtype=torch.int64, device=device)
    if count == 0 or num_points == 0:
        return masks, counts
    w1, bias, w2, b2 = centred_parameters(theta, centres_m)
    weight = w1.transpose(0, 1).reshape(HIDDEN * count, IN_CHANNELS).contiguous()  # row k·I + i
    bias = bias.t().reshape(HIDDEN * count).contiguous()
    w2_units = w2.t().contiguous()  # (16, I)
    inputs = torch.cat((mask_features, xyz_m), dim=1).contiguous()  # (N, 19)
    chunk = max(1, chunk_points)
    block_points = max(BLOCK_POINTS // chunk, 1) * chunk

    def block(index: int) -> torch.Tensor | None:
        start = index * block_points
        stop = min(start + block_points, num_points)
        for first in range(start, stop, chunk):
            last = min(first + chunk, stop)
            hidden = linear_relu(inputs[first:last], weight, bias).view(last - first, HIDDEN, count)
            rows = torch.sum(hidden.mul_(w2_units), dim=1, out=masks[first:last])
            rows.add_(b2).sigmoid_()
        return None if levels is None else level_counts(masks[start:stop], levels)

    partial = run_blocks(block, -(-num_points // block_points), on_cpu=device.type == "cpu")
    if counts is not None:
        for block_counts in partial:
            counts += block_counts
    return masks, counts
