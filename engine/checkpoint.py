"""Loading DKNet weights: the official checkpoint, or seeded random weights for tests and demos."""

from __future__ import annotations

import pickle
import re
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


def check_values(model: DKNet, state: dict[str, torch.Tensor]) -> list[str]:
    """Raise ``CheckpointError`` naming tensors that hold NaN or infinity (DKNet would predict
    nothing); return one warning line when tensors have another dtype than DKNet's (they are
    converted on loading: integer weights usually mean a wrong file), else no warning."""
    expected = model.state_dict()
    non_finite = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if non_finite:
        raise CheckpointError(f"{len(non_finite)} tensors hold NaN or infinity: {_summarize(non_finite)}")
    converted = [f"{k} {str(v.dtype).removeprefix('torch.')} -> {str(expected[k].dtype).removeprefix('torch.')}"
                 for k, v in state.items() if v.dtype != expected[k].dtype]
    if not converted:
        return []
    return [f"{len(converted)} tensors have another dtype than DKNet's and were converted: {_summarize(converted)}"]


_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def load_checkpoint(model: DKNet, path: Path) -> list[str]:
    """Load ``path`` into ``model`` with ``strict=True``; errors are one-line ``CheckpointError``s.
    Returns warning lines (tensors converted from another dtype), empty when there are none.

    The file is read with ``weights_only=True``: a checkpoint holding pickled Python objects (a
    whole saved model, custom classes) is refused, since loading it would run code from the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" not in str(exc):  # garbage, not a pickle of Python objects
            raise CheckpointError(f"checkpoint {path}: cannot be read (not a PyTorch checkpoint)") from None
        raise CheckpointError(
            f"checkpoint {path}: holds pickled Python objects, not only tensors (a whole saved model?); "
            "refused because loading it would run code from the file. If you trust it, save its weights: "
            f"torch.save(torch.load('{path}', weights_only=False).state_dict(), 'weights.pth')") from None
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        text = _ANSI_ESCAPE.sub("", str(exc)).strip()
        reason = text.splitlines()[0] if text else type(exc).__name__
        raise CheckpointError(f"checkpoint {path}: cannot be read ({reason})") from None
    try:
        state = extract_state_dict(obj)
        check_state_dict(model, state)
        warnings = check_values(model, state)
    except CheckpointError as exc:
        raise CheckpointError(f"checkpoint {path}: {exc}") from None
    model.load_state_dict(state, strict=True)
    return [f"checkpoint {path}: {warning}" for warning in warnings]


def weights_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 (hex) of a state dict's names, dtypes, shapes and bytes, in name order: equal for the
    same weights however they were loaded (the exported ONNX graph stores it, ``engine.session``
    checks it)."""
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name} {state[name].dtype} {tuple(state[name].shape)}\n".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


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
