"""Kinked functions: one normal form, and where the kinks are.

Max, Min and Heaviside become ``Piecewise`` whose boundary ownership encodes PyTorch's
subgradient convention: at a tie the constant branch owns the point, so the derivative
there is the constant branch's (ReLU'(0) = 0). ``diff`` of a ``Piecewise`` is again a
``Piecewise``, so DiracDelta never appears.
"""

from __future__ import annotations

from functools import reduce

import sympy as sp


def _max_to_piecewise(a: sp.Expr, b: sp.Expr, var: sp.Symbol) -> sp.Piecewise:
    # Put the argument that depends on the variable first: it wins only strictly.
    if var not in a.free_symbols and var in b.free_symbols:
        a, b = b, a
    return sp.Piecewise((a, sp.StrictGreaterThan(a, b)), (b, True))


def _min_to_piecewise(a: sp.Expr, b: sp.Expr, var: sp.Symbol) -> sp.Piecewise:
    if var not in a.free_symbols and var in b.free_symbols:
        a, b = b, a
    return sp.Piecewise((a, sp.StrictLessThan(a, b)), (b, True))


def normalise_kinks(expr: sp.Expr, var: sp.Symbol) -> sp.Expr:
    """Rewrite Max, Min and Heaviside of ``var`` as ``Piecewise``.

    Parameters
    ----------
    expr : sympy.Expr
        A declaration's expression.
    var : sympy.Symbol
        The variable whose subgradient convention the normal form encodes.

    Returns
    -------
    sympy.Expr
        The same function with every kink an explicit ``Piecewise`` boundary.

    """

    def pairwise(rule):
        def apply(a, b):
            # A kinked argument distributes: max(pw(e_i, c_i), b) = pw(max(e_i, b), c_i),
            # so comparisons never contain a Piecewise (SymPy would turn them into ITE).
            if isinstance(a, sp.Piecewise):
                return sp.Piecewise(*[(apply(e, b), c) for e, c in a.args])
            if isinstance(b, sp.Piecewise):
                return sp.Piecewise(*[(apply(a, e), c) for e, c in b.args])
            return rule(a, b, var)

        return apply

    def fold(rule):
        return lambda *args: sp.piecewise_fold(reduce(pairwise(rule), args))

    return expr.replace(sp.Max, fold(_max_to_piecewise)).replace(
        sp.Min, fold(_min_to_piecewise)
    ).replace(
        sp.Heaviside,
        lambda u, *h0: sp.Piecewise((1, sp.GreaterThan(u, 0)), (0, True)),
    )


def _boundaries(expr: sp.Expr) -> set[sp.Expr]:
    """Expressions whose zeros are kinks: Piecewise conditions and Abs/sign arguments."""
    found: set[sp.Expr] = set()
    for pw in expr.atoms(sp.Piecewise):
        for _, cond in pw.args:
            found |= {r.lhs - r.rhs for r in cond.atoms(sp.core.relational.Relational)}
    found |= {f.args[0] for f in expr.atoms(sp.Abs, sp.sign)}
    return found


def find_kinks(expr: sp.Expr, var: sp.Symbol, values: dict) -> tuple[float, ...]:
    """Where ``expr`` is not differentiable in ``var``, for the given parameter values.

    Only boundaries linear in ``var`` are located (every kink in the catalogue is);
    others are ignored, which only makes finite-difference sampling less careful.

    Parameters
    ----------
    expr : sympy.Expr
        The function, in normal form (:func:`normalise_kinks`).
    var : sympy.Symbol
        The input variable.
    values : dict
        Parameter symbols mapped to numbers.

    Returns
    -------
    tuple of float
        Sorted kink locations.

    """
    kinks = set()
    for u in _boundaries(expr):
        u = sp.expand(u.subs(values))
        if var not in u.free_symbols:
            continue
        slope = u.coeff(var, 1)
        if slope.free_symbols or not slope or u.coeff(var, 0).has(var):
            continue
        rest = sp.expand(u - slope * var)
        if rest.free_symbols:
            continue
        kinks.add(float(-rest / slope))
    return tuple(sorted(kinks))
