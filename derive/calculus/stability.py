"""Numerically stable rewrites, as a table of named rules.

Each rule recognises one unsafe spelling and replaces it by a named function whose
printer evaluates it without overflow or cancellation. The rules run bottom-up to a fixed
point, on declarations before differentiation (so derivatives come out in the named,
stable forms) and on the derivatives after it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p

from derive.calculus.functions import normal_cdf, sigmoid, softplus


@dataclass(frozen=True)
class Rewrite:
    """One stability rule: a matcher that returns the replacement or ``None``."""

    name: str
    why: str
    apply: Callable[[sp.Basic], sp.Basic | None]


def _one_plus_exp(e: sp.Basic) -> sp.Expr | None:
    """Return v when ``e`` is 1 + exp(v)."""
    if isinstance(e, sp.Add) and len(e.args) == 2 and sp.S.One in e.args:
        (other,) = [a for a in e.args if a is not sp.S.One]
        if isinstance(other, sp.exp):
            return other.args[0]
    return None


def _sigmoid_from_reciprocal(e):
    if isinstance(e, sp.Pow) and e.exp == -1:
        v = _one_plus_exp(e.base)
        if v is not None:
            return sigmoid(-v)
    return None


def _sigmoid_from_ratio(e):
    # exp(v)·σ(−v) is σ(v), but the left side overflows to inf·0 for large v.
    if not isinstance(e, sp.Mul):
        return None
    for f in e.args:
        if isinstance(f, sp.exp) and sigmoid(-f.args[0]) in e.args:
            rest = [a for a in e.args if a not in (f, sigmoid(-f.args[0]))]
            return sp.Mul(*rest) * sigmoid(f.args[0])
    return None


def _softplus_from_log(e):
    if isinstance(e, sp.log):
        v = _one_plus_exp(e.args[0])
        if v is not None:
            return softplus(v)
    return None


def _log1p_from_log(e):
    if isinstance(e, sp.log) and isinstance(e.args[0], sp.Add) and sp.S.One in e.args[0].args:
        return log1p(e.args[0] - 1)
    return None


def _expm1_from_difference(e):
    # c·exp(v) − c loses every digit as v → 0; c·expm1(v) keeps them.
    if not isinstance(e, sp.Add):
        return None
    for term in e.args:
        coeff, factor = term.as_independent(sp.exp, as_Add=False)
        if isinstance(factor, sp.exp) and -coeff in e.args:
            rest = [a for a in e.args if a not in (term, -coeff)]
            return sp.Add(*rest) + coeff * expm1(factor.args[0])
    return None


def _normal_cdf_from_erf(e):
    # 1 + erf(u) → 0 as u → −∞ and loses every digit; 2Φ(√2 u), printed with erfc,
    # keeps them.
    if isinstance(e, sp.Add) and sp.S.One in e.args:
        for term in e.args:
            if isinstance(term, sp.erf):
                rest = [a for a in e.args if a not in (term, sp.S.One)]
                return sp.Add(*rest) + 2 * normal_cdf(sp.sqrt(2) * term.args[0])
    return None


def _abs_from_sign(e):
    # u·sign(u) is |u|; written so, 1/(1+|x|) − x·sign(x)/(1+|x|)² collapses on `together`.
    if isinstance(e, sp.Mul):
        for f in e.args:
            if isinstance(f, sp.sign) and f.args[0] in e.args:
                rest = [a for a in e.args if a not in (f, f.args[0])]
                return sp.Mul(*rest) * sp.Abs(f.args[0])
    return None


REWRITES: tuple[Rewrite, ...] = (
    Rewrite("sigmoid", "1/(1+e^{-v}) overflows in e^{-v} for v → −∞", _sigmoid_from_reciprocal),
    Rewrite("sigmoid-ratio", "e^{v}/(1+e^{v}) is inf/inf for v → +∞", _sigmoid_from_ratio),
    Rewrite("softplus", "log(1+e^{v}) overflows for v → +∞", _softplus_from_log),
    Rewrite("log1p", "log(1+u) loses u's digits for small u", _log1p_from_log),
    Rewrite("expm1", "e^{v}−1 cancels for small v", _expm1_from_difference),
    Rewrite("normal-cdf", "1+erf(u) cancels for u → −∞", _normal_cdf_from_erf),
    Rewrite("abs", "u·sign(u) is |u|", _abs_from_sign),
)


def _rewrite_node(e: sp.Basic) -> sp.Basic:
    for rule in REWRITES:
        new = rule.apply(e)
        if new is not None:
            return new
    return e


def stabilise(expr: sp.Expr) -> sp.Expr:
    """Apply :data:`REWRITES` bottom-up until nothing changes.

    Parameters
    ----------
    expr : sympy.Expr
        Any expression.

    Returns
    -------
    sympy.Expr
        An equal expression in which every recognised unsafe spelling is replaced.

    """
    for _ in range(20):
        new = _bottom_up(expr)
        if new == expr:
            return new
        expr = new
    return expr


def _bottom_up(e: sp.Basic) -> sp.Basic:
    if not e.args or isinstance(e, sp.Symbol):
        return e
    args = tuple(_bottom_up(a) for a in e.args)
    if args != e.args:
        e = e.func(*args)
    return _rewrite_node(e)


def _rational_form(expr: sp.Expr) -> sp.Expr:
    # One fraction with an expanded numerator and the denominators' product kept
    # factored: −y/ŷ + (1−y)/(1−ŷ) becomes (ŷ − y)/(ŷ(1 − ŷ)).
    numerator, denominator = sp.fraction(sp.together(expr))
    return sp.expand(numerator) / denominator


def tidy(expr: sp.Expr) -> sp.Expr:
    """Pick the shortest of a few cheap equal forms (never ``simplify``, which is slow).

    ``together`` collapses rational derivatives such as softsign's; ``factor_terms``
    pulls common factors such as σ out of SiLU's. Each candidate is re-stabilised.
    """
    candidates = [expr]
    for transform in (sp.together, sp.factor_terms, _rational_form):
        try:
            candidates.append(stabilise(transform(expr)))
        except (sp.PolynomialError, TypeError, ValueError):
            # A transform that does not apply to this expression is simply skipped.
            continue
    return min(candidates, key=lambda e: (sp.count_ops(e), sp.default_sort_key(e)))
