"""The records of a derivation: steps, chains and what each kind of declaration yields.

Nothing here differentiates or checks; :mod:`.rules` applies the rules,
:mod:`.checking` checks the chains, :mod:`.recording` writes them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

import sympy as sp

from derive.errors import DeriveError
from derive.spec import Activation, Param

#: Rule keys, in the order a reader meets them; templates hold one sentence per key.
RULES = (
    "definition", "sum", "constant", "constant_factor", "identity", "power",
    "power_as_exp", "exp", "log", "product", "quotient", "chain", "chain_linear",
    "named_function",
    "piecewise", "abs", "sign", "substitute_back",
    # the algebra a declaration asks to show after the rules (spec.Rearrange)
    "split_product", "use_identity", "common_denominator", "expand", "cancel",
    "divide_terms",
    "rewrite", "in_terms_of_output",
    # over indexed sums (losses, layers): the notes' way of differentiating Σ
    "drop_cases", "open_sum", "constant_terms", "log_quotient", "log_sigmoid",
    "factor_out", "one_hot", "name_output",
    "chain_layer", "connected", "kronecker", "eliminate_deltas",
    # layers computed in steps: through the steps that read an array; a sum that is zero
    "chain_steps", "zero_sum",
    # row-wise vector functions (softmax): the Jacobian and its product with a gradient
    "delta", "split_terms", "common_factor", "jacobian", "distribute", "delta_sum",
    "name_softmax",
    # a layer's softmax step: its Jacobian substituted in the chain through it
    "row_jacobian",
)
#: Names for inner functions, in order of use.
INNER_NAMES = ("u", "v", "w", "z", "s", "q", "g", "h")
#: Points each step is checked at, and the relative tolerance of the check.
CHECK_POINTS = 5
CHECK_TOLERANCE = 1e-9
#: The loss a layer's (or a vector function's) gradients are of; δ = ∂E/∂out upstream.
LOSS_NAME = sp.Symbol("E")


class StepError(DeriveError):
    """A recorded step that does not follow from its predecessor (a bug in a rule)."""



class NoRuleError(StepError):
    """No rule of the table applies (as opposed to a rule that gave a wrong step)."""


@dataclass(frozen=True)
class Step:
    """One rule applied once.

    Attributes
    ----------
    rule : str
        The rule's key (one of :data:`RULES`).
    before, after : sympy.Expr
        The whole expression before and after; undifferentiated parts are unevaluated
        ``sympy.Derivative`` nodes.
    focus : sympy.Expr or None
        The derivative node the rule rewrote (None for whole-expression steps).
    result : sympy.Expr or None
        What ``focus`` became.
    inner : tuple of (sympy.Symbol, sympy.Expr)
        For ``chain``: the inner function introduced and its definition; for
        ``substitute_back``: the one substituted; for ``in_terms_of_output``: y and f(x).
    identities : tuple of tuple of sympy.Expr
        Equalities the step uses, each a chain left = ... = right: a named function's
        derivative rule, the definitions of the named functions a ``rewrite``
        introduces, the identities of a declared :class:`~derive.spec.Rearrange`. Each
        link is checked (:func:`check_identities`).
    quote : tuple of sympy.Expr
        What the prose of the step names: the term an opened sum keeps, the indices
        that must coincide for an output to depend on a weight, renamed indices.
    folded : tuple of (str, sympy.Expr)
        Trivial rules (:data:`SWEEPING`) done in the same step, each with one
        derivative it cleared (d/dx x for ``identity``), so the prose can say so in a
        clause instead of a numbered step of its own.

    """

    rule: str
    before: sp.Expr
    after: sp.Expr
    focus: sp.Expr | None = None
    result: sp.Expr | None = None
    inner: tuple[tuple[sp.Expr, sp.Expr], ...] = ()
    identities: tuple[tuple[sp.Expr, ...], ...] = ()
    quote: tuple[sp.Expr, ...] = ()
    folded: tuple[tuple[str, sp.Expr], ...] = ()


@dataclass(frozen=True)
class StepChain:
    """A checked derivation of d(expr)/d(var).

    Attributes
    ----------
    var : sympy.Symbol
        The variable of differentiation.
    start : sympy.Expr
        The first expression, e.g. ``Derivative(f(x), x)``.
    steps : tuple of Step
        The rules applied, in order; ``steps[i].before`` is ``steps[i-1].after``.
    definitions : tuple of (sympy.Expr, sympy.Expr)
        What the chain's names stand for: the function's name f(x), the inner
        functions u, v, ... and the output y. Used to check the steps.
    expansions : tuple of (name, value)
        For chains over indexed sums: names replaced before differentiating — a
        symbol (the loss E) by its expression, an array (s, ŷ) by a ``Lambda`` of its
        indices.
    instance : tuple of (sympy.Symbol, int)
        Sizes and free indices at which an indexed chain is checked (sums unrolled).
    samples : tuple of (sympy.IndexedBase, str)
        How an array's elements are drawn for the check: ``"rows"`` for targets whose
        rows sum to one; otherwise uniformly in (0.1, 0.9).
    case : sympy.Symbol or None
        The case (batch element) a loss derivation fixes; printers omit it once the
        sum over cases has been dropped.

    """

    var: sp.Symbol
    start: sp.Expr
    steps: tuple[Step, ...]
    definitions: tuple[tuple[sp.Expr, sp.Expr], ...]
    expansions: tuple[tuple[sp.Expr, sp.Expr], ...] = ()
    instance: tuple[tuple[sp.Symbol, int], ...] = ()
    samples: tuple[tuple[sp.IndexedBase, str], ...] = ()
    case: sp.Symbol | None = None

    @property
    def result(self) -> sp.Expr:
        """The last expression of the chain."""
        return self.steps[-1].after if self.steps else self.start

    def rules(self) -> tuple[str, ...]:
        """The rule keys in order (handy in tests and prose)."""
        return tuple(s.rule for s in self.steps)

    def outer_first(self) -> tuple[sp.Symbol, ...]:
        """The chain's inner-function names, outermost derivative first (:func:`outer_first`)."""
        return outer_first(self.definitions)



