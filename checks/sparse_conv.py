"""The Triton sparse conv (``kernels.sparse_conv``) against ``engine.backbone.sparse_conv``'s
definition on maps built by ``engine.backbone.kernel_maps``, and the native backbone's Triton form
against its torch form.

Conv cases (``CONV_CASES``). The oracle: ``sparse_conv_reference`` (one float32 matmul over all
K · Cin gathered slots) on the prologue's output ``relu(x * scale + shift)`` computed in torch, then
+ bias, ReLU, + residual in torch, in the kernel's order. Absent neighbours are the reference's zero
row, so the prologue is applied to real rows only there as well.

Tolerances are elementwise, relative to the magnitude of what was summed:
``|got - want| <= rtol · M`` with ``M = Σ_k |x'[n_k]| @ |W_k| + |bias| + |residual|`` and
``|x'| = |x| · |scale| + |shift|`` with a prologue (a bound on x' and on its rounding, since the kernel
contracts ``x * scale + shift`` into one FMA and torch rounds twice). Inputs are unit-scale and
weights scaled by 1/sqrt(K · Cin), so outputs are of order 1 and M of order sqrt(K · Cin). The
recorded error of these comparisons is ``|got - want| / M``.

* fp32, rtol 1e-5: the same products (IEEE dot) summed in another order (offsets, then 8-channel
  chunks, vs one matmul) over at most 27 · 64 = 1728 terms here. Reordering errors of random-signed
  terms stay below sqrt(n) · 2^-24 · M ≈ 2.5e-6 M (up to 1.8e-7 M is seen); the worst case
  n · 2^-24 ≈ 1e-4 M is not approached by random data, and 1e-5 M still flags any wrong or missing
  term (one term is on average M / n >= 5.8e-4 M). Compiled on CUDA the "ieee" dot is a chain of
  FMAs on the CUDA cores (each product exact inside its add): the same bound.
* tf32 and fp16, rtol 1.5e-3: both operands rounded to 11 significant bits (unit roundoff 2^-11), so
  each product is off by at most 2 · 2^-11 + 2^-22 ≈ 9.8e-4 of itself, plus the float32 sums above:
  a worst-case bound, not a statistical one. It holds on the tensor cores for fp16, whose operands
  the kernel casts with round-to-nearest-even. (The interpreter ignores ``input_precision``, so tf32
  runs as fp32 there: the case checks its plumbing.)
* tf32 on CUDA, rtol 2e-3: the tensor cores do not round float32 operands to TF32, they drop the 13
  low bits (truncation; ``tl.dot``'s documentation warns of it, triton-lang/triton#4574), an error
  below 2^-10 of each operand: 2 · 2^-10 + 2^-20 ≈ 1.95e-3 per product, the same way. The CPU bound
  stays 1.5e-3 (there tf32 is fp32).
* bf16, rtol 1e-2: 8 significant bits (2^-8): 2 · 2^-8 + 2^-16 ≈ 7.8e-3 per product, the same way; on
  the tensor cores too (round-to-nearest-even casts, float32 accumulation).

Everything else is exact on both devices: results without a real pair (the epilogue alone: a zero
accumulator plus bias, ReLU, plus residual, with no multiply to contract), int32 vs int64 maps (the
same float operations in the same order; only the index arithmetic differs), and two runs of the
same call (no atomics, a fixed order of sums) are compared bit for bit. The single voxel's
hand-computed centre term keeps rtol = atol = 1e-6 on CUDA too: six products of order 1, where the
FMAs change a few ulps (~1e-7).

Backbone cases (``BACKBONE_CASES``): the native backbone's Triton form (its CUDA default) against its
torch form, whole backbone and point heads, on small scenes, with the random-weight model of
``engine.checkpoint.randomize_weights(seed=0)``. The torch form always runs on CPU (its convs are
oneDNN CPU ops), the Triton form on ``device``. Tolerance: the two forms sum each convolution's
products in different orders (per tile and Cin chunk against per offset through oneDNN) through ~60
layers: float32 rounding, ``F32_NETWORK`` (1e-4) as for the backbone against spconv
(tests/backbone/test_native.py); compiled on CUDA the FMAs add a few ulps per layer, and the heads'
float32 matmuls run in cuBLAS, in float32 as long as torch's float32 matmul precision is "highest"
(checked). The object points are compared exactly: each point's decision (best object class against
best of wall and floor) must have a margin in the reference above twice the tolerance, so that no
deviation within it can flip one (checked; the margins are >= 0.23 here).

Shapes are tens to a few hundred voxels: in the interpreter (2 cores) the conv cases run in about
25 s, the backbone cases in 60-100 s.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from checks.case import Cases, Check
from checks.tolerances import F32_NETWORK
from engine.backbone.kernel_maps import DOWN_OFFSETS, SUBM_OFFSETS, down_level, submanifold_map
from engine.backbone.native import NativeBackbone
from engine.backbone.sparse_conv import sparse_conv_reference
from engine.checkpoint import randomize_weights
from engine.classes import FIRST_OBJECT_CLASS
from engine.model import DKNet, build_model
from engine.preprocess import voxelize
from kernels.sparse_conv import PRECISIONS, launch_config, sparse_conv

RTOL = {"fp32": 1e-5, "tf32": 1.5e-3, "fp16": 1.5e-3, "bf16": 1e-2}
TF32_TRUNCATED_RTOL = 2e-3  # tf32 compiled for CUDA: operands truncated, not rounded (module docstring)
CPU = torch.device("cpu")

CONV_CASES = Cases("sparse_conv")
BACKBONE_CASES = Cases("sparse_conv")


def rtol_of(precision: str, device: torch.device) -> float:
    """The relative bound (of M) of one precision on one device (module docstring)."""
    return TF32_TRUNCATED_RTOL if precision == "tf32" and device.type == "cuda" else RTOL[precision]


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


def conv_inputs(num_in: int, num_out: int, offsets: int, cin: int, cout: int, seed: int, *, bias: bool = True,
                prologue: bool = False, residual: bool = False) -> dict:
    """Random CPU float32 inputs of ``sparse_conv``: features (V_in, Cin), weight (K, Cin, Cout) scaled
    by 1/sqrt(K·Cin), bias (Cout,) or None, and the requested options: prologue (scale (Cin,), shift
    (Cin,)), residual (V_out, Cout)."""
    g = torch.Generator().manual_seed(seed)
    args = {"features": torch.randn(num_in, cin, generator=g),
            "weight": torch.randn(offsets, cin, cout, generator=g) / (offsets * max(cin, 1)) ** 0.5,
            "bias": torch.randn(cout, generator=g) if bias else None}
    if prologue:  # BatchNorm affine: scales around 1 of both signs, shifts that make some rows negative
        args["prologue"] = (torch.randn(cin, generator=g) * 0.5 + 1.0, torch.randn(cin, generator=g) * 0.5)
    if residual:
        args["residual"] = torch.randn(num_out, cout, generator=g)
    return args


def on(device: torch.device, args: dict) -> dict:
    """``conv_inputs``' tensors (and the prologue pair) moved to ``device``."""
    def move(value):
        if isinstance(value, tuple):
            return tuple(t.to(device) for t in value)
        return None if value is None else value.to(device)

    return {name: move(value) for name, value in args.items()}


