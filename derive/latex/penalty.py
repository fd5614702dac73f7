"""A regulariser → template context: the penalty, its derivative step by step, the update.

The penalty R(w) and its derivative come from the declaration (the derivative recorded
rule by rule and checked, :mod:`derive.calculus.regularise`); the modified gradient-descent
update w ← w − η(g + ∂R/∂w) is built here from that derivative, and, where the derivative
has a term proportional to w, written again with w collected, (1 − ηλ)w − ηg: the weight
decay the penalty amounts to. A worked step puts numbers into the same expressions (the
printer writes each symbol as its number, so the substituted line keeps the order of the
symbolic one) and SymPy computes every value shown. The optimizers that decay the weights
outside the gradient (AdamW) are found by their declared ``decay``, so the page can point
to them.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp
from sympy.printing.precedence import PRECEDENCE

from derive import registry
from derive.calculus.regularise import penalty_gradient
from derive.calculus.steps import derivation_steps
from derive.latex.context import (
    ChainView,
    Language,
    ParamView,
    chain_view,
    document_view,
    inline_title,
    number,
    op_title,
    power_of_ten,
)
from derive.latex.optimizer import UpdatePrinter, optimizer_printer
from derive.latex.printer import WORDS
from derive.spec import Regulariser, g, grad_total, lr, w

#: The learning rate of the update the page shows.
ETA = sp.Symbol("eta", positive=True)
#: The worked step: a weight, its loss gradient, the learning rate and the strengths (in
#: the order the declaration lists them: elastic net's λ₁ and λ₂ differ, so that each
#: number can be traced to its term).
EXAMPLE_WEIGHT = sp.Rational(1, 2)
EXAMPLE_GRADIENT = sp.Rational(1, 5)
EXAMPLE_RATE = sp.Rational(1, 10)
EXAMPLE_STRENGTHS = (sp.Rational(1, 10), sp.Rational(3, 10))
#: R'(w) inside the worked update, printed as its computed value (real, as g is, so
#: that g + R'(w) keeps its order).
_SLOPE = sp.Symbol("slope", real=True)


@dataclass(frozen=True)
class DecoupledView:
    """An optimizer that shrinks the weights outside its gradient step (AdamW)."""

    name: str
    title: str
    #: The change of w its decay makes, e.g. ``-\\eta \\lambda w``.
    decay: str


@dataclass(frozen=True)
class ExampleView:
    """One gradient-descent step with numbers: R, R' and the update, each substituted."""

    #: (symbol, value) of each strength; the values of η, w and g.
    strengths: tuple[tuple[str, str], ...]
    rate: str
    weight: str
    loss_gradient: str
    #: (substituted expression, value) of R(w), R'(w), the update and the update without R.
    penalty: tuple[str, str]
    gradient: tuple[str, str]
    update: tuple[str, str]
    plain: tuple[str, str]


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
    example: ExampleView | None = None


class NumberPrinter(UpdatePrinter):
    r"""A penalty's printer whose symbols are numbers: every product gets its \cdot.

    0{,}1 \cdot 0{,}5, not 0{,}1 0{,}5, which reads as one number.
    """

    def _print_Mul(self, expr):
        if expr.could_extract_minus_sign():
            return "-" + self._print(-expr)
        # A rational coefficient needs no parentheses: \frac{1}{2} \cdot 0{,}3.
        return r" \cdot ".join(self._print(f) if f.is_Rational
                                else self.parenthesize(f, PRECEDENCE["Mul"])
                                for f in expr.as_ordered_factors())


def penalty_printer(op: Regulariser, lang: Language) -> UpdatePrinter:
    """The printer of a penalty's page: its strengths' LaTeX, η, R(w) and the weight first."""
    symbols = {p.symbol.name: p.latex for p in op.strengths if p.latex} | {ETA.name: r"\eta"}
    return UpdatePrinter({
        "symbols": symbols,
        "functions": {"R": "R"},
        "words": {w_: lang.words[w_] for w_ in WORDS},
        "separator": lang.separator,
        "lead": (ETA.name, *(p.symbol.name for p in op.strengths)),
        "ranked": tuple(p.symbol.name for p in op.strengths),
    })


def _split(gradient: sp.Expr) -> tuple[sp.Expr, sp.Expr]:
    """(c, rest) with gradient = c·w + rest and rest free of a term linear in w."""
    expanded = sp.expand(gradient)
    c = expanded.coeff(w, 1)
    return c, sp.expand(expanded - c * w)


