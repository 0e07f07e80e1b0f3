"""Tolerances the kernel cases share, each with its reason (the rest of the suite's table, for
tolerances only tests use, is ``tests/tolerances.py``).

Values are unit-scale in every case (random weights keep activations near 1), so an absolute term
only guards sums that cancel to near zero.

* ``F32_SUM_ORDER`` (rtol 1e-5, atol 1e-6): one float32 reduction or GEMM summed in another order
  (a few ulps of each term's size).
"""

from __future__ import annotations

F32_SUM_ORDER = {"rtol": 1e-5, "atol": 1e-6}