def oracle(features, neighbours, weight, bias=None, prologue=None, residual=None, relu=False):
    """(want, magnitude M) of the module docstring, both (V_out, Cout) float32, on CPU inputs."""
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


def within_magnitude(check: Check, what: str, got: torch.Tensor, want: torch.Tensor, magnitude: torch.Tensor,
                     rtol: float) -> bool:
    """``|got - want| <= rtol · M`` elementwise, compared as ``got / M`` against ``want / M`` in float64
    (where M = 0 nothing was summed and the two must be equal)."""
    scale = magnitude.double().clamp(min=torch.finfo(torch.float64).tiny)
    return check.close(f"{what} (relative to M)", got.double() / scale, want.double() / scale, rtol=0.0, atol=rtol)


def matches_oracle(check: Check, device: torch.device, neighbours: torch.Tensor, args: dict, relu: bool = False,
                   precision: str = "fp32", what: str = "conv") -> torch.Tensor:
    """Run the kernel on ``device``, compare with the oracle within the precision's bound; return the
    kernel's result (V_out, Cout) float32 on CPU."""
    got = sparse_conv(neighbours=neighbours.to(device), relu=relu, precision=precision, **on(device, args)).cpu()
    want, magnitude = oracle(neighbours=neighbours, relu=relu, **args)
    check.that(f"{what}: dtype", got.dtype == torch.float32, str(got.dtype))
    within_magnitude(check, f"{what} {precision}", got, want, magnitude, rtol_of(precision, device))
    return got