@dataclass(frozen=True)
class Rewrite:
    """What one rule does to one derivative node."""

    rule: str
    result: sp.Expr
    inner: tuple[tuple[sp.Expr, sp.Expr], ...] = ()
    identities: tuple[tuple[sp.Expr, sp.Expr], ...] = ()
    quote: tuple[sp.Expr, ...] = ()


def D(expr: sp.Expr, var: sp.Symbol) -> sp.Derivative:
    """An unevaluated derivative: what is still to be differentiated."""
    return sp.Derivative(expr, var, evaluate=False)


class NameSupply:
    """Fresh names for inner functions, skipping names already in use."""

    def __init__(self, avoid: Iterable[str]):
        avoid = set(avoid)
        self._names: Iterator[str] = (n for n in _candidates() if n not in avoid)
        self.issued: list[tuple[sp.Symbol, sp.Expr]] = []

    def fresh(self, definition: sp.Expr) -> sp.Symbol:
        """The next unused inner-function symbol (real, so |u|' = sign(u)) for ``definition``."""
        u = sp.Symbol(next(self._names), real=True)
        self.issued.append((u, definition))
        return u

    def outer_first(self) -> tuple[sp.Symbol, ...]:
        """The names issued so far, outermost derivative first (:func:`outer_first`)."""
        return outer_first(self.issued)


def outer_first(definitions: Iterable[tuple[sp.Expr, sp.Expr]]) -> tuple[sp.Symbol, ...]:
    """Inner-function names in the order the chain rule writes their derivatives.

    The notes write f′(g(x)) · g′(x): the outer derivative first. Names are issued as the
    chain rule meets the functions, and most are met from the outside in (u, then v inside
    u's derivative by x); but a name defined in terms of another, v = cosh(u) in
    d/du ln cosh(u), was issued to take the derivative by u apart, and d/dv ln(v) comes
    before d/du cosh(u). So each name goes before the earliest name its definition holds,
    or last.
    """
    order: list[sp.Symbol] = []
    for name, definition in definitions:
        if not isinstance(name, sp.Symbol):
            continue
        held = [i for i, u in enumerate(order) if sp.sympify(definition).has(u)]
        if held:
            order.insert(min(held), name)
        else:
            order.append(name)
    return tuple(order)


