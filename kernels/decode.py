"""Decoding fused with the Otsu histograms: per-instance mask histograms without the (I, N) masks.

For instance i with parameters θ_i (337,) (SPEC §7: W1 (16, 19) row-major, b1 (16,), W2 (16,),
b2) and centre c_i (3,), and point n with mask feature f_n (16,) and coordinate p_n (3,):

    m[i, n]     = sigmoid(W2_i · relu(W1_i [f_n, p_n - c_i] + b1_i) + b2_i)     (SPEC §8)
    level[i, n] = min(trunc(100 · m[i, n]), 99)
    hist[i, l]  = #{n : level[i, n] = l}                                         (SPEC §9)

The kernel subtracts the centre before the first layer (as the official grouped conv); the torch
reference (``engine.decoding.decode_masks``) folds W1p·c into the bias. Both are float32-faithful;
they differ by float32 rounding only, which moves a point to the neighbouring level when m lies
within a few ulps of a multiple of 1/100 (see checks/decode.py for the tolerance).

Determinism and precision: see ``kernels._triton`` (float32, IEEE dot; integer atomic histogram
adds, which are order-independent, relaxed, and only for non-empty bins).
"""

from __future__ import annotations

import torch

from engine.decoding import HIDDEN, IN_CHANNELS
from engine.model import DYNAMIC_PARAMS, EMBED
from engine.postprocess import OTSU_LEVELS
from kernels._triton import jit, require_triton, tl, triton

MAX_BLOCK_POINTS = 128  # points per program: a (128, 32) input tile and (128, 16) hidden tile in registers
MIN_BLOCK_POINTS = 16  # tl.dot needs at least 16 rows


@jit
def point_inputs(features_ptr, xyz_ptr, points, point_valid, EMBED: tl.constexpr, INPUTS_PADDED: tl.constexpr):
    """Decoder inputs of a block of points: (B, INPUTS_PADDED) float32 ``[f_n (EMBED), p_n (3), 0…]``.

    features (N, EMBED), xyz (N, 3) float32 contiguous; points (B,) int point indices; rows where
    ``point_valid`` is False are zero.
    """
    channels = tl.arange(0, INPUTS_PADDED)
    is_feature = channels < EMBED
    is_xyz = (channels >= EMBED) & (channels < EMBED + 3)
    xyz_channel = tl.where(is_xyz, channels - EMBED, 0)
    features = tl.load(features_ptr + points[:, None] * EMBED + channels[None, :],
                       mask=point_valid[:, None] & is_feature[None, :], other=0.0)
    xyz = tl.load(xyz_ptr + points[:, None] * 3 + xyz_channel[None, :],
                  mask=point_valid[:, None] & is_xyz[None, :], other=0.0)
    return features + xyz  # disjoint channels: the sum adds zeros, exactly


@jit
def instance_masks(theta_ptr, centres_ptr, instance, inputs, HIDDEN: tl.constexpr, EMBED: tl.constexpr,
                   INPUTS_PADDED: tl.constexpr):
    """Soft masks m (B,) float32 of one instance for a block of ``point_inputs`` (B, INPUTS_PADDED).

    theta (I, 337), centres (I, 3) float32 contiguous; ``instance`` its row.
    x (B, C) = [f_n, p_n - c_i, 0…]; h (B, HIDDEN) = relu(x @ W1_iᵀ + b1_i) (IEEE float32 dot);
    m = sigmoid(h · W2_i + b2_i).
    """
    channels = tl.arange(0, INPUTS_PADDED)
    is_xyz = (channels >= EMBED) & (channels < EMBED + 3)
    centre = tl.load(centres_ptr + instance * 3 + tl.where(is_xyz, channels - EMBED, 0), mask=is_xyz, other=0.0)
    x = inputs - centre[None, :]  # the centre is 0 outside the xyz channels

    theta_row = theta_ptr + instance * (HIDDEN * (EMBED + 3) + 2 * HIDDEN + 1)
    hidden_ids = tl.arange(0, HIDDEN)
    w1_t = tl.load(theta_row + hidden_ids[None, :] * (EMBED + 3) + channels[:, None],
                   mask=(channels < EMBED + 3)[:, None], other=0.0)  # (C, HIDDEN) = W1ᵀ, zero-padded
    b1 = tl.load(theta_row + HIDDEN * (EMBED + 3) + hidden_ids)
    w2 = tl.load(theta_row + HIDDEN * (EMBED + 3) + HIDDEN + hidden_ids)
    b2 = tl.load(theta_row + HIDDEN * (EMBED + 3) + 2 * HIDDEN)

    hidden = tl.maximum(tl.dot(x, w1_t, input_precision="ieee") + b1[None, :], 0.0)  # (B, HIDDEN)
    return tl.sigmoid(tl.sum(hidden * w2[None, :], axis=1) + b2)


