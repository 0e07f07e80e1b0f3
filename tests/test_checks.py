"""The kernel-case framework (``checks.case``): what passes, what fails, what is recorded."""

from __future__ import annotations

import math

import numpy as np
import torch

from checks import KERNELS, cases_of
from checks.case import Cases, Check


def test_equal_is_exact_and_records_the_difference():
    check = Check()
    assert check.equal("same", torch.tensor([1, 2, 3]), np.array([1, 2, 3]))
    assert check.passed and check.worst_error == 0
    assert not check.equal("off by one", torch.tensor([1, 2, 4]), [1, 2, 3])
    assert not check.equal("shape", torch.zeros(2), torch.zeros(3))
    assert check.worst_error == 1.0 and check.worst_ratio == math.inf and len(check.failures) == 2
    assert "first at (2,)" in check.failures[0] and "shape" in check.failures[1]


def test_close_reports_the_fraction_of_the_tolerance_used():
    check = Check()
    assert check.close("x", torch.tensor([1.0, 2.0005]), torch.tensor([1.0, 2.0]), rtol=0, atol=1e-3)
    assert abs(check.worst_ratio - 0.5) < 1e-3 and abs(check.worst_error - 5e-4) < 1e-7
    assert not check.close("nan", torch.tensor([float("nan")]), torch.tensor([1.0]), rtol=1, atol=1)
    assert check.worst_ratio == math.inf and not check.passed


def test_within_and_that():
    check = Check()
    assert check.within("moved points", 2, 4) and check.worst_ratio == 0.5
    assert not check.within("moved points", 5, 4)
    assert not check.that("holds", False, "it did not")
    assert check.failures == ["moved points: 5 exceeds the bound 4", "holds: it did not"]


def test_cases_register_every_combination_and_run_catches_exceptions():
    cases = Cases("demo")

    @cases("a={a} b={b}", a=[1, 2], b=["x", "y"])
    def body(check, device, a, b):
        check.that("a is one", a == 1)
        if b == "y":
            raise RuntimeError("boom\nsecond line")

    assert [c.name for c in cases] == ["a=1 b=x", "a=1 b=y", "a=2 b=x", "a=2 b=y"]
    outcomes = [c.run("cpu") for c in cases]
    assert [o.passed for o in outcomes] == [True, False, False, False]
    assert outcomes[1].detail.startswith("RuntimeError: boom (") and "\n" not in outcomes[1].detail
    assert outcomes[2].detail == "a is one"
    assert outcomes[0].to_json()["worst_error"] == 0.0


def test_every_kernel_module_has_cases():
    for kernel in KERNELS:
        cases = cases_of(kernel)
        assert cases and {c.kernel for c in cases} == {kernel}
        assert len({c.name for c in cases}) == len(cases), f"{kernel}: case names must be unique"
