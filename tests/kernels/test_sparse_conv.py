"""The Triton sparse conv (``kernels.sparse_conv``) against ``engine.backbone.sparse_conv``'s
definition, in Triton's interpreter, on maps built by ``engine.backbone.kernel_maps``.

The oracle: ``sparse_conv_reference`` (one float32 matmul over all K · Cin gathered slots) on the
prologue's output ``relu(x * scale + shift)`` computed in torch, then + bias, ReLU, + residual in
torch, in the kernel's order. Absent neighbours are the reference's zero row, so the prologue is
applied to real rows only there as well.

Tolerances are elementwise, relative to the magnitude of what was summed:
``|got - want| <= rtol · M`` with ``M = Σ_k |x'[n_k]| @ |W_k| + |bias| + |residual|`` and
``|x'| = |x| · |scale| + |shift|`` with a prologue (a bound on x' and on its rounding, since the kernel
contracts ``x * scale + shift`` into one FMA and torch rounds twice). Inputs are unit-scale and
weights scaled by 1/sqrt(K · Cin), so outputs are of order 1 and M of order sqrt(K · Cin).

* fp32, rtol 1e-5: the same products (IEEE dot) summed in another order (offsets, then 8-channel
  chunks, vs one matmul) over at most 27 · 64 = 1728 terms here. Reordering errors of random-signed
  terms stay below sqrt(n) · 2^-24 · M ≈ 2.5e-6 M (about 5e-8 M is seen); the worst case
  n · 2^-24 ≈ 1e-4 M is not approached by random data, and 1e-5 M still flags any wrong or missing
  term (one term is on average M / n >= 5.8e-4 M).
* tf32 and fp16, rtol 1.5e-3: both operands rounded to 11 significant bits (unit roundoff 2^-11), so
  each product is off by at most 2 · 2^-11 + 2^-22 ≈ 9.8e-4 of itself, plus the float32 sums above:
  a worst-case bound, not a statistical one. (The interpreter ignores ``input_precision``, so tf32
  runs as fp32 here: the test checks its plumbing; the bound holds for the tensor cores too.)
* bf16, rtol 1e-2: 8 significant bits (2^-8): 2 · 2^-8 + 2^-16 ≈ 7.8e-3 per product, the same way.

Everything else is exact: results without a real pair (the epilogue alone), int32 vs int64 maps,
and two runs of the same call (no atomics, a fixed order of sums) are compared bit for bit.
Shapes are tens to a few hundred voxels: the file runs in about 15 s in the interpreter (2 cores).
"""

from __future__ import annotations

import pytest
import torch

from engine.backbone.kernel_maps import DOWN_OFFSETS, SUBM_OFFSETS, down_level, submanifold_map
from engine.backbone.sparse_conv import sparse_conv_reference
from kernels.sparse_conv import PRECISIONS, launch_config, sparse_conv

RTOL = {"fp32": 1e-5, "tf32": 1.5e-3, "fp16": 1.5e-3, "bf16": 1e-2}


def random_coords(count: int, extent: int, seed: int) -> torch.Tensor:
    """Up to ``count`` unique voxel coords (V, 3) int64 in [0, extent)³, in a random order (level 1
    keeps the caller's order)."""
    g = torch.Generator().manual_seed(seed)
    coords = torch.unique(torch.randint(0, extent, (count, 3), generator=g), dim=0)
    return coords[torch.randperm(coords.shape[0], generator=g)]


def inverse_map(up: torch.Tensor, num_parents: int) -> torch.Tensor:
    """The inverse conv's (V_child, 8) map from ``up`` (``8 · parent + offset``, or ``8 · num_parents``
    for no parent): the parent row in the child's own offset column, -1 elsewhere."""
    neighbours = torch.full((up.numel(), DOWN_OFFSETS), -1, dtype=torch.int64)
    children = torch.nonzero(up < DOWN_OFFSETS * num_parents).view(-1)
    neighbours[children, up[children] % DOWN_OFFSETS] = up[children] // DOWN_OFFSETS
    return neighbours


