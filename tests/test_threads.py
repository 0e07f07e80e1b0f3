"""OpenMP's wait policy chosen by the machine's load at start (``engine.environment``)."""

from __future__ import annotations

import os
import sys

import pytest

from engine.environment import OMP_WAIT_POLICY, choose_omp_wait_policy, omp_wait_policy_for


@pytest.mark.parametrize("load,cores,policy", [(0.2, 2, None), (1.4, 2, None), (1.5, 2, "PASSIVE"),
                                               (7.5, 2, "PASSIVE"), (7.0, 16, None), (15.6, 16, "PASSIVE")])
def test_passive_only_when_the_cores_are_already_busy(load, cores, policy):
    assert omp_wait_policy_for(load, cores) == policy


@pytest.fixture
def before_torch(monkeypatch):
    """This process as a command sees it at start: no OMP_WAIT_POLICY, torch not loaded yet, two cores."""
    monkeypatch.delenv(OMP_WAIT_POLICY, raising=False)
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    return monkeypatch


def test_a_busy_machine_gets_passive_waiting(before_torch):
    before_torch.setattr(os, "getloadavg", lambda: (3.0, 1.0, 1.0))
    assert choose_omp_wait_policy() == "PASSIVE" and os.environ[OMP_WAIT_POLICY] == "PASSIVE"


def test_an_idle_machine_keeps_openmp_default(before_torch):
    before_torch.setattr(os, "getloadavg", lambda: (0.3, 1.0, 1.0))
    assert choose_omp_wait_policy() is None and OMP_WAIT_POLICY not in os.environ


def test_the_users_choice_and_a_loaded_torch_are_left_alone(before_torch):
    before_torch.setattr(os, "getloadavg", lambda: (9.0, 9.0, 9.0))
    before_torch.setenv(OMP_WAIT_POLICY, "ACTIVE")
    assert choose_omp_wait_policy() is None and os.environ[OMP_WAIT_POLICY] == "ACTIVE"
    before_torch.delenv(OMP_WAIT_POLICY)
    before_torch.setitem(sys.modules, "torch", object())  # too late: OpenMP has read its settings
    assert choose_omp_wait_policy() is None and OMP_WAIT_POLICY not in os.environ
