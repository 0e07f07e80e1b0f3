"""``python -m kernels.compile_check [--arch 80 90]``: compile every kernel for NVIDIA GPUs, no GPU needed.

Triton's wheel bundles ptxas, so each kernel is compiled ahead of time (Triton IR → PTX → cubin)
for the given compute capabilities, in the configurations the launchers use. Registers per thread,
local memory and stack frame per thread (register spills: ptxas puts a Triton kernel's spills in
its stack frame) are read from the cubin with the bundled cuobjdump; shared memory per program is
Triton's own figure (``compiled.metadata.shared``): Triton allocates its shared memory dynamically
at launch (layout conversions, reductions, ``tl.dot`` operands), so the cubin's static SHARED
(0-1 KB) does not show it. The interpreter that runs the kernels in CI cannot
show any of this; this check catches what only compilation catches (unsupported ops, types, spills).
Must run with TRITON_INTERPRET unset (interpreted kernels cannot be compiled).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from engine.environment import TRITON_INTERPRET

os.environ.setdefault(TRITON_INTERPRET, "0")  # compiled: this tool compiles for GPUs this machine may not have

import triton  # noqa: E402  (after choosing the mode)
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource

from kernels import assign, decode, encode, mine, otsu, sparse_conv

DEFAULT_ARCHES = (80, 90)  # A100 / RTX 30xx class (sm_80, sm_86 runs sm_80 code), H100
DECODER_CONSTEXPRS = {"HIDDEN": 16, "EMBED": 16, "INPUTS_PADDED": 32}


@dataclass(frozen=True)
class Case:
    """One kernel specialization: argument types (``*fp32``, ``i32``…), constexpr values and the
    compile options its launcher passes (e.g. ``enable_fp_fusion``)."""

    name: str
    kernel: object
    types: dict[str, str]
    constexprs: dict[str, object]
    options: dict[str, object] = field(default_factory=dict)

    def source(self) -> ASTSource:
        signature = dict(self.types, **{key: "constexpr" for key in self.constexprs})
        return ASTSource(fn=self.kernel, signature=signature, constexprs=self.constexprs)


@dataclass(frozen=True)
class Usage:
    registers: int
    local_bytes: int  # spills to local memory
    stack_bytes: int  # the stack frame, where ptxas puts register spills of Triton kernels
    shared_bytes: int  # dynamic shared memory per program (Triton's metadata.shared), what launch requests
    fused_multiply_adds: int  # fma.rn.f32 in the PTX: contractions, absent where fusion is off


def cases() -> list[Case]:
    """Every specialization the launchers create for a 150-instance scene (the largest I)."""
    decoder = {"theta_ptr": "*fp32", "features_ptr": "*fp32", "xyz_ptr": "*fp32", "centres_ptr": "*fp32"}
    result = [Case(f"decode_histograms B={block}", decode._decode_histogram_kernel,
                   dict(decoder, hist_ptr="*i32", num_points="i32"),
                   dict(DECODER_CONSTEXPRS, LEVELS=100, BINS=128, BLOCK_POINTS=block))
              for block in (16, decode.MAX_BLOCK_POINTS)]
    result.append(Case("otsu_thresholds", otsu._otsu_kernel, {"hist_ptr": "*i64", "thresholds_ptr": "*fp32"},
                       {"LEVELS": 100, "BLOCK_LEVELS": 128}))
    assign_types = dict(decoder, thresholds_ptr="*fp32", cover_ptr="*fp32", points_ptr="*i64",
                        instances_ptr="*i64", best_ptr="*fp32", which_ptr="*i32", column_sums_ptr="*fp32",
                        num_points="i32", num_instances="i32")
    for subset, rescale, sums in ((False, False, True), (False, True, False), (True, True, False)):
        result.append(Case(f"best_instances subset={subset} rescale={rescale} sums={sums}", assign._assign_kernel,
                           assign_types, dict(DECODER_CONSTEXPRS, BLOCK_POINTS=assign.BLOCK_POINTS,
                                              INSTANCES_PADDED=256, ZERO_STANDIN=1e-30, POINT_SUBSET=subset,
                                              RESCALE=rescale, COLUMN_SUMS=sums)))
    for dtype in ("fp32", "fp64"):
        result.append(Case(f"instance_sums {dtype}", assign._instance_sums_kernel,
                           {"values_ptr": f"*{dtype}", "assignment_ptr": "*i64", "partial_ptr": f"*{dtype}",
                            "num_points": "i32"},
                           {"BLOCK_POINTS": assign.SUM_TILE_ELEMENTS // 256, "INSTANCES_PADDED": 256}))
    result.extend(mine.compile_cases(Case))
    result.extend(encode.compile_cases(Case))
    result.extend(sparse_conv.compile_cases(Case))
    return result


def resource_usage(cubin: bytes, ptx: str, shared_bytes: int) -> Usage:
    """Registers, local and stack bytes of the one function in ``cubin`` (cuobjdump -res-usage),
    float32 FMAs in its ``ptx``, and ``shared_bytes`` (Triton's dynamic shared memory) as given."""
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as file:
        file.write(cubin)
        file.flush()
        text = subprocess.run([str(tool), "--dump-resource-usage", file.name], capture_output=True, text=True,
                              check=True).stdout

    def field(name: str) -> int:
        return int(re.search(rf"\b{name}:(\d+)", text).group(1))

    return Usage(field("REG"), field("LOCAL"), field("STACK"), shared_bytes, ptx.count("fma.rn.f32"))


def compile_case(case: Case, arch: int) -> Usage:
    compiled = triton.compile(case.source(), target=GPUTarget("cuda", arch, 32), options=case.options)
    return resource_usage(compiled.asm["cubin"], compiled.asm["ptx"], int(compiled.metadata.shared))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kernels.compile_check", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, nargs="+", default=list(DEFAULT_ARCHES),
                        help="compute capabilities, e.g. 80 86 89 90 (default 80 90)")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        print("error: unset TRITON_INTERPRET: interpreted kernels cannot be compiled", file=sys.stderr)
        return 1
    spilled = 0
    print(f"{'kernel':58} {'arch':>5} {'regs':>5} {'local B':>8} {'stack B':>8} {'shared B':>9} {'FMAs':>5}")
    for case in cases():
        for arch in args.arch:
            usage = compile_case(case, arch)
            spilled += usage.local_bytes > 0 or usage.stack_bytes > 0
            print(f"{case.name:58} sm_{arch:<3} {usage.registers:5d} {usage.local_bytes:8d} {usage.stack_bytes:8d} "
                  f"{usage.shared_bytes:9d} {usage.fused_multiply_adds:5d}")
    print(f"{spilled} specialization(s) spill registers (local or stack memory)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
