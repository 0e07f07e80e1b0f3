"""A kernel test case, the comparisons it makes, and its outcome.

A case is a function ``body(check, device, **params)``: it runs a kernel on ``device`` and records
comparisons with its reference in ``check``. ``check.equal`` demands exact equality (integers,
decisions, values computed by the same float32 operations); ``check.close`` and ``check.within``
accept a stated tolerance. Every comparison records its deviation, so a passing case still reports
how close it came: ``worst_error`` (largest absolute difference) and ``worst_ratio`` (largest
deviation as a fraction of what was allowed; a case passes with every ratio <= 1).
"""

from __future__ import annotations

import itertools
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch


def _host(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


@dataclass
class Check:
    """The comparisons of one case run: failures (messages) and the largest deviations seen."""

    failures: list[str] = field(default_factory=list)
    worst_error: float = 0.0
    worst_ratio: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        """The failures, one per line (an assertion message)."""
        return "\n".join(self.failures)

    def _record(self, error: float, ratio: float) -> None:
        if math.isfinite(error):
            self.worst_error = max(self.worst_error, error)
        self.worst_ratio = max(self.worst_ratio, ratio)

    def that(self, what: str, condition: bool, detail: str = "") -> bool:
        """A property that must hold (no deviation to measure)."""
        if not condition:
            self.failures.append(f"{what}: {detail}" if detail else what)
        return bool(condition)

    def equal(self, what: str, got, want) -> bool:
        """Exact equality of shapes and values (tensors, arrays, lists or scalars)."""
        got_a, want_a = _host(got), _host(want)
        if got_a.shape != want_a.shape:
            self.failures.append(f"{what}: shape {got_a.shape}, expected {want_a.shape}")
            self._record(math.inf, math.inf)
            return False
        differ = np.argwhere(got_a != want_a)
        if got_a.dtype.kind in "biuf" and want_a.dtype.kind in "biuf" and got_a.size:
            error = float(np.abs(got_a.astype(np.float64) - want_a.astype(np.float64)).max())
        else:
            error = 0.0 if not len(differ) else math.inf
        self._record(error, 0.0 if not len(differ) else math.inf)
        if len(differ):
            index = tuple(int(i) for i in differ[0])
            self.failures.append(f"{what}: {len(differ)} of {got_a.size} differ; first at {index}: "
                                 f"got {got_a[index]!r}, expected {want_a[index]!r}")
            return False
        return True

    def close(self, what: str, got, want, *, rtol: float, atol: float) -> bool:
        """Elementwise ``|got - want| <= atol + rtol · |want|`` (float64 arithmetic), shapes equal."""
        got_a, want_a = _host(got).astype(np.float64), _host(want).astype(np.float64)
        if got_a.shape != want_a.shape:
            self.failures.append(f"{what}: shape {got_a.shape}, expected {want_a.shape}")
            self._record(math.inf, math.inf)
            return False
        if not got_a.size:
            return True
        difference = np.abs(got_a - want_a)
        allowed = atol + rtol * np.abs(want_a)
        ratio = np.where(difference == 0, 0.0, difference / np.maximum(allowed, np.finfo(np.float64).tiny))
        ratio[~np.isfinite(got_a) & (got_a != want_a)] = math.inf  # NaN or inf where the reference is not
        self._record(float(np.nan_to_num(difference, nan=math.inf).max()), float(ratio.max()))
        if (ratio > 1).any():
            index = tuple(int(i) for i in np.argwhere(ratio > 1)[0])
            self.failures.append(f"{what}: {int((ratio > 1).sum())} of {got_a.size} beyond rtol {rtol:g} atol "
                                 f"{atol:g}; first at {index}: got {got_a[index]!r}, expected {want_a[index]!r}")
            return False
        return True

    def within(self, what: str, error: float, bound: float) -> bool:
        """A deviation the case measured itself (e.g. points moved between levels) against its bound."""
        ratio = 0.0 if error == 0 else (error / bound if bound > 0 else math.inf)
        self._record(float(error), ratio)
        if error > bound:
            self.failures.append(f"{what}: {error:g} exceeds the bound {bound:g}")
            return False
        return True


@dataclass(frozen=True)
class Outcome:
    """One case run by a driver without pytest (``profiling.gpu_check``)."""

    kernel: str
    case: str
    passed: bool
    worst_error: float
    worst_ratio: float
    seconds: float
    detail: str  # the first failure, or the exception's last line; empty when passed

    def to_json(self) -> dict:
        def finite(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return {"kernel": self.kernel, "case": self.case, "passed": self.passed,
                "worst_error": finite(self.worst_error), "worst_ratio": finite(self.worst_ratio),
                "seconds": self.seconds, "detail": self.detail}


@dataclass(frozen=True)
class KernelCase:
    """One parametrized case of one kernel module."""

    kernel: str  # the module of ``kernels`` under test: "otsu", "decode", ...
    name: str  # what is tested, with its parameters
    body: Callable[..., None]  # body(check, device)

    def __str__(self) -> str:
        return self.name

    def check(self, device: torch.device | str) -> Check:
        """Run under pytest: exceptions propagate with their tracebacks."""
        check = Check()
        self.body(check, torch.device(device))
        return check

    def run(self, device: torch.device | str) -> Outcome:
        """Run without pytest: an exception is a failure, reported on one line."""
        began = time.perf_counter()
        check = Check()
        try:
            self.body(check, torch.device(device))
            detail = "; ".join(check.failures[:3])
        except Exception as exc:  # noqa: BLE001  (a driver reports every failure, whatever it is)
            last = traceback.extract_tb(exc.__traceback__)[-1]
            detail = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} " \
                     f"({last.filename.rsplit('/', 1)[-1]}:{last.lineno})"
            check.failures.append(detail)
        return Outcome(self.kernel, self.name, check.passed, check.worst_error, check.worst_ratio,
                       time.perf_counter() - began, detail)


class Cases(list):
    """The cases of one kernel module; called as a decorator, it registers a body over a grid of
    parameters (every combination, in order), like ``pytest.mark.parametrize`` stacked::

        CASES = Cases("otsu")

        @CASES("random I={count} max={max_count}", count=[0, 1, 17], max_count=[3, 10**7])
        def random_histograms(check, device, count, max_count): ...
    """

    def __init__(self, kernel: str):
        super().__init__()
        self.kernel = kernel

    def __call__(self, title: str, **grid: list) -> Callable:
        def register(body: Callable) -> Callable:
            for values in itertools.product(*grid.values()):
                params = dict(zip(grid, values, strict=True))
                self.append(KernelCase(self.kernel, title.format(**params), partial(body, **params)))
            return body

        return register
