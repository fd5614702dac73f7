"""Recorded derivations: the rules applied one at a time, each step checked.

A derivation is a chain of expressions. The first is d/dx f(x); each later one comes
from its predecessor by one rule applied to one unevaluated ``sympy.Derivative`` node
(the sum rule, the chain rule with a named inner function u, ...), in the style of the
course notes (seed 004, section 6.2). Once no derivative is left, the inner functions
are substituted back, the result is rearranged into the engine's derivative
(:func:`derive.calculus.derivation.derive_activation`) and, where one exists, written
in terms of the output y = f(x).

Every step is checked to equal its predecessor at seeded random points before the chain
is returned, so a wrong rule cannot reach a printed page. ``simplify`` is never used.

Rules are chosen by the type of the expression under the derivative
(:func:`local_rule`, a ``functools.singledispatch``); declarations are turned into chains
by :func:`derivation_steps`, dispatched on the declaration's type.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from functools import cache, singledispatch

import numpy as np
import sympy as sp
from sympy.core.function import AppliedUndef

from derive.calculus.functions import NAMED, explicit
from derive.calculus.kinks import normalise_kinks
from derive.calculus.verify import evaluate
from derive.errors import DeriveError
from derive.spec import Activation, Layer, Loss, Param, VectorFunction, x, y

#: Rule keys, in the order a reader meets them; templates hold one sentence per key.
RULES = (
    "definition", "sum", "constant", "constant_factor", "identity", "power",
    "power_as_exp", "exp", "log", "product", "quotient", "chain", "named_function",
    "piecewise", "abs", "sign", "substitute_back",
    # the algebra a declaration asks to show after the rules (spec.Rearrange)
    "split_product", "use_identity", "common_denominator", "expand", "cancel",
    "rewrite", "in_terms_of_output",
    # over indexed sums (losses, layers): the notes' way of differentiating Σ
    "drop_cases", "open_sum", "constant_terms", "log_quotient", "log_sigmoid",
    "factor_out", "one_hot", "name_output", "back_to_index",
    "chain_layer", "connected", "kronecker", "eliminate_deltas",
    # row-wise vector functions (softmax): the Jacobian and its product with a gradient
    "delta", "split_terms", "common_factor", "jacobian", "distribute", "delta_sum",
)
#: Rules applied to every matching derivative at once: the notes drop all constant
#: terms in one breath ("todos os termos que não possuem o índice k ... são constantes").
#: They teach nothing after the first time: when a rule leaves such derivatives behind,
#: they are done in the same step (``Step.folded``) rather than in a numbered one.
SWEEPING = ("constant", "identity")
#: Names for inner functions, in order of use.
INNER_NAMES = ("u", "v", "w", "z", "s", "q", "g", "h")
#: Points each step is checked at, and the relative tolerance of the check.
CHECK_POINTS = 5
CHECK_TOLERANCE = 1e-9


class StepError(DeriveError):
    """A recorded step that does not follow from its predecessor (a bug in a rule)."""


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
        self.issued: list[sp.Symbol] = []

    def fresh(self) -> sp.Symbol:
        """The next unused inner-function symbol (real, so |u|' = sign(u))."""
        u = sp.Symbol(next(self._names), real=True)
        self.issued.append(u)
        return u


def _candidates() -> Iterator[str]:
    yield from INNER_NAMES
    k = 1
    while True:
        yield from (f"{n}_{k}" for n in INNER_NAMES)
        k += 1


# --- the rule table: one handler per expression type --------------------------------


def depends(g: sp.Expr, var) -> bool:
    """Whether ``g`` may depend on ``var``.

    For an array element such as ŷ[c, k] every element of the same array counts
    (ŷ[c, j] is ŷ[c, k] when j = k): only a sum opened term by term tells them apart.
    """
    if isinstance(var, sp.Indexed):
        return any(a.base == var.base for a in g.atoms(sp.Indexed))
    return g.has(var)


def trivial_rule(node: sp.Derivative) -> Rewrite | None:
    """The rule for a constant or for the variable itself, whatever their type."""
    g, var = node.expr, node.variables[0]
    if not depends(g, var):
        return Rewrite("constant", sp.S.Zero)
    if g == var:
        return Rewrite("identity", sp.S.One)
    return None


def local_rule(node: sp.Derivative, names: NameSupply) -> Rewrite:
    """The rule that applies to one derivative node, and what it gives.

    Constants and the variable itself are recognised first (:func:`trivial_rule`);
    otherwise the handler for the type of the differentiated expression decides.
    """
    return trivial_rule(node) or rule_for(node.expr, node.variables[0], names)


@singledispatch
def rule_for(g, var, names: NameSupply) -> Rewrite:
    """Differentiate ``g`` (which depends on ``var``) by one rule, chosen by type."""
    raise StepError(
        f"no derivation rule for {type(g).__name__} (in {g}).",
        where="derive.calculus.steps",
        fix="Did you add a new kind of expression? Register a handler with rule_for.register.",
    )


@rule_for.register
def _(g: sp.Add, var, names):
    return Rewrite("sum", sp.Add(*[D(t, var) for t in g.args]))


def _is_denominator(f: sp.Expr, var) -> bool:
    return (isinstance(f, sp.Pow) and f.exp.is_number and f.exp.is_negative
            and depends(f.base, var))


def _quotient(numer: sp.Expr, denom: sp.Expr, var) -> Rewrite:
    """(n/d)' = (n'd − n d')/d², with n' and d' left to later steps."""
    return Rewrite("quotient", (D(numer, var) * denom - numer * D(denom, var)) / denom**2)


@rule_for.register
def _(g: sp.Mul, var, names):
    const = sp.Mul(*[f for f in g.args if not depends(f, var)])
    dependent = sp.Mul(*[f for f in g.args if depends(f, var)])
    if const != 1:
        return Rewrite("constant_factor", const * D(dependent, var))
    factors = sp.Mul.make_args(g)
    denominators = [f for f in factors if _is_denominator(f, var)]
    if denominators:
        numer = sp.Mul(*[f for f in factors if f not in denominators])
        denom = sp.Mul(*[f.base ** (-f.exp) for f in denominators])
        return _quotient(numer, denom, var)
    terms = [
        sp.Mul(*[D(f, var) if j == i else f for j, f in enumerate(factors)])
        for i in range(len(factors))
    ]
    return Rewrite("product", sp.Add(*terms))


@rule_for.register
def _(g: sp.Pow, var, names):
    base, exponent = g.args
    if depends(exponent, var):
        # a^v has no rule of its own in the notes: write it as e^{v ln a} and go on.
        return Rewrite("power_as_exp", D(sp.exp(exponent * sp.log(base)), var))
    if base == var:
        return Rewrite("power", exponent * var ** (exponent - 1))
    if exponent == -1:
        # 1/g: the notes use the quotient rule here (σ' in seed 004, eq. 7.3).
        return _quotient(sp.S.One, base, var)
    return _chain(g, base, lambda u: u**exponent, var, names)


def _chain(g, inner, outer, var, names: NameSupply) -> Rewrite:
    u = names.fresh()
    return Rewrite("chain", D(outer(u), u) * D(inner, var), inner=((u, inner),))


@rule_for.register
def _(g: sp.Function, var, names):
    if len(g.args) != 1:
        return rule_for.dispatch(object)(g, var, names)
    (arg,) = g.args
    if arg != var:
        return _chain(g, arg, g.func, var, names)
    return function_rule(g, var)


@rule_for.register
def _(g: sp.Piecewise, var, names):
    return Rewrite("piecewise", sp.Piecewise(*[(D(e, var), c) for e, c in g.args]))


@singledispatch
def function_rule(g, var) -> Rewrite:
    """The derivative of F(var) for a function F applied to the variable itself.

    Named functions (σ, softplus, tanh, erf, Φ, ...) carry their own derivative
    (``fdiff``); the rule records it as an identity so the prose can quote it.
    """
    derivative = g.fdiff()
    if derivative.has(sp.DiracDelta) or derivative.has(sp.Derivative):
        return rule_for.dispatch(object)(g, var, None)
    return Rewrite("named_function", derivative, identities=((D(g, var), derivative),))


@function_rule.register
def _(g: sp.exp, var):
    return Rewrite("exp", g)


@function_rule.register
def _(g: sp.log, var):
    return Rewrite("log", 1 / var)


@function_rule.register
def _(g: sp.Abs, var):
    # d|u|/du = sign(u) for u ≠ 0; at 0 sign gives 0, PyTorch's subgradient.
    return Rewrite("abs", sp.sign(var))


@function_rule.register
def _(g: sp.sign, var):
    # sign is constant on each side of 0; its derivative is 0 there (and 0 at the kink
    # by convention) — never DiracDelta.
    return Rewrite("sign", sp.S.Zero)


# --- recording ------------------------------------------------------------------------


def _derivatives(expr: sp.Expr) -> list[sp.Derivative]:
    """Unevaluated derivative nodes, in a fixed (pre-order) order."""
    return [e for e in sp.preorder_traversal(expr) if isinstance(e, sp.Derivative)]


def apply_rule(expr: sp.Expr, names: NameSupply) -> Step:
    """Apply one rule to ``expr``: first the trivial ones, then the outermost derivative.

    Constants and d/dx x are cleared first, all at once (:data:`SWEEPING`), which keeps
    the expressions short. Otherwise the derivative with respect to the earliest inner
    function is taken (d/du F(u) before du/dx, the order they are printed and read in),
    and failing that the first derivative node in pre-order.

    Parameters
    ----------
    expr : sympy.Expr
        The current expression; it contains at least one ``Derivative``.
    names : NameSupply
        Where the chain rule takes its inner function's name from.

    Returns
    -------
    Step
        The rule, before and after.

    """
    nodes = _derivatives(expr)
    trivial = {n: r for n in nodes if (r := trivial_rule(n)) is not None}
    folded: tuple = ()
    if trivial:
        focus, rewrite = next(iter(trivial.items()))
        swap = {n: r.result for n, r in trivial.items() if r.rule == rewrite.rule}
        after = expr.xreplace(swap)
    else:
        rank = {u: i for i, u in enumerate(names.issued)}
        focus = min(nodes, key=lambda n: rank.get(n.variables[0], len(rank)))
        rewrite = local_rule(focus, names)
        after, folded = fold_trivial(expr.xreplace({focus: rewrite.result}))
    return Step(rewrite.rule, expr, after, focus, rewrite.result,
                rewrite.inner, rewrite.identities, rewrite.quote, folded)


def fold_trivial(expr: sp.Expr) -> tuple[sp.Expr, tuple[tuple[str, sp.Expr], ...]]:
    """Do the trivial derivatives a rule left behind (constants, d/dx x) at once.

    Returns
    -------
    (sympy.Expr, tuple of (str, sympy.Expr))
        The expression without them, and each trivial rule used with one derivative
        it cleared (in the order met), for the prose.
    """
    found = {n: r for n in _derivatives(expr) if (r := trivial_rule(n)) is not None}
    if not found:
        return expr, ()
    used: dict[str, sp.Expr] = {}
    for node, rewrite in found.items():
        used.setdefault(rewrite.rule, node)
    return (expr.xreplace({n: r.result for n, r in found.items()}),
            tuple((rule, used[rule]) for rule in SWEEPING if rule in used))


def _named_identities(before: sp.Expr, after: sp.Expr) -> tuple[tuple[sp.Expr, sp.Expr], ...]:
    """Definitions of the named functions (σ, softplus, Φ) that ``after`` introduces.

    Each is stated at an argument it is used at in ``after`` (σ(x) = 1/(1 + e^{−x})),
    never at a name an earlier step gave to something else (the inner function u).
    """
    seen = {type(f) for f in before.atoms(*NAMED)}
    uses = sorted(after.atoms(*NAMED), key=sp.default_sort_key)
    first = {}
    for f in uses:
        if type(f) not in seen:
            first.setdefault(type(f), f)
    return tuple((f, explicit(f)) for F, f in first.items())


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
        step = apply_rule(current, names)
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
        steps.append(Step(r.rule, current, r.form, identities=_sympified(r.identities)))
        current = r.form
    # A declared form that is the result written factor by factor ends the chain itself.
    if result is not None and result != current and current.doit() != result:
        steps.append(Step("rewrite", current, result,
                          identities=_named_identities(current, result)))
        current = result
    if output is not None:
        y_symbol, in_output = output
        shown = function if function is not None else expr
        definitions.append((y_symbol, shown))
        steps.append(Step("in_terms_of_output", current, in_output,
                          inner=((y_symbol, shown),),
                          identities=_sympified(output_identities)))
    chain = StepChain(var, start, tuple(steps), tuple(definitions))
    check_chain(chain)
    return chain


def _sympified(identities) -> tuple[tuple[sp.Expr, ...], ...]:
    return tuple(tuple(sp.sympify(e) for e in identity) for identity in identities)


# --- checking -------------------------------------------------------------------------


def materialise(expr: sp.Expr, definitions) -> sp.Expr:
    """``expr`` with every name replaced by what it stands for and every derivative done.

    Derivatives with respect to an inner function u are taken while u is still a
    symbol; only then is u replaced by its definition.
    """
    names = dict(definitions)
    undefs = {k: v for k, v in names.items() if isinstance(k, AppliedUndef)}
    expr = expr.xreplace(undefs).doit()
    for _ in range(len(names) + 1):
        new = expr.xreplace(names)
        if new == expr:
            break
        expr = new
    return explicit(expr.doit())


def _value(expr: sp.Expr, at: dict) -> complex | None:
    """High-precision value of ``expr`` at ``at``; None where it is not finite."""
    try:
        v = complex(evaluate(expr, at))
    except (TypeError, ValueError):
        try:
            v = complex(sp.N(expr.xreplace({k: sp.Float(t, 30) for k, t in at.items()}), 30))
        except (TypeError, ValueError):
            return None
    return v if math.isfinite(v.real) and math.isfinite(v.imag) else None


def check_points(symbols: Iterable[sp.Symbol], n: int = CHECK_POINTS, seed: int = 6):
    """Seeded values for ``symbols``: positive symbols in [0.5, 2], others in [−5, 5]."""
    rng = np.random.default_rng(seed)
    ordered = sorted(symbols, key=lambda s: s.name)
    points = []
    for _ in range(n):
        points.append({
            s: float(rng.uniform(0.5, 2.0) if s.is_positive else rng.uniform(-5.0, 5.0))
            for s in ordered
        })
    return points


def check_chain(chain: StepChain) -> None:
    """Check that every step of ``chain`` equals its predecessor at seeded points.

    Each expression is materialised (:func:`materialise`, or for indexed chains
    :func:`materialise_indexed` at the chain's instance) and evaluated in 30 digits
    at :data:`CHECK_POINTS` points; a step passes when it agrees with its predecessor
    to :data:`CHECK_TOLERANCE` (relative) wherever both are finite.

    Raises
    ------
    StepError
        Naming the first step that does not follow, the point and both values.

    """
    exprs = [chain.start] + [s.after for s in chain.steps]
    for i, step in enumerate(chain.steps):
        if step.before != exprs[i]:
            raise StepError(
                f"step {i + 1} ({step.rule}) does not start where step {i} ended.",
                where="recorded derivation",
            )
    if chain.instance:
        concrete = _indexed_concrete(chain, exprs)
        points = indexed_points(chain, concrete)
        concrete = [e.xreplace(_indexed_atoms_to_symbols(e)) for e in concrete]
    else:
        concrete = [materialise(e, chain.definitions) for e in exprs]
        symbols = set().union(*(e.free_symbols for e in concrete)) | {chain.var}
        points = check_points(symbols)
    previous = [_value(concrete[0], at) for at in points]
    for i, step in enumerate(chain.steps):
        values = [_value(concrete[i + 1], at) for at in points]
        for at, a, b in zip(points, previous, values, strict=True):
            if a is None and b is None:
                continue
            if a is None or b is None or abs(a - b) > CHECK_TOLERANCE * (1 + abs(a)):
                where = ", ".join(f"{s} = {v:.6g}" for s, v in at.items())
                raise StepError(
                    f"step {i + 1} ({step.rule}) does not follow from its predecessor: "
                    f"at {where} it gives {b} but the previous expression gives {a}.",
                    where=f"the derivation of {chain.start}",
                    fix="This is a bug in a derivation rule; please report it.",
                )
        previous = values
    check_identities(chain)


def check_identities(chain: StepChain) -> None:
    """Check every link a = b of every identity the steps of ``chain`` quote.

    Identities are evaluated like the steps (materialised, at seeded points; indexed
    chains at their instance, targets drawn as the chain says), so an identity a
    declaration quotes (1 − σ(x) = e^{−x}/(1 + e^{−x})) is as checked as a step.

    Raises
    ------
    StepError
        Naming the step, the identity's sides and a point where they differ.
    """
    links = [(i, a, b) for i, step in enumerate(chain.steps) for identity in step.identities
             for a, b in zip(identity, identity[1:], strict=False)]
    if not links:
        return
    sides = [e for _, a, b in links for e in (a, b)]
    if chain.instance:
        concrete = [materialise_indexed(e, chain) for e in sides]
        points = indexed_points(chain, concrete)
        concrete = [e.xreplace(_indexed_atoms_to_symbols(e)) for e in concrete]
    else:
        concrete = [materialise(e, chain.definitions) for e in sides]
        symbols = set().union(*(e.free_symbols for e in concrete)) | {chain.var}
        points = check_points(symbols)
    for n, (i, a, b) in enumerate(links):
        left, right = concrete[2 * n], concrete[2 * n + 1]
        for at in points:
            u, v = _value(left, at), _value(right, at)
            if u is None and v is None:
                continue
            if u is None or v is None or abs(u - v) > CHECK_TOLERANCE * (1 + abs(u)):
                where = ", ".join(f"{s} = {val:.6g}" for s, val in at.items())
                raise StepError(
                    f"step {i + 1} ({chain.steps[i].rule}) quotes {a} = {b}, but at "
                    f"{where} the sides are {u} and {v}.",
                    where=f"the derivation of {chain.start}",
                    fix="Correct the identity (in the declaration, or the rule that "
                        "quotes it).",
                )


# --- declarations → chains --------------------------------------------------------------


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


def with_step(chain: StepChain, index: int, **changes) -> StepChain:
    """A copy of ``chain`` with one step changed (to plant errors in tests)."""
    steps = list(chain.steps)
    steps[index] = replace(steps[index], **changes)
    if "after" in changes and index + 1 < len(steps):
        steps[index + 1] = replace(steps[index + 1], before=changes["after"])
    return replace(chain, steps=tuple(steps))


# --- indexed sums: the notes' way with Σ ---------------------------------------------------


class NoRuleError(StepError):
    """No rule of the table applies (as opposed to a rule that gave a wrong step)."""


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


def _aligned(g: sp.Sum, var: sp.Indexed) -> dict:
    """Summation indices of ``g`` that stand where ``var`` has its indices, and their pick.

    In Σ_j ŷ[c, j] differentiated by ŷ[c, k], j sits where ŷ[c, k] has k: the term
    j = k is the one that depends on the variable.
    """
    bound = {lim[0] for lim in g.limits}
    picks: dict = {}
    for a in sorted(g.function.atoms(sp.Indexed), key=sp.default_sort_key):
        if a.base != var.base:
            continue
        for pos, index in enumerate(a.indices):
            if index in bound and index not in picks:
                picks[index] = var.indices[pos]
    return picks


@rule_for.register
def _(g: sp.Sum, var, names):
    if not isinstance(var, sp.Indexed):
        raise NoRuleError(f"a sum differentiated by the scalar {var} has no rule.",
                     where="derive.calculus.steps")
    picks = _aligned(g, var)
    aligned = [lim for lim in g.limits if lim[0] in picks]
    others = [lim for lim in g.limits if lim[0] not in picks]
    if others:
        # Every term of these sums depends on the variable (a weight shared by all the
        # cases of a batch): the derivative of the sum is the sum of the derivatives.
        inner = sp.Sum(g.function, *aligned) if aligned else g.function
        return Rewrite("sum", sp.Sum(D(inner, var), *others))
    opened = OpenSum(g.function, aligned, [picks[lim[0]] for lim in aligned])
    return Rewrite("open_sum", D(opened, var), quote=_kept_quote(opened))


def _kept_quote(opened: OpenSum) -> tuple:
    """The kept term and the index equalities that select it (for the prose)."""
    return (opened.kept(), *[sp.Eq(lim[0], pick, evaluate=False)
                             for lim, pick in zip(opened.limits, opened.picks, strict=True)])


@rule_for.register
def _(g: OpenSum, var, names):
    return Rewrite("constant_terms", D(g.kept(), var), quote=_kept_quote(g))


@rule_for.register
def _(g: sp.Indexed, var, names):
    # Another element of the same array whose indices are not those of the variable.
    raise NoRuleError(f"{g} against {var}: open the sum that binds its indices first.",
                 where="derive.calculus.steps")


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

    def auto(self, max_steps: int = 200) -> Recorder:
        """Apply the rule table until no derivative is left, then substitute back."""
        inners = []
        while self.current.has(sp.Derivative):
            if len(self.steps) >= max_steps:
                raise StepError(f"the derivation of {self.start} did not finish in "
                                f"{max_steps} steps.", where="derive.calculus.steps")
            step = apply_rule(self.current, self.names)
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


def plain_sums(expr: sp.Expr) -> sp.Expr:
    """Opened sums, log-sum-exps and named softmax rows as plain ``Sum`` expressions."""
    from derive.calculus.indexed import lse, unname_softmax

    expr = expr.replace(lambda e: isinstance(e, OpenSum), lambda e: e.as_sum())
    expr = expr.replace(lambda e: isinstance(e, lse), lambda e: e.rewrite(sp.log))
    return unname_softmax(expr)


def _expand_names(expr: sp.Expr, expansions) -> sp.Expr:
    symbols = {k: v for k, v in expansions if not isinstance(k, sp.IndexedBase)}
    arrays = {k: v for k, v in expansions if isinstance(k, sp.IndexedBase)}
    for _ in range(len(expansions) + 1):
        new = expr.xreplace(symbols)
        if arrays:
            new = new.replace(lambda e: isinstance(e, sp.Indexed) and e.base in arrays,
                              lambda e: arrays[e.base](*e.indices))
        if new == expr:
            break
        expr = new
    return expr


def materialise_indexed(expr: sp.Expr, chain: StepChain) -> sp.Expr:
    """An indexed expression at the chain's instance, ready to evaluate.

    Names are expanded, sums unrolled, derivatives done and inner functions replaced by
    what they stand for.
    """
    at = dict(chain.instance)
    expr = plain_sums(_expand_names(expr, chain.expansions)).xreplace(at).doit()
    inners = dict(chain.definitions)
    for _ in range(len(inners) + 1):
        new = expr.xreplace(inners)
        if new == expr:
            break
        expr = new
    return plain_sums(_expand_names(expr, chain.expansions)).xreplace(at).doit()


def _indexed_concrete(chain: StepChain, exprs) -> list:
    concrete, renames = [], {}
    for i, e in enumerate(exprs):
        if i > 0 and chain.steps[i - 1].rule == "back_to_index":
            renames.update(dict(chain.steps[i - 1].inner))
        concrete.append(materialise_indexed(e.xreplace(renames), chain))
    return concrete


def _atom_symbol(a: sp.Indexed) -> sp.Symbol:
    return sp.Symbol(f"{a.base}[{','.join(map(str, a.indices))}]", real=True)


def _indexed_atoms_to_symbols(expr: sp.Expr) -> dict:
    return {a: _atom_symbol(a) for a in expr.atoms(sp.Indexed)}


def indexed_points(chain: StepChain, concrete, n: int = CHECK_POINTS, seed: int = 6):
    """Seeded values for every array element and scalar of the concrete expressions.

    Elements are drawn in (0.1, 0.9) (inside every logarithm's domain); arrays marked
    ``"rows"`` are normalised so that each row sums to one (one-hot-like targets).
    """
    atoms = sorted(set().union(*(e.atoms(sp.Indexed) for e in concrete)),
                   key=sp.default_sort_key)
    scalars = set().union(*(e.xreplace(_indexed_atoms_to_symbols(e)).free_symbols
                            for e in concrete)) - {_atom_symbol(a) for a in atoms}
    rows = {base for base, kind in chain.samples if kind == "rows"}
    rng = np.random.default_rng(seed)
    points = []
    for scalar in check_points(scalars, n, seed):
        values = {a: float(rng.uniform(0.1, 0.9)) for a in atoms}
        totals: dict = {}
        for a in atoms:
            if a.base in rows:
                key = (a.base, a.indices[:-1])
                totals[key] = totals.get(key, 0.0) + values[a]
        for a in atoms:
            if a.base in rows:
                values[a] /= totals[(a.base, a.indices[:-1])]
        points.append({**scalar, **{_atom_symbol(a): v for a, v in values.items()}})
    return points


def check_equal(a: sp.Expr, b: sp.Expr, chain: StepChain, what: str) -> None:
    """Check that ``a`` equals ``b`` at the chain's instance and points.

    Used where a derivation's result is compared with the engine's (e.g. a layer's
    recorded gradient with :func:`derive.calculus.derivation.derive_layer`'s).
    """
    probe = replace(chain, steps=(Step("rewrite", a, b),), start=a)
    try:
        check_chain(probe)
    except StepError as exc:
        raise StepError(f"{what}: the recorded result {a} is not the derived {b} "
                        f"({exc.message})", where="derive.calculus.steps") from None


# --- losses ---------------------------------------------------------------------------------

#: The case (batch element) and output a loss is differentiated at: ∂L/∂ŷ[c, k]. The sums
#: run over cases n and outputs j (the declaration's k, renamed so that k can be the
#: output we differentiate by, as in the notes); a softmax row sums over i.
CASE = sp.Symbol("c", integer=True, nonnegative=True)
ROW = sp.Symbol("i", integer=True, nonnegative=True)
#: Sizes and indices at which loss derivations are checked.
LOSS_INSTANCE = {"N": 2, "K": 3, "case": 1, "k": 2}
#: Opening a sum term by term is shown when the summand is at most this long.
OPEN_SUM_OPS = 12


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
        ∂L/∂pred[c, k], ending (after "back to index j") in the gradient of output j.
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


def loss_indices():
    """(n, j, k, N, K): the declaration's symbols the loss derivations print."""
    from derive.calculus.indexed import K, N, j, k, n

    return n, j, k, N, K


def printed_term(op) -> sp.Expr:
    """The declared summand with the printed indices: outputs j, softmax rows over i."""
    from derive.calculus.kinks import normalise_kinks

    n, j, k, _, _ = loss_indices()
    term = normalise_kinks(op.term, op.pred[n, k])
    return term.xreplace({j: ROW}).xreplace({k: j})


def _loss_recorder(op, var, name, whole, *, rows: bool):
    n, j, k, N, K = loss_indices()
    instance = {N: LOSS_INSTANCE["N"], K: LOSS_INSTANCE["K"], CASE: LOSS_INSTANCE["case"],
                k: LOSS_INSTANCE["k"]}
    samples = ((op.target, "rows"),) if rows else ()
    return Recorder(D(name, var), var, expansions=((name, whole),),
                    instance=tuple(instance.items()), samples=samples, case=CASE)


def _finish_loss(rec: Recorder, engine: sp.Expr, var, op=None) -> StepChain:
    """The declared algebra, the engine's form when shorter, then back to index j.

    The declaration's :class:`~derive.spec.Rearrange` forms are derivatives of the
    summand; here they are multiplied by the scale and written for the case c.
    """
    n, j, k, _, _ = loss_indices()
    for r in getattr(op, "rearrange", ()):
        rec.step(r.rule, op.scale * r.form.xreplace({n: CASE}),
                 identities=tuple(tuple(e.xreplace({n: CASE}) for e in identity)
                                  for identity in _sympified(r.identities)))
    if sp.count_ops(engine) < sp.count_ops(rec.current) and engine != rec.current:
        rec.step("rewrite", engine, identities=_named_identities(rec.current, engine))
    rec.step("back_to_index", rec.current.xreplace({k: j}), inner=((j, k),))
    chain = rec.chain()
    check_equal(chain.steps[-2].after, engine, chain, f"the gradient of {rec.start}")
    return chain


def _generic_loss_chain(op, name, whole, engine) -> StepChain:
    """Drop the cases, open the sum over outputs, drop its constant terms, then the rules."""
    n, j, k, N, K = loss_indices()
    var = op.pred[CASE, k]
    term = printed_term(op).xreplace({n: CASE})
    rec = _loss_recorder(op, var, name, whole, rows=False)
    rec.step("definition", D(whole, var), inner=((name, whole),))
    rec.step("drop_cases", D(op.scale * sp.Sum(term, (j, 0, K - 1)), var))
    kept = (term.xreplace({j: k}), sp.Eq(j, k, evaluate=False))
    if sp.count_ops(term) <= OPEN_SUM_OPS and not term.has(sp.Piecewise):
        rec.step("open_sum", D(op.scale * OpenSum(term, [(j, 0, K - 1)], [k]), var),
                 quote=kept)
    rec.step("constant_terms", D(op.scale * term.xreplace({j: k}), var), quote=kept)
    rec.auto()
    return _finish_loss(rec, engine, var, op)


def _softmax_ce_chain(op, name, whole, engine) -> StepChain:
    """CE of softmax: ln of a quotient, Σ_j y_j = 1, and ŷ − y at the end."""
    n, j, k, N, K = loss_indices()
    z, y = op.pred, op.target
    yhat = sp.IndexedBase("yhat", real=True)
    a, b = sp.symbols("a b", integer=True, nonnegative=True)
    row = sp.Sum(sp.exp(z[n, ROW]), (ROW, 0, K - 1))
    softmax = sp.Lambda((a, b), sp.exp(z[a, b]) / row.xreplace({n: a}))
    var = z[CASE, k]
    rec = _loss_recorder(op, var, name, whole, rows=True)
    rec.expansions += ((yhat, softmax),)
    ce = -sp.Sum(y[n, j] * sp.log(yhat[n, j]), (n, 0, N - 1), (j, 0, K - 1)) / N
    rec.step("definition", D(ce, var), inner=((name, ce),))
    rec.step("definition", D(ce.xreplace({yhat[n, j]: softmax(n, j)}), var),
             inner=((yhat[n, j], softmax(n, j)),))
    logs = -sp.Sum(y[n, j] * (z[n, j] - sp.log(row)), (n, 0, N - 1), (j, 0, K - 1)) / N
    rec.step("log_quotient", D(logs, var))
    case_row = row.xreplace({n: CASE})
    rec.step("drop_cases", D(-sp.Sum(y[CASE, j] * (z[CASE, j] - sp.log(case_row)),
                                      (j, 0, K - 1)) / N, var))
    linear = sp.Sum(y[CASE, j] * z[CASE, j], (j, 0, K - 1))
    targets = sp.Sum(y[CASE, j], (j, 0, K - 1))
    rec.step("factor_out", D(-(linear - sp.log(case_row) * targets) / N, var))
    rec.step("one_hot", D(-(linear - sp.log(case_row)) / N, var),
             identities=((targets, sp.S.One),))
    rec.auto()
    named = rec.current.xreplace({sp.exp(z[CASE, k]) / case_row: yhat[CASE, k]})
    if named == rec.current:
        named = rec.current.subs(sp.exp(z[CASE, k]) / case_row, yhat[CASE, k])
    rec.step("name_output", named, inner=((yhat[CASE, k], softmax(CASE, k)),))
    if named != (yhat[CASE, k] - y[CASE, k]) / N:
        rec.step("rewrite", (yhat[CASE, k] - y[CASE, k]) / N)
    rec.step("back_to_index", rec.current.xreplace({k: j}), inner=((j, k),))
    chain = rec.chain()
    check_equal(chain.steps[-2].after, engine, chain, f"the gradient of {op.name}")
    return chain


def _bce_logits_chain(op, name, whole, engine) -> StepChain:
    """BCE of σ(z): the logarithms of σ written with ln(1 + e^z), ending in σ(z) − y."""
    from derive.calculus.functions import sigmoid

    n, j, k, N, K = loss_indices()
    z, y = op.pred, op.target
    var = z[CASE, k]
    rec = _loss_recorder(op, var, name, whole, rows=False)
    s = sigmoid(z[n, j])
    bce = -op.scale * sp.Sum(y[n, j] * sp.log(s) + (1 - y[n, j]) * sp.log(1 - s),
                             (n, 0, N - 1), (j, 0, K - 1))
    rec.step("definition", D(bce, var), inner=((name, bce),))
    u = sp.Symbol("u", real=True)
    rec.step("log_sigmoid", D(whole, var), identities=(
        (sp.log(sigmoid(u)), u - sp.log(1 + sp.exp(u))),
        (sp.log(1 - sigmoid(u)), -sp.log(1 + sp.exp(u)))))
    term = printed_term(op).xreplace({n: CASE})
    rec.step("drop_cases", D(op.scale * sp.Sum(term, (j, 0, K - 1)), var))
    kept = (term.xreplace({j: k}), sp.Eq(j, k, evaluate=False))
    rec.step("open_sum", D(op.scale * OpenSum(term, [(j, 0, K - 1)], [k]), var), quote=kept)
    rec.step("constant_terms", D(op.scale * term.xreplace({j: k}), var), quote=kept)
    rec.auto()
    return _finish_loss(rec, engine, var, op)


#: Loss derivations with steps of their own; the others follow the notes' ½Σ recipe.
LOSS_SCRIPTS = {
    "softmax_cross_entropy": _softmax_ce_chain,
    "binary_cross_entropy_with_logits": _bce_logits_chain,
}


def _printed(expr: sp.Expr, free: dict) -> sp.Expr:
    """An engine expression with the printed indices: p, q → the given symbols."""
    from derive.calculus.indexed import p, q

    n, j, k, _, _ = loss_indices()
    return expr.xreplace({j: ROW}).xreplace({p: free.get("p", p), q: free.get("q", q)})


@derivation_steps.register
def _(op: Loss) -> LossSteps:
    return _loss_steps(op)


@cache
def _loss_steps(op: Loss) -> LossSteps:
    from derive.calculus.derivation import derive_loss

    n, j, k, N, K = loss_indices()
    derivation = derive_loss(op)
    name = sp.Symbol("L")
    whole = op.scale * sp.Sum(printed_term(op), (n, 0, N - 1), (j, 0, K - 1))
    dense = next((v for v in derivation.variants if v.encoding == "dense"), None)
    at = {"p": CASE, "q": k}
    if dense is not None:
        engine = _printed(dense.gradient, at)
    else:
        # Integer labels only: the derivation is that of the dense (one-hot) targets.
        engine = _dense_gradient(op)
    script = LOSS_SCRIPTS.get(op.name, _generic_loss_chain)
    chain = script(op, name, whole, engine)
    index = next((v for v in derivation.variants if v.encoding == "index"), None)
    index_gradient = None if index is None else _printed(index.gradient, {"p": CASE, "q": j})
    rows = tuple((v.encoding, v.row_value.xreplace({j: ROW}).xreplace({k: j}))
                 for v in derivation.variants)
    shown = chain.steps[0].inner[0][1] if chain.steps[0].inner else whole
    return LossSteps(op, name, shown, chain, engine.xreplace({k: j}), index_gradient, rows)


def _dense_gradient(op: Loss) -> sp.Expr:
    """∂L/∂pred[c, k] of a loss declared for integer labels, with one-hot targets y."""
    from derive.calculus.derivation import tidy
    from derive.calculus.indexed import eliminate_deltas, p, q

    n, j, k, N, K = loss_indices()
    whole = op.scale * sp.Sum(op.term, (n, 0, N - 1), (k, 0, K - 1))
    gradient = tidy(eliminate_deltas(sp.diff(whole, op.pred[p, q])))
    return gradient.xreplace({p: CASE, q: k})


# --- layers ---------------------------------------------------------------------------------

#: The loss a layer's gradients are of, and the upstream gradient δ = ∂E/∂out.
LOSS_NAME = sp.Symbol("E")
#: Index names a lecture uses instead of the declaration's (outputs j, as in the notes).
PRINTED_INDEX = {"o": "j"}
#: Sizes at which layer derivations are checked (others: 2); free indices sit inside.
LAYER_SIZES = {"N": 2, "I": 3, "O": 2, "H": 3, "W": 3, "D": 3, "KH": 2, "KW": 2, "S": 1,
               "P": 0}


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
        Kronecker deltas, eliminated) or ``"derived"`` (the engine's result only).
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


def _primed(symbol: sp.Symbol) -> sp.Symbol:
    return sp.Symbol(symbol.name + "'", **symbol.assumptions0)


def _rename_bound(expr: sp.Expr, avoid) -> sp.Expr:
    """Prime the summation indices of ``expr`` that clash with the names in ``avoid``."""
    avoid = set(avoid)

    def rename(e):
        clash = {lim[0]: _primed(lim[0]) for lim in e.limits if lim[0] in avoid}
        return e.xreplace(clash) if clash else e

    return expr.replace(lambda e: isinstance(e, sp.Sum | OpenSum), rename)


def _bound(expr: sp.Expr) -> set:
    """Summation indices of every sum in ``expr``."""
    return {lim[0] for e in sp.preorder_traversal(expr) if isinstance(e, sp.Sum | OpenSum)
            for lim in e.limits}


def layer_index_names(op) -> dict:
    """Declaration index → printed index (o → j unless j is already used)."""
    used = {str(s) for s in op.expr.free_symbols | op.out.free_symbols}
    for _, e in op.steps:
        used |= {str(s) for s in e.free_symbols}
    names = {}
    for sym in op.out.free_symbols | op.expr.free_symbols:
        if isinstance(sym, sp.Symbol) and sym.name in PRINTED_INDEX:
            new = PRINTED_INDEX[sym.name]
            if new not in used:
                names[sym] = sp.Symbol(new, **sym.assumptions0)
    return names


def _free_element(op, array, names, reads) -> sp.Indexed:
    """The element ∂E/∂A is taken at: indices named as where A is read, else p, q, r, u."""
    from derive.calculus.derivation import FREE

    dims = len(op.shape(array))
    occurrences = sorted((a for e in reads for a in e.atoms(sp.Indexed) if a.base == array),
                         key=sp.default_sort_key)
    indices = list(FREE[:dims])
    if occurrences:
        for pos, index in enumerate(occurrences[0].indices):
            if isinstance(index, sp.Symbol) and index not in indices[:pos]:
                indices[pos] = names.get(index, index)
    return array[tuple(indices)]


def _engine_printed(expr, names, element, free) -> sp.Expr:
    """An engine gradient in free indices p, q, ... with the printed names."""
    expr = _rename_bound(expr.xreplace(names), element.indices)
    return expr.xreplace(dict(zip(free, element.indices, strict=False)))


def layer_instance(op, element: sp.Indexed | None = None) -> dict:
    """Sizes (and the free indices of ``element``) at which a layer's steps are checked."""
    symbols = set()
    for _, shape in op.arrays:
        for d in shape:
            symbols |= sp.sympify(d).free_symbols
    for p in op.hyper:
        symbols.add(p.symbol)
    for _, value in op.sizes:
        symbols |= value.free_symbols
    at = {s: LAYER_SIZES.get(s.name, 2) for s in symbols if s not in dict(op.sizes)}
    for size, value in op.sizes:
        at[size] = int(value.xreplace(at))
    if element is not None:
        shape = op.shape(element.base)
        for pos, index in enumerate(element.indices):
            size = int(sp.sympify(shape[pos]).xreplace(at))
            at[index] = min(size - 1, pos + 1)
    return at


def _layer_gradient(op, array, names, out, expr, upstream, engine) -> GradientSteps:
    """∂E/∂A, recorded: the chain rule through the outputs, then the connected ones.

    Then the rule table (the sum opened, as in the notes), or SymPy's Kronecker deltas
    where the outputs read A at shifted indices and no sum opens around one term.
    """
    from derive.calculus.derivation import FREE

    element = _free_element(op, array, names, [expr])
    free = set(element.indices)
    printed_engine = _engine_printed(engine, names, element, FREE)
    out_indices = list(out.indices)
    pair = {i: (_primed(i) if i in free else i) for i in out_indices}
    fixed: dict = {}
    for a in expr.atoms(sp.Indexed):
        if a.base != array:
            continue
        for pos, index in enumerate(a.indices):
            if index in out_indices:
                if fixed.get(index, element.indices[pos]) != element.indices[pos]:
                    fixed = {}
                    break
                fixed[index] = element.indices[pos]
    shape = dict(zip(out_indices, op.shape(op.out.base), strict=True))
    out_base = out.base
    a_syms = sp.symbols(f"a0:{len(out_indices)}", integer=True)
    body = _rename_bound(expr, free | set(pair.values()))
    definition = sp.Lambda(a_syms, body.xreplace(dict(zip(out_indices, a_syms, strict=True))))
    pairing_idx = [pair[i] for i in out_indices]
    pairing = sp.Sum(upstream[tuple(pairing_idx)] * out_base[tuple(pairing_idx)],
                     *[(pair[i], 0, shape[i] - 1) for i in out_indices])
    instance = layer_instance(op, element)

    def recorder():
        rec = Recorder(D(LOSS_NAME, element), element,
                       expansions=((LOSS_NAME, pairing), (out_base, definition)),
                       instance=tuple(instance.items()))
        rec.step("chain_layer", sp.Sum(
            upstream[tuple(pairing_idx)] * D(out_base[tuple(pairing_idx)], element),
            *[(pair[i], 0, shape[i] - 1) for i in out_indices]))
        kept = [fixed.get(i, pair[i]) for i in out_indices]
        limits = [(pair[i], 0, shape[i] - 1) for i in out_indices if i not in fixed]
        term = upstream[tuple(kept)] * D(out_base[tuple(kept)], element)
        if fixed:
            rec.step("connected", sp.Sum(term, *limits) if limits else term,
                     quote=(out_base[tuple(pairing_idx)],
                            *[sp.Eq(pair[i], fixed[i]) for i in out_indices if i in fixed]))
        local = definition(*kept)
        inside = upstream[tuple(kept)] * D(local, element)
        primed = sorted({s for s in local.free_symbols | _bound(local)
                         if isinstance(s, sp.Symbol) and s.name.endswith("'")},
                        key=sp.default_sort_key)
        rec.step("definition", sp.Sum(inside, *limits) if limits else inside,
                 inner=((out_base[tuple(kept)], local),), quote=tuple(primed))
        return rec, local, kept, limits

    rec, local, kept, limits = recorder()
    try:
        rec.auto()
        route = "rules"
    except NoRuleError:
        rec, local, kept, limits = recorder()
        raw = upstream[tuple(kept)] * sp.diff(local, element)
        rec.step("kronecker", sp.Sum(raw, *limits) if limits else raw)
        rec.step("eliminate_deltas", printed_engine)
        route = "kronecker"
    chain = rec.chain()
    check_equal(chain.result, printed_engine, chain, f"∂E/∂{element} of {op.name}")
    result = chain.result
    if sp.count_ops(printed_engine) < sp.count_ops(result):
        result = printed_engine
    return GradientSteps(array, element, chain, result, route)


@derivation_steps.register
def _(op: Layer) -> LayerSteps:
    return _layer_steps(op)


@cache
def _layer_steps(op: Layer) -> LayerSteps:
    from derive.calculus.derivation import FREE, derive_layer

    derivation = derive_layer(op)
    names = layer_index_names(op)
    out = op.out.xreplace(names)
    expr = op.expr.xreplace(names)
    steps = tuple((t.xreplace(names), e.xreplace(names)) for t, e in op.steps)
    upstream = derivation.upstream
    reads = [e for _, e in steps] + [expr]
    gradients = []
    for array in op.inputs + op.weights:
        engine = derivation.gradient(array).expr
        simple = not op.steps and not any(op.padding and array == op.padding[1] for _ in [0])
        if simple:
            gradients.append(_layer_gradient(op, array, names, out, expr, upstream, engine))
        else:
            element = _free_element(op, array, names, reads)
            gradients.append(GradientSteps(array, element, None,
                                           _engine_printed(engine, names, element, FREE),
                                           "derived"))
    intermediates = []
    for g in derivation.intermediates:
        target = next(t for t, _ in steps if t.base == g.array)
        element = g.array[target.indices]
        intermediates.append(GradientSteps(g.array, element, None,
                                           _engine_printed(g.expr, names, element, FREE),
                                           "derived"))
    return LayerSteps(op, out, expr, steps, upstream, tuple(gradients), tuple(intermediates))


# --- row-wise vector functions (softmax): the Jacobian and the vector-Jacobian product ------

#: Sizes and indices at which a vector function's steps are checked; the Jacobian also at
#: k = j, where the Kronecker delta is 1.
VECTOR_INSTANCE = {"N": 2, "K": 3, "n": 1, "k": 2, "j": 1}


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


def _declared(rec: Recorder, recipe) -> Recorder:
    for r in recipe:
        rec.step(r.rule, r.form, inner=r.inner, identities=_sympified(r.identities),
                 quote=r.quote)
    return rec


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
    rec = _declared(Recorder(D(out[n, k], var), var, expansions=((out, definition),),
                             instance=tuple(at.items()), case=n), op.jacobian)
    jacobian = rec.chain()
    check_chain(replace(jacobian, instance=tuple((at | {k: at[j]}).items())))
    bound = sp.Symbol("r", integer=True, nonnegative=True)  # the declaration sums over j
    check_equal(op.shown_as, op.out.xreplace({j: bound}), jacobian,
                f"the form {op.name} is shown as")
    m = sp.Symbol("m", integer=True, nonnegative=True)
    pairing = sp.Sum(op.upstream[m, k] * out[m, k], (m, 0, N - 1), (k, 0, K - 1))
    rec = _declared(Recorder(D(LOSS_NAME, var), var,
                             expansions=((LOSS_NAME, pairing), (out, definition)),
                             instance=tuple((s, v) for s, v in at.items() if s != k), case=n),
                    op.vjp)
    return VectorSteps(op, out[n, k], op.shown_as, jacobian, rec.chain(), n)