@jit
def _decode_histogram_kernel(theta_ptr, features_ptr, xyz_ptr, centres_ptr, hist_ptr, num_points,
                             HIDDEN: tl.constexpr, EMBED: tl.constexpr, INPUTS_PADDED: tl.constexpr,
                             LEVELS: tl.constexpr, BINS: tl.constexpr, BLOCK_POINTS: tl.constexpr):
    """One program per (instance i, block of BLOCK_POINTS points); grid (I, cdiv(N, BLOCK_POINTS)).

    theta (I, 337), features (N, EMBED), xyz (N, 3), centres (I, 3) float32 contiguous;
    hist (I, LEVELS) int32, zeroed, accumulated with integer atomic adds.
    level = min(trunc(LEVELS·m), LEVELS - 1); the block's non-empty bins of its level histogram
    (BINS ≥ LEVELS bins) are added to hist[i] in one masked vector atomic: a block of 128 points
    fills a few of the 100 bins, and an empty bin's add would change nothing. The adds are relaxed:
    only the final counts are read, after the launch, and no other memory access is ordered by them.
    """
    instance = tl.program_id(0)
    points = tl.program_id(1) * BLOCK_POINTS + tl.arange(0, BLOCK_POINTS)  # (B,)
    point_valid = points < num_points
    inputs = point_inputs(features_ptr, xyz_ptr, points, point_valid, EMBED, INPUTS_PADDED)
    masks = instance_masks(theta_ptr, centres_ptr, instance, inputs, HIDDEN, EMBED, INPUTS_PADDED)
    levels = tl.minimum((masks * LEVELS).to(tl.int32), LEVELS - 1)  # m >= 0: the cast truncates
    block_hist = tl.histogram(levels, BINS, mask=point_valid)  # (BINS,) int32
    bins = tl.arange(0, BINS)
    tl.atomic_add(hist_ptr + instance * LEVELS + bins, block_hist, mask=(bins < LEVELS) & (block_hist > 0),
                  sem="relaxed")


def check_decode_shapes(theta: torch.Tensor, mask_features: torch.Tensor, xyz_m: torch.Tensor,
                        centres_m: torch.Tensor) -> None:
    """Raise ValueError unless theta (I, 337), mask_features (N, 16), xyz_m (N, 3), centres_m (I, 3)."""
    count, num_points = theta.shape[0], xyz_m.shape[0]
    if theta.shape[1:] != (DYNAMIC_PARAMS,) or mask_features.shape != (num_points, EMBED) \
            or centres_m.shape != (count, 3) or xyz_m.shape[1:] != (3,):
        raise ValueError(f"shapes theta {tuple(theta.shape)}, mask_features {tuple(mask_features.shape)}, "
                         f"xyz_m {tuple(xyz_m.shape)}, centres_m {tuple(centres_m.shape)}: expected "
                         f"(I, {DYNAMIC_PARAMS}), (N, {EMBED}), (N, 3), (I, 3)")


def block_points_for(num_points: int) -> int:
    """Points per program: the next power of two ≥ N, clamped to [16, 128].

    16 is tl.dot's minimum tile; 128 keeps the (128, 32) input and (128, 16) hidden tiles in
    registers at 4 warps while giving ⌈N/128⌉·I programs (≥ 10⁵ for a scene), plenty to fill a GPU.
    N is not an autotune key: it changes with every scene.
    """
    return max(MIN_BLOCK_POINTS, min(MAX_BLOCK_POINTS, triton.next_power_of_2(max(num_points, 1))))


def decode_histograms(theta: torch.Tensor, mask_features: torch.Tensor, xyz_m: torch.Tensor,
                      centres_m: torch.Tensor, levels: int = OTSU_LEVELS) -> torch.Tensor:
    """Per-instance mask-level histograms, fused: the (I, N) masks never reach memory.

    theta (I, 337), mask_features (N, 16), xyz_m (N, 3), centres_m (I, 3), all float32 on one
    device (CUDA, or CPU under TRITON_INTERPRET=1). Returns hist (I, levels) int64.
    """
    require_triton(theta.device)
    check_decode_shapes(theta, mask_features, xyz_m, centres_m)
    count, num_points = theta.shape[0], xyz_m.shape[0]
    hist = torch.zeros(count, levels, dtype=torch.int32, device=theta.device)
    if count and num_points:
        block_points = block_points_for(num_points)
        grid = (count, triton.cdiv(num_points, block_points))
        _decode_histogram_kernel[grid](
            theta.float().contiguous(), mask_features.float().contiguous(), xyz_m.float().contiguous(),
            centres_m.float().contiguous(), hist, num_points,
            HIDDEN=HIDDEN, EMBED=EMBED, INPUTS_PADDED=triton.next_power_of_2(IN_CHANNELS),
            LEVELS=levels, BINS=triton.next_power_of_2(levels), BLOCK_POINTS=block_points)
    return hist.to(torch.int64)
