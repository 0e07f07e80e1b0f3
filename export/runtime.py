"""Backbone backends on the exported graph: ONNX Runtime (``backbone.onnx``) and TensorRT (``.plan``).

A runner is called exactly like ``engine.model.DKNet.forward``:

    backbone = load_backbone("onnxruntime", Path("backbone.onnx"), device)
    points = backbone(voxel_features, voxel_coords, spatial_shape, point_to_voxel)  # PointOutputs

so ``engine.pipeline.run_backbone(backbone, xyz, rgb, device)`` runs unchanged. Per call it builds
the kernel maps (``engine.backbone.kernel_maps``, on the runner's device), runs the graph (U-Net and point
heads, outputs for all N points), then selects object points (``argmax >= 2``) and their heat logits
and kernel features, as ``DKNet.forward`` does. Everything after the heads stays the engine's own
stages (encoding, decoding, post-processing run on the DKNet model as before).

Tensors are handed to both runtimes by pointer (ONNX Runtime's I/O binding, TensorRT's tensor
addresses): no host round trip on the GPU, no copy on the CPU.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch

from engine.backbone.folded import OUTPUTS
from engine.backbone.kernel_maps import build_kernel_maps, map_names
from engine.model import PointOutputs, select_object_points

BACKENDS = ("onnxruntime", "tensorrt")


class BackendError(RuntimeError):
    """The exported backbone cannot be loaded or run; the message is one line."""


class ExportedBackbone(ABC):
    """Common call path; subclasses set ``device`` and ``provider`` and implement ``_run``."""

    device: torch.device
    provider: str  # what runs the graph, for reports, e.g. "onnxruntime CPUExecutionProvider"

    def __call__(self, features: torch.Tensor, coords: torch.Tensor, spatial_shape: list[int],
                 point_to_voxel: torch.Tensor) -> PointOutputs:
        """features (V, 6) float32, coords (V, 3) int, point_to_voxel (N,) int64 -> PointOutputs on
        the device of ``features``."""
        maps = build_kernel_maps(coords.to(self.device), spatial_shape)
        inputs = {"voxel_features": features.to(self.device, torch.float32).contiguous(),
                  "point_to_voxel": point_to_voxel.to(self.device, torch.int64).contiguous(),
                  **{name: t.contiguous() for name, t in maps.named().items()}}
        num_points = int(point_to_voxel.shape[0])
        outputs = {name: torch.empty((num_points, *tail), dtype=torch.float32, device=self.device)
                   for name, tail in OUTPUTS.items()}
        with torch.no_grad():
            self._run(inputs, outputs)
        return select_object_points(*(outputs[name].to(features.device) for name in OUTPUTS))

    @abstractmethod
    def _run(self, inputs: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]) -> None:
        """Run the graph on ``inputs`` (graph input name -> tensor on ``device``), writing into the
        preallocated float32 ``outputs`` (graph output name -> (N, ...) tensor on ``device``)."""


class OnnxRuntimeBackbone(ExportedBackbone):
    """``backbone.onnx`` on ONNX Runtime: the CUDA execution provider when ``device`` is CUDA and
    the installed onnxruntime has it, else the CPU provider (inputs then move to the CPU)."""

    name = "onnxruntime"

    def __init__(self, path: Path, device: torch.device):
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendError("onnxruntime is not installed (pip install onnxruntime, "
                               "or onnxruntime-gpu for CUDA)") from None
        path = Path(path)
        if not path.is_file():
            raise BackendError(f"engine file {path}: no such file")
        use_cuda = device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers()
        self.device = torch.device("cuda", device.index or 0) if use_cuda else torch.device("cpu")
        ep = ("CUDAExecutionProvider", {"device_id": self.device.index}) if use_cuda else "CPUExecutionProvider"
        try:
            self.session = ort.InferenceSession(str(path), providers=[ep])
        except Exception as exc:  # ORT raises its own exception types for foreign or corrupt files
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BackendError(f"engine file {path}: ONNX Runtime cannot load it ({reason})") from None
        names = [i.name for i in self.session.get_inputs()]
        if sorted(names) != sorted(["voxel_features", "point_to_voxel", *map_names()]):
            raise BackendError(f"engine file {path}: not a DKNet backbone from python -m export.onnx")
        self.provider = f"onnxruntime {self.session.get_providers()[0]}"

    def _run(self, inputs: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]) -> None:
        binding = self.session.io_binding()
        kind, index = self.device.type, self.device.index or 0
        for name, tensor in {**inputs, **outputs}.items():
            bind = binding.bind_input if name in inputs else binding.bind_output
            dtype = np.float32 if tensor.dtype == torch.float32 else np.int64
            bind(name, kind, index, dtype, list(tensor.shape), tensor.data_ptr())
        if kind == "cuda":
            torch.cuda.current_stream(self.device).synchronize()  # ORT runs on its own stream
        self.session.run_with_iobinding(binding)


class TensorRTBackbone(ExportedBackbone):
    """``backbone.plan`` (from ``python -m export.tensorrt``) on a CUDA device, on torch's current
    stream."""

    name = "tensorrt"

    def __init__(self, path: Path, device: torch.device):
        from export.tensorrt import TensorRTError, import_tensorrt, require_gpu

        path = Path(path)
        if not path.is_file():
            raise BackendError(f"engine file {path}: no such file")
        try:
            trt = import_tensorrt()
            require_gpu()
        except TensorRTError as exc:
            raise BackendError(str(exc)) from None
        if device.type != "cuda":
            raise BackendError("the tensorrt backend runs on CUDA only (use --device cuda)")
        self.device = torch.device("cuda", device.index or 0)
        with torch.cuda.device(self.device):
            self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(path.read_bytes())
            if self.engine is None:
                raise BackendError(f"engine file {path}: TensorRT cannot load it (built by another TensorRT "
                                   "version or for another GPU? rebuild with python -m export.tensorrt)")
            self.context = self.engine.create_execution_context()
        self.provider = f"tensorrt {trt.__version__}"

    def _check_profile(self, inputs: dict[str, torch.Tensor]) -> None:
        for name, tensor in inputs.items():
            low, _, high = self.engine.get_tensor_profile_shape(name, 0)
            if not low[0] <= tensor.shape[0] <= high[0]:
                raise BackendError(f"{name} has {tensor.shape[0]} rows; the engine accepts {low[0]}..{high[0]} "
                                   "(rebuild with a larger python -m export.tensorrt --max-voxels / --max-points)")

    def _run(self, inputs: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]) -> None:
        self._check_profile(inputs)
        for name, tensor in inputs.items():
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        for name, tensor in outputs.items():
            self.context.set_tensor_address(name, tensor.data_ptr())
        if not self.context.execute_async_v3(torch.cuda.current_stream(self.device).cuda_stream):
            raise BackendError("TensorRT failed to run the engine")


def load_backbone(backend: str, engine_file: Path, device: torch.device) -> ExportedBackbone:
    """The runner for ``backend`` ("onnxruntime" or "tensorrt"); raises ``BackendError``."""
    if backend == "onnxruntime":
        return OnnxRuntimeBackbone(engine_file, device)
    if backend == "tensorrt":
        return TensorRTBackbone(engine_file, device)
    raise BackendError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
