"""Shared fixtures: a seeded random-weight model on CPU (built once per session)."""

from __future__ import annotations

import pytest
import torch

from engine.checkpoint import randomize_weights
from engine.model import build_model
from engine.session import build_backbone


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