def decoupled_optimizers(strength: sp.Expr, printer: UpdatePrinter,
                         lang: Language) -> tuple[DecoupledView, ...]:
    """The catalogue's optimizers with a decoupled weight decay, and that decay.

    Each decay is written in the penalty's symbols: its own strength is set to the
    penalty's coefficient of w (λ, or elastic net's λ₂), so the page has one symbol for
    one strength (AdamW's λ beside λ₁ and λ₂ was undefined there).

    Parameters
    ----------
    strength : sympy.Expr
        The penalty's coefficient of w in its derivative.
    printer : UpdatePrinter
        The penalty page's printer (its η and strengths).
    lang : Language
        The language of the optimizers' titles.
    """
    views = []
    for op in registry.all_ops("optimizer"):
        if op.decay == 0:
            continue
        own = {p.symbol: strength for p in op.params
               if p.symbol != lr and p.symbol in op.decay.free_symbols}
        decay = op.decay.xreplace({lr: ETA, **own})
        views.append(DecoupledView(op.name, op_title(op, lang), printer.doprint(decay)))
    return tuple(views)


def worked_step(op: Regulariser, lang: Language) -> ExampleView:
    """One step of gradient descent on a penalised weight, with numbers.

    Parameters
    ----------
    op : Regulariser
        The declaration: its penalty, and its derivative from
        :func:`derive.calculus.regularise.penalty_gradient`.
    lang : Language
        The language (decimal separator, words).

    Returns
    -------
    ExampleView
        Every line substituted and evaluated by SymPy (exact rationals).
    """
    values = {w: EXAMPLE_WEIGHT, g: EXAMPLE_GRADIENT, ETA: EXAMPLE_RATE}
    values |= {p.symbol: v for p, v in zip(op.strengths, EXAMPLE_STRENGTHS, strict=False)}
    gradient = penalty_gradient(op)
    slope = gradient.xreplace(values)

    def num(v) -> str:
        return number(float(v), lang).tex

    # The page's printer, with every symbol written as its number.
    settings = dict(penalty_printer(op, lang)._settings)
    settings["symbols"] = {**settings["symbols"], _SLOPE.name: num(slope),
                           **{s_.name: num(v) for s_, v in values.items()}}
    printer = NumberPrinter({k: settings[k] for k in
                             ("symbols", "functions", "words", "separator", "lead", "ranked")})
    update = w - ETA * (g + _SLOPE)
    plain = w - ETA * g

    def line(expr, value) -> tuple[str, str]:
        return printer.doprint(expr), num(value)

    return ExampleView(
        strengths=tuple((p.latex, num(values[p.symbol])) for p in op.strengths),
        rate=num(EXAMPLE_RATE),
        weight=num(EXAMPLE_WEIGHT),
        loss_gradient=num(EXAMPLE_GRADIENT),
        penalty=line(op.penalty, op.penalty.xreplace(values)),
        gradient=line(gradient, slope),
        update=line(update, update.xreplace(values | {_SLOPE: slope})),
        plain=line(plain, plain.xreplace(values)),
    )


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
        decoupled=decoupled_optimizers(coefficient, printer, lang) if coefficient != 0 else (),
        example=worked_step(op, lang),
    )


# --- in a network's document ------------------------------------------------------------


@dataclass(frozen=True)
class TrainingTermsView:
    """What a network's training adds to its gradients: a penalty, clipping, a decay."""

    lang: str
    #: The penalty's title, R(w) = …, R'(w) = … and its strengths with their values.
    penalty_title: str = ""
    penalty: str = ""
    gradient: str = ""
    strengths: tuple[tuple[str, str], ...] = ()
    #: The penalised arrays (W⁽¹⁾, …) and whether the biases are among them.
    weights: tuple[str, ...] = ()
    biases: bool = False
    #: g ← clipped, the threshold and its value, and the norm it reads ("" by value).
    clipped: str = ""
    threshold: tuple[str, str] = ("", "")
    norm: str = ""
    #: A decoupled decay of the optimizer: its title, the change of w and λ's value.
    decay_title: str = ""
    decay: str = ""
    decay_strength: tuple[str, str] = ("", "")
    #: The layers that normalise with running statistics in evaluation: (number,
    #: momentum, 1 − momentum).
    running: tuple[tuple[int, str, str], ...] = ()

    @property
    def terms(self) -> bool:
        """Whether training adds anything to the gradients."""
        return bool(self.penalty or self.clipped or self.decay)


