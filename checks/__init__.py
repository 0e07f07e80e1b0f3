"""Every Triton kernel's test cases against its torch reference, runnable on either device.

One suite, two drivers: ``tests/kernels`` runs each case under pytest (in Triton's interpreter on
CPU tensors, or compiled on CUDA tensors when a GPU is visible), and ``python -m
profiling.gpu_check`` runs the same cases without pytest on a bare GPU machine, reporting pass or
fail, worst error and time per kernel. A case builds its inputs on CPU with a seeded generator,
moves them to the device, runs the kernel, and compares on CPU with the reference (computed on
CPU) through a ``Check``, which states per comparison whether it is exact or within a tolerance.

Modules, one per kernel module of ``kernels``: ``otsu``, ``decode``, ``assign``, ``postprocess``,
``mine``, ``encode``, ``sparse_conv``; ``case`` holds the framework, ``tolerances`` the project's
tolerance table (checks and tests), ``candidates`` and ``mining_scenes`` inputs the cases share.
"""

from __future__ import annotations

import importlib

from checks.case import KernelCase

KERNELS: tuple[str, ...] = ("otsu", "decode", "assign", "postprocess", "mine", "encode", "sparse_conv")


def cases_of(kernel: str) -> list[KernelCase]:
    """The registered cases of one kernel module (``checks.<kernel>.CASES``)."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; expected one of {', '.join(KERNELS)}")
    return list(importlib.import_module(f"checks.{kernel}").CASES)