def conv_inputs(num_in: int, num_out: int, offsets: int, cin: int, cout: int, seed: int, *, bias=True,
                prologue=False, residual=False) -> dict:
    """Random features, weight (scaled by 1/sqrt(K·Cin)) and the requested options."""
    g = torch.Generator().manual_seed(seed)
    args = {"features": torch.randn(num_in, cin, generator=g),
            "weight": torch.randn(offsets, cin, cout, generator=g) / (offsets * max(cin, 1)) ** 0.5,
            "bias": torch.randn(cout, generator=g) if bias else None}
    if prologue:  # BatchNorm affine: scales around 1 of both signs, shifts that make some rows negative
        args["prologue"] = (torch.randn(cin, generator=g) * 0.5 + 1.0, torch.randn(cin, generator=g) * 0.5)
    if residual:
        args["residual"] = torch.randn(num_out, cout, generator=g)
    return args


def oracle(features, neighbours, weight, bias=None, prologue=None, residual=None, relu=False):
    """(want, magnitude M) of the module docstring, both (V_out, Cout) float32."""
    neighbours = neighbours.long()
    x, x_abs = features, features.abs()
    if prologue is not None:
        scale, shift = prologue
        x = torch.relu(features * scale + shift)
        x_abs = features.abs() * scale.abs() + shift.abs()
    want = sparse_conv_reference(x, neighbours, weight, bias)
    magnitude = sparse_conv_reference(x_abs, neighbours, weight.abs(), None if bias is None else bias.abs())
    if relu:
        want = torch.relu(want)
    if residual is not None:
        want = want + residual
        magnitude = magnitude + residual.abs()
    return want, magnitude


def check(neighbours: torch.Tensor, args: dict, relu: bool = False, precision: str = "fp32") -> torch.Tensor:
    """Run the kernel, compare with the oracle within RTOL[precision]; return the kernel's result."""
    got = sparse_conv(neighbours=neighbours, relu=relu, precision=precision, **args)
    want, magnitude = oracle(neighbours=neighbours, relu=relu, **args)
    assert got.dtype == torch.float32 and got.shape == want.shape
    excess = (got - want).abs() - RTOL[precision] * magnitude
    assert (excess <= 0).all(), (f"{precision}: max |got - want| {(got - want).abs().max():.3g}, "
                                 f"worst excess over the bound {excess.max():.3g}")
    return got


@pytest.mark.parametrize(("cin", "cout", "options"), [
    (6, 32, {}),  # the input conv
    (35, 17, {"prologue": True, "residual": True}),  # odd channels: masked Cin and Cout tails
    (32, 32, {"prologue": True, "bias": False}),
    (9, 130, {"residual": True}),  # two channel tiles, the second one 2 of 128 wide
])
@pytest.mark.parametrize("relu", [False, True])
def test_submanifold_conv(cin, cout, options, relu):
    coords = random_coords(220, 9, seed=cin)  # about 200 voxels: two row tiles of 128, or four of 64
    neighbours = submanifold_map(coords)
    args = conv_inputs(len(coords), len(coords), SUBM_OFFSETS, cin, cout, seed=cout, **options)
    check(neighbours, args, relu=relu)


def test_sparse_scene_submanifold_conv():
    """Scattered voxels: most offsets of most tiles have no neighbour and are skipped."""
    coords = random_coords(150, 40, seed=3)
    neighbours = submanifold_map(coords)
    assert (neighbours < len(coords)).float().mean() < 0.1
    check(neighbours, conv_inputs(len(coords), len(coords), SUBM_OFFSETS, 16, 24, seed=4, prologue=True), relu=True)


