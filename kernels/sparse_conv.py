"""Sparse convolution as one Triton kernel: an implicit GEMM over a neighbour map.

The contract is ``engine.backbone.sparse_conv``'s: ``neighbours`` (V_out, K) int32 or int64 holds the
input row feeding output row ``p`` through offset ``k``, any value outside ``[0, V_in)`` meaning none;
``weight`` (K, Cin, Cout). This module computes, with an optional fused prologue and epilogue,

    x'[r]  = relu(features[r] * scale + shift)          (prologue, real rows only; else x' = features)
    out[p] = bias + Σ_k x'[neighbours[p, k]] @ weight[k]  (absent neighbours add exactly nothing)
    out    = relu(out)      if ``relu``
    out    = out + residual if ``residual`` is given

The prologue is a pre-activation BatchNorm + ReLU applied to the existing voxels only (as spconv,
whose BatchNorm and ReLU act on the active sites' features): an absent neighbour contributes a zero
row, not ``relu(shift)``.

Kernel. One program per tile of ``BLOCK_M`` output rows × ``BLOCK_N`` output channels (a 1-D grid,
the channel tiles of one row tile adjacent, so they gather the same input rows while those are in
L2). For each offset ``k`` in index order it loads the tile's ``BLOCK_M`` neighbour indices; when no
row of the tile has a real neighbour there, the offset is skipped (a runtime branch on the tile's
count of real neighbours: an inverse conv's child rows have one real offset of 8, deep levels and
the borders of sparse scenes many absent ones). Otherwise it walks Cin in ``BLOCK_K`` chunks:
gathers the (BLOCK_M, BLOCK_K) input rows (masked loads, zeros for absent rows and channel tails),
applies the prologue, loads the (BLOCK_K, BLOCK_N) weight slice and accumulates ``tl.dot`` into a
float32 (BLOCK_M, BLOCK_N) register tile, written once after the epilogue. No atomics, and every
output element is summed by one program in a fixed order (offsets ascending, then Cin chunks): the
same bits on every run.

Launch configuration (``launch_config``): a fixed heuristic on (Cin, Cout, precision), no
autotuning, so a fresh GPU compiles only the few specializations DKNet's layers need (about a second
each). Chosen with ``kernels.compile_check``'s offline compilation (registers, stack) for sm_80 and
sm_90; the GPU timings that would refine it are still to be taken.

* ``BLOCK_N`` = Cout rounded up to a power of two, clamped to [16, 128]: Cout <= 128 (levels 1-4)
  is one channel tile, so each input row is gathered once per offset; Cout 160-224 (levels 5-7,
  the sparsest, fewest voxels) takes two, the second one masked.
* ``BLOCK_M`` = 128 when ``BLOCK_N`` <= 32, else 64: 4096 or 8192 accumulator elements; row tiles
  no larger than needed, since a smaller tile skips offsets more often.
* ``BLOCK_K``: 8 for "fp32", 16 otherwise. The "ieee" dot runs on the CUDA cores, each thread
  holding its accumulator rows' and columns' whole BLOCK_K slice of both operands in registers: at
  BLOCK_K = 16 some tiles spill, at 8 none does (and the input conv's Cin = 6 wastes 2 lanes of 8,
  not 10 of 16). The tensor-core dots need K >= 16 for 16-bit operands; 32 costs 220-255 registers
  on the 64 × 128 tile. Cin tails are masked (Cin need not be a multiple of BLOCK_K).
* ``num_warps``: 8 for "fp32" and for the 8192-element tiles, else 4: the CUDA-core dot's operand
  slices and the 64 × 128 tile's accumulator need the registers of 8 warps (at 4, some
  specializations spill); two pipeline stages (three spill some tiles, and Cin / BLOCK_K is only
  1-56 steps per offset).
* Triton before 3.8 (``FP32_DOT_MIN_K``): its NVIDIA backend requires K >= 16 for every dot, 32-bit
  operands included (3.8 accepts 8), so "fp32" takes the configuration of the other precisions:
  BLOCK_K = 16, 8 warps for the 8192-element tiles, else 4. Compiled with Triton 3.6 for sm_80 and
  sm_90, none spills (with 8 warps, the 64 × 64 tile keeps 8 bytes in its stack frame on sm_80).

Spills were read as ptxas's stack frame (``cuobjdump`` STACK, ``ptxas -v`` "spill stores"), for
every precision, tile and prologue/residual combination on sm_80 and sm_90: none.

``tl.dot``'s lower bounds on NVIDIA (M, N >= 16 here by choice; K >= 8 for 32-bit operands, 16 for
16-bit ones; K >= 16 for all before Triton 3.8) hold for every configuration; channel tails are masked.

Precision (``precision``): "fp32" (default) runs ``tl.dot`` with ``input_precision="ieee"``, as the
rest of ``kernels`` (see ``kernels._triton``): float32 products, differing from torch only in the
order of the sums. "tf32" lets the tensor cores read both operands as TF32 (10-bit mantissa; they
drop the 13 low bits rather than round them, see ``tl.dot``); "fp16" and "bf16" cast the
(prologue-applied) gathered rows and the weight slice to that type (round to nearest even) for the
dot. All four accumulate in float32 and run the prologue and epilogue in float32. fp16 overflows
above 65504: a choice for inputs known to be in range.

Triton's interpreter multiplies the raw bit patterns of bfloat16 ``tl.dot`` operands (it stores
bfloat16 as uint16; triton-lang/triton#11584, unsupported by design). Under ``TRITON_INTERPRET=1``
the "bf16" path therefore rounds both operands to bfloat16 and multiplies them back in float32 with
an IEEE dot: a bfloat16 × bfloat16 product (8-bit significands) is exact in float32, so these are
the tensor cores' products, summed in float32 as they are. Compiled kernels use the bf16 dot.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kernels._triton import INTERPRETER, constexpr, jit, require_triton, tl, triton

PRECISIONS = ("fp32", "tf32", "fp16", "bf16")
MIN_BLOCK_N = 16  # smallest channel tile (tl.dot's M and N could be smaller; 16 keeps tensor-core shapes)
MAX_BLOCK_N = 128
NUM_STAGES = 2
_BF16_DOT_IN_FLOAT32 = constexpr(INTERPRETER)  # see the module docstring


def _fp32_dot_min_k() -> int:
    """The smallest K this Triton's NVIDIA backend accepts for a float32 ``tl.dot``: 8 from Triton 3.8
    on, 16 before (asked of the backend's own bound, so the interpreter, which has none, chooses the
    tiles a GPU would compile; 16, valid on every version, when the backend cannot be asked)."""
    try:
        from triton.backends.compiler import GPUTarget
        from triton.backends.nvidia.compiler import min_dot_size

        operand = tl.block_type(tl.float32, [16, 16])
        return max(8, int(min_dot_size(GPUTarget("cuda", 80, 32))(operand, operand)[2]))
    except Exception:  # no triton, or a backend whose internals moved: the bound every version accepts
        return 16


FP32_DOT_MIN_K = _fp32_dot_min_k()


@jit
def _sparse_conv_kernel(features_ptr, neighbours_ptr, weight_ptr, bias_ptr, scale_ptr, shift_ptr, residual_ptr,
                        out_ptr, num_in, num_out, num_offsets, in_channels, out_channels,
                        HAS_BIAS: tl.constexpr, PROLOGUE: tl.constexpr, RELU: tl.constexpr,
                        HAS_RESIDUAL: tl.constexpr, PRECISION: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """Grid (cdiv(V_out, BLOCK_M) · cdiv(Cout, BLOCK_N),), channel tiles fastest.

    features (V_in, Cin), weight (K, Cin, Cout), bias (Cout,), scale and shift (Cin,), residual and
    out (V_out, Cout) float32; neighbours (V_out, K) int32 or int64; all contiguous. The pointers of
    absent options are never read (any float32 tensor stands in). Writes out's tile.
    """
    pid = tl.program_id(0)
    channel_tiles = tl.cdiv(out_channels, BLOCK_N)
    rows = (pid // channel_tiles) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = (pid % channel_tiles) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_in = rows < num_out
    col_in = cols < out_channels
    rows64 = rows.to(tl.int64)
    chunk = tl.arange(0, BLOCK_K)

    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for k in range(num_offsets):
        source = tl.load(neighbours_ptr + rows64 * num_offsets + k, mask=row_in, other=-1)
        real = row_in & (source >= 0) & (source < num_in)  # compared in the map's own type: no wrap-around
        if tl.sum(real.to(tl.int32), axis=0) > 0:  # skip offsets no row of the tile uses
            source_rows = tl.where(real, source, 0).to(tl.int64) * in_channels
            weight_k = weight_ptr + k * in_channels * out_channels
            for first in range(0, in_channels, BLOCK_K):
                channels = first + chunk
                channel_in = channels < in_channels
                gathered = real[:, None] & channel_in[None, :]
                x = tl.load(features_ptr + source_rows[:, None] + channels[None, :], mask=gathered, other=0.0)
                if PROLOGUE:
                    scale = tl.load(scale_ptr + channels, mask=channel_in, other=0.0)
                    shift = tl.load(shift_ptr + channels, mask=channel_in, other=0.0)
                    x = tl.where(gathered, tl.maximum(x * scale[None, :] + shift[None, :], 0.0), 0.0)
                w = tl.load(weight_k + channels[:, None] * out_channels + cols[None, :],
                            mask=channel_in[:, None] & col_in[None, :], other=0.0)
                if PRECISION == "fp32":
                    acc = tl.dot(x, w, acc, input_precision="ieee")
                elif PRECISION == "tf32":
                    acc = tl.dot(x, w, acc, input_precision="tf32")
                elif PRECISION == "fp16":
                    acc = tl.dot(x.to(tl.float16), w.to(tl.float16), acc)
                elif _BF16_DOT_IN_FLOAT32:  # the interpreter's bf16 dot is wrong (module docstring)
                    acc = tl.dot(x.to(tl.bfloat16).to(tl.float32), w.to(tl.bfloat16).to(tl.float32), acc,
                                 input_precision="ieee")
                else:
                    acc = tl.dot(x.to(tl.bfloat16), w.to(tl.bfloat16), acc)

    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols, mask=col_in, other=0.0)[None, :]
    if RELU:
        acc = tl.maximum(acc, 0.0)
    tile = rows64[:, None] * out_channels + cols[None, :]
    stored = row_in[:, None] & col_in[None, :]
    if HAS_RESIDUAL:
        acc += tl.load(residual_ptr + tile, mask=stored, other=0.0)
    tl.store(out_ptr + tile, acc, mask=stored)


@dataclass(frozen=True)
class LaunchConfig:
    """Tile sizes and launch options of one sparse conv specialization (module docstring)."""

    block_m: int
    block_n: int
    block_k: int
    num_warps: int

    def constexprs(self) -> dict[str, int]:
        return {"BLOCK_M": self.block_m, "BLOCK_N": self.block_n, "BLOCK_K": self.block_k}

    def options(self) -> dict[str, int]:
        return {"num_warps": self.num_warps, "num_stages": NUM_STAGES}


def launch_config(in_channels: int, out_channels: int, precision: str = "fp32") -> LaunchConfig:
    """The launch configuration of a conv ``in_channels`` -> ``out_channels`` in ``precision``
    (module docstring). ``in_channels`` does not change it (Cin is walked in BLOCK_K chunks); it is
    an argument so that the heuristic can use it without changing callers."""
    del in_channels
    block_n = min(max(triton.next_power_of_2(max(out_channels, 1)), MIN_BLOCK_N), MAX_BLOCK_N)
    block_m = 128 if block_n <= 32 else 64
    if precision == "fp32" and FP32_DOT_MIN_K <= 8:
        return LaunchConfig(block_m, block_n, 8, 8)
    return LaunchConfig(block_m, block_n, 16, 8 if block_m * block_n >= 8192 else 4)


def _epilogue_only(num_out: int, out_channels: int, bias: torch.Tensor | None, relu: bool,
                   residual: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """The result when no input row can exist (V_in, Cin or K zero): the kernel's epilogue on a zero
    sum, in the kernel's order (0 + bias is bias exactly), so the bits are those a launch would give."""
    out = torch.zeros(num_out, out_channels, device=device)
    if bias is not None:
        out += bias
    if relu:
        out.clamp_(min=0.0)
    if residual is not None:
        out += residual
    return out


