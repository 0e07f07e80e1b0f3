"""The one module that imports Triton: every kernel file takes ``triton``, ``tl`` and ``jit`` from here.

Execution mode. Kernels run compiled on a CUDA device, or on CPU tensors in Triton's interpreter
when ``TRITON_INTERPRET=1`` is set before triton is first imported; unless the user or a tool set
it, this module sets it before importing triton: interpreted exactly when no CUDA device is
visible (``engine.environment``), whichever module imports the kernels first. ``INTERPRETER``
records which; ``triton_available(device)`` says
whether a launcher may run on tensors of ``device``. The interpreter is for correctness only (it
executes each program in numpy, orders of magnitude slower than the torch references).

Determinism policy. A kernel's result must not depend on the order in which programs run: no
floating-point atomics, and no reductions across programs other than integer atomic adds (histogram
counts), which are exact and commutative, so any interleaving gives the same bits.

Precision policy. float32 throughout: inputs, accumulators and outputs are float32; ``tl.dot``
runs with ``input_precision="ieee"`` (no TF32), and divisions whose bits must match a torch
reference use ``tl.math.div_rn`` (IEEE round-to-nearest, not the approximate ``div.full.f32``).
Counts are int32 inside kernels and int64 at the API. Floating-point contraction (a·b + c into one
FMA) is allowed, as it has been Triton's default (set explicitly below, since Triton 3.9 warns that
its default will change): it only rounds differently inside the decoders and the merge MLP, whose
results are compared with tolerances; the Otsu kernel has no multiply-add to contract.
"""

from __future__ import annotations

import torch

from engine.environment import choose_triton_mode

INTERPRETER = choose_triton_mode(torch.cuda.is_available())

try:
    import triton
    import triton.language as tl
    from triton import jit
except ImportError:  # the torch references work without triton; launchers check triton_available()
    triton = tl = None

    def jit(fn):
        """Stand-in decorator so kernel modules import without triton (kernel annotations are
        strings under ``from __future__ import annotations``); launchers refuse to run."""
        return fn

TRITON_IMPORTED = triton is not None


def constexpr(value: int | float) -> object:
    """A module-level constant that kernels may read: Triton lets jit code read only globals that
    are ``tl.constexpr`` instances (plain ``value`` when triton is absent)."""
    return tl.constexpr(value) if TRITON_IMPORTED else value


def triton_available(device: torch.device | str) -> bool:
    """Whether Triton kernels can run on tensors of ``device``: compiled on CUDA, or interpreted on
    CPU when ``TRITON_INTERPRET=1`` was set before triton was imported."""
    if not TRITON_IMPORTED:
        return False
    kind = torch.device(device).type
    if INTERPRETER:
        return kind == "cpu"
    return kind == "cuda" and torch.cuda.is_available()


def require_triton(device: torch.device | str) -> None:
    """Raise a RuntimeError naming the reason when kernels cannot run on ``device``."""
    if not triton_available(device):
        mode = "interpreter (TRITON_INTERPRET=1)" if INTERPRETER else "compiled"
        raise RuntimeError(f"Triton kernels cannot run on {device!s}: triton imported={TRITON_IMPORTED}, "
                           f"mode={mode}; compiled kernels need CUDA tensors, the interpreter CPU tensors")


__all__ = ["INTERPRETER", "TRITON_IMPORTED", "constexpr", "jit", "require_triton", "tl", "triton", "triton_available"]
