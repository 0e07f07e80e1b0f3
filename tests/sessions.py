"""Sessions for tests: a model with a backbone (native by default) and the later stages' kernels."""

from __future__ import annotations

import torch

from engine.pipeline import Session
from engine.session import build_backbone, later_stages

CPU = torch.device("cpu")


def cpu_session(model, backbone: str = "native", kernels: str = "torch") -> Session:
    """A CPU ``Session`` of ``model`` with ``backbone`` (native or spconv) and ``kernels``."""
    return Session(model=model, backbone=build_backbone(backbone, model, CPU), kernels=later_stages(kernels, CPU),
                   device=CPU)
