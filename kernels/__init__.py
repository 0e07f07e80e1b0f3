"""OpenAI Triton kernels of ``--kernels triton``, one stage per module, each beside its PyTorch reference.

``encode`` (candidate description, fused merge MLP, greedy merge), ``decode`` (dynamic-conv masks
fused with quantization and per-instance histograms; the (I, N) masks never reach memory),
``otsu`` (thresholds of all instances in one launch), ``assign`` (assignment passes recomputing
the masks, per-instance sums), ``postprocess`` (the post-processing ``MaskSource`` over them).
Only ``_triton`` imports triton; on CPU the kernels run in Triton's interpreter
(``TRITON_INTERPRET=1``); ``compile_check`` compiles them all for NVIDIA targets without a GPU.
"""
