"""Row-wise vector functions (softmax): the Jacobian and the vector–Jacobian product.

Their steps are declared (:attr:`derive.spec.VectorFunction.jacobian` and ``vjp``); the
script records them, checks the Jacobian both off and on the diagonal (k ≠ j and
k = j) and checks the form the lecture shows against the declaration.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache

import sympy as sp

from derive.calculus.steps.checking import check_chain, check_equal
from derive.calculus.steps.recording import Recorder, derivation_steps
from derive.calculus.steps.records import LOSS_NAME, D, VectorSteps, sympified
from derive.spec import VectorFunction

#: Sizes and indices at which a vector function's steps are checked; the Jacobian also at
#: k = j, where the Kronecker delta is 1.
VECTOR_INSTANCE = {"N": 2, "K": 3, "n": 1, "k": 2, "j": 1}


def _declared(rec: Recorder, recipe) -> Recorder:
    for r in recipe:
        rec.step(r.rule, r.form, inner=r.inner, identities=sympified(r.identities),
                 quote=r.quote)
    return rec


def _named_arrays(op: VectorFunction) -> tuple:
    """Arrays the declared steps name besides the output (softmax in log-softmax's steps).

    Each becomes an expansion — the array as a ``Lambda`` of its indices — so that the
    steps naming it are checked with what it stands for.
    """
    named = {}
    for r in op.jacobian + op.vjp:
        for name, value in r.inner:
            if isinstance(name, sp.Indexed) and name.base != op.output:
                dummies = sp.symbols(f"a0:{len(name.indices)}", integer=True,
                                     nonnegative=True)
                named.setdefault(name.base, sp.Lambda(
                    dummies, value.xreplace(dict(zip(name.indices, dummies, strict=True)))))
    return tuple(named.items())


@derivation_steps.register
def _(op: VectorFunction) -> VectorSteps:
    if not op.jacobian:
        return derivation_steps.dispatch(object)(op)
    return _vector_steps(op)


@cache
def _vector_steps(op: VectorFunction) -> VectorSteps:
    from derive.calculus.indexed import K, N, j, k, n

    a, b = sp.symbols("a b", integer=True, nonnegative=True)
    out = op.output
    definition = sp.Lambda((a, b), op.shown_as.xreplace({n: a, k: b}))
    at = {N: VECTOR_INSTANCE["N"], K: VECTOR_INSTANCE["K"], n: VECTOR_INSTANCE["n"],
          k: VECTOR_INSTANCE["k"], j: VECTOR_INSTANCE["j"]}
    var = op.arg[n, j]
    named = _named_arrays(op)
    rec = _declared(Recorder(D(out[n, k], var), var, expansions=((out, definition), *named),
                             instance=tuple(at.items()), case=n), op.jacobian)
    jacobian = rec.chain()
    check_chain(replace(jacobian, instance=tuple((at | {k: at[j]}).items())))
    bound = sp.Symbol("r", integer=True, nonnegative=True)  # the declaration sums over j
    check_equal(op.shown_as, op.out.xreplace({j: bound}), jacobian,
                f"the form {op.name} is shown as")
    m = sp.Symbol("m", integer=True, nonnegative=True)
    pairing = sp.Sum(op.upstream[m, k] * out[m, k], (m, 0, N - 1), (k, 0, K - 1))
    rec = _declared(Recorder(D(LOSS_NAME, var), var,
                             expansions=((LOSS_NAME, pairing), (out, definition), *named),
                             instance=tuple((s, v) for s, v in at.items() if s != k), case=n),
                    op.vjp)
    return VectorSteps(op, out[n, k], op.shown_as, jacobian, rec.chain(), n)
