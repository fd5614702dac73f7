"""Activations: f(x) differentiated rule by rule, then the declared algebra and the form in y.

The chain starts from d/dx f(x), applies the rule table until no derivative is left,
substitutes the inner functions back, shows the algebra the declaration asks for
(:class:`~derive.spec.Rearrange`), reaches the engine's derivative
(:func:`derive.calculus.derivation.derive_activation`) and, where one exists, writes it
in terms of the output y = f(x).
"""

from __future__ import annotations

from functools import cache

import sympy as sp

from derive.calculus.kinks import normalise_kinks
from derive.calculus.steps.recording import derivation_steps, record_derivative
from derive.calculus.steps.records import ActivationSteps
from derive.spec import Activation, x, y


def function_symbol(op) -> sp.Expr:
    """f(x): an undefined function standing for the declaration in printed chains."""
    return sp.Function("f", real=True)(x)


@derivation_steps.register
def _(op: Activation) -> ActivationSteps:
    return _activation_steps(op)


@cache
def _activation_steps(op: Activation) -> ActivationSteps:
    from derive.calculus.derivation import derive_activation

    derivation = derive_activation(op)
    shown = op.shown_as or (normalise_kinks(op.expr, x),)
    definition = shown[0]
    f = function_symbol(op)
    avoid = {p.latex for p in op.params if p.latex}
    in_output = op.grad_in_output if op.grad_in_output is not None else derivation.in_output
    output = (y, in_output) if in_output is not None else None
    chain = record_derivative(definition, x, function=f, result=derivation.derivative,
                              output=output, avoid=avoid, rearrange=op.rearrange,
                              output_identities=op.output_identities)
    params = tuple(
        (p, record_derivative(definition, p.symbol, function=f, result=grad, avoid=avoid))
        for p, grad in derivation.param_grads
    )
    return ActivationSteps(op, f, definition, chain, params, tuple(shown))

