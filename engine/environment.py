"""Every environment variable the project reads or sets, in one place (a leaf module).

* ``DKNET_CHECKPOINT`` (read by the commands, ``checkpoint_from_environment``): the checkpoint
  when ``--checkpoint`` is not given.
* ``TRITON_INTERPRET`` (set before triton is imported, unless already set: by ``kernels._triton``
  through ``choose_triton_mode``, and to ``1`` by ``engine.session`` for ``--device cpu --kernels
  triton``): ``1`` runs the Triton kernels in Triton's interpreter on CPU tensors, ``0`` compiles
  them for CUDA. Default ``0`` where a CUDA device is visible, else ``1``: the mode never depends on
  which module imported triton first.
* ``OMP_WAIT_POLICY`` (set by ``choose_omp_wait_policy`` at the start of ``engine.run`` and
  ``python -m profiling``, unless already set or torch is already loaded): ``PASSIVE`` when the
  CPUs are already busy at start (1-minute load average >= cores - 0.5), else left to OpenMP
  (active spinning). Measured on 2 cores (docs/performance.md): spinning threads made the stages
  4-8x slower when other processes held the cores, ``PASSIVE`` made them 1.5-1.7x slower on an
  idle machine; no single setting (spin counts included) held up in both.
* ``TRITON_DEFAULT_FP_FUSION`` (set by ``choose_triton_mode`` unless already set): ``1`` lets Triton
  contract a·b + c into FMAs, its current default, set explicitly (Triton 3.9 warns it will change).
* ``DKNET_C_KERNELS`` (read by ``engine.c_kernels.build`` each time the pipeline chooses a path,
  ``c_kernels_enabled``): ``0`` turns the C kernels off, so the CPU pipeline runs its plain PyTorch
  reference; anything else, or unset, lets them run where they build.
* ``CC`` (read by ``engine.c_kernels.build``, ``c_compiler``): the C compiler command that builds
  the C kernels; default: the compiler Python was built with, else ``cc``.
* ``XDG_CACHE_HOME`` (read by ``engine.c_kernels.build``, ``cache_home``): where the built C kernels
  are kept (``$XDG_CACHE_HOME/dknet-engine/c_kernels``); default ``~/.cache``.
* ``RAY_DATA_LOG_LEVEL`` (set to ``ERROR`` by ``engine.batch`` before it imports Ray Data, unless
  already set): Ray Data's own start/finish lines would otherwise interleave with the progress bar.

Tests and tools that need a mode set the variable before anything imports ``kernels``
(``tests/kernels/conftest.py``: ``1``; ``kernels.compile_check``: ``0``, it compiles for GPUs
that this machine may not have).
"""

from __future__ import annotations

import os
import shlex
import sysconfig
from pathlib import Path

CHECKPOINT = "DKNET_CHECKPOINT"
OMP_WAIT_POLICY = "OMP_WAIT_POLICY"
TRITON_INTERPRET = "TRITON_INTERPRET"
TRITON_DEFAULT_FP_FUSION = "TRITON_DEFAULT_FP_FUSION"
RAY_DATA_LOG_LEVEL = "RAY_DATA_LOG_LEVEL"
C_KERNELS = "DKNET_C_KERNELS"
C_COMPILER = "CC"
CACHE_HOME = "XDG_CACHE_HOME"


def checkpoint_from_environment() -> Path | None:
    """``$DKNET_CHECKPOINT`` as a path, None when unset or empty."""
    value = os.environ.get(CHECKPOINT)
    return Path(value) if value else None


def c_kernels_enabled() -> bool:
    """False when ``$DKNET_C_KERNELS`` is ``0``."""
    return os.environ.get(C_KERNELS, "1") != "0"


def c_compiler() -> list[str]:
    """The C compiler command: ``$CC``, else the one Python was built with, else ``cc``."""
    return shlex.split(os.environ.get(C_COMPILER) or sysconfig.get_config_var("CC") or "cc")


def cache_home() -> Path:
    """``$XDG_CACHE_HOME``, else ``~/.cache``."""
    return Path(os.environ.get(CACHE_HOME) or Path.home() / ".cache")


def choose_triton_mode(cuda_available: bool) -> bool:
    """Before triton is imported: keep the user's ``TRITON_INTERPRET``, else interpret exactly when
    no CUDA device is visible; fix Triton's FMA default. Returns whether kernels are interpreted."""
    os.environ.setdefault(TRITON_INTERPRET, "0" if cuda_available else "1")
    os.environ.setdefault(TRITON_DEFAULT_FP_FUSION, "1")
    return os.environ[TRITON_INTERPRET] == "1"


def omp_wait_policy_for(load_average: float, cores: int) -> str | None:
    """``PASSIVE`` when ``load_average`` (runnable processes, 1 minute) already fills the ``cores``
    this process may use (within half a core), else None (OpenMP's default, active spinning)."""
    return "PASSIVE" if load_average >= cores - 0.5 else None


def choose_omp_wait_policy() -> str | None:
    """Before torch is first imported (OpenMP reads the variable once): set ``OMP_WAIT_POLICY`` by
    ``omp_wait_policy_for`` unless the user set it or torch is already loaded. Returns what it set."""
    import sys

    if OMP_WAIT_POLICY in os.environ or "torch" in sys.modules or not hasattr(os, "getloadavg"):
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    policy = omp_wait_policy_for(os.getloadavg()[0], cores)
    if policy is not None:
        os.environ[OMP_WAIT_POLICY] = policy
    return policy
