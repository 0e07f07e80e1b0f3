"""Shared fixtures: a seeded random-weight model on CPU (built once per session).

``make test`` runs two pytest workers on two cores, so the CPUs are always busy: OpenMP threads
wait passively (``OMP_WAIT_POLICY=PASSIVE``, set before torch is loaded), which is what the
commands would choose by the load at start (``engine.environment.choose_omp_wait_policy``);
setting it here makes the commands the tests start in subprocesses independent of the machine's
load (no announcement line whose presence depends on it)."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402  (after the OpenMP setting)
import torch  # noqa: E402

from engine.checkpoint import randomize_weights  # noqa: E402
from engine.model import build_model  # noqa: E402
from engine.session import build_backbone  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--bench-large", action="store_true", help="also benchmark 400k-point scenes")


def pytest_configure(config):
    config.addinivalue_line("markers", "large: 400k-point benchmarks, run with --bench-large")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--bench-large"):
        return
    skip = pytest.mark.skip(reason="400k-point scene: pass --bench-large")
    for item in items:
        if "large" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def cpu() -> torch.device:
    return torch.device("cpu")


@pytest.fixture(scope="session")
def random_model(cpu):
    model = build_model()
    randomize_weights(model, seed=0)
    return model


@pytest.fixture(scope="session")
def spconv_backbone(random_model, cpu):
    """spconv's U-Net with the random model's weights: the oracle of the other backbones."""
    return build_backbone("spconv", random_model, cpu)


@pytest.fixture(scope="session")
def native_backbone(random_model, cpu):
    return build_backbone("native", random_model, cpu)