def _number(value: float, lang: Language) -> str:
    from derive.latex.context import default_value

    return default_value(float(value), lang)


def _arrays(spec) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The LaTeX of the network's weight arrays (W⁽ˡ⁾) and of its biases (1-D, b⁽ˡ⁾)."""
    from derive.latex.indexed import NOTATION

    weights, biases = [], []
    for layer in spec.layers:
        for name, shape in layer.params:
            tex = rf"{NOTATION.get(name, name)}^{{({layer.index + 1})}}"
            (biases if len(shape) == 1 else weights).append(tex)
    return tuple(weights), tuple(biases)


def training_terms(spec, lang: Language) -> TrainingTermsView | None:
    """What a network spec's training adds to its gradients, printed; None for nothing.

    Parameters
    ----------
    spec : NetworkSpec
        The network: its plan's ``regulariser`` and ``clip``, its ``[train]`` values and
        its optimizer's declared decoupled decay.
    lang : Language
        The language.
    """
    plan, train = spec.plan, spec.train
    weights, biases = _arrays(spec)
    fields: dict = {}
    reg, clip = plan.regulariser, plan.clip
    if reg is not None:
        pr = penalty_printer(reg, lang).doprint
        regularise_biases = bool(train.get("regularise_biases", False))
        fields |= dict(
            penalty_title=inline_title(op_title(reg, lang), lang), penalty=pr(reg.penalty),
            gradient=pr(penalty_gradient(reg)),
            strengths=tuple((p.latex or pr(p.symbol), _number(train.get(p.name, p.default), lang))
                            for p in reg.strengths),
            weights=weights + (biases if regularise_biases else ()), biases=regularise_biases)
    if clip is not None:
        settings = {"words": {w_: lang.words[w_] for w_ in WORDS}, "separator": lang.separator,
                    "lead": (clip.threshold.symbol.name,)}
        symbols = {clip.threshold.symbol.name: clip.threshold.latex}
        norm = ""
        if clip.statistic is not None:
            total = UpdatePrinter(settings | {"symbols": {}}).doprint(clip.summand)
            symbols |= {clip.statistic[0].name: r"\lVert g \rVert",
                        grad_total.name: rf"\sum {total}"}
        # A tolerance such as 10⁻⁶ is printed as the power it is, not 1/1000000; positive,
        # so that it follows the norm it guards (‖g‖ + 10⁻⁶, as clip_grad_norm_ writes it).
        powers = {r: sp.Symbol(f"power{i}", positive=True)
                  for i, r in enumerate(clip.clipped.atoms(sp.Rational))
                  if r.p == 1 and sp.log(r.q, 10).is_Integer and r.q > 100}
        symbols |= {s.name: power_of_ten(r, lang) for r, s in powers.items()}
        printer = UpdatePrinter(settings | {"symbols": symbols})
        if clip.statistic is not None:
            norm = printer.doprint(sp.Eq(*clip.statistic, evaluate=False))
        fields |= dict(
            clipped=printer.doprint(clip.clipped.xreplace(powers)), norm=norm,
            threshold=(clip.threshold.latex,
                       _number(train.get(clip.name, clip.threshold.default), lang)))
    optimizer = registry.get(train.get("optimizer", "gd"), "optimizer")
    decay_params = [p for p in optimizer.params
                    if p.symbol in optimizer.decay.free_symbols and p != optimizer.learning_rate]
    if decay_params and any(train.get(p.name, p.default) for p in decay_params):
        printer = optimizer_printer(optimizer, lang)
        p = decay_params[0]
        fields |= dict(decay_title=op_title(optimizer, lang),
                       decay=printer.doprint(optimizer.decay),
                       decay_strength=(p.latex or printer.doprint(p.symbol),
                                       _number(train.get(p.name, p.default), lang)))
    # Batch normalisation's running statistics: the declarations that keep them say so.
    running = tuple(
        (layer.spec.index + 1, _number(momentum, lang), _number(1 - momentum, lang))
        for layer in plan.layers for param in layer.op.running_params[:1]
        for momentum in [float(layer.spec.hyper.get(param.keyword or param.name,
                                                    param.default))])
    if running:
        fields["running"] = running
    return TrainingTermsView(lang=lang.code, **fields) if fields else None