@pytest.mark.parametrize("extent", [8, 9])  # 9: odd grid, the last layer of voxels has no parent
def test_down_and_inverse_conv(extent):
    coords = random_coords(300, extent, seed=extent)
    parents, down, up, _ = down_level(coords, [extent] * 3)
    assert down.shape == (len(parents), DOWN_OFFSETS)
    down_args = conv_inputs(len(coords), len(parents), DOWN_OFFSETS, 32, 64, seed=1, prologue=True)
    pooled = check(down, down_args, relu=True)

    neighbours = inverse_map(up, len(parents))  # one real column per child with a parent, -1 elsewhere
    assert ((neighbours >= 0).sum(dim=1) <= 1).all()
    if extent % 2:
        assert (neighbours < 0).all(dim=1).any(), "some children must have no parent"
    inverse_args = conv_inputs(len(parents), len(coords), DOWN_OFFSETS, 64, 32, seed=2, prologue=True,
                               residual=True)
    inverse_args["features"] = pooled
    check(neighbours, inverse_args)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_precisions(precision):
    coords = random_coords(150, 7, seed=5)
    neighbours = submanifold_map(coords)
    args = conv_inputs(len(coords), len(coords), SUBM_OFFSETS, 64, 48, seed=6, prologue=True, residual=True)
    check(neighbours, args, relu=True, precision=precision)


def test_single_voxel():
    neighbours = submanifold_map(torch.tensor([[3, 1, 4]]))
    assert neighbours.tolist() == [[1] * 13 + [0] + [1] * 13]  # only the centre is real
    args = conv_inputs(1, 1, SUBM_OFFSETS, 6, 32, seed=7, prologue=True, residual=True)
    got = check(neighbours, args, relu=True)
    scale, shift = args["prologue"]
    centre = torch.relu(args["features"] * scale + shift) @ args["weight"][13] + args["bias"]
    torch.testing.assert_close(got, torch.relu(centre) + args["residual"], rtol=1e-6, atol=1e-6)


def epilogue_only(num_out: int, bias, residual, relu: bool) -> torch.Tensor:
    out = torch.zeros(num_out, bias.numel()) + bias
    return (torch.relu(out) if relu else out) + residual


@pytest.mark.parametrize("relu", [False, True])
def test_no_real_pairs_give_the_epilogue_exactly(relu):
    """A map without a single real pair, with a prologue whose shift would make absent rows nonzero:
    the launched kernel skips every offset and returns the epilogue alone, bit for bit, as the host
    path for an empty input does."""
    num_in, num_out = 5, 70
    g = torch.Generator().manual_seed(8)
    neighbours = torch.where(torch.rand(num_out, SUBM_OFFSETS, generator=g) < 0.5, num_in, -1)
    neighbours[::7, 3] = 2 ** 40  # far outside: no wrap-around when compared
    args = conv_inputs(num_in, num_out, SUBM_OFFSETS, 12, 20, seed=9, prologue=True, residual=True)
    args["prologue"] = (args["prologue"][0], args["prologue"][1].abs() + 1.0)  # relu(0 · s + t) = t > 0
    want = epilogue_only(num_out, args["bias"], args["residual"], relu)
    assert torch.equal(sparse_conv(neighbours=neighbours, relu=relu, **args), want)
    empty_input = dict(args, features=torch.zeros(0, 12))
    assert torch.equal(sparse_conv(neighbours=torch.zeros(num_out, SUBM_OFFSETS, dtype=torch.int64), relu=relu,
                                   **empty_input), want)


