"""Numerically stable rewrites, as a table of named rules.

Each rule recognises one unsafe spelling and replaces it by a named function whose
printer evaluates it without overflow or cancellation. The rules run bottom-up to a fixed
point, on declarations before differentiation (so derivatives come out in the named,
stable forms) and on the derivatives after it. The rules that introduce a named function
are declared by that function (:mod:`derive.calculus.functions`); the rules here introduce
SymPy's own stable functions.
"""

from __future__ import annotations

import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p

from derive.calculus.functions import NAMED_FUNCTIONS, StableRewrite, sigmoid


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


def _abs_from_sign(e):
    # u·sign(u) is |u|; written so, 1/(1+|x|) − x·sign(x)/(1+|x|)² collapses on `together`.
    if isinstance(e, sp.Mul):
        for f in e.args:
            if isinstance(f, sp.sign) and f.args[0] in e.args:
                rest = [a for a in e.args if a not in (f, f.args[0])]
                return sp.Mul(*rest) * sp.Abs(f.args[0])
    return None


def _log_cosh_from_log(e):
    # cosh v overflows for |v| > 710 though ln cosh v ≈ |v| − ln 2 is small; with
    # cosh v = e^{|v|}(1 + e^{−2|v|})/2 the exponential never exceeds 1.
    if isinstance(e, sp.log) and isinstance(e.args[0], sp.cosh):
        v = e.args[0].args[0]
        return sp.Abs(v) + sp.log(1 + sp.exp(-2 * sp.Abs(v))) - sp.log(2)
    return None


def _tanh_from_sigmoid(e):
    # c(1 − 2σ(−2v)) is c·tanh v, and loses every digit of it for small v (σ ≈ ½ there).
    if not isinstance(e, sp.Add):
        return None
    for c in (a for a in e.args if a.is_Number):
        for term in e.args:
            coeff, factor = term.as_independent(sigmoid, as_Add=False)
            if coeff == -2 * c and isinstance(factor, sigmoid):
                rest = [a for a in e.args if a not in (term, c)]
                return sp.Add(*rest) + c * sp.tanh(-factor.args[0] / 2)
    return None


def _odd_from_abs(e):
    # f(|v|)·sign(v) is f(v) for an odd f (tanh): one call, and no kink at v = 0.
    if not isinstance(e, sp.Mul):
        return None
    for f in e.args:
        if isinstance(f, sp.tanh) and isinstance(f.args[0], sp.Abs):
            v = f.args[0].args[0]
            if sp.sign(v) in e.args:
                rest = [a for a in e.args if a not in (f, sp.sign(v))]
                return sp.Mul(*rest) * sp.tanh(v)
    return None


#: Rewrites into SymPy's own stable functions. Each named function declares its own
#: (:attr:`~derive.calculus.functions.NamedFunction.stable_rewrites`).
GENERAL_REWRITES: tuple[StableRewrite, ...] = (
    StableRewrite("log1p", "log(1+u) loses u's digits for small u", _log1p_from_log,
                  lambda v: sp.log(1 + v)),
    StableRewrite("expm1", "e^{v}−1 cancels for small v", _expm1_from_difference,
                  lambda v: 3 * sp.exp(v) - 3),
    StableRewrite("abs", "u·sign(u) is |u|", _abs_from_sign, lambda v: v * sp.sign(v)),
    StableRewrite("log-cosh", "cosh(v) overflows for |v| > 710", _log_cosh_from_log,
                  lambda v: sp.log(sp.cosh(v))),
    StableRewrite("tanh-sigmoid", "1 − 2σ(−2v) cancels for small v", _tanh_from_sigmoid,
                  lambda v: 1 - 2 * sigmoid(-2 * v)),
    StableRewrite("odd-abs", "tanh(|v|)·sign(v) is tanh(v)", _odd_from_abs,
                  lambda v: sp.tanh(sp.Abs(v)) * sp.sign(v)),
)


def rewrites() -> tuple[StableRewrite, ...]:
    """Every stability rule, in the order they are tried on a node.

    The named functions' rules come first: they are the more specific spellings
    (log(1+e^{v}) is softplus before it is a log(1+u)).
    """
    named = tuple(rule for f in NAMED_FUNCTIONS.values() for rule in f.stable_rewrites)
    return named + GENERAL_REWRITES


def _rewrite_node(e: sp.Basic, rules: tuple[StableRewrite, ...]) -> sp.Basic:
    for rule in rules:
        new = rule.apply(e)
        if new is not None:
            return new
    return e


def stabilise(expr: sp.Expr) -> sp.Expr:
    """Apply :func:`rewrites` bottom-up until nothing changes.

    Parameters
    ----------
    expr : sympy.Expr
        Any expression.

    Returns
    -------
    sympy.Expr
        An equal expression in which every recognised unsafe spelling is replaced.

    """
    rules = rewrites()
    for _ in range(20):
        new = _bottom_up(expr, rules)
        if new == expr:
            return new
        expr = new
    return expr


def _bottom_up(e: sp.Basic, rules: tuple[StableRewrite, ...]) -> sp.Basic:
    if not e.args or isinstance(e, sp.Symbol):
        return e
    args = tuple(_bottom_up(a, rules) for a in e.args)
    if args != e.args:
        e = e.func(*args)
    return _rewrite_node(e, rules)


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
