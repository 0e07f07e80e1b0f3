"""spconv layout checks: weight layout (out, kx, ky, kz, in), down/inverse grouping by coord // 2,
and the single-thread guard around spconv's CPU build (which races with several threads)."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from engine.backbone.spconv_unet import select_provider, spconv_threads

sp = select_provider(torch.device("cpu")).module


def _sparse_input(num: int, extent: int, channels: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    coords = torch.randint(0, extent, (num, 3), generator=g).unique(dim=0).int()
    features = torch.randn(coords.shape[0], channels, generator=g)
    indices = torch.cat((torch.zeros(coords.shape[0], 1, dtype=torch.int32), coords), dim=1)
    return coords, features, sp.SparseConvTensor(features, indices, [extent] * 3, 1)


def _dense(coords, features, extent):
    grid = torch.zeros(1, features.shape[1], extent, extent, extent)
    c = coords.long()
    grid[0, :, c[:, 0], c[:, 1], c[:, 2]] = features.t()
    return grid


@pytest.mark.parametrize("num,extent", [(1, 4), (300, 12), (20000, 40)])
def test_submanifold_conv_equals_dense_conv3d(num, extent):
    coords, features, x = _sparse_input(num, extent, 8, seed=num)
    conv = sp.SubMConv3d(8, 5, 3, padding=1, bias=False)
    with torch.no_grad(), spconv_threads("spconv", torch.device("cpu")):
        out = conv(x).features
        # (out, kx, ky, kz, in) -> conv3d's (out, in, kx, ky, kz)
        dense = F.conv3d(_dense(coords, features, extent), conv.weight.permute(0, 4, 1, 2, 3), padding=1)
    c = coords.long()
    expected = dense[0][:, c[:, 0], c[:, 1], c[:, 2]].t()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_down_conv_groups_by_coord_div_2_and_inverse_restores_rows():
    coords, features, x = _sparse_input(500, 16, 4, seed=1)
    down = sp.SparseConv3d(4, 6, 2, stride=2, bias=False, indice_key="d")
    up = sp.SparseInverseConv3d(6, 4, 2, bias=False, indice_key="d")
    with torch.no_grad(), spconv_threads("spconv", torch.device("cpu")):
        y = down(x)
        z = up(y)
    parents = {tuple(r) for r in (coords // 2).tolist()}
    assert {tuple(r) for r in y.indices[:, 1:].tolist()} == parents
    assert torch.equal(z.indices, x.indices)
    # Each output voxel sums W[offset] @ f over its children; offset = coord % 2.
    dense = F.conv3d(_dense(coords, features, 16), down.weight.permute(0, 4, 1, 2, 3), stride=2)
    yc = y.indices[:, 1:].long()
    torch.testing.assert_close(y.features, dense[0][:, yc[:, 0], yc[:, 1], yc[:, 2]].t(), rtol=1e-5, atol=1e-5)
    # Inverse: each child gets W[:, offset] applied to its parent's features.
    parent_row = {tuple(r): i for i, r in enumerate(y.indices[:, 1:].tolist())}
    rows = torch.tensor([parent_row[tuple(r)] for r in (coords // 2).tolist()])
    offsets = (coords % 2).long()
    weights = up.weight[:, offsets[:, 0], offsets[:, 1], offsets[:, 2], :]  # (4, V, 6)
    expected = torch.einsum("ovi,vi->vo", weights, y.features[rows])
    torch.testing.assert_close(z.features, expected, rtol=1e-5, atol=1e-5)
