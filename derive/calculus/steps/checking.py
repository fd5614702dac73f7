"""One way to check a derivation: materialise every expression, compare at seeded points.

Each expression of a chain is *materialised* — names replaced by what they stand for,
derivatives done, indexed sums unrolled at a small instance — and evaluated in 30
digits at seeded points; a step passes when it agrees with its predecessor. The
identities a step quotes are checked the same way, so nothing reaches a printed page
unchecked.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import replace

import numpy as np
import sympy as sp
from sympy.core.function import AppliedUndef

from derive.calculus.functions import explicit
from derive.calculus.steps.records import (
    CHECK_POINTS,
    CHECK_TOLERANCE,
    OpenSum,
    Step,
    StepChain,
    StepError,
)
from derive.calculus.verify import evaluate


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
            v = complex(sp.N(expr.xreplace({
                k: sp.Integer(t) if isinstance(t, int) else sp.Float(t, 30)
                for k, t in at.items()}), 30))
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


def _defined(chain: StepChain) -> dict:
    """Intermediate arrays of a layer (marked ``"defined"``) → their definitions."""
    marked = {base for base, kind in chain.samples if kind == "defined"}
    return {k: v for k, v in chain.expansions if k in marked}


def _expand_differentiated(expr: sp.Expr, defined: dict) -> sp.Expr:
    # An intermediate is replaced by its definition only where it is differentiated,
    # ∂t/∂A with the other intermediates held, as backpropagation takes each step.
    return expr.replace(
        lambda e: isinstance(e, sp.Derivative) and isinstance(e.expr, sp.Indexed)
        and e.expr.base in defined,
        lambda e: sp.Derivative(defined[e.expr.base](*e.expr.indices), *e.variables))


def materialise_indexed(expr: sp.Expr, chain: StepChain) -> sp.Expr:
    """An indexed expression at the chain's instance, ready to evaluate.

    Names are expanded, sums unrolled, derivatives done and inner functions replaced by
    what they stand for. Intermediates marked ``"defined"`` are expanded only where
    they are differentiated (their values come from their definitions instead:
    :func:`indexed_points`).
    """
    at = dict(chain.instance)
    defined = _defined(chain)
    if defined:
        chain = replace(chain, expansions=tuple((k, v) for k, v in chain.expansions
                                                if k not in defined))
        expr = _expand_differentiated(expr, defined)
    inners = dict(chain.definitions)
    # A derivative with respect to an inner function u is taken first and u replaced
    # while the sums are still closed: u may stand for a summand (u = x_{n,c} − μ_c).
    expr = expr.replace(
        lambda e: isinstance(e, sp.Derivative) and any(v in inners for v in e.variables),
        lambda e: e.doit())
    for _ in range(len(inners) + 1):
        new = expr.xreplace(inners)
        if new == expr:
            break
        expr = new
    expr = plain_sums(_expand_names(expr, chain.expansions)).xreplace(at).doit()
    for _ in range(len(inners) + 1):
        new = expr.xreplace(inners)
        if new == expr:
            break
        expr = new
    expr = plain_sums(_expand_names(expr, chain.expansions)).xreplace(at).doit()
    # Integer division in an index (a window's ⌊a/k⌋) evaluates once a is a number.
    from derive.calculus.indexed import floordiv

    return expr.replace(lambda e: isinstance(e, floordiv),
                        lambda e: sp.floor(e.args[0] / e.args[1]))


def _indexed_concrete(chain: StepChain, exprs) -> list:
    return [materialise_indexed(e, chain) for e in exprs]


def _atom_symbol(a: sp.Indexed) -> sp.Symbol:
    return sp.Symbol(f"{a.base}[{','.join(map(str, a.indices))}]", real=True)


def _indexed_atoms_to_symbols(expr: sp.Expr) -> dict:
    return {a: _atom_symbol(a) for a in expr.atoms(sp.Indexed)}


def indexed_points(chain: StepChain, concrete, n: int = CHECK_POINTS, seed: int = 6):
    """Seeded values for every array element and scalar of the concrete expressions.

    Elements are drawn in (0.1, 0.9) (inside every logarithm's domain); arrays marked
    ``"rows"`` are normalised so that each row sums to one (one-hot-like targets);
    arrays marked ``"defined"`` (a layer's mean, variance) take the values their
    definitions give, in the order marked, so that a step may use what the definition
    implies (the deviations from the mean add up to zero).
    """
    defined = _defined(chain)
    at = dict(chain.instance)
    atoms = set().union(*(e.atoms(sp.Indexed) for e in concrete))
    bodies = {}
    for a in sorted(atoms, key=sp.default_sort_key):
        if a.base in defined:
            bodies[a] = plain_sums(defined[a.base](*a.indices)).xreplace(at).doit()
    for _ in range(len(defined)):
        new = set().union(atoms, *(_body_atoms(b) for b in bodies.values()))
        for a in new - set(bodies):
            if a.base in defined:
                bodies[a] = plain_sums(defined[a.base](*a.indices)).xreplace(at).doit()
        atoms = new
    order = [base for base, kind in chain.samples if kind == "defined"]
    atoms = sorted(atoms, key=sp.default_sort_key)
    scalars = set().union(*(e.xreplace(_indexed_atoms_to_symbols(e)).free_symbols
                            for e in [*concrete, *bodies.values()]))
    scalars -= {_atom_symbol(a) for a in atoms}
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
        for base in order:
            for a in atoms:
                if a.base == base:
                    values[a] = _defined_value(bodies[a], {**scalar, **values})
        points.append({**scalar, **{_atom_symbol(a): v for a, v in values.items()}})
    return points


def _window(e):
    """The points of an arg-max's window, row-major (its flat positions in order)."""
    ranges = [range(int(lo), int(hi) + 1) for _, lo, hi in e.limits]
    for point in itertools.product(*ranges):
        yield dict(zip([lim[0] for lim in e.limits], point, strict=True))


def _body_atoms(body: sp.Expr) -> set:
    """The elements a definition reads, those of an arg-max's window included."""
    from derive.calculus.indexed import ArgMax

    atoms = {a for a in body.atoms(sp.Indexed) if all(i.is_number for i in a.indices)}
    for e in body.atoms(ArgMax):
        for at in _window(e):
            atoms |= e.body.xreplace(at).atoms(sp.Indexed)
    return atoms


def _defined_value(body: sp.Expr, values: dict) -> float:
    """The value of an intermediate's definition at drawn values (an arg-max by search)."""
    from derive.calculus.indexed import ArgMax

    def search(e):
        best, position = None, 0
        for flat, at in enumerate(_window(e)):
            v = float(e.body.xreplace(at).xreplace(values))
            if best is None or v > best:  # the first maximum, as PyTorch
                best, position = v, flat
        return sp.Integer(position)

    value = body.replace(lambda e: isinstance(e, ArgMax), search).xreplace(values)
    # An index stays an exact integer, so that ⌊a/k⌋ and a mod k select exactly.
    return int(value) if value.is_Integer else float(value)


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

