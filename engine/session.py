"""What a command needs before its first scene: the device, the weights, the backbone and the
kernels, built once into an ``engine.pipeline.Session``. Shared by ``engine.run`` and
``python -m profiling``; imports torch only when called."""

from __future__ import annotations

import os
from pathlib import Path

from engine.environment import TRITON_INTERPRET
from engine.errors import UserError, print_warning


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
    from engine.checkpoint import CHECKPOINT_SOURCE
    from engine.environment import CHECKPOINT, checkpoint_from_environment

    if random_weights:
        return None
    if checkpoint is not None:
        return checkpoint
    from_environment = checkpoint_from_environment()
    if from_environment is not None:
        return from_environment
    raise UserError(f"no weights: pass --checkpoint PATH or set ${CHECKPOINT} ({CHECKPOINT_SOURCE}), "
                    "or use --random-weights to test the pipeline")


def load_model(checkpoint: Path | None, random_weights: bool, seed: int):
    """A DKNet in eval mode (on the CPU) with the resolved weights; problems become UserError,
    warnings (weights of another dtype, converted) are printed."""
    from engine.checkpoint import CheckpointError, load_checkpoint, randomize_weights
    from engine.model import build_model

    path = resolve_checkpoint(checkpoint, random_weights)
    model = build_model()
    try:
        if path is None:
            randomize_weights(model, seed)
        else:
            for warning in load_checkpoint(model, path):
                print_warning(warning)
    except CheckpointError as exc:
        raise UserError(str(exc)) from None
    return model.eval()


def build_backbone(choice: str, model, device, engine_file: Path | None = None, precision: str = "fp32"):
    """The ``--backbone`` runner (``engine.pipeline.Backbone``) on ``device``; UserError when it
    cannot run there (spconv not installed, no TensorRT or GPU, a bad engine file, an ONNX file
    exported from other weights, a precision other than fp32 without the native backbone's Triton
    form). TensorRT plans carry no metadata: their weights are not checked."""
    if choice == "native":
        from engine.backbone.native import NativeBackbone

        try:
            return NativeBackbone.from_model(model, device, precision=precision)
        except ValueError as exc:
            raise UserError(f"--precision {precision}: {exc}") from None
    if choice == "spconv":
        from engine.backbone.spconv_unet import ProviderError, SpconvBackbone, select_provider

        try:
            return SpconvBackbone(model, select_provider(device), device)
        except ProviderError as exc:
            raise UserError(f"--backbone spconv: {exc}") from None
    from export.runtime import BackendError, load_backbone

    try:
        backbone = load_backbone(choice, engine_file, device)
    except BackendError as exc:
        raise UserError(str(exc)) from None
    if choice == "onnxruntime":
        check_exported_weights(engine_file, model)
    return backbone


def check_exported_weights(engine_file: Path, model) -> None:
    """UserError when ``engine_file`` (an ONNX graph) was exported from other weights than ``model``'s
    (its ``weights_sha256`` metadata); a warning when it has no fingerprint (an older export)."""
    from engine.checkpoint import weights_fingerprint
    from export.metadata import WEIGHTS_FINGERPRINT, read_metadata

    metadata = read_metadata(engine_file)
    stored = metadata.get(WEIGHTS_FINGERPRINT)
    if stored is None:
        print_warning(f"engine file {engine_file}: no weights fingerprint (an older export); cannot check that "
                      "it holds this run's weights")
    elif stored != weights_fingerprint(model.state_dict()):
        raise UserError(f"engine file {engine_file}: exported from other weights ({metadata.get('weights', '?')}) "
                        "than this run's; export it again from the same --checkpoint (python -m export.onnx)")


def choose_cpu_threads() -> None:
    """Before torch is loaded: OpenMP's wait policy for this machine's load
    (``engine.environment.choose_omp_wait_policy``), announced in one line when it is PASSIVE."""
    from engine.environment import choose_omp_wait_policy

    if choose_omp_wait_policy() == "PASSIVE":
        print_warning("the CPUs are already busy: OpenMP threads will wait passively (OMP_WAIT_POLICY=PASSIVE, "
                      "slower on an idle machine, far faster under load; set OMP_WAIT_POLICY to choose)")


def build_session(args):
    """The ``engine.pipeline.Session`` of a command's parsed arguments (``engine.cli_args``):
    device, weights, backbone and kernels. Problems become UserError."""
    from engine.pipeline import Session

    device = resolve_device(args.device)
    model = load_model(args.checkpoint, args.random_weights, args.seed).to(device)
    kernels = later_stages(args.kernels or ("triton" if device.type == "cuda" else "torch"), device)
    backbone = build_backbone(args.backbone, model, device, args.engine_file, args.precision)
    return Session(model=model, backbone=backbone, kernels=kernels, device=device)


def later_stages(kernels: str, device):
    """The ``engine.pipeline.LaterStages`` of ``--kernels`` (torch or triton) on ``device``: the seam
    is the one place that imports the Triton kernels; UserError when they cannot run there. For
    torch on CPU, the C kernels are built (or found in the cache) here."""
    from engine.pipeline import TORCH_STAGES, LaterStages

    if kernels == "torch":
        if device.type == "cpu":  # build the C kernels now, not inside the first scene's timed stages
            from engine.c_kernels import unavailable_reason

            unavailable_reason()  # a failure is reported by kernels_description
        return TORCH_STAGES
    prepare_triton(device)
    from kernels import encode
    from kernels.postprocess import RecomputedMasks

    return LaterStages("triton", encode, RecomputedMasks)


def kernels_description(session) -> str:
    """How the later stages run, for reports."""
    if session.kernels.name == "torch":
        if session.device.type != "cpu":
            return "PyTorch"
        from engine.c_kernels import unavailable_reason

        reason = unavailable_reason()
        return "PyTorch + C kernels" if reason is None else f"PyTorch (C kernels off: {reason})"
    from kernels._triton import INTERPRETER

    return "Triton interpreter (slow; CPU testing only)" if INTERPRETER else "Triton (compiled)"


def prepare_triton(device) -> None:
    """Make the Triton kernels runnable on ``device`` before triton is first imported: compiled on
    CUDA, Triton's interpreter on CPU (``TRITON_INTERPRET=1``: correct but slow, for testing).
    UserError when they cannot."""
    if device.type == "cpu":  # --device cpu on a CUDA machine: interpret, unless triton is already loaded
        os.environ.setdefault(TRITON_INTERPRET, "1")
    from kernels._triton import TRITON_IMPORTED, triton_available

    if not TRITON_IMPORTED:
        raise UserError("--kernels triton needs the triton package (pip install triton)")
    if not triton_available(device):
        raise UserError(f"--kernels triton cannot run on {device.type} here: compiled kernels need CUDA, "
                        "the interpreter CPU (it was switched off by TRITON_INTERPRET=0)")
