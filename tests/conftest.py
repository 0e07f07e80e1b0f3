"""Shared fixtures: a seeded random-weight model on CPU (built once per session)."""

from __future__ import annotations

import pytest
import torch

from engine.checkpoint import randomize_weights
from engine.model import build_model
from engine.sparse_provider import select_provider


@pytest.fixture(scope="session")
def cpu() -> torch.device:
    return torch.device("cpu")


@pytest.fixture(scope="session")
def random_model(cpu):
    model = build_model(select_provider(cpu))
    randomize_weights(model, seed=0)
    return model
