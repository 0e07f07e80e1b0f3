"""What a command needs before its first scene: the device, the sparse-conv provider and the
weights. Shared by ``engine.run`` and ``python -m profiling``; imports torch only when called."""

from __future__ import annotations

import os
import sys
from pathlib import Path


class UserError(Exception):
    """A one-line, user-facing failure."""


def print_error(problem: Exception | str) -> None:
    """The one-line error every command prints on stderr: ``error: <problem>``."""
    print(f"error: {problem}", file=sys.stderr)


def resolve_device(choice: str):
    """``auto`` | ``cpu`` | ``cuda`` -> torch.device; UserError when CUDA is asked for but absent."""
    import torch

    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available (use --device cpu)")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


def resolve_checkpoint(checkpoint: Path | None, random_weights: bool) -> Path | None:
    """The checkpoint to load: ``--checkpoint``, else ``$DKNET_CHECKPOINT``; None for random weights."""
    from engine.checkpoint import CHECKPOINT_ENV, CHECKPOINT_SOURCE

    if random_weights:
        return None
    if checkpoint is not None:
        return checkpoint
    if os.environ.get(CHECKPOINT_ENV):
        return Path(os.environ[CHECKPOINT_ENV])
    raise UserError(f"no weights: pass --checkpoint PATH or set ${CHECKPOINT_ENV} ({CHECKPOINT_SOURCE}), "
                    "or use --random-weights to test the pipeline")


def load_model(device, checkpoint: Path | None, random_weights: bool, seed: int):
    """A DKNet in eval mode on ``device`` with the resolved weights; problems become UserError."""
    from engine.checkpoint import CheckpointError, load_checkpoint, randomize_weights
    from engine.model import build_model
    from engine.sparse_provider import ProviderError, select_provider

    path = resolve_checkpoint(checkpoint, random_weights)
    try:
        model = build_model(select_provider(device))
        if path is None:
            randomize_weights(model, seed)
        else:
            load_checkpoint(model, path)
    except (ProviderError, CheckpointError) as exc:
        raise UserError(str(exc)) from None
    return model.to(device).eval()


def prepare_triton(device) -> str:
    """Make the Triton kernels runnable on ``device`` before triton is first imported: compiled on
    CUDA, Triton's interpreter on CPU (``TRITON_INTERPRET=1``: correct but slow, for testing).
    Returns how they will run; UserError when they cannot."""
    if device.type == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")
    from kernels._triton import INTERPRETER, TRITON_IMPORTED, triton_available

    if not TRITON_IMPORTED:
        raise UserError("--backend triton needs the triton package (pip install triton)")
    if not triton_available(device):
        raise UserError(f"--backend triton cannot run on {device.type} here: compiled kernels need CUDA, "
                        "the interpreter CPU (it was switched off by TRITON_INTERPRET=0)")
    return "Triton interpreter (slow; CPU testing only)" if INTERPRETER else "Triton (compiled)"


def load_exported_backbone(backend: str, engine_file: Path | None, device):
    """The exported backbone for ``backend`` (None for the reference and triton backends, whose
    backbone is the model's own); UserError on failure."""
    if backend in ("reference", "triton"):
        return None
    from export.runtime import BackendError, load_backbone

    try:
        return load_backbone(backend, engine_file, device)
    except BackendError as exc:
        raise UserError(str(exc)) from None
