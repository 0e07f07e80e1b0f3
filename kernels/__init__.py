"""OpenAI Triton kernels for the hot stages, each beside its PyTorch reference.

So far: ``decode`` (dynamic-conv masks fused with quantization and per-instance histograms; the
(I, N) masks never reach memory) and ``otsu`` (thresholds of all instances in one launch). Only
``_triton`` imports triton; on CPU the kernels run in Triton's interpreter (``TRITON_INTERPRET=1``).
"""
