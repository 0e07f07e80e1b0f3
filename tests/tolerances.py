"""The suite's tolerance table: one row per dtype and kind of comparison, each with its reason.

Values are unit-scale in every test (random weights keep activations near 1), so an absolute
term only guards sums that cancel to near zero.

* ``F32_SUM_ORDER`` (rtol 1e-5, atol 1e-6): one float32 reduction or GEMM summed in another order
  (a few ulps of each term's size).
* ``F32_LAYERS`` (1e-5, 1e-5): a few float32 layers in another order, BatchNorm folded in float64
  (measured <= 1e-6).
* ``F32_NETWORK`` (1e-4, 1e-4): the whole float32 backbone (~60 layers): measured <= 6e-7, a wide
  margin that a wrong offset, weight or BatchNorm still fails by orders of magnitude.
* ``F16_NETWORK`` (1e-2, 1e-2): the backbone in float16 (11-bit mantissas through ~60 layers;
  measured <= 6e-4 on ONNX Runtime CPU).
* ``SCORES`` (0, 1e-5): instance confidences, square roots of products of means of float32 values
  summed in another order.

Kernel tests whose bound scales with each output's terms (``tests/kernels/test_sparse_conv.py``,
``checks/assign.py``) state theirs beside the derivation.
"""

from __future__ import annotations

import torch

F32_SUM_ORDER = {"rtol": 1e-5, "atol": 1e-6}
F32_LAYERS = {"rtol": 1e-5, "atol": 1e-5}
F32_NETWORK = {"rtol": 1e-4, "atol": 1e-4}
F16_NETWORK = {"rtol": 1e-2, "atol": 1e-2}
SCORES = {"rtol": 0.0, "atol": 1e-5}

# The exported graph against spconv, per dtype of the graph.
EXPORTED = {torch.float32: F32_LAYERS, torch.float16: F16_NETWORK}
