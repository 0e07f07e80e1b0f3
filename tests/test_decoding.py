"""Decoding against a literal per-instance transcription of SPEC §8 (the official grouped conv)."""

from __future__ import annotations

import pytest
import torch

from engine.decoding import decode_masks, decode_masks_and_histograms, split_parameters
from engine.postprocess import otsu_histograms


def literal_masks(theta, mask_features, xyz_m, centres_m):
    """m[i, n] = sigmoid(W2 relu(W1 [f_n, p_n - c_i] + b1) + b2), one instance at a time."""
    w1, b1, w2, b2 = split_parameters(theta)
    rows = []
    for i in range(theta.shape[0]):
        x = torch.cat((mask_features, xyz_m - centres_m[i]), dim=1)  # (N, 19)
        hidden = torch.relu(x @ w1[i].t() + b1[i])
        rows.append(torch.sigmoid(hidden @ w2[i] + b2[i]))
    return torch.stack(rows) if rows else torch.zeros(0, xyz_m.shape[0])


# float32: the fused form regroups W1p·(p - c) as W1p·p - W1p·c; with |θ| ~ 1 and |p| ~ 5 m the
# sigmoid outputs agree to a few ulps of 1 (measured max 3e-7); 2e-6 leaves headroom, far below
# the 1e-2 width of an Otsu level.
ATOL = 2e-6


@pytest.mark.parametrize("count,points,chunk", [(0, 7, 512), (1, 0, 512), (1, 1, 512), (3, 1000, 512),
                                                (5, 1537, 256), (17, 4099, 1024)])
def test_decode_matches_literal(count, points, chunk):
    g = torch.Generator().manual_seed(count * 7919 + points)
    theta = torch.randn(count, 337, generator=g) * 0.5
    feats = torch.randn(points, 16, generator=g)
    xyz = torch.randn(points, 3, generator=g) * 3
    centres = torch.randn(count, 3, generator=g) * 3
    got = decode_masks(theta, feats, xyz, centres, chunk_points=chunk)
    assert got.shape == (points, count) and got.dtype == torch.float32
    torch.testing.assert_close(got, literal_masks(theta, feats, xyz, centres).t(), rtol=0, atol=ATOL)


@pytest.mark.parametrize("count,points", [(0, 5), (2, 0), (4, 3000)])
def test_histograms_counted_while_decoding_equal_those_of_the_masks(count, points):
    g = torch.Generator().manual_seed(count + points)
    args = (torch.randn(count, 337, generator=g) * 0.5, torch.randn(points, 16, generator=g),
            torch.randn(points, 3, generator=g) * 3, torch.randn(count, 3, generator=g) * 3)
    masks, hist = decode_masks_and_histograms(*args, chunk_points=100)
    assert torch.equal(masks, decode_masks(*args, chunk_points=100))
    assert torch.equal(hist, otsu_histograms(masks)) and hist.sum() == count * points


def test_parameter_layout():
    theta = torch.arange(337, dtype=torch.float32).unsqueeze(0)
    w1, b1, w2, b2 = split_parameters(theta)
    assert w1[0, 0].tolist() == list(range(19))  # row-major (16 out, 19 in)
    assert w1[0, 15, 18].item() == 303
    assert b1[0].tolist() == list(range(304, 320))
    assert w2[0].tolist() == list(range(320, 336))
    assert b2.item() == 336
