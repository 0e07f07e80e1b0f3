"""Shared fixtures: a seeded random-weight model on CPU (built once per session)."""

from __future__ import annotations

import pytest
import torch

from engine.checkpoint import randomize_weights
from engine.model import build_model
from engine.sparse_provider import select_provider


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
    model = build_model(select_provider(cpu))
    randomize_weights(model, seed=0)
    return model
