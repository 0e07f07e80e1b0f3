"""Tolerances the checks share with the tests (``tests/tolerances.py`` imports them from here, so
each has one definition; the rest of the suite's table, with its reasons, stays there).

* ``F32_NETWORK`` (rtol 1e-4, atol 1e-4): the whole float32 backbone (~60 layers): measured <= 6e-7,
  a wide margin that a wrong offset, weight or BatchNorm still fails by orders of magnitude.
"""

from __future__ import annotations

F32_NETWORK = {"rtol": 1e-4, "atol": 1e-4}
