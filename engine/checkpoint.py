"""Loading DKNet weights: the official checkpoint, or seeded random weights for tests and demos."""

from __future__ import annotations

from pathlib import Path

import torch

from engine.model import DKNet

CHECKPOINT_SOURCE = (
    "the released ScanNet checkpoint is linked from the official repository's README "
    "(https://github.com/W1zheng/DKNet)"
)


class CheckpointError(ValueError):
    """The checkpoint is missing, unreadable, or its tensors do not match DKNet."""


def _summarize(keys: list[str], limit: int = 3) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown} (+{len(keys) - limit} more)" if len(keys) > limit else shown


def extract_state_dict(obj: object) -> dict[str, torch.Tensor]:
    """The state dict inside a checkpoint: ``{'model': sd, ...}`` or a bare ``sd``; drops ``module.``."""
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError("holds no state dict (expected {'model': state_dict} or a state_dict)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def check_state_dict(model: DKNet, state: dict[str, torch.Tensor]) -> None:
    """Raise ``CheckpointError`` naming missing, unexpected and mis-shaped tensors."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items() if k in state and state[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: {_summarize(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {_summarize(unexpected)}")
    if misshaped:
        problems.append(f"{len(misshaped)} with wrong shape: {_summarize(misshaped)}")
    if problems:
        raise CheckpointError("tensors do not match DKNet: " + "; ".join(problems))


def load_checkpoint(model: DKNet, path: Path) -> None:
    """Load ``path`` into ``model`` with ``strict=True``; errors are one-line ``CheckpointError``s."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint {path}: cannot be read ({reason})") from None
    try:
        state = extract_state_dict(obj)
        check_state_dict(model, state)
    except CheckpointError as exc:
        raise CheckpointError(f"checkpoint {path}: {exc}") from None
    model.load_state_dict(state, strict=True)


def randomize_weights(model: DKNet, seed: int = 0) -> None:
    """Seeded random weights with non-trivial BatchNorm statistics (deterministic for a seed).

    Convolution and linear weights are scaled so activations keep unit scale through the U-Net;
    BN running statistics are random, so every code path (folding, eval BN) is exercised.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) * 0.5 + 0.75)
            elif name.endswith("running_mean") or name.endswith("bias"):
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
            elif tensor.dim() == 1:  # BN weight
                tensor.copy_(torch.rand(tensor.shape, generator=generator) * 0.5 + 0.75)
            else:
                fan_in = tensor[0].numel()
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * (1.0 / fan_in) ** 0.5)
