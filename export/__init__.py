"""Export of DKNet's backbone (sparse U-Net and point heads) to ONNX and TensorRT, and the runners
that use the exported files as the engine's backbone.

* ``gather_conv``: the backbone (``engine.backbone.folded``) as Gather + MatMul on the kernel maps
  (``engine.backbone.kernel_maps``, computed before the graph), the torch module that is exported;
* ``onnx``: ``python -m export.onnx`` (checkpoint -> ``backbone.onnx``);
* ``tensorrt``: ``python -m export.tensorrt`` (``backbone.onnx`` -> ``backbone.plan``, TensorRT 10.x);
* ``runtime``: ``load_backbone("onnxruntime" | "tensorrt", path, device)``, a backbone of the
  engine's ``Session`` like the native and spconv ones.
"""