def test_empty_shapes():
    weight = torch.randn(SUBM_OFFSETS, 6, 32)
    bias = torch.randn(32)
    no_rows = sparse_conv(torch.randn(10, 6), torch.zeros(0, SUBM_OFFSETS, dtype=torch.int64), weight, bias)
    assert no_rows.shape == (0, 32) and no_rows.dtype == torch.float32
    both_empty = sparse_conv(torch.zeros(0, 6), torch.zeros(0, SUBM_OFFSETS, dtype=torch.int32), weight, bias)
    assert both_empty.shape == (0, 32)
    no_input = sparse_conv(torch.zeros(0, 6), torch.zeros(4, SUBM_OFFSETS, dtype=torch.int64), weight)
    assert torch.equal(no_input, torch.zeros(4, 32))
    no_offsets = sparse_conv(torch.randn(3, 6), torch.zeros(4, 0, dtype=torch.int64), torch.zeros(0, 6, 32), bias)
    assert torch.equal(no_offsets, bias.expand(4, 32))
    no_channels = sparse_conv(torch.randn(3, 6), torch.zeros(4, SUBM_OFFSETS, dtype=torch.int64),
                              torch.zeros(SUBM_OFFSETS, 6, 0))
    assert no_channels.shape == (4, 0)


def test_a_skipped_row_tile():
    """The first row tile has no real neighbour at any offset, the second has some: the first is the
    epilogue alone, the second matches the oracle."""
    coords = random_coords(200, 8, seed=10)
    neighbours = submanifold_map(coords)
    block_m = launch_config(8, 32).block_m
    neighbours[:block_m] = len(coords)
    args = conv_inputs(len(coords), len(coords), SUBM_OFFSETS, 8, 32, seed=11, residual=True)
    got = check(neighbours, args, relu=True)
    assert torch.equal(got[:block_m], epilogue_only(block_m, args["bias"], args["residual"][:block_m], True))


def test_bit_identical_runs_and_map_types():
    coords = random_coords(200, 8, seed=12)
    neighbours = submanifold_map(coords)
    args = conv_inputs(len(coords), len(coords), SUBM_OFFSETS, 24, 40, seed=13, prologue=True, residual=True)
    first = sparse_conv(neighbours=neighbours, relu=True, **args)
    assert torch.equal(first, sparse_conv(neighbours=neighbours, relu=True, **args))
    assert torch.equal(first, sparse_conv(neighbours=neighbours.int(), relu=True, **args))


def test_relu_comes_before_the_residual():
    neighbours = submanifold_map(random_coords(40, 5, seed=14))
    args = conv_inputs(len(neighbours), len(neighbours), SUBM_OFFSETS, 8, 16, seed=15, residual=True)
    args["residual"] = torch.full_like(args["residual"], -100.0)  # far below any conv output (order 1)
    got = check(neighbours, args, relu=True)
    assert (got < -90).all() and (got + 100 >= 0).all(), "relu(conv) - 100, not relu(conv - 100) = 0"


def test_rejects_bad_arguments():
    features, neighbours, weight = torch.randn(4, 6), torch.zeros(4, SUBM_OFFSETS, dtype=torch.int64), \
        torch.randn(SUBM_OFFSETS, 6, 8)
    for precision in ("fp64", "FP32", "int8", ""):
        with pytest.raises(ValueError, match="precision must be one of fp32, tf32, fp16, bf16"):
            sparse_conv(features, neighbours, weight, precision=precision)
    with pytest.raises(ValueError, match="does not match"):
        sparse_conv(features, neighbours, torch.randn(8, 6, 8))
    with pytest.raises(ValueError, match="int32 or int64"):
        sparse_conv(features, neighbours.float(), weight)


def test_launch_configs_fit_the_dot():
    """Every DKNet channel pair gets tiles tl.dot accepts (M, N >= 16; K >= 8 for 32-bit operands,
    16 for 16-bit ones) and one channel tile up to 128 output channels."""
    widths = [32 * level for level in range(1, 8)]
    pairs = [(6, 32)] + [(c, c) for c in widths] + [(2 * c, c) for c in widths] + [(c, c + 32) for c in widths]
    for cin, cout in pairs:
        for precision in PRECISIONS:
            config = launch_config(cin, cout, precision)
            assert config.block_m >= 16 and config.block_n >= 16
            assert config.block_k >= (8 if precision in ("fp32", "tf32") else 16)
            assert (cout <= 128) == (config.block_n >= cout)
