"""An optimizer → template context: its update equations, its algorithm, a worked run.

The updates are printed from the declaration's ordered assignments; the algorithm box
lists them inside the training loop, like the notes' "Algorithm 2"; the worked run
applies them with SymPy, in 30 digits, to f(w) = w² from w = 1, so every number in the
table is computed from the same equations that are printed. The run's learning rate is
``RUN_LR`` unless its first step would move w more than half-way to the minimum (RMSProp's
first step at η = 0.1 is η/√(1 − ρ) = 1: w lands on 0 and the table shows only rounding);
then it is the declared default.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from derive.latex.context import (
    Language,
    ParamView,
    default_value,
    document_view,
    number,
    op_title,
    op_words,
)
from derive.latex.printer import WORDS, DerivePrinter
from derive.spec import Optimizer, g, t, w

#: How the optimizers' named intermediates are written (notation, not words).
NOTATION = {
    "m_hat": r"\hat{m}",
    "s_hat": r"\hat{s}",
    "denom": "d",
    "mu_t": r"\mu_{t}",
    "mu_next": r"\mu_{t+1}",
    "momentum_decay": r"\psi",
    "w": "w",
    "g": "g",
    "t": "t",
}
#: The worked run: f(w) = w², from w = 1, this many steps, with this learning rate.
RUN_STEPS = 4
RUN_LR = sp.Rational(1, 10)
RUN_START = sp.Integer(1)
RUN_DIGITS = 30
#: A first step longer than this fraction of |w − 0| makes the run a jump, not a descent.
RUN_MAX_FIRST_STEP = sp.Rational(1, 2)


@dataclass(frozen=True)
class UpdateView:
    """One assignment: target ← value."""

    target: str
    value: str
    is_weight: bool


@dataclass(frozen=True)
class SlotView:
    """A state slot and its value before the first update."""

    tex: str
    init: str
    per_step: bool


@dataclass(frozen=True)
class RunRow:
    """One step of the worked run."""

    t: int
    w: str
    g: str
    w_new: str
    f_new: str


@dataclass(frozen=True)
class OptimizerView:
    """Everything an optimizer's templates print."""

    kind: str
    name: str
    title: str
    symbol: str
    lr: str
    params: tuple[ParamView, ...]
    state: tuple[SlotView, ...]
    updates: tuple[UpdateView, ...]
    uses_step: bool
    run: tuple[RunRow, ...]
    run_lr: str
    run_f: str
    #: The closing remark on the method and the notes' algorithm to compare with, if any.
    note: str = ""
    algorithm_ref: str = ""


class UpdatePrinter(DerivePrinter):
    r"""The printer of update equations, written as the notes write them.

    The weight comes first (w + v, not v + w), the hyper-parameters first in a
    fraction's numerator (\frac{\eta g}{…}, not g\eta) and last when alone in a sum
    (\sqrt{s} + \varepsilon).
    """

    _default_settings = {**DerivePrinter._default_settings, "trailing": (), "state": (),
                         "first": (), "ranked": ()}

    def _as_ordered_terms(self, expr, order=None):
        terms = list(super()._as_ordered_terms(expr, order=order))
        # t + 1, not 1 + t; but 1 − β₂ᵗ stays as written.
        if terms[0].is_Number and terms[0] > 0 and not any(
                t_.could_extract_minus_sign() for t_ in terms[1:]):
            terms.append(terms.pop(0))
        if w in terms:
            terms.remove(w)
            terms.insert(0, w)
        # The step against the gradient, then the momentum, as the notes write both
        # momentum methods: −εg + αΔθ (Algorithm 2), x − ε∇f + β(x − x′) (eq. 6.13); else
        # the running average first, as the notes' slides write it: β₁m + (1 − β₁)g, like
        # β₂s + (1 − β₂)g² (a term with a state slot before one without).
        # Then the terms of the symbols in ``ranked`` in its order (a penalty's strengths:
        # λ₁ sgn(w) + λ₂w, as R(w) = λ₁|w| + ½λ₂w² is declared), after those without.
        first, state = self._settings["first"], self._settings["state"]
        ranked = self._settings["ranked"]

        def place(term) -> tuple[int, int]:
            names = {s_.name for s_ in term.free_symbols}
            kind = (0 if term == w else 1 if names & set(first)
                    else 2 if names & set(state) else 3)
            return kind, min((ranked.index(n) for n in names if n in ranked), default=-1)

        terms.sort(key=place)
        # A hyper-parameter standing alone as a term comes last, as the notes and the
        # papers write it: \sqrt{s} + \varepsilon, not \varepsilon + \sqrt{s}.
        alone = [t_ for t_ in terms if t_.is_Symbol and t_.name in self._settings["trailing"]]
        return [t_ for t_ in terms if t_ not in alone] + alone

    def _lead_positive(self, terms: list) -> list:
        # −εg + αΔθ as the notes write it: a step against the gradient may lead.
        first = set(self._settings["first"])
        if any(s_.name in first for s_ in terms[0].free_symbols):
            return terms
        return super()._lead_positive(terms)

    def _print_Mul(self, expr):
        numer, denom = sp.fraction(expr, exact=True)
        lead = self._settings["lead"]
        if denom == 1 or denom.is_Number or not any(
                s_.name in lead for s_ in numer.free_symbols):
            return super()._print_Mul(expr)
        sign = ""
        if numer.could_extract_minus_sign():
            sign, numer = "-", -numer
        return rf"{sign}\frac{{{self._print(numer)}}}{{{self._print(denom)}}}"


