"""Sparse convolution as gather → GEMM → scatter-add over real (input, output) voxel pairs.

A convolution with K kernel offsets is described by its neighbour map ``neighbours`` (V_out, K)
int64: the input row feeding output row ``p`` through offset ``k``; any value outside
``[0, V_in)`` means none (``engine.backbone.kernel_maps`` writes ``V_in``, the exported graph's zero
row; ``-1`` works too). Its weight is one (Cin, Cout) matrix per offset,
``weight`` (K, Cin, Cout). Then

    out[p] = bias + Σ_k features[neighbours[p, k]] @ weight[k]     (absent neighbours add nothing)

Three forms compute this sum:

* ``sparse_conv_reference``: the definition, gathering all K slots with a zero row for none
  (V_out · K · Cin · Cout multiply-adds). Small, obviously right; the oracle of the other two.
* ``OffsetPairs`` + ``sparse_conv``: the engine's torch form (CPU and CUDA). Per offset, only the
  real pairs: gather their input rows, one GEMM, add the products into their output rows. The
  identity offset (a submanifold conv's centre, every voxel its own neighbour) is a plain GEMM
  over all rows that starts the sum, so it needs neither gather nor scatter.
* ``kernels.sparse_conv``: the same sum as one Triton kernel (implicit GEMM) on GPUs.

Determinism: within one offset every output row appears at most once (a voxel has one neighbour
per offset), so each ``index_add_`` touches distinct rows, and offsets are added in index order, the
identity offset first: the same bits every run, on any thread count, on CPU and CUDA alike (no two
additions race).

The GEMM: ``engine.onednn.linear`` (torch's oneDNN linear on CPU, 1.2–1.5x ``torch.mm``'s rate on
the DKNet layer shapes on an AMD Zen 5; elsewhere ``torch.nn.functional.linear``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.onednn import linear


@dataclass(frozen=True)
class OffsetPairs:
    """The real pairs of one neighbour map, grouped by offset (built once per map, reused by every
    conv that shares it: a U-Net level's submanifold convs, a down conv and its inverse).

    ``in_rows``, ``out_rows`` (P,) int64: pair ``i`` feeds input row ``in_rows[i]`` into output row
    ``out_rows[i]``; the pairs of offset 0 come first, then offset 1, ..., ``counts[k]`` of them for
    offset ``k`` (K,). ``identity``: the offset whose pairs are exactly (p, p) for every row (a
    submanifold conv's centre): its pairs are not listed (``counts[identity] == 0``), it runs as
    one GEMM over all rows without gather or scatter; None when there is none.
    """

    in_rows: torch.Tensor
    out_rows: torch.Tensor
    counts: tuple[int, ...]
    num_in: int
    num_out: int
    identity: int | None = None

    @property
    def num_pairs(self) -> int:
        """Real pairs, the identity offset's included."""
        return len(self.in_rows) + (self.num_out if self.identity is not None else 0)

    def transposed(self) -> OffsetPairs:
        """The pairs with inputs and outputs swapped: an inverse conv on a down conv's pairs."""
        return OffsetPairs(self.out_rows, self.in_rows, self.counts, self.num_out, self.num_in, self.identity)

    @classmethod
    def from_neighbours(cls, neighbours: torch.Tensor, num_in: int, identity: int | None = None) -> OffsetPairs:
        """Pairs of ``neighbours`` (V_out, K) int64 (an input row, or none: outside [0, num_in)).
        ``identity``: an offset known to pair every row with itself (checked when V_out > 0)."""
        num_out, num_offsets = neighbours.shape
        real = (neighbours >= 0) & (neighbours < num_in)
        if identity is not None and num_out:
            centre = neighbours[:, identity]
            if num_in != num_out or not torch.equal(centre, torch.arange(num_out, device=centre.device)):
                raise ValueError(f"offset {identity} does not pair every row with itself")
            real[:, identity] = False
        offsets, out_rows = torch.nonzero(real.t(), as_tuple=True)  # ordered by offset, then row
        counts = torch.bincount(offsets, minlength=num_offsets).tolist()
        return cls(neighbours[out_rows, offsets], out_rows, tuple(counts), num_in, num_out, identity)


def sparse_conv(features: torch.Tensor, pairs: OffsetPairs, weight_t: torch.Tensor,
                bias: torch.Tensor | None = None) -> torch.Tensor:
    """The engine's sparse conv: features (V_in, Cin) float32, weight_t (K, Cout, Cin) (each
    offset's matrix transposed, contiguous: the GEMM's packed layout), bias (Cout,) or None ->
    (V_out, Cout) float32.

    The identity offset's GEMM (with the bias) starts the sum; then, offset by offset in index order,
    one gather of the offset's input rows, one GEMM and one ``index_add_`` into their output rows.
    """
    num_out, out_channels = pairs.num_out, weight_t.shape[1]
    if pairs.identity is not None:
        out = linear(features, weight_t[pairs.identity], bias)
    else:
        out = features.new_zeros(num_out, out_channels)
        if bias is not None:
            out += bias
    end = 0
    for k, count in enumerate(pairs.counts):
        start, end = end, end + count
        if count:
            products = linear(features.index_select(0, pairs.in_rows[start:end]), weight_t[k])
            out.index_add_(0, pairs.out_rows[start:end], products)
    return out


def sparse_conv_reference(features: torch.Tensor, neighbours: torch.Tensor, weight: torch.Tensor,
                          bias: torch.Tensor | None = None) -> torch.Tensor:
    """The definition: features (V_in, Cin), neighbours (V_out, K) int64 (outside [0, V_in): none),
    weight (K, Cin, Cout), bias (Cout,) or None -> (V_out, Cout), all K slots gathered (a zero row
    for none)."""
    num_in = features.shape[0]
    padded = torch.cat((features, features.new_zeros(1, features.shape[1])))
    slots = torch.where((neighbours >= 0) & (neighbours < num_in), neighbours, num_in)
    out = padded[slots].flatten(1) @ weight.reshape(-1, weight.shape[-1])
    return out if bias is None else out + bias
