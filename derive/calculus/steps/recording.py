"""Writing a derivation: the rule table run to the end, or steps given one by one.

:func:`record_derivative` differentiates a formula rule by rule (activations);
:class:`Recorder` lets a script give the steps the table cannot find by itself
(losses, layers, vector functions) and has the table do the rest. Both check the
chain before returning it. :func:`derivation_steps` turns a declaration into its
recorded derivations; each kind's script registers itself on it.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import singledispatch

import sympy as sp

from derive.calculus.steps.checking import check_chain
from derive.calculus.steps.records import (
    RULES,
    D,
    NameSupply,
    Step,
    StepChain,
    StepError,
    sympified,
)
from derive.calculus.steps.rules import apply_rule, named_identities
from derive.errors import DeriveError


def record_derivative(
    expr: sp.Expr,
    var: sp.Symbol,
    *,
    function: sp.Expr | None = None,
    result: sp.Expr | None = None,
    output: tuple[sp.Symbol, sp.Expr] | None = None,
    avoid: Iterable[str] = (),
    rearrange: Iterable = (),
    output_identities: tuple = (),
    max_steps: int = 200,
    factors_first: bool = False,
) -> StepChain:
    """Record the derivative of ``expr`` with respect to ``var``, one rule per step.

    Parameters
    ----------
    expr : sympy.Expr
        What to differentiate (kinks as ``Piecewise``).
    var : sympy.Symbol
        The variable.
    function : sympy.Expr, optional
        A name for ``expr``, e.g. ``Function("f")(x)``: the chain then starts from
        d/dx f(x) with a ``definition`` step.
    result : sympy.Expr, optional
        The form to end with (the engine's derivative); a ``rewrite`` step reaches it
        when the rules end elsewhere.
    output : (sympy.Symbol, sympy.Expr), optional
        (y, the derivative written with y = f(x)): adds an ``in_terms_of_output`` step.
    avoid : iterable of str
        Names the inner functions must not take (e.g. parameters printed as u).
    rearrange : iterable of Rearrange
        Algebra to show once the rules are done (:class:`~derive.spec.Rearrange`),
        before the ``rewrite`` to ``result`` (which it usually makes unnecessary).
    output_identities : tuple of tuple of sympy.Expr
        Equalities quoted by the ``in_terms_of_output`` step.
    max_steps : int
        A guard against a rule that never terminates.
    factors_first : bool
        Take every constant factor out at once, before the other rules
        (:func:`~derive.calculus.steps.rules.apply_rule`).

    Returns
    -------
    StepChain
        The steps, each checked to equal its predecessor.

    Raises
    ------
    StepError
        When a step does not follow from its predecessor, or no rule applies.

    """
    reserved = set(avoid) | {s.name for s in expr.free_symbols}
    names = NameSupply(reserved)
    definitions: list[tuple[sp.Expr, sp.Expr]] = []
    steps: list[Step] = []
    current = D(expr, var)
    start = current
    if function is not None:
        start = D(function, var)
        definitions.append((function, expr))
        steps.append(Step("definition", start, current))
    inners: list[tuple[sp.Expr, sp.Expr]] = []
    while current.has(sp.Derivative):
        if len(steps) >= max_steps:
            raise StepError(f"the derivation of {expr} did not finish in {max_steps} steps.",
                            where="derive.calculus.steps")
        step = apply_rule(current, names, factors_first=factors_first)
        steps.append(step)
        inners += step.inner
        current = step.after
    for u, definition in inners:
        if current.has(u):
            after = current.xreplace({u: definition})
            steps.append(Step("substitute_back", current, after, inner=((u, definition),)))
            current = after
    definitions += inners
    for r in rearrange:
        steps.append(Step(r.rule, current, r.form, identities=sympified(r.identities)))
        current = r.form
    # A declared form that is the result written factor by factor ends the chain itself.
    if result is not None and result != current and current.doit() != result:
        steps.append(Step("rewrite", current, result,
                          identities=named_identities(current, result)))
        current = result
    if output is not None:
        y_symbol, in_output = output
        shown = function if function is not None else expr
        definitions.append((y_symbol, shown))
        steps.append(Step("in_terms_of_output", current, in_output,
                          inner=((y_symbol, shown),),
                          identities=sympified(output_identities)))
    chain = StepChain(var, start, tuple(steps), tuple(definitions))
    check_chain(chain)
    return chain



class Recorder:
    """A derivation written step by step: some steps given, the rest by the rule table.

    Losses and layers need steps the rule table cannot find by itself (drop the sum
    over cases, Σ_j y_j = 1, only the outputs connected to a weight remain); they are
    given with :meth:`step`, and :meth:`auto` applies the table to what is left. The
    chain is checked when :meth:`chain` returns it, like every other.

    Parameters
    ----------
    start : sympy.Expr
        The first expression, e.g. ``Derivative(E, ŷ[c, k])``.
    var : sympy.Expr
        The variable (a symbol or an array element).
    expansions, instance, samples, case
        As in :class:`StepChain`.
    avoid : iterable of str
        Names inner functions must not take.
    """

    def __init__(self, start, var, *, expansions=(), instance=(), samples=(), case=None,
                 avoid=()):
        used = set(avoid) | {str(s) for s in start.free_symbols}
        for name, value in expansions:
            used |= {str(s) for s in getattr(value, "free_symbols", ())} | {str(name)}
        self.names = NameSupply(used)
        self.start = self.current = start
        self.var = var
        self.steps: list[Step] = []
        self.inners: list[tuple[sp.Expr, sp.Expr]] = []
        self.expansions = tuple(expansions)
        self.instance = tuple(instance)
        self.samples = tuple(samples)
        self.case = case

    def step(self, rule: str, after: sp.Expr, *, focus=None, result=None, inner=(),
             identities=(), quote=()) -> Recorder:
        """Record one given step (checked with the others by :meth:`chain`)."""
        if rule not in RULES:
            raise ValueError(f"unknown rule {rule!r}")
        self.steps.append(Step(rule, self.current, after, focus, result, tuple(inner),
                               tuple(identities), tuple(quote)))
        self.current = after
        return self

    def auto(self, max_steps: int = 200, *, factors_first: bool = False) -> Recorder:
        """Apply the rule table until no derivative is left, then substitute back.

        ``factors_first`` takes every constant factor out before the other rules
        (:func:`~derive.calculus.steps.rules.apply_rule`).
        """
        inners = []
        while self.current.has(sp.Derivative):
            if len(self.steps) >= max_steps:
                raise StepError(f"the derivation of {self.start} did not finish in "
                                f"{max_steps} steps.", where="derive.calculus.steps")
            step = apply_rule(self.current, self.names, factors_first=factors_first)
            self.steps.append(step)
            inners += step.inner
            self.current = step.after
        for u, definition in inners:
            if self.current.has(u):
                self.step("substitute_back", self.current.xreplace({u: definition}),
                          inner=((u, definition),))
        self.inners += inners
        return self

    def chain(self) -> StepChain:
        """The recorded chain, checked step by step."""
        chain = StepChain(self.var, self.start, tuple(self.steps), tuple(self.inners),
                          self.expansions, self.instance, self.samples, self.case)
        check_chain(chain)
        return chain


@singledispatch
def derivation_steps(op):
    """The recorded, checked derivations of a declaration (dispatched on its type).

    Raises
    ------
    DeriveError
        For kinds of declaration without step-by-step derivations yet.

    """
    kind = getattr(op, "kind", type(op).__name__)
    raise DeriveError(
        f"step-by-step derivations of a {kind} are not available yet.",
        where=f"{kind} {getattr(op, 'name', op)!r}",
        fix="Activations, losses and layers are supported; see `derive list`.",
    )