def sparse_conv(features: torch.Tensor, neighbours: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor | None = None, *, prologue: tuple[torch.Tensor, torch.Tensor] | None = None,
                residual: torch.Tensor | None = None, relu: bool = False, precision: str = "fp32") -> torch.Tensor:
    """Sparse conv with fused prologue and epilogue (module docstring): (V_out, Cout) float32.

    features (V_in, Cin) float32; neighbours (V_out, K) int32 or int64 (outside [0, V_in): none);
    weight (K, Cin, Cout) float32; bias (Cout,) or None; prologue None or (scale (Cin,), shift (Cin,))
    float32, applied as relu(x * scale + shift) to real gathered rows; relu: ReLU after the bias;
    residual (V_out, Cout) float32 added last; precision one of ``PRECISIONS``.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if features.dim() != 2 or neighbours.dim() != 2 or weight.dim() != 3:
        raise ValueError(f"expected features (V_in, Cin), neighbours (V_out, K), weight (K, Cin, Cout); got "
                         f"{tuple(features.shape)}, {tuple(neighbours.shape)}, {tuple(weight.shape)}")
    num_in, in_channels = features.shape
    num_out, num_offsets = neighbours.shape
    out_channels = weight.shape[2]
    if tuple(weight.shape[:2]) != (num_offsets, in_channels):
        raise ValueError(f"weight {tuple(weight.shape)} does not match K={num_offsets}, Cin={in_channels}")
    if neighbours.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"neighbours must be int32 or int64, got {neighbours.dtype}")
    if bias is not None and tuple(bias.shape) != (out_channels,):
        raise ValueError(f"bias {tuple(bias.shape)} is not ({out_channels},)")
    if residual is not None and tuple(residual.shape) != (num_out, out_channels):
        raise ValueError(f"residual {tuple(residual.shape)} is not ({num_out}, {out_channels})")
    if prologue is not None and any(tuple(t.shape) != (in_channels,) for t in prologue):
        raise ValueError(f"prologue scale and shift must be ({in_channels},)")
    device = features.device
    require_triton(device)

    def f32(tensor: torch.Tensor | None) -> torch.Tensor | None:
        return None if tensor is None else tensor.to(device=device, dtype=torch.float32).contiguous()

    bias, residual = f32(bias), f32(residual)
    if num_out == 0 or out_channels == 0:
        return torch.zeros(num_out, out_channels, device=device)
    if num_in == 0 or in_channels == 0 or num_offsets == 0:
        return _epilogue_only(num_out, out_channels, bias, relu, residual, device)

    features, weight = f32(features), f32(weight)
    scale, shift = (None, None) if prologue is None else (f32(prologue[0]), f32(prologue[1]))
    out = torch.empty(num_out, out_channels, device=device)
    config = launch_config(in_channels, out_channels, precision)
    grid = (triton.cdiv(num_out, config.block_m) * triton.cdiv(out_channels, config.block_n),)

    def given(tensor: torch.Tensor | None) -> torch.Tensor:
        return out if tensor is None else tensor  # a stand-in pointer the kernel never reads

    _sparse_conv_kernel[grid](
        features, neighbours.to(device).contiguous(), weight, given(bias), given(scale), given(shift),
        given(residual), out, num_in, num_out, num_offsets, in_channels, out_channels,
        HAS_BIAS=bias is not None, PROLOGUE=prologue is not None, RELU=relu, HAS_RESIDUAL=residual is not None,
        PRECISION=precision, **config.constexprs(), **config.options())
    return out


def compile_cases(case: type) -> list:
    """``kernels.compile_check`` specializations of the sparse conv (``case`` is its Case): each
    tile shape DKNet's channels select (6->32 input conv, 32->32, 64->64, 128->128; 224->224 shares
    128->128's tiles) in float32 as a pre-activation subm conv with a residual (every option on);
    the largest tile also bias-only with an int32 map, and with every option in tf32, fp16, bf16."""
    types = {"features_ptr": "*fp32", "neighbours_ptr": "*i64", "weight_ptr": "*fp32", "bias_ptr": "*fp32",
             "scale_ptr": "*fp32", "shift_ptr": "*fp32", "residual_ptr": "*fp32", "out_ptr": "*fp32",
             "num_in": "i32", "num_out": "i32", "num_offsets": "i32", "in_channels": "i32", "out_channels": "i32"}
    every_option = {"HAS_BIAS": True, "PROLOGUE": True, "RELU": True, "HAS_RESIDUAL": True}
    bias_only = {"HAS_BIAS": True, "PROLOGUE": False, "RELU": False, "HAS_RESIDUAL": False}

    def specialization(name: str, cin: int, cout: int, precision: str, flags: dict, map_type: str = "*i64"):
        config = launch_config(cin, cout, precision)
        return case(f"sparse_conv {name}", _sparse_conv_kernel, dict(types, neighbours_ptr=map_type),
                    dict(flags, PRECISION=precision, **config.constexprs()), config.options())

    result = [specialization(f"{cin}->{cout} fp32", cin, cout, "fp32", every_option)
              for cin, cout in ((6, 32), (32, 32), (64, 64), (128, 128))]
    result.append(specialization("224->224 fp32 bias-only i32 map", 224, 224, "fp32", bias_only, "*i32"))
    result.extend(specialization(f"128->128 {precision}", 128, 128, precision, every_option)
                  for precision in ("tf32", "fp16", "bf16"))
    return result
