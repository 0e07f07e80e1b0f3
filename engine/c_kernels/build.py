"""Compile a C kernel file of this package for this machine, once, and load it (imports only ``engine.environment``).

The shared library is built with the system C compiler (``engine.environment.c_compiler``) at
``-O3 -march=native`` into ``$XDG_CACHE_HOME/dknet-engine/c_kernels`` (``~/.cache`` by default),
named by a hash of the source and the package's headers, the compiler, the flags and this CPU's
feature flags: a cache shared between machines never hands one CPU's instructions to another, and
an edited source rebuilds. A build goes to a temporary file renamed into place, so concurrent
processes can race safely. ctypes releases the GIL during each call, so ``engine.worker_threads``
blocks run the kernels at once. ``Kernels`` is one file's functions, loaded on first use;
``DKNET_C_KERNELS=0`` turns them all off (``engine.environment``).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import subprocess
import tempfile
import threading
from pathlib import Path

from engine.environment import C_KERNELS, c_compiler, c_kernels_enabled, cache_home

SOURCE_DIR = Path(__file__).resolve().parent
# -fno-math-errno: sqrtf need not set errno, so it vectorizes (same results); the second set is
# for compilers without -march=native.
FLAG_SETS = (("-O3", "-march=native", "-fno-math-errno"), ("-O3", "-fno-math-errno"))
BUILD_TIMEOUT_S = 120


class BuildError(RuntimeError):
    """The kernel could not be compiled or loaded here (no compiler, a compile error); one line."""


def cache_dir() -> Path:
    """Where built kernels are kept: ``$XDG_CACHE_HOME/dknet-engine/c_kernels``."""
    return cache_home() / "dknet-engine" / "c_kernels"


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
    command = c_compiler()
    texts = [path.read_text() for path in (source, *sorted(SOURCE_DIR.glob("*.h")))]
    machine = _cpu_features()
    errors = []
    for flags in FLAG_SETS:
        key = hashlib.sha256("\0".join([*texts, *command, *flags, machine]).encode())
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
        done = subprocess.run([*command, *flags, "-std=gnu11", "-shared", "-fPIC", f"-I{SOURCE_DIR}", str(source),
                               "-o", partial], capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        os.unlink(partial)
        raise BuildError(f"C compiler {' '.join(command)} did not run: {exc}") from None
    if done.returncode != 0:
        os.unlink(partial)
        first = next((line for line in done.stderr.splitlines() if line.strip()), f"exit status {done.returncode}")
        raise BuildError(f"{' '.join(command)} failed on {source.name}: {first}")
    os.replace(partial, library)


class Kernels:
    """The functions of one C file of this package, built and loaded on first use (thread-safe).

    ``signatures``: each function's ctypes argument types (the functions return nothing)."""

    def __init__(self, name: str, signatures: dict[str, list]):
        self.name = name
        self.signatures = signatures
        self._lock = threading.Lock()
        self._loaded: tuple[ctypes.CDLL | None, str | None] | None = None

    def _load(self) -> tuple[ctypes.CDLL | None, str | None]:
        with self._lock:
            if self._loaded is None:
                try:
                    library = load_library(self.name)
                except BuildError as exc:
                    self._loaded = None, str(exc)
                else:
                    for function, argtypes in self.signatures.items():
                        getattr(library, function).argtypes = argtypes
                    self._loaded = library, None
            return self._loaded

    def unavailable_reason(self) -> str | None:
        """Why these kernels do not run here (the switch, or the build's one-line error), or None."""
        if not c_kernels_enabled():
            return f"{C_KERNELS}=0"
        return self._load()[1]

    def runs_on(self, device) -> bool:
        """Whether the kernels run for tensors on ``device`` (a torch.device): CPU, where they build."""
        return device.type == "cpu" and self.unavailable_reason() is None

    def library(self) -> ctypes.CDLL:
        """The loaded library; BuildError where it cannot be built."""
        library, reason = self._load()
        if library is None:
            raise BuildError(reason)
        return library
