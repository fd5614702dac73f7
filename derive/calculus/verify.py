"""Checks a declaration must pass before it enters the catalogue."""

from __future__ import annotations

from functools import singledispatch

import numpy as np
import sympy as sp

from derive.errors import DeclarationError
from derive.spec import (
    Activation,
    Layer,
    Loss,
    Optimizer,
    Regulariser,
    VectorFunction,
    x,
    y,
)


def evaluate(expr: sp.Expr, values: dict, digits: int = 30) -> float:
    """Evaluate ``expr`` at ``values`` in high precision (no code is generated or run)."""
    exact = {k: sp.Float(v, digits) for k, v in values.items()}
    return float(sp.N(expr.xreplace(exact), digits))


def sample_points(op: Activation, kinks: tuple[float, ...], n: int = 7, seed: int = 0):
    """Seeded points inside the op's domain, kept at least 1e-3 away from every kink."""
    rng = np.random.default_rng(seed)
    lo, hi = op.domain
    points = rng.uniform(lo, hi, size=4 * n)
    far = [p for p in points if all(abs(p - k) > 1e-3 for k in kinks)]
    return far[:n]


@singledispatch
def verify_declaration(op) -> None:
    """Refuse a declaration that contradicts itself (dispatched on its type).

    Raises
    ------
    DeclarationError
        Naming the op and what is inconsistent.
    """
    raise TypeError(f"no verification for {type(op).__name__} — did you add a new kind?")


@verify_declaration.register
def _(op: Loss) -> None:
    from derive.calculus.derivation import derive_loss

    for variant in derive_loss(op).variants:
        if variant.gradient.has(sp.DiracDelta, sp.Derivative):
            raise DeclarationError(
                f"the {variant.encoding} gradient is not in closed form: {variant.gradient}",
                where=f"loss {op.name!r}",
                fix="Write kinks as Piecewise/Max and use functions with known derivatives.",
            )


@verify_declaration.register
def _(op: Layer) -> None:
    from derive.calculus.derivation import derive_layer

    for gradient in derive_layer(op).gradients:
        if gradient.expr.has(sp.Derivative, sp.DiracDelta):
            raise DeclarationError(
                f"the gradient for {gradient.array} is not in closed form: {gradient.expr}",
                where=f"layer {op.name!r}",
            )


@verify_declaration.register
def _(op: VectorFunction) -> None:
    from derive.calculus.derivation import derive_vector

    if derive_vector(op).vjp.has(sp.Derivative):
        raise DeclarationError("the vector-Jacobian product is not in closed form.",
                               where=f"vector function {op.name!r}")


@verify_declaration.register
def _(op: Activation) -> None:
    """Refuse an activation whose symbols or derivative rule are inconsistent.

    Raises
    ------
    DeclarationError
        Naming the op and what is inconsistent.

    """
    from derive.calculus.derivation import derive_activation

    allowed = {x} | {p.symbol for p in op.params} | {n.symbol for n in op.noise}
    stray = op.expr.free_symbols - allowed
    if stray:
        names = ", ".join(sorted(s.name for s in stray))
        raise DeclarationError(
            f"the expression uses {names}, which is neither x nor a declared parameter.",
            where=f"activation {op.name!r}",
            fix="Declare it with Param(...) or remove it.",
        )
    derivation = derive_activation(op)
    if derivation.derivative.has(sp.DiracDelta):
        raise DeclarationError(
            "the derivative contains DiracDelta.",
            where=f"activation {op.name!r}",
            fix="Write the kink as a Piecewise so its owner decides the subgradient.",
        )
    values = dict(op.defaults) | {n.symbol: n.eval_value.subs(op.defaults) for n in op.noise}
    for form in op.shown_as:
        for point in sample_points(op, derivation.kinks):
            at = values | {x: point}
            expected, shown = evaluate(derivation.forward, at), evaluate(form, at)
            if abs(shown - expected) > 1e-12 * (1 + abs(expected)):
                raise DeclarationError(
                    f"shown_as gives {form} = {shown!r} at x = {point!r}, but the "
                    f"expression gives {expected!r}.",
                    where=f"activation {op.name!r}",
                    fix="Correct the form shown or drop it.",
                )
    if op.grad_in_output is None:
        return
    for point in sample_points(op, derivation.kinks):
        at = values | {x: point}
        expected = evaluate(derivation.derivative, at)
        output = evaluate(derivation.forward, at)
        claimed = evaluate(op.grad_in_output, at | {y: output})
        if abs(claimed - expected) > 1e-12 * (1 + abs(expected)):
            raise DeclarationError(
                f"grad_in_output gives {claimed!r} at x = {point!r} but diff gives "
                f"{expected!r}.",
                where=f"activation {op.name!r}",
                fix="Correct the rule or drop it and let the engine find one.",
            )


@verify_declaration.register
def _(op: Regulariser) -> None:
    from derive.calculus.regularise import check_regulariser

    check_regulariser(op)


