"""A regulariser → template context: the penalty, its derivative step by step, the update.

The penalty R(w) and its derivative come from the declaration (the derivative recorded
rule by rule and checked, :mod:`derive.calculus.regularise`); the modified gradient-descent
update w ← w − η(g + ∂R/∂w) is built here from that derivative, and, where the derivative
has a term proportional to w, written again with w collected, (1 − ηλ)w − ηg: the weight
decay the penalty amounts to. The optimizers that decay the weights outside the gradient
(AdamW) are found by their declared ``decay``, so the page can point to them.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from derive import registry
from derive.calculus.regularise import penalty_gradient
from derive.calculus.steps import derivation_steps
from derive.latex.context import (
    ChainView,
    Language,
    ParamView,
    chain_view,
    document_view,
    op_title,
)
from derive.latex.optimizer import UpdatePrinter, optimizer_printer
from derive.latex.printer import WORDS
from derive.spec import Regulariser, g, w

#: The learning rate of the update the page shows.
ETA = sp.Symbol("eta", positive=True)


@dataclass(frozen=True)
class DecoupledView:
    """An optimizer that shrinks the weights outside its gradient step (AdamW)."""

    name: str
    title: str
    #: The change of w its decay makes, e.g. ``-\\eta \\lambda w``.
    decay: str


@dataclass(frozen=True)
class RegulariserView:
    """Everything a regulariser's templates print."""

    kind: str
    name: str
    title: str
    #: The language, for the templates to find this kind's sentences.
    lang: str
    symbol: str
    fx: str
    definition: str
    strengths: tuple[ParamView, ...]
    derivative: ChainView
    gradient: str
    #: Where R has no derivative (|w| at 0), the derivative taken there: "0"; else "".
    kink_value: str
    update: str
    #: The update with w collected, when the derivative has a term in w (else "").
    collected: str
    #: The factor w is multiplied by each step (1 − ηλ), or "".
    factor: str
    #: The strength of the term in w (λ, λ₂), or "".
    decay_strength: str
    #: The change of w per step from the term without w (−ηλ sgn(w)), or "".
    push: str
    decoupled: tuple[DecoupledView, ...] = ()


def penalty_printer(op: Regulariser, lang: Language) -> UpdatePrinter:
    """The printer of a penalty's page: its strengths' LaTeX, η, R(w) and the weight first."""
    symbols = {p.symbol.name: p.latex for p in op.strengths if p.latex} | {ETA.name: r"\eta"}
    return UpdatePrinter({
        "symbols": symbols,
        "functions": {"R": "R"},
        "words": {w_: lang.words[w_] for w_ in WORDS},
        "separator": lang.separator,
        "lead": (ETA.name, *(p.symbol.name for p in op.strengths)),
    })


def _split(gradient: sp.Expr) -> tuple[sp.Expr, sp.Expr]:
    """(c, rest) with gradient = c·w + rest and rest free of a term linear in w."""
    expanded = sp.expand(gradient)
    c = expanded.coeff(w, 1)
    return c, sp.expand(expanded - c * w)


def decoupled_optimizers(lang: Language) -> tuple[DecoupledView, ...]:
    """The catalogue's optimizers with a decoupled weight decay, and that decay."""
    views = []
    for op in registry.all_ops("optimizer"):
        if op.decay == 0:
            continue
        printer = optimizer_printer(op, lang)
        views.append(DecoupledView(op.name, op_title(op, lang), printer.doprint(op.decay)))
    return tuple(views)


@document_view.register
def _(op: Regulariser, lang: Language) -> RegulariserView:
    steps = derivation_steps(op)
    printer = penalty_printer(op, lang)
    pr = printer.doprint
    gradient = penalty_gradient(op)
    strengths = tuple(ParamView(p.name, p.latex or pr(p.symbol), "", False, r"\geq")
                      for p in op.strengths)
    update = w - ETA * (g + gradient)
    coefficient, rest = _split(gradient)
    collected = sp.collect(sp.expand(update), w) if coefficient != 0 else None
    kink = gradient.has(sp.sign)
    return RegulariserView(
        kind="regulariser",
        name=op.name,
        title=op_title(op, lang),
        lang=lang.code,
        symbol="R",
        fx=pr(steps.function),
        definition=pr(op.penalty),
        strengths=strengths,
        derivative=chain_view(steps.derivative, printer),
        gradient=pr(gradient),
        kink_value=pr(gradient.subs(w, 0)) if kink else "",
        update=pr(update),
        collected=pr(collected) if collected is not None else "",
        factor=pr(1 - ETA * coefficient) if coefficient != 0 else "",
        decay_strength=pr(coefficient) if coefficient != 0 else "",
        push=pr(-ETA * rest) if rest != 0 else "",
        decoupled=decoupled_optimizers(lang) if coefficient != 0 else (),
    )
