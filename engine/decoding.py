"""Decoding: dynamic-convolution masks of all instances at once (SPEC §7 layout, §8).

For instance i with parameters θ_i (337,) and centre c_i, and point n with mask feature f_n (16,)
and coordinate p_n (3,):

    m[n, i] = sigmoid(W2_i · relu(W1_i [f_n, p_n - c_i] + b1_i) + b2_i)

W1_i [f, p - c] = W1_i [f, p] - W1p_i c, so the first layer of every instance is one matmul of
``[f, p]`` (N, 19) with the stacked W1 (19, I·16), and the centre folds into the bias. Points are
processed in chunks so the (chunk, I·16) hidden activations stay cache-sized.
"""

from __future__ import annotations

import torch

from engine.model import EMBED

HIDDEN = EMBED  # hidden channels of the dynamic conv
IN_CHANNELS = EMBED + 3
CHUNK_POINTS = 4096


def split_parameters(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """θ (I, 337) -> W1 (I, 16, 19), b1 (I, 16), W2 (I, 16), b2 (I,) (supplementary Eq. S3–S5)."""
    count = theta.shape[0]
    w1_end = HIDDEN * IN_CHANNELS
    w1 = theta[:, :w1_end].reshape(count, HIDDEN, IN_CHANNELS)
    b1 = theta[:, w1_end:w1_end + HIDDEN]
    w2 = theta[:, w1_end + HIDDEN:w1_end + 2 * HIDDEN]
    b2 = theta[:, w1_end + 2 * HIDDEN]
    return w1, b1, w2, b2


def decode_masks(theta: torch.Tensor, mask_features: torch.Tensor, xyz_m: torch.Tensor,
                 centres_m: torch.Tensor, chunk_points: int = CHUNK_POINTS) -> torch.Tensor:
    """Soft masks of all instances.

    theta (I, 337), mask_features (N, 16), xyz_m (N, 3), centres_m (I, 3), all float32.
    Returns masks (N, I) float32 in [0, 1] (point-major, so per-point reductions are contiguous).
    """
    count, num_points = theta.shape[0], xyz_m.shape[0]
    w1, b1, w2, b2 = split_parameters(theta)
    stacked_w1 = w1.reshape(count * HIDDEN, IN_CHANNELS).t().contiguous()  # (19, I*16)
    bias = (b1 - torch.einsum("ihk,ik->ih", w1[:, :, EMBED:], centres_m)).reshape(-1)  # (I*16,)
    inputs = torch.cat((mask_features, xyz_m), dim=1)  # (N, 19)
    masks = torch.empty(num_points, count, dtype=torch.float32, device=theta.device)
    for start in range(0, num_points, chunk_points):
        rows = inputs[start:start + chunk_points]
        hidden = torch.addmm(bias, rows, stacked_w1).clamp_(min=0).view(rows.shape[0], count, HIDDEN)
        logits = torch.einsum("nih,ih->ni", hidden, w2).add_(b2)
        masks[start:start + chunk_points] = logits.sigmoid_()
    return masks
