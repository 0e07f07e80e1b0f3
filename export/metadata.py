"""Reading the metadata ``export.onnx`` writes into ``backbone.onnx`` (a leaf: the TensorRT builder
and the runners read it without importing the exporter)."""

from __future__ import annotations

from pathlib import Path

WEIGHTS_FINGERPRINT = "weights_sha256"  # engine.checkpoint.weights_fingerprint of the exported state dict


def read_metadata(path: Path) -> dict[str, str]:
    """The metadata written by ``export_backbone`` (without loading the weights)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}