def optimizer_printer(op: Optimizer, lang: Language) -> DerivePrinter:
    """The printer of an optimizer: its parameters' and slots' declared LaTeX."""
    symbols = dict(NOTATION)
    symbols.update({p.symbol.name: p.latex for p in op.params if p.latex})
    symbols.update({s.symbol.name: s.latex for s in op.state if s.latex})
    return UpdatePrinter({
        "symbols": symbols,
        "words": {w_: lang.words[w_] for w_ in WORDS},
        "separator": lang.separator,
        # Hyper-parameters, then the named intermediates in the order they are computed:
        # \eta \mu_{t+1} m, not \eta m \mu_{t+1}.
        "lead": tuple(p.symbol.name for p in op.params)
        + tuple(target.name for target, _ in op.updates if target != w),
        "trailing": tuple(p.symbol.name for p in op.params),
        "state": tuple(s_.symbol.name for s_ in op.state),
        "first": (op.learning_rate.symbol.name,),
    })


def run_rate(op: Optimizer):
    """The worked run's learning rate.

    Parameters
    ----------
    op : Optimizer
        The declaration.

    Returns
    -------
    sympy.Rational
        ``RUN_LR``, or the declared default where the first step at ``RUN_LR`` would
        cover more than ``RUN_MAX_FIRST_STEP`` of the way to the minimum (a run that
        lands on w ≈ 0 at once teaches nothing).
    """
    (_, w0, _, w1, _), = worked_run(op, 1, RUN_LR)
    if abs(w1 - w0) > RUN_MAX_FIRST_STEP * abs(w0):
        return sp.Rational(repr(float(op.learning_rate.default)))
    return RUN_LR


def worked_run(op: Optimizer, steps: int = RUN_STEPS, lr=None):
    """Apply the update equations to f(w) = w² from w = 1: (t, w, g, w_new, f(w_new)) rows.

    The hyper-parameters are the declared defaults (exact decimals), the learning rate
    ``lr`` (by default, :func:`run_rate`); the arithmetic is SymPy's, evaluated in 30 digits.
    """
    if lr is None:
        lr = run_rate(op)
    values = {p.symbol: sp.Rational(repr(float(p.default))) for p in op.params}
    values[op.learning_rate.symbol] = lr
    state = {s.symbol: sp.Rational(repr(float(s.init))) for s in op.state}
    weight = RUN_START
    rows = []
    for step in range(1, steps + 1):
        grad = 2 * weight
        env = {**values, **state, w: weight, g: grad, t: step}
        for target, rhs in op.updates:
            env[target] = sp.N(rhs.xreplace(env), RUN_DIGITS)
        for s in op.state:
            state[s.symbol] = env[s.symbol]
        rows.append((step, weight, grad, env[w], env[w] ** 2))
        weight = env[w]
    return rows


@document_view.register
def _(op: Optimizer, lang: Language) -> OptimizerView:
    printer = optimizer_printer(op, lang)
    pr = printer.doprint
    params = tuple(ParamView(p.name, p.latex or pr(p.symbol), default_value(p.default, lang),
                             p.learnable) for p in op.params)
    state = tuple(SlotView(s.latex or pr(s.symbol), default_value(s.init, lang), s.per_step)
                  for s in op.state)
    updates = tuple(UpdateView(pr(target), pr(rhs), target == w) for target, rhs in op.updates)

    def num(v):
        return number(float(v), lang).tex

    rate = run_rate(op)
    run = tuple(RunRow(step, num(w0), num(g0), num(w1), num(f1))
                for step, w0, g0, w1, f1 in worked_run(op, lr=rate))
    lr = op.learning_rate
    return OptimizerView(
        kind="optimizer",
        name=op.name,
        title=op_title(op, lang),
        symbol=op.latex,
        lr=lr.latex or pr(lr.symbol),
        params=params,
        state=state,
        updates=updates,
        uses_step=op.uses_step,
        run=run,
        run_lr=num(rate),
        run_f="w^{2}",
        note=op_words(op, lang, "optimizer_notes"),
        algorithm_ref=op_words(op, lang, "algorithm_refs"),
    )