# (Cin, Cout, options) of the submanifold cases, by what each exercises
SUBMANIFOLD_SHAPES: dict[str, tuple[int, int, dict]] = {
    "6->32 (the input conv)": (6, 32, {}),
    "35->17 prologue residual (masked Cin and Cout tails)": (35, 17, {"prologue": True, "residual": True}),
    "32->32 prologue no bias": (32, 32, {"prologue": True, "bias": False}),
    "9->130 residual (two channel tiles, the second 2 of 128 wide)": (9, 130, {"residual": True}),
}


@CONV_CASES("submanifold {shape} relu={relu}", shape=list(SUBMANIFOLD_SHAPES), relu=[False, True])
def submanifold_conv(check: Check, device: torch.device, shape: str, relu: bool) -> None:
    cin, cout, options = SUBMANIFOLD_SHAPES[shape]
    coords = random_coords(220, 9, seed=cin)  # about 200 voxels: two row tiles of 128, or four of 64
    neighbours = submanifold_map(coords)
    args = conv_inputs(len(coords), len(coords), SUBM_OFFSETS, cin, cout, seed=cout, **options)
    matches_oracle(check, device, neighbours, args, relu=relu)


@CONV_CASES("submanifold on a sparse scene (most offsets of most tiles skipped)")
def sparse_scene_submanifold_conv(check: Check, device: torch.device) -> None:
    coords = random_coords(150, 40, seed=3)
    neighbours = submanifold_map(coords)
    real_fraction = (neighbours < len(coords)).float().mean().item()
    check.that("the scene must be sparse: under 10% of the map real", real_fraction < 0.1, f"{real_fraction:.3f}")
    args = conv_inputs(len(coords), len(coords), SUBM_OFFSETS, 16, 24, seed=4, prologue=True)
    matches_oracle(check, device, neighbours, args, relu=True)


@CONV_CASES("down and inverse conv on a grid of side {extent}", extent=[8, 9])  # 9: the last layer has no parent
def down_and_inverse_conv(check: Check, device: torch.device, extent: int) -> None:
    coords = random_coords(300, extent, seed=extent)
    parents, down, up, _ = down_level(coords, [extent] * 3)
    check.that("down map shape", down.shape == (len(parents), DOWN_OFFSETS), str(tuple(down.shape)))
    down_args = conv_inputs(len(coords), len(parents), DOWN_OFFSETS, 32, 64, seed=1, prologue=True)
    pooled = matches_oracle(check, device, down, down_args, relu=True, what="down conv")

    neighbours = inverse_map(up, len(parents))  # one real column per child with a parent, -1 elsewhere
    check.that("inverse map: at most one real column per child", bool(((neighbours >= 0).sum(dim=1) <= 1).all()))
    if extent % 2:
        check.that("some children must have no parent", bool((neighbours < 0).all(dim=1).any()))
    inverse_args = conv_inputs(len(parents), len(coords), DOWN_OFFSETS, 64, 32, seed=2, prologue=True,
                               residual=True)
    inverse_args["features"] = pooled
    matches_oracle(check, device, neighbours, inverse_args, what="inverse conv")


@CONV_CASES("precision {precision}", precision=list(PRECISIONS))
def precisions(check: Check, device: torch.device, precision: str) -> None:
    coords = random_coords(150, 7, seed=5)
    neighbours = submanifold_map(coords)
    args = conv_inputs(len(coords), len(coords), SUBM_OFFSETS, 64, 48, seed=6, prologue=True, residual=True)
    matches_oracle(check, device, neighbours, args, relu=True, precision=precision)


