"""Activations: f(x) differentiated rule by rule, then the declared algebra and the form in y.

The chain starts from d/dx f(x), applies the rule table until no derivative is left,
substitutes the inner functions back, shows the algebra the declaration asks for
(:class:`~derive.spec.Rearrange`), reaches the engine's derivative
(:func:`derive.calculus.derivation.derive_activation`) and, where one exists, writes it
in terms of the output y = f(x).
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache

import sympy as sp

from derive.calculus.kinks import normalise_kinks
from derive.calculus.steps.checking import check_chain
from derive.calculus.steps.recording import derivation_steps, record_derivative
from derive.calculus.steps.records import ActivationSteps, Step, StepChain
from derive.spec import Activation, x, y

#: Rules whose line a student reads before any derivative is taken: what follows them
#: keeps its own line.
OPENING = ("definition",)
#: Rules that quote a known result and may be quoted together when they come in a row
#: (tanh's sinh' = cosh, then cosh' = sinh).
QUOTING = ("named_function",)


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
        (p, folded(record_derivative(definition, p.symbol, function=f, result=grad,
                                     avoid=avoid)))
        for p, grad in derivation.param_grads
    )
    return ActivationSteps(op, f, definition, folded(chain), params, tuple(shown))


def folded(chain: StepChain) -> StepChain:
    """The chain with the steps that teach nothing on a line of their own folded.

    A sum rule that only drops constant terms (d/dx[1 + e^{−x}] = d/dx e^{−x}, right
    after the quotient rule made that derivative) becomes a clause of the step before
    it; known derivatives quoted in a row become one step quoting them all. The result
    is checked like any recorded chain.

    Parameters
    ----------
    chain : StepChain
        A recorded chain.

    Returns
    -------
    StepChain
        The same derivation from the same start to the same end, in fewer steps.

    """
    out: list[Step] = []
    for s in chain.steps:
        before = out[-1] if out else None
        if before is not None and _drops_constants(s) and before.rule not in OPENING:
            out[-1] = replace(before, after=s.after,
                              folded=_clauses(before.folded + ((s.rule, s.focus),) + s.folded))
        elif before is not None and s.rule in QUOTING and s.rule == before.rule:
            out[-1] = replace(before, after=s.after, identities=before.identities + s.identities,
                              folded=_clauses(before.folded + s.folded))
        else:
            out.append(s)
    if len(out) == len(chain.steps):
        return chain
    result = replace(chain, steps=tuple(out))
    check_chain(result)
    return result


def _drops_constants(step: Step) -> bool:
    """A sum rule whose only effect is to drop constant terms: one derivative stays."""
    if step.rule != "sum" or not any(rule == "constant" for rule, _ in step.folded):
        return False
    return _count_derivatives(step.after) == _count_derivatives(step.before)


def _count_derivatives(expr: sp.Expr) -> int:
    return sum(isinstance(e, sp.Derivative) for e in sp.preorder_traversal(expr))


def _clauses(folded) -> tuple:
    """Each folded rule once: the sum rule first (it makes the constants), d/dx x = 1 last."""
    seen: dict = {}
    for rule, node in folded:
        seen.setdefault(rule, node)
    return tuple(sorted(seen.items(), key=lambda item: (item[0] != "sum", item[0] == "identity")))

