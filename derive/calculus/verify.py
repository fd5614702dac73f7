"""Checks a declaration must pass before it enters the catalogue."""

from __future__ import annotations

from functools import singledispatch

import numpy as np
import sympy as sp

from derive.errors import DeclarationError
from derive.spec import Activation, Loss, VectorFunction, x, y


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
    if op.grad_in_output is None:
        return
    values = dict(op.defaults) | {n.symbol: n.eval_value.subs(op.defaults) for n in op.noise}
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
