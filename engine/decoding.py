"""Decoding: dynamic-convolution masks of all instances at once (SPEC §7 layout, §8).

For instance i with parameters θ_i (337,) and centre c_i, and point n with mask feature f_n (16,)
and coordinate p_n (3,):

    m[n, i] = sigmoid(W2_i · relu(W1_i [f_n, p_n - c_i] + b1_i) + b2_i)

W1_i [f, p - c] = W1_i [f, p] - W1p_i c, so the first layer of every instance is one matmul of
``[f, p]`` (N, 19) with the stacked W1 (19, I·16), and the centre folds into the bias. Points are
processed in chunks so the (I·16, chunk) hidden activations stay cache-sized.
"""

from __future__ import annotations

import torch

from engine.model import EMBED

HIDDEN = EMBED  # hidden channels of the dynamic conv
IN_CHANNELS = EMBED + 3
CHUNK_POINTS = 512  # hidden buffer I*16 x 512 float32 stays in L2 (measured best here)


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
    Returns masks (N, I) float32 in [0, 1], point-major (post-processing reduces over instances).

    Per chunk of points: hidden (I·16, n) = [W1 | bias] (I·16, 20) @ [f, p, 1]ᵀ (20, n), ReLU in place,
    then W2 as a batched (I, 1, 16) @ (I, 16, n) product. Buffers are allocated once.
    """
    count, num_points = theta.shape[0], xyz_m.shape[0]
    w1, b1, w2, b2 = split_parameters(theta)
    bias = b1 - torch.einsum("ihk,ik->ih", w1[:, :, EMBED:], centres_m)  # (I, 16)
    # The bias rides along as a 20th input channel of ones: one plain matmul per chunk.
    stacked_w1 = torch.cat((w1, bias.unsqueeze(2)), dim=2).reshape(count * HIDDEN, IN_CHANNELS + 1)
    ones = torch.ones(num_points, 1, dtype=xyz_m.dtype, device=xyz_m.device)
    inputs_t = torch.cat((mask_features, xyz_m, ones), dim=1).t()  # (20, N)
    w2_rows = w2.unsqueeze(1).contiguous()  # (I, 1, 16)
    bias_out = b2.unsqueeze(1)  # (I, 1)
    masks = torch.empty(num_points, count, dtype=torch.float32, device=theta.device)
    chunk = max(1, min(chunk_points, num_points))
    hidden_buffer = torch.empty(count * HIDDEN, chunk, dtype=torch.float32, device=theta.device)
    logits_buffer = torch.empty(count, 1, chunk, dtype=torch.float32, device=theta.device)
    for start in range(0, num_points, chunk):
        n = min(chunk, num_points - start)
        hidden = torch.mm(stacked_w1, inputs_t[:, start:start + n], out=hidden_buffer[:, :n])
        hidden.clamp_(min=0)
        logits = torch.bmm(w2_rows, hidden.view(count, HIDDEN, n), out=logits_buffer[:, :, :n])
        masks[start:start + n] = logits.view(count, n).add_(bias_out).sigmoid_().t()
    return masks