def _candidates() -> Iterator[str]:
    yield from INNER_NAMES
    k = 1
    while True:
        yield from (f"{n}_{k}" for n in INNER_NAMES)
        k += 1



class OpenSum(sp.Expr):
    r"""A sum written out term by term around the term(s) a derivation keeps.

    ``OpenSum(body, ((j, 0, K - 1),), (k,))`` is :math:`\sum_{j=0}^{K-1}` body, printed
    as body(0) + ⋯ + body(k) + ⋯ + body(K − 1) — the notes' "abrir a soma". It
    evaluates as the ``Sum`` it stands for.
    """

    def __new__(cls, body, limits, picks):
        """``body`` summed over ``limits``, written around the term at ``picks``."""
        limits = sp.Tuple(*[sp.Tuple(*lim) for lim in limits])
        return sp.Expr.__new__(cls, sp.sympify(body), limits, sp.Tuple(*picks))

    @property
    def body(self) -> sp.Expr:
        """The summand."""
        return self.args[0]

    @property
    def limits(self) -> tuple:
        """(index, low, high) of each summation index."""
        return tuple(self.args[1])

    @property
    def picks(self) -> tuple:
        """The value of each index in the term that is kept."""
        return tuple(self.args[2])

    @property
    def free_symbols(self):
        """The symbols of the sum, its summation indices excepted."""
        bound = {lim[0] for lim in self.limits}
        free = self.body.free_symbols - bound
        for _, low, high in self.limits:
            free |= low.free_symbols | high.free_symbols
        return free | set().union(*(p.free_symbols for p in self.picks))

    def as_sum(self) -> sp.Sum:
        """The plain ``Sum``."""
        return sp.Sum(self.body, *self.limits)

    def term(self, values) -> sp.Expr:
        """The summand at index values ``values`` (one per limit)."""
        return self.body.xreplace({lim[0]: v for lim, v in zip(self.limits, values,
                                                                strict=True)})

    def kept(self) -> sp.Expr:
        """The term the derivation keeps."""
        return self.term(self.picks)

    def doit(self, **hints):
        """The value of the sum (the ``Sum``'s)."""
        return self.as_sum().doit(**hints)



@dataclass(frozen=True)
class ActivationSteps:
    """The recorded derivations of one activation.

    Attributes
    ----------
    op : Activation
        The declaration.
    function : sympy.Expr
        f(x): the name the derivation starts from.
    definition : sympy.Expr
        The expression f stands for, as the derivation starts from it: the first form
        the declaration is shown as (tanh as sinh/cosh), else the declaration's
        expression (kinks in normal form).
    shown : tuple of sympy.Expr
        Every form the definition is written in, ``definition`` first.
    derivative : StepChain
        df/dx, ending with the engine's derivative and, where it exists, the form in y.
    params : tuple of (Param, StepChain)
        ∂f/∂p for each learnable parameter.

    """

    op: Activation
    function: sp.Expr
    definition: sp.Expr
    derivative: StepChain
    params: tuple[tuple[Param, StepChain], ...]
    shown: tuple[sp.Expr, ...] = ()



