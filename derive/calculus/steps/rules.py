"""Every rule of differentiation in one place: one handler per expression type.

:func:`rule_for` (a ``functools.singledispatch`` on the type of the expression under
the derivative) holds the rules of the notes — sum, product, quotient, power, chain —
and, for indexed sums, opening a sum around the term that depends on the variable;
:func:`function_rule` holds the derivatives of functions applied to the variable
itself (e^x, ln x, |x|, sign x, and the named functions, which carry their own).
A type without a handler fails with a message that names it.

:func:`apply_rule` applies one rule to an expression; :mod:`.recording` calls it until
no derivative is left.
"""

from __future__ import annotations

from functools import singledispatch

import sympy as sp

from derive.calculus.functions import NAMED, Terms, explicit
from derive.calculus.steps.records import (
    D,
    NameSupply,
    NoRuleError,
    OpenSum,
    Rewrite,
    Step,
    StepError,
)

#: Rules applied to every matching derivative at once: the notes drop all constant
#: terms in one breath ("todos os termos que não possuem o índice k ... são constantes").
#: They teach nothing after the first time: when a rule leaves such derivatives behind,
#: they are done in the same step (``Step.folded``) rather than in a numbered one.
SWEEPING = ("constant", "identity")


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
        f"no derivation rule for {type(g).__name__} (in {g}) — did you add a new type?",
        where="derive.calculus.steps",
        fix="Register a handler for it with rule_for.register in "
            "derive/calculus/steps/rules.py.",
    )


@rule_for.register
def _(g: sp.Add, var, names):
    return Rewrite("sum", sp.Add(*[D(t, var) for t in g.args]))


@rule_for.register
def _(g: Terms, var, names):
    # A sum written in a chosen order keeps it term by term through the derivation.
    return Rewrite("sum", Terms(*[D(t, var) for t in g.args]))


def _is_denominator(f: sp.Expr, var) -> bool:
    return (isinstance(f, sp.Pow) and f.exp.is_number and f.exp.is_negative
            and depends(f.base, var))


def _quotient(numer: sp.Expr, denom: sp.Expr, var) -> Rewrite:
    """(n/d)' = (n'd − n d')/d², with n' and d' left to later steps.

    The numerator keeps the order of the rule as the prose states it (g′h − gh′):
    SymPy's ``Add`` would reorder the terms until the rule is no longer recognisable.
    """
    numerator = Terms(D(numer, var) * denom, -numer * D(denom, var))
    return Rewrite("quotient", numerator / denom**2)


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
    u = names.fresh(inner)
    return Rewrite("chain", D(outer(u), u) * D(inner, var), inner=((u, inner),))


@rule_for.register
def _(g: sp.Function, var, names):
    if len(g.args) != 1:
        return rule_for.dispatch(object)(g, var, names)
    (arg,) = g.args
    if arg != var:
        return _linear_chain(g, arg, var, names) or _chain(g, arg, g.func, var, names)
    return function_rule(g, var)


def _linear_chain(g, inner, var, names: NameSupply) -> Rewrite | None:
    """F(a x + b) in one line, F'(a x + b)·a: an inner function with a constant derivative.

    Naming the inner function, differentiating it and substituting it back would take
    three numbered steps that teach nothing once the chain rule is known.
    """
    slope = sp.diff(inner, var)
    if depends(slope, var):
        return None
    u = sp.Dummy("u", real=True)
    outer = function_rule(g.func(u), u)
    if outer.result.has(sp.Derivative):
        return None
    result = slope * outer.result.xreplace({u: inner})
    return Rewrite("chain_linear", result, identities=((D(g, var), result),),
                   quote=(inner, slope))


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


# --- indexed sums: the notes' way with Σ ---------------------------------------------------


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


# --- applying one rule ------------------------------------------------------------------


def _derivatives(expr: sp.Expr) -> list[sp.Derivative]:
    """Unevaluated derivative nodes, in a fixed (pre-order) order."""
    return [e for e in sp.preorder_traversal(expr) if isinstance(e, sp.Derivative)]


def _has_constant_factor(node: sp.Derivative) -> bool:
    """Whether the product under ``node`` has a factor that does not depend on its variable."""
    g, var = node.expr, node.variables[0]
    return isinstance(g, sp.Mul) and depends(g, var) and any(
        not depends(f, var) for f in g.args)


def apply_rule(expr: sp.Expr, names: NameSupply, *, factors_first: bool = False) -> Step:
    """Apply one rule to ``expr``: first the trivial ones, then the outermost derivative.

    Constants and d/dx x are cleared first, all at once (:data:`SWEEPING`), which keeps
    the expressions short. Otherwise the derivative with respect to the earliest inner
    function is taken (d/du F(u) before du/dx, and d/dv ln(v) before d/du cosh(u) when
    v = cosh(u): the order they are printed and read in, :func:`.records.outer_first`),
    and failing that the first derivative node in pre-order. With ``factors_first``,
    every constant factor comes out first, all at once: a loss's terms each have one
    (y ln ŷ, (1 − y) ln(1 − ŷ)), and taken one term at a time, between the rules of the
    other terms, "a constant factor comes out" would be said once per term.

    Parameters
    ----------
    expr : sympy.Expr
        The current expression; it contains at least one ``Derivative``.
    names : NameSupply
        Where the chain rule takes its inner function's name from.
    factors_first : bool
        Take every constant factor out before any other rule (the trivial ones aside).

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
        after = tidy_terms(expr.xreplace(swap))
    elif factors_first and (factored := [n for n in nodes if _has_constant_factor(n)]):
        swap = {n: rule_for(n.expr, n.variables[0], names).result for n in factored}
        focus, rewrite = factored[0], Rewrite("constant_factor", swap[factored[0]])
        after, folded = fold_trivial(expr.xreplace(swap))
    else:
        rank = {u: i for i, u in enumerate(names.outer_first())}
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
    return (tidy_terms(expr.xreplace({n: r.result for n, r in found.items()})),
            tuple((rule, used[rule]) for rule in SWEEPING if rule in used))


def tidy_terms(expr: sp.Expr) -> sp.Expr:
    """Drop the terms a trivial rule made zero from sums written term by term.

    The quotient rule's 1′·h − 1·h′ becomes −h′ once 1′ = 0, not 0 − h′.
    """
    def kept(terms: Terms) -> sp.Expr:
        args = [t for t in terms.args if t != 0]
        if len(args) == len(terms.args):
            return terms
        return Terms(*args) if len(args) > 1 else (args[0] if args else sp.S.Zero)

    return expr.replace(lambda e: isinstance(e, Terms), kept)


def named_identities(before: sp.Expr, after: sp.Expr) -> tuple[tuple[sp.Expr, sp.Expr], ...]:
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