@CONV_CASES("single voxel")
def single_voxel(check: Check, device: torch.device) -> None:
    neighbours = submanifold_map(torch.tensor([[3, 1, 4]]))
    check.that("only the centre is real", neighbours.tolist() == [[1] * 13 + [0] + [1] * 13], str(neighbours.tolist()))
    args = conv_inputs(1, 1, SUBM_OFFSETS, 6, 32, seed=7, prologue=True, residual=True)
    got = matches_oracle(check, device, neighbours, args, relu=True)
    scale, shift = args["prologue"]
    centre = torch.relu(args["features"] * scale + shift) @ args["weight"][13] + args["bias"]
    check.close("the centre term by hand", got, torch.relu(centre) + args["residual"], rtol=1e-6, atol=1e-6)


def epilogue_only(num_out: int, bias: torch.Tensor, residual: torch.Tensor, relu: bool) -> torch.Tensor:
    """(num_out, Cout) float32: the epilogue on a zero sum, in the kernel's order."""
    out = torch.zeros(num_out, bias.numel()) + bias
    return (torch.relu(out) if relu else out) + residual


@CONV_CASES("no real pairs give the epilogue exactly relu={relu}", relu=[False, True])
def no_real_pairs(check: Check, device: torch.device, relu: bool) -> None:
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
    launched = sparse_conv(neighbours=neighbours.to(device), relu=relu, **on(device, args))
    check.equal("launched, no real pair", launched, want)
    empty_input = on(device, dict(args, features=torch.zeros(0, 12)))
    host = sparse_conv(neighbours=torch.zeros(num_out, SUBM_OFFSETS, dtype=torch.int64, device=device), relu=relu,
                       **empty_input)
    check.equal("host path, empty input", host, want)


@CONV_CASES("empty shapes")
def empty_shapes(check: Check, device: torch.device) -> None:
    g = torch.Generator().manual_seed(16)
    weight = torch.randn(SUBM_OFFSETS, 6, 32, generator=g).to(device)
    bias = torch.randn(32, generator=g)

    def maps(rows: int, offsets: int = SUBM_OFFSETS, dtype: torch.dtype = torch.int64) -> torch.Tensor:
        return torch.zeros(rows, offsets, dtype=dtype, device=device)

    def features(rows: int) -> torch.Tensor:
        return torch.randn(rows, 6, generator=g).to(device)

    no_rows = sparse_conv(features(10), maps(0), weight, bias.to(device))
    check.that("no output rows: (0, 32) float32", no_rows.shape == (0, 32) and no_rows.dtype == torch.float32,
               f"{tuple(no_rows.shape)} {no_rows.dtype}")
    both_empty = sparse_conv(features(0), maps(0, dtype=torch.int32), weight, bias.to(device))
    check.that("no rows at all: (0, 32)", both_empty.shape == (0, 32), str(tuple(both_empty.shape)))
    check.equal("no input rows", sparse_conv(features(0), maps(4), weight), torch.zeros(4, 32))
    no_offsets = sparse_conv(features(3), maps(4, 0), torch.zeros(0, 6, 32, device=device), bias.to(device))
    check.equal("no offsets", no_offsets, bias.expand(4, 32))
    no_channels = sparse_conv(features(3), maps(4), torch.zeros(SUBM_OFFSETS, 6, 0, device=device))
    check.that("no output channels: (4, 0)", no_channels.shape == (4, 0), str(tuple(no_channels.shape)))


@CONV_CASES("a skipped row tile")
def skipped_row_tile(check: Check, device: torch.device) -> None:
    """The first row tile has no real neighbour at any offset, the second has some: the first is the
    epilogue alone, the second matches the oracle."""
    coords = random_coords(200, 8, seed=10)
    neighbours = submanifold_map(coords)
    block_m = launch_config(8, 32).block_m
    neighbours[:block_m] = len(coords)
    args = conv_inputs(len(coords), len(coords), SUBM_OFFSETS, 8, 32, seed=11, residual=True)
    got = matches_oracle(check, device, neighbours, args, relu=True)
    check.equal("the skipped tile", got[:block_m], epilogue_only(block_m, args["bias"], args["residual"][:block_m],
                                                                 True))