@verify_declaration.register
def _(op: Optimizer) -> None:
    """Refuse an optimizer whose equations are malformed or do not go downhill.

    The assignments must read as a program (every symbol assigned before it is used,
    each slot updated once, w last), per-step quantities must not depend on elements,
    and from a fresh state a zero gradient must leave w alone while a positive one
    lowers it — which catches a dropped minus sign, as in seed 004's eq. (6.14).

    Raises
    ------
    DeclarationError
        Naming the optimizer and what is inconsistent.
    """
    from derive.spec import g, lr, t, w

    where = f"optimizer {op.name!r}"
    params = [p.symbol for p in op.params]
    slots = [s.symbol for s in op.state]
    targets = [target for target, _ in op.updates]
    if not params or params[0] != lr:
        raise DeclarationError("the first parameter must be the learning rate lr.",
                               where=where, fix="Declare Param(lr, default) first.")
    if not targets or targets[-1] != w or targets.count(w) != 1:
        raise DeclarationError("the weight w must be assigned once, by the last update.",
                               where=where, fix="End the updates with (w, ...).")
    repeated = sorted({s.name for s in targets if targets.count(s) > 1})
    readonly = sorted(s.name for s in set(targets) & {g, t, *params})
    unused = sorted(s.name for s in set(slots) - set(targets))
    for problem, names, fix in (
        ("is assigned more than once", repeated, "Give each quantity its own symbol."),
        ("is an input and cannot be assigned", readonly, "Assign a new symbol instead."),
        ("is a state slot that no update assigns", unused, "Update it or drop the Slot."),
    ):
        if names:
            raise DeclarationError(f"{', '.join(names)} {problem}.", where=where, fix=fix)
    known = {w, g, t, *params, *slots}
    for target, rhs in op.updates:
        stray = sorted(s.name for s in rhs.free_symbols - known)
        if stray:
            raise DeclarationError(
                f"the update of {target.name} uses {', '.join(stray)}, which is neither an "
                "input, a parameter, a slot nor assigned before it.",
                where=where, fix="Declare it with Param(...)/Slot(...) or assign it earlier.")
        known.add(target)
    varying = op.varying
    per_element_slot = sorted(s.name for s in op.state if s.per_step and s.symbol in varying)
    if per_element_slot:
        raise DeclarationError(
            f"the per-step slot {', '.join(per_element_slot)} depends on per-element values.",
            where=where, fix="Make it a per-element Slot (per_step=False).")
    kinds = [target in varying for target in targets]
    if kinds != sorted(kinds):
        raise DeclarationError(
            "a per-step quantity is assigned after a per-element one.", where=where,
            fix="Assign everything that depends only on t and the parameters first.")
    _check_first_step(op, where)


def _check_first_step(op: Optimizer, where: str) -> None:
    """Refuse a first step that is not the declared decay plus a downhill move.

    From a fresh state a zero gradient must move w by the declared decay and no more,
    and a positive gradient must move it below that. The decay may use only w and the
    parameters: a term with the gradient or the state in it is part of the step, not a
    decay. It is checked at several weights, so a decay declared as a constant where the
    update scales w (or the other way round) is refused.
    """
    from derive.spec import g, t, w

    stray = sorted(s.name for s in op.decay.free_symbols - {w, *op.defaults})
    if stray:
        raise DeclarationError(
            f"the decay {op.decay} uses {', '.join(stray)}; a decay may depend only on w "
            "and the parameters.", where=where,
            fix="Keep gradient- and state-dependent terms in the updates, not in decay.")
    fresh = op.defaults | {t: 1} | {s.symbol: s.init for s in op.state}

    def first_step(weight: float, gradient: float) -> float:
        values = fresh | {w: weight, g: gradient}
        for target, rhs in op.updates:
            values[target] = evaluate(rhs, values)
        return values[w] - weight

    for weight in (0.5, -2.0, 3.0):
        decay = evaluate(op.decay, op.defaults | {w: weight})
        still = first_step(weight, 0.0)
        if abs(still - decay) > 1e-12 * (1 + abs(decay)):
            if op.decay == 0:
                fix = ("A term of the weight update does not involve the gradient. If it is "
                       "a decoupled weight decay, declare it: decay=<the change of w it makes> "
                       "(e.g. -lr*weight_decay*w); otherwise remove it.")
            else:
                fix = (f"The declared decay gives {decay!r} here: make decay= equal the part "
                       "of the weight update that does not involve the gradient.")
            raise DeclarationError(
                f"from a fresh state at w = {weight}, a zero gradient moves w by {still!r}, "
                f"but the declared decay is {decay!r}.", where=where, fix=fix)
        moved = first_step(weight, 1.0) - decay
        if not moved < 0.0:
            raise DeclarationError(
                f"from a fresh state at w = {weight}, a gradient of 1 moves w by {moved!r} "
                "besides the decay; a first step must go downhill.",
                where=where, fix="Check the signs of the updates: w should move against g.")
