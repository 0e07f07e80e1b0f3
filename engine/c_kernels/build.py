"""Compile a C kernel of this package for this machine, once, and load it (a leaf module).

The shared library is built with the system C compiler (``$CC``, else Python's, else ``cc``) at
``-O3 -march=native`` into ``$XDG_CACHE_HOME/dknet-engine/c_kernels`` (``~/.cache`` by default),
named by a hash of the source, the compiler, the flags and this CPU's feature flags: a cache shared
between machines never hands one CPU's instructions to another, and an edited source rebuilds.
A build goes to a temporary file renamed into place, so concurrent processes can race safely.
ctypes releases the GIL during each call, so ``engine.worker_threads`` blocks run the kernels at once.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import subprocess
import sysconfig
import tempfile
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parent
FLAG_SETS = (("-O3", "-march=native"), ("-O3",))  # the second for compilers without -march=native
BUILD_TIMEOUT_S = 120


class BuildError(RuntimeError):
    """The kernel could not be compiled or loaded here (no compiler, a compile error); one line."""


def compiler() -> list[str]:
    """The C compiler command: ``$CC``, else the one Python was built with, else ``cc``."""
    return shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dknet-engine" / "c_kernels"


def _cpu_features() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()}"


def load_library(name: str) -> ctypes.CDLL:
    """The loaded shared library of ``<name>.c`` in this package, compiled on first use.
    Raises BuildError with the reason when it cannot be."""
    source = SOURCE_DIR / f"{name}.c"
    command = compiler()
    errors = []
    for flags in FLAG_SETS:
        key = hashlib.sha256("\0".join([source.read_text(), *command, *flags, _cpu_features()]).encode())
        library = cache_dir() / f"{name}-{key.hexdigest()[:16]}.so"
        if not library.is_file():
            try:
                _compile(command, flags, source, library)
            except BuildError as exc:
                errors.append(str(exc))
                continue
        try:
            return ctypes.CDLL(str(library))
        except OSError as exc:
            errors.append(f"cannot load {library}: {exc}")
    raise BuildError(errors[0])


def _compile(command: list[str], flags: tuple[str, ...], source: Path, library: Path) -> None:
    try:
        library.parent.mkdir(parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(suffix=".so", dir=library.parent)
        os.close(handle)
    except OSError as exc:
        raise BuildError(f"cannot write the kernel cache {library.parent}: {exc}") from None
    try:
        done = subprocess.run([*command, *flags, "-std=gnu11", "-shared", "-fPIC", str(source), "-o", partial],
                              capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        os.unlink(partial)
        raise BuildError(f"C compiler {' '.join(command)} did not run: {exc}") from None
    if done.returncode != 0:
        os.unlink(partial)
        first = next((line for line in done.stderr.splitlines() if line.strip()), f"exit status {done.returncode}")
        raise BuildError(f"{' '.join(command)} failed on {source.name}: {first}")
    os.replace(partial, library)
