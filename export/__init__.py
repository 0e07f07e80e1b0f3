"""Export of DKNet's backbone (sparse U-Net and point heads) to ONNX and TensorRT, and the runners
that use the exported files as the engine's backbone.

* ``kernel_maps``: the per-scene index tensors (neighbour rows, parent rows) computed before the graph;
* ``gather_conv``: the backbone as Gather + MatMul on those maps, the torch module that is exported;
* ``onnx``: ``python -m export.onnx`` (checkpoint -> ``backbone.onnx``);
* ``tensorrt``: ``python -m export.tensorrt`` (``backbone.onnx`` -> ``backbone.plan``, TensorRT 10.x);
* ``runtime``: ``load_backbone("onnxruntime" | "tensorrt", path, device)``, called like
  ``engine.model.DKNet.forward``.
"""
