"""SymPy derivations behind the notebooks: each function proves one identity and returns the objects
a notebook displays. tests/ runs every proof, so a notebook's claim and the test suite share one source.

Every proof asserts with sp.simplify(lhs - rhs) == 0 (or an exact comparison of rational expressions);
a failed proof raises AssertionError naming the identity.
"""
from __future__ import annotations

import sympy as sp

# ---------------------------------------------------------------- 01 recurrence, 02 rotation and decay

# ---------------------------------------------------------------- 03 parallel, 04 recurrent, 05 chunkwise

# ---------------------------------------------------------------- 06 normalisation and GroupNorm
