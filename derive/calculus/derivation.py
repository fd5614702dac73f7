"""Declaration → derivation: the stage every printer (Numba, LaTeX) reads from."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import sympy as sp

from derive.calculus.kinks import find_kinks, normalise_kinks
from derive.calculus.stability import stabilise, tidy
from derive.spec import Activation, Param, x, y


@dataclass(frozen=True)
class ActivationDerivation:
    """Everything derived from one activation declaration.

    Attributes
    ----------
    op : Activation
        The declaration.
    forward : sympy.Expr
        f in kink normal form with stable spellings.
    derivative : sympy.Expr
        df/dx from ``diff``, stable and tidied, in terms of x.
    in_output : sympy.Expr or None
        df/dx with y standing for f(x) (the declared rule, or one found by substitution).
    param_grads : tuple of (Param, sympy.Expr)
        df/dp for every learnable parameter.
    kinks : tuple of float
        Kink locations at the default parameters.

    """

    op: Activation
    forward: sp.Expr
    derivative: sp.Expr
    in_output: sp.Expr | None
    param_grads: tuple[tuple[Param, sp.Expr], ...]
    kinks: tuple[float, ...]


def differentiate(expr: sp.Expr, var: sp.Symbol) -> sp.Expr:
    """``diff`` followed by the stability rewrites and a cheap tidy-up."""
    return tidy(stabilise(sp.diff(expr, var)))


def output_form(derivative: sp.Expr, forward: sp.Expr) -> sp.Expr | None:
    """Write ``derivative`` in terms of y = ``forward`` when substitution removes x.

    This finds σ' = y(1 − y) and tanh' = 1 − y² without a rule per function: the rule
    lives in each function's own derivative (see :mod:`derive.calculus.functions`).
    """
    if forward == x:
        return None
    candidate = derivative.subs(forward, y)
    if x in candidate.free_symbols or y not in candidate.free_symbols:
        return None
    return candidate


@cache
def derive_activation(op: Activation) -> ActivationDerivation:
    """Derive an activation's gradient from its declaration.

    Parameters
    ----------
    op : Activation
        The declaration.

    Returns
    -------
    ActivationDerivation
        The stable forward form, the derivative (also in terms of the output where one
        exists), the learnable parameters' derivatives and the kinks.

    """
    forward = stabilise(normalise_kinks(op.expr, x))
    derivative = differentiate(forward, x)
    if op.grad_in_output is not None:
        in_output = stabilise(normalise_kinks(op.grad_in_output, x))
    else:
        in_output = output_form(derivative, forward)
    param_grads = tuple((p, differentiate(forward, p.symbol)) for p in op.learnable)
    kinks = find_kinks(forward, x, op.defaults)
    return ActivationDerivation(op, forward, derivative, in_output, param_grads, kinks)
