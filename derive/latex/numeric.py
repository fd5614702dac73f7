"""Fast high-precision evaluation of a SymPy expression in one variable.

The lecture's properties and graphs need thousands of values of f and f'. Calling
``sympy.N`` for each costs milliseconds; instead the expression tree is walked once and
turned into nested closures over mpmath (known functions as a table, one handler per
node type, like SymPy's printers). Nothing is generated as text or executed; a node
without a handler falls back to :func:`derive.calculus.verify.evaluate`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

import mpmath
import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p
from sympy.logic.boolalg import BooleanFalse, BooleanTrue

from derive.calculus.functions import NamedFunction
from derive.calculus.verify import evaluate

#: Digits carried: enough that tanh(40) is still visibly below 1.
DIGITS = 50

Value = Callable[[mpmath.mpf], object]

#: SymPy's own functions → mpmath function. derive's named functions declare their own
#: (``mpmath_value``).
FUNCTIONS: dict[type, Callable] = {
    sp.exp: mpmath.exp,
    sp.log: mpmath.log,
    sp.tanh: mpmath.tanh,
    sp.sinh: mpmath.sinh,
    sp.cosh: mpmath.cosh,
    sp.sin: mpmath.sin,
    sp.cos: mpmath.cos,
    sp.atan: mpmath.atan,
    sp.erf: mpmath.erf,
    sp.Abs: abs,
    sp.sign: mpmath.sign,
    expm1: mpmath.expm1,
    log1p: mpmath.log1p,
}
RELATIONS: dict[type, Callable] = {
    sp.StrictGreaterThan: operator.gt,
    sp.GreaterThan: operator.ge,
    sp.StrictLessThan: operator.lt,
    sp.LessThan: operator.le,
    sp.Equality: operator.eq,
    sp.Unequality: operator.ne,
}


def compile_numeric(expr: sp.Expr, var: sp.Symbol) -> Callable[[object], mpmath.mpf | None]:
    """A function of one number that evaluates ``expr`` at ``var`` = that number.

    Parameters
    ----------
    expr : sympy.Expr
        An expression whose only free symbol is ``var``.
    var : sympy.Symbol
        The variable.

    Returns
    -------
    callable
        ``f(t) -> mpmath.mpf | None`` for a float, string or mpf ``t``: the value in
        :data:`DIGITS` digits, or None where it is not a finite real number.

    """
    with mpmath.workdps(DIGITS):
        node = _closure(expr, var)

    def value(t):
        with mpmath.workdps(DIGITS):
            try:
                v = node(mpmath.mpf(t))
            except (ZeroDivisionError, ValueError, OverflowError):
                return None
            if isinstance(v, mpmath.mpc):
                if abs(v.imag) > abs(v.real) * mpmath.mpf(10) ** (-DIGITS + 5):
                    return None
                v = v.real
            return +v if mpmath.isfinite(v) else None

    return value


def _closure(e: sp.Basic, var: sp.Symbol) -> Value:
    if e == var:
        return lambda t: t
    if isinstance(e, (BooleanTrue, BooleanFalse)):
        c = bool(e)
        return lambda t: c
    if isinstance(e, sp.Rational):
        c = mpmath.mpf(e.p) / e.q
        return lambda t: c
    if e.is_number and not e.has(sp.Piecewise):
        c = mpmath.mpf(str(sp.N(e, DIGITS + 5)))
        return lambda t: c
    if isinstance(e, sp.Add):
        parts = [_closure(a, var) for a in e.args]
        return lambda t: mpmath.fsum(p(t) for p in parts)
    if isinstance(e, sp.Mul):
        parts = [_closure(a, var) for a in e.args]
        return lambda t: mpmath.fprod(p(t) for p in parts)
    if isinstance(e, sp.Pow):
        base, exponent = _closure(e.base, var), _closure(e.exp, var)
        return lambda t: mpmath.power(base(t), exponent(t))
    if isinstance(e, sp.Piecewise):
        branches = [(_closure(x, var), _closure(c, var)) for x, c in e.args]

        def piecewise(t):
            for value, cond in branches:
                if cond(t):
                    return value(t)
            return mpmath.nan

        return piecewise
    if type(e) in RELATIONS:
        rel, lhs, rhs = RELATIONS[type(e)], _closure(e.lhs, var), _closure(e.rhs, var)
        return lambda t: rel(lhs(t), rhs(t))
    if isinstance(e, sp.And):
        parts = [_closure(a, var) for a in e.args]
        return lambda t: all(p(t) for p in parts)
    if isinstance(e, sp.Or):
        parts = [_closure(a, var) for a in e.args]
        return lambda t: any(p(t) for p in parts)
    if isinstance(e, sp.Not):
        inner = _closure(e.args[0], var)
        return lambda t: not inner(t)
    fn = _mpmath_function(e)
    if fn is not None and len(e.args) == 1:
        arg = _closure(e.args[0], var)
        return lambda t: fn(arg(t))
    # Anything else is slow but still right.
    return lambda t: mpmath.mpf(evaluate(e, {var: float(t)}, digits=DIGITS))


def _mpmath_function(e: sp.Basic) -> Callable | None:
    """The mpmath function a one-argument function node evaluates with, if known."""
    if isinstance(e, NamedFunction):
        return e.mpmath_value
    return FUNCTIONS.get(type(e))
