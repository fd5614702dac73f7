"""A penalty's gradient, and an optimizer whose gradient is clipped and penalised.

The gradient of a regulariser's penalty is ``sympy.diff`` of the declared penalty; the
optimizer a network trains with then reads, in place of the loss's gradient g,

    g ← clip(g) + ∂R/∂w,

prepended to its update equations as one more statement. Lowering sees an ordinary
optimizer declaration, so the clipping and the penalty are computed inside the update's
single elementwise pass, with the strengths and the threshold as the kernel's arguments.
"""

from __future__ import annotations

import dataclasses
from functools import cache

import sympy as sp

from derive.calculus.steps import StepChain, derivation_steps, record_derivative
from derive.errors import DeclarationError
from derive.spec import Clip, Optimizer, Regulariser, g, w


@dataclasses.dataclass(frozen=True)
class PenaltySteps:
    """The recorded derivation of a regulariser's penalty.

    Attributes
    ----------
    op : Regulariser
        The declaration.
    function : sympy.Expr
        R(w): the name the derivation starts from.
    derivative : StepChain
        dR/dw, rule by rule, ending in :func:`penalty_gradient`.
    """

    op: Regulariser
    function: sp.Expr
    derivative: StepChain


def penalty_function() -> sp.Expr:
    """R(w): an undefined function standing for a penalty in printed chains."""
    return sp.Function("R", real=True)(w)


@derivation_steps.register
def _(op: Regulariser) -> PenaltySteps:
    return _penalty_steps(op)


@cache
def _penalty_steps(op: Regulariser) -> PenaltySteps:
    function = penalty_function()
    avoid = {p.latex for p in op.strengths if p.latex}
    # λ₁|w| + ½λ₂w²: both strengths come out in one step, not one step per term.
    chain = record_derivative(op.penalty, w, function=function, result=penalty_gradient(op),
                              avoid=avoid, factors_first=True)
    return PenaltySteps(op, function, chain)


def check_regulariser(op: Regulariser) -> None:
    """Refuse a penalty in other symbols than w and its strengths, or without a derivative.

    Raises
    ------
    DeclarationError
        Naming the regulariser and what is wrong.
    """
    stray = op.penalty.free_symbols - {w} - {p.symbol for p in op.strengths}
    if stray:
        names = ", ".join(sorted(s.name for s in stray))
        raise DeclarationError(f"the penalty uses {names}, which is neither w nor a declared "
                               "strength.", where=f"regulariser {op.name!r}",
                               fix="Declare it with Param(...) among the strengths.")
    if w not in op.penalty.free_symbols:
        raise DeclarationError("the penalty does not depend on w.",
                               where=f"regulariser {op.name!r}")
    penalty_gradient(op)


def penalty_gradient(reg: Regulariser) -> sp.Expr:
    """∂R/∂w of a regulariser's penalty, by ``sympy.diff``.

    For a real w, SymPy differentiates |w| to sign(w), and sign(0) = 0: the subgradient
    PyTorch's backward of ``abs`` takes at the kink.

    Parameters
    ----------
    reg : Regulariser
        The declaration.

    Returns
    -------
    sympy.Expr
        The derivative, in :data:`~derive.spec.w` and the strengths.

    Raises
    ------
    DeclarationError
        When the derivative is not a closed form (an unevaluated derivative or a delta).
    """
    grad = sp.diff(reg.penalty, w)
    if grad.has(sp.Derivative, sp.DiracDelta, sp.Subs):
        raise DeclarationError(f"the penalty of {reg.name!r} has no closed-form derivative: "
                               f"{grad}", fix="Write its kinks with Abs, Max or Piecewise.")
    return grad


def gradient_used(reg: Regulariser | None = None, clip: Clip | None = None) -> sp.Expr:
    """The gradient the optimizer reads: the loss's, clipped, plus the penalty's."""
    clipped = g if clip is None else clip.clipped
    return clipped + (penalty_gradient(reg) if reg is not None else 0)


def regularised(op: Optimizer, reg: Regulariser | None = None,
                clip: Clip | None = None) -> Optimizer:
    """``op`` with its gradient replaced by :func:`gradient_used`.

    Parameters
    ----------
    op : Optimizer
        The declaration.
    reg : Regulariser, optional
        The penalty whose gradient is added (coupled, as an optimizer's weight_decay in
        PyTorch).
    clip : Clip, optional
        The rule applied to the loss's gradient first.

    Returns
    -------
    Optimizer
        ``op`` itself when there is neither; else the same update equations after the
        statement g ← clip(g) + ∂R/∂w, with the strengths, the threshold and the clip's
        per-step statistic as parameters after ``op``'s own.
    """
    if reg is None and clip is None:
        return op
    extra = (*(reg.strengths if reg is not None else ()),
             *(clip.params if clip is not None else ()))
    return dataclasses.replace(op, params=(*op.params, *extra),
                               updates=((g, gradient_used(reg, clip)), *op.updates))


def weight_only_params(op: Optimizer, reg: Regulariser | None = None) -> frozenset:
    """The parameters that shrink weights only, and are 0 for biases by default.

    The regulariser's strengths and the symbols of the optimizer's own decoupled decay
    (AdamW's λ in −ηλw), its learning rate aside.

    Parameters
    ----------
    op : Optimizer
        The declaration (before :func:`regularised`).
    reg : Regulariser, optional
        The regulariser in use.

    Returns
    -------
    frozenset of sympy.Symbol
    """
    own = set(op.decay.free_symbols) - {w, op.learning_rate.symbol}
    return frozenset(own | {p.symbol for p in (reg.strengths if reg is not None else ())})