@dataclass(frozen=True)
class LossSteps:
    """The recorded derivation of a loss's gradient with respect to one prediction.

    Attributes
    ----------
    op : Loss
        The declaration.
    name : sympy.Symbol
        The loss's name in printed chains (printed as ``op.latex``).
    definition : sympy.Expr
        The loss as the derivation starts from it (the declaration, or e.g. the
        cross-entropy of the softmax), with the printed indices.
    chain : StepChain
        ∂L/∂pred[c, k], ending in the gradient of the output k it was taken for.
    engine : sympy.Expr
        The engine's dense gradient (what the kernel computes) with the printed indices.
    index_gradient : sympy.Expr or None
        The gradient for integer labels t (the "index" encoding), where declared.
    rows : tuple of (str, sympy.Expr)
        Per target encoding, the loss of case n as the kernel computes it (stable form).
    """

    op: object
    name: sp.Symbol
    definition: sp.Expr
    chain: StepChain
    engine: sp.Expr | None
    index_gradient: sp.Expr | None
    rows: tuple[tuple[str, sp.Expr], ...]



@dataclass(frozen=True)
class GradientSteps:
    """One gradient of a layer.

    Attributes
    ----------
    array : sympy.IndexedBase
        The input, weight or intermediate differentiated by.
    element : sympy.Indexed
        The element, with the printed free indices (W[j, i]).
    chain : StepChain or None
        The recorded derivation (None where the layer is only shown as derived).
    result : sympy.Expr
        The gradient: the chain's result, checked equal to the engine's.
    route : str
        ``"rules"`` (the sum opened, as in the notes), ``"kronecker"`` (SymPy's
        Kronecker deltas, eliminated), ``"routed"`` (deltas that test a position the
        data chose, an arg-max, left standing) or ``"derived"`` (the engine's result
        only).
    """

    array: sp.IndexedBase
    element: sp.Indexed
    chain: StepChain | None
    result: sp.Expr
    route: str


@dataclass(frozen=True)
class LayerSteps:
    """The recorded derivations of a layer's gradients.

    Attributes
    ----------
    op : Layer
        The declaration.
    out : sympy.Indexed
        The output element with the printed indices.
    expr : sympy.Expr
        Its definition with the printed indices.
    steps : tuple of (sympy.Indexed, sympy.Expr)
        Intermediate arrays (a mean, a variance, a mask) and their definitions.
    upstream : sympy.IndexedBase
        δ = ∂E/∂out.
    gradients : tuple of GradientSteps
        Inputs first, then weights.
    intermediates : tuple of GradientSteps
        Gradients of the intermediate arrays, in the order backward computes them.
    """

    op: object
    out: sp.Indexed
    expr: sp.Expr
    steps: tuple
    upstream: sp.IndexedBase
    gradients: tuple[GradientSteps, ...]
    intermediates: tuple[GradientSteps, ...]
    #: Counts the steps divide by, named: ((m, N·H·W),) — printed with the sizes.
    counts: tuple = ()



@dataclass(frozen=True)
class VectorSteps:
    """The recorded derivations of a row-wise vector function.

    Attributes
    ----------
    op : VectorFunction
        The declaration.
    element : sympy.Indexed
        output[n, k], as a lecture names it (softmax_k).
    definition : sympy.Expr
        What it stands for (e^{z_k} / Σ_i e^{z_i}).
    jacobian : StepChain
        ∂output[n, k]/∂arg[n, j], checked at k ≠ j and at k = j.
    vjp : StepChain
        ∂E/∂arg[n, j] with the upstream gradient, checked; what the kernel computes.
    case : sympy.Symbol
        The case index, which printers omit.
    """

    op: object
    element: sp.Indexed
    definition: sp.Expr
    jacobian: StepChain
    vjp: StepChain
    case: sp.Symbol



def with_step(chain: StepChain, index: int, **changes) -> StepChain:
    """A copy of ``chain`` with one step changed (to plant errors in tests)."""
    steps = list(chain.steps)
    steps[index] = replace(steps[index], **changes)
    if "after" in changes and index + 1 < len(steps):
        steps[index + 1] = replace(steps[index + 1], before=changes["after"])
    return replace(chain, steps=tuple(steps))


def sympified(identities) -> tuple[tuple[sp.Expr, ...], ...]:
    """Declared identities (chains a = b = ...) with every side a SymPy expression."""
    return tuple(tuple(sp.sympify(e) for e in identity) for identity in identities)
