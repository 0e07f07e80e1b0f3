"""spconv as the oracle: random sparse inputs and spconv's own index pairs, in canonical order."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from spconv.core import ConvAlgo
from spconv.pytorch import ops

from engine.backbone.kernel_maps import down_level
from engine.backbone.spconv_unet import select_provider, spconv_threads

CPU = torch.device("cpu")
sp = select_provider(CPU).module

# (voxels drawn, grid shape): one voxel; odd sizes on every axis (stride-2 drops the last plane);
# a larger, denser grid.
CASES = [(1, [4, 4, 4]), (300, [13, 9, 11]), (4000, [40, 41, 39])]


def random_voxels(num: int, shape: list[int], channels: int, seed: int):
    """Unique coords (V, 3) int64, features (V, C) float32 and spconv's SparseConvTensor of them."""
    g = torch.Generator().manual_seed(seed)
    coords = torch.stack([torch.randint(0, s, (num,), generator=g) for s in shape], dim=1).unique(dim=0)
    coords = coords[torch.randperm(coords.shape[0], generator=g)]  # not sorted: the maps must not assume it
    features = torch.randn(coords.shape[0], channels, generator=g)
    indices = torch.cat((torch.zeros(coords.shape[0], 1, dtype=torch.int64), coords), dim=1).int()
    return coords, features, sp.SparseConvTensor(features, indices, shape, 1)


def canonical(rows: torch.Tensor) -> torch.Tensor:
    """Integer rows (M, K) in sorted, unique order (index outputs are compared this way)."""
    return torch.unique(rows, dim=0)


def spconv_pairs(coords: torch.Tensor, shape: list[int], subm: bool):
    """spconv's (output indices (P, 3), pairs (2, K, n): input row, output row, counts (K,))."""
    indices = torch.cat((torch.zeros(coords.shape[0], 1, dtype=torch.int64), coords), dim=1).int()
    k, s, p = ([3] * 3, [1] * 3, [1] * 3) if subm else ([2] * 3, [2] * 3, [0] * 3)
    with torch.no_grad(), spconv_threads("spconv", CPU):
        out, pairs, counts = ops.get_indice_pairs(indices, 1, shape, ConvAlgo.Native, k, s, p, [1] * 3, [0] * 3,
                                                  subm=subm)
    return out[:, 1:].long(), pairs.long(), counts.long()


def subm_triples_spconv(coords: torch.Tensor, shape: list[int]) -> torch.Tensor:
    """(output row, offset k, input row) of spconv's 3³ submanifold pairs, centre and mirrors
    included (spconv's CPU build stores only offsets k < 13 and treats the centre implicitly; the
    relation is symmetric: q = p + δ_k  <=>  p = q + δ_{26-k})."""
    _, pairs, counts = spconv_pairs(coords, shape, subm=True)
    rows = []
    for k in range(27):
        src, dst = pairs[0, k, : counts[k]], pairs[1, k, : counts[k]]
        rows.append(torch.stack((dst, torch.full_like(dst, k), src), 1))
        rows.append(torch.stack((src, torch.full_like(src, 26 - k), dst), 1))
    centre = torch.arange(coords.shape[0])
    rows.append(torch.stack((centre, torch.full_like(centre, 13), centre), 1))
    return canonical(torch.cat(rows))


def down_triples_spconv(coords: torch.Tensor, shape: list[int]) -> torch.Tensor:
    """(parent xyz, child offset o, child xyz) (M, 7) of spconv's k=2 s=2 pairs."""
    out, pairs, counts = spconv_pairs(coords, shape, subm=False)
    rows = []
    for o in range(8):
        src, dst = pairs[0, o, : counts[o]], pairs[1, o, : counts[o]]
        rows.append(torch.cat((out[dst], torch.full((src.shape[0], 1), o), coords[src]), 1))
    return canonical(torch.cat(rows))


def random_weight(conv) -> torch.Tensor:
    """Draws ``conv``'s weight (spconv module) from N(0, 0.3²) in place and returns it detached."""
    torch.nn.init.normal_(conv.weight, std=0.3)
    return conv.weight.detach()


def run_spconv(module, tensor):
    """A spconv module on a SparseConvTensor, without grad, single-threaded on CPU."""
    with torch.no_grad(), spconv_threads("spconv", CPU):
        return module(tensor)


def in_our_order(spconv_out, parents: torch.Tensor) -> torch.Tensor:
    """spconv's output rows reordered to our parent order (matched by coordinates)."""
    theirs = {tuple(c): i for i, c in enumerate(spconv_out.indices[:, 1:].tolist())}
    assert len(theirs) == parents.shape[0]
    return spconv_out.features[torch.tensor([theirs[tuple(c)] for c in parents.tolist()], dtype=torch.long)]


@dataclass
class SubmCase:
    """One spconv submanifold conv (kernel 3 or 1) on random voxels: its inputs and outputs."""

    coords: torch.Tensor  # (V, 3) int64
    features: torch.Tensor  # (V, Cin) float32
    weight: torch.Tensor  # spconv layout (Cout, k, k, k, Cin)
    expected: torch.Tensor  # (V, Cout) spconv's output, rows in the input's order


def subm_case(num: int, shape: list[int], kernel: int, in_channels: int, out_channels: int, seed: int) -> SubmCase:
    coords, features, tensor = random_voxels(num, shape, in_channels, seed=seed)
    conv = sp.SubMConv3d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False)
    weight = random_weight(conv)
    return SubmCase(coords, features, weight, run_spconv(conv, tensor).features)


@dataclass
class DownUpCase:
    """A spconv down conv (k=2, s=2) and its inverse on random voxels, with our level-2 order."""

    coords: torch.Tensor  # (V, 3) int64 children
    features: torch.Tensor  # (V, Cin) float32
    down_weight: torch.Tensor  # (Cout, 2, 2, 2, Cin)
    up_weight: torch.Tensor  # (Cin, 2, 2, 2, Cout)
    parents: torch.Tensor  # (P, 3) int64, sorted as ``down_level`` orders them
    expected_down: torch.Tensor  # (P, Cout) spconv's down output in our parent order
    expected_up: torch.Tensor  # (V, Cin) spconv's inverse output of its down output, the input's order


def down_up_case(num: int, shape: list[int], in_channels: int, out_channels: int, seed: int) -> DownUpCase:
    coords, features, tensor = random_voxels(num, shape, in_channels, seed=seed)
    down = sp.SparseConv3d(in_channels, out_channels, 2, stride=2, bias=False, indice_key="d")
    up = sp.SparseInverseConv3d(out_channels, in_channels, 2, bias=False, indice_key="d")
    down_weight, up_weight = random_weight(down), random_weight(up)
    y = run_spconv(down, tensor)
    parents = down_level(coords, shape)[0]
    return DownUpCase(coords, features, down_weight, up_weight, parents, in_our_order(y, parents),
                      run_spconv(up, y).features)