@CONV_CASES("bit-identical runs and map types")
def bit_identical_runs(check: Check, device: torch.device) -> None:
    coords = random_coords(200, 8, seed=12)
    neighbours = submanifold_map(coords).to(device)
    args = on(device, conv_inputs(len(coords), len(coords), SUBM_OFFSETS, 24, 40, seed=13, prologue=True,
                                  residual=True))
    first = sparse_conv(neighbours=neighbours, relu=True, **args)
    check.equal("a second run", sparse_conv(neighbours=neighbours, relu=True, **args), first)
    check.equal("an int32 map", sparse_conv(neighbours=neighbours.int(), relu=True, **args), first)


@CONV_CASES("ReLU comes before the residual")
def relu_before_residual(check: Check, device: torch.device) -> None:
    neighbours = submanifold_map(random_coords(40, 5, seed=14))
    args = conv_inputs(len(neighbours), len(neighbours), SUBM_OFFSETS, 8, 16, seed=15, residual=True)
    args["residual"] = torch.full_like(args["residual"], -100.0)  # far below any conv output (order 1)
    got = matches_oracle(check, device, neighbours, args, relu=True)
    check.that("relu(conv) - 100, not relu(conv - 100) = 0", bool((got < -90).all() and (got + 100 >= 0).all()))


@functools.cache
def random_model() -> DKNet:
    """The DKNet of ``build_model`` with ``randomize_weights(seed=0)`` (built once; read only)."""
    model = build_model()
    randomize_weights(model, seed=0)
    return model


POINT_FIELDS = ("semantic_scores", "offsets", "heat_logits", "mask_features", "kernel_features")
SCENE_SEEDS = {1: 0, 120: 1}  # points -> seed of the scene


@BACKBONE_CASES("native backbone Triton form vs torch form N={num_points}", num_points=list(SCENE_SEEDS))
def native_backbone_forms(check: Check, device: torch.device, num_points: int) -> None:
    """A random scene of ``num_points`` points in a 0.3 m cube (15³ voxels)."""
    rng = np.random.default_rng(SCENE_SEEDS[num_points])
    xyz, rgb = rng.uniform(0, 0.3, (num_points, 3)), rng.integers(0, 256, (num_points, 3)).astype(np.uint8)
    vox = voxelize(xyz, rgb, CPU)
    args = (vox.voxel_features, vox.voxel_coords, vox.spatial_shape, vox.point_to_voxel)
    if device.type == "cuda":
        check.that("torch runs float32 matmuls in float32", torch.get_float32_matmul_precision() == "highest",
                   f"torch.get_float32_matmul_precision() is {torch.get_float32_matmul_precision()!r}")
    triton_form = NativeBackbone.from_model(random_model(), device, triton=True)
    torch_form = NativeBackbone.from_model(random_model(), CPU, triton=False)
    check.that("the Triton form", triton_form.provider.startswith("native (Triton"), triton_form.provider)
    check.that("the torch form", torch_form.provider.startswith("native (torch"), torch_form.provider)
    got, want = triton_form(*args), torch_form(*args)

    scores = want.semantic_scores
    decision_margin = (scores[:, FIRST_OBJECT_CLASS:].max(dim=1).values
                       - scores[:, :FIRST_OBJECT_CLASS].max(dim=1).values).abs()
    allowed = 2 * (F32_NETWORK["atol"] + F32_NETWORK["rtol"] * scores.abs().max(dim=1).values)
    check.that("object decisions must have margins above twice the tolerance", bool((decision_margin > allowed).all()),
               f"smallest margin {decision_margin.min().item():.3g}")
    check.equal("object points", got.object_idx, want.object_idx)
    for field in POINT_FIELDS:
        check.close(field, getattr(got, field).cpu(), getattr(want, field), **F32_NETWORK)


CASES = Cases("sparse_conv")
CASES.extend(CONV_CASES + BACKBONE_CASES)
