"""Scaled dot-product attention as indexed equations, batch-first.

Queries Q (N, L, D), keys K (N, S, D) and values V (N, S, E), as
``torch.nn.functional.scaled_dot_product_attention`` takes them: each query i scores
every key j, s = Q Kᵀ/√D; a softmax over the keys turns its row of scores into weights
P; the output is the weighted sum of the values, O = P V. The softmax is written as the
course's numerically safe form, e^{s − log Σ e^s} (the log-sum-exp evaluated with the
row's maximum subtracted), so that its gradient — the softmax Jacobian P(δ − P) inside
the score gradient — comes from the calculus like every other step's.
"""

from __future__ import annotations

import sympy as sp
from sympy import IndexedBase, Sum

from derive.calculus.indexed import lse
from derive.registry import register
from derive.spec import Layer, Param

# Sizes: batch, queries, keys (and values), the queries' and keys' features, the values'.
N, L, S, D, E = sp.symbols("N L S D E", integer=True, positive=True)
n, i, j, k, d, e = sp.symbols("n i j k d e", integer=True, nonnegative=True)

Q, K, V = (IndexedBase(name, real=True) for name in "QKV")
s, P, O = (IndexedBase(name, real=True) for name in ("s", "P", "O"))  # noqa: E741

# With the causal mask M, query i sees keys j ≤ i only (is_causal in PyTorch: the mask is
# aligned to the top-left corner when L ≠ S). A masked score is −∞, so its weight e^{−∞}
# is 0 and it leaves the softmax's sum. M is a step of its own that reads neither Q nor
# K: nothing flows back through it, and the scores' gradients stay plain sums.
causal = sp.Symbol("causal", integer=True, nonnegative=True)
CAUSAL = Param(causal, 0, latex="c", keyword="causal")  # a flag: 0 off, else on
M = IndexedBase("M", real=True)

ATTENTION = register(Layer(
    name="attention", title="Scaled dot-product attention", latex=r"\operatorname{attention}",
    steps=(
        (M[i, j], sp.Piecewise((-sp.oo, sp.And(causal > 0, j > i)), (0, True))),
        (s[n, i, j], Sum(Q[n, i, d] * K[n, j, d], (d, 0, D - 1)) / sp.sqrt(D) + M[i, j]),
        (P[n, i, j], sp.exp(s[n, i, j] - lse(s[n, i, k], k, S))),
    ),
    out=O[n, i, e], expr=Sum(P[n, i, j] * V[n, j, e], (j, 0, S - 1)),
    arrays=((Q, (N, L, D)), (K, (N, S, D)), (V, (N, S, E)), (M, (L, S)), (s, (N, L, S)),
            (P, (N, L, S)), (O, (N, L, E))),
    inputs=(Q, K, V), hyper=(CAUSAL,),
    # Three inputs of their own: a network would need to say where each comes from.
    in_networks=False))
