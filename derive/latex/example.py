"""A worked example → template context, for the LaTeX document and the plain-text report.

Numbers are printed with all their digits when they are terminating decimals (3.61,
−7.98, 1.0798) and otherwise rounded, marked ≈. Formulas print in LaTeX for documents
and in a plain notation (ŷ, ², ·) for the terminal; the words are in the templates.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp
from sympy.printing.precedence import PRECEDENCE
from sympy.printing.str import StrPrinter

from derive.example import YHAT, Example, S, Y, decimal, rounded
from derive.latex.context import Language, document_view, inline_title, op_title
from derive.latex.printer import WORDS, DerivePrinter

#: Significant digits of rounded numbers (exact decimals longer than this are rounded too).
ROUNDED = 6
#: Worked examples the course's slides print, keyed by (activation, loss, x, w, b, y, lr),
#: with the ∂L/∂w they print where it is wrong: the slides on gradient descent and
#: backpropagation print −7.68 for 2(ŷ − y)x = −7.98 (their own update, w = 1.0798, uses
#: −7.98).
SLIDES_GRAD_W = {("identity", "mse", "2.1", "1", "0", "4", "0.01"): "-7.68"}


@dataclass(frozen=True)
class Value:
    """A computed number: LaTeX, plain text, and whether it is rounded."""

    tex: str
    text: str
    approx: bool

    @property
    def rel(self) -> str:
        r"""``=`` or ``\approx``."""
        return r"\approx" if self.approx else "="

    @property
    def trel(self) -> str:
        """``=`` or ``≈`` for plain text."""
        return "≈" if self.approx else "="


@dataclass(frozen=True)
class Formula:
    """A formula in LaTeX and in plain text."""

    tex: str
    text: str


@dataclass(frozen=True)
class ExampleView:
    """Everything the example's templates print."""

    kind: str
    name: str
    title: str
    act: str
    act_name: str
    loss: str
    loss_name: str
    act_title: str
    loss_title: str
    identity: bool
    x: Value
    w: Value
    b: Value
    y: Value
    lr: Value
    params: tuple[tuple[str, Value], ...]
    params_text: str
    f_s: Formula
    loss_formula: Formula
    loss_gradient: Formula
    act_derivative: Formula
    s: Value
    yhat: Value
    loss_value: Value
    grad_yhat: Value
    act_slope: Value
    ds_dw: Value
    ds_db: Value
    grad_s: Value
    grad_w: Value
    grad_b: Value
    w_new: Value
    b_new: Value
    s_new: Value
    yhat_new: Value
    loss_new: Value
    decreased: bool
    slides_grad_w: Value | None = None
    #: The weight the slides' wrong ∂L/∂w would give, w − η·(their ∂L/∂w).
    slides_w_new: Value | None = None


def value(v: sp.Expr, lang: Language) -> Value:
    """A computed number: exact digits when it is a terminating decimal, else rounded."""
    v = sp.sympify(v)
    text = decimal(v, ROUNDED)
    exact = v.is_Integer or (v.is_Rational and text == decimal(v, 40)
                             and len(text.lstrip("-0.").replace(".", "")) <= ROUNDED)
    approx = not exact
    if approx:
        text = rounded(v, ROUNDED)
    mantissa, _, exponent = text.partition("e")
    tex = mantissa.replace(".", lang.separator)
    if exponent:
        tex = rf"{tex} \cdot 10^{{{int(exponent)}}}"
    if lang.code == "pt":
        text = text.replace(".", ",")
    return Value(tex, text.replace("-", "−"), approx)


class TextPrinter(StrPrinter):
    """Formulas for the terminal: ŷ, ², ·, −, a positive term first (ŷ − y, not −y + ŷ)."""

    def _print_Add(self, expr, order=None):
        terms = list(expr.as_ordered_terms())
        if terms[0].could_extract_minus_sign():
            positive = [t_ for t_ in terms if not t_.could_extract_minus_sign()]
            if positive:
                terms.remove(positive[0])
                terms.insert(0, positive[0])
        text = self._print(terms[0])
        for term in terms[1:]:
            if term.could_extract_minus_sign():
                text += " - " + self.parenthesize(-term, PRECEDENCE["Add"])
            else:
                text += " + " + self.parenthesize(term, PRECEDENCE["Add"])
        return text

    def _print_Piecewise(self, expr):
        raise ValueError("no plain-text form")


def _plain(expr: sp.Expr) -> str:
    """A formula for the terminal, or "" when it has no readable one-line form."""
    names = {YHAT: sp.Symbol("ŷ"), Y: sp.Symbol("y"), S: sp.Symbol("s")}
    try:
        text = TextPrinter().doprint(expr.xreplace(names))
    except ValueError:
        return ""
    for old, new in (("**2", "²"), ("**3", "³"), ("sigmoid", "σ"), ("*", "·"), ("-", "−")):
        text = text.replace(old, new)
    return text


def example_printer(ex: Example, lang: Language) -> DerivePrinter:
    """LaTeX for the example: ŷ, the activation's name for f."""
    symbols = {"yhat": r"\hat{y}"}
    symbols.update({p.symbol.name: p.latex for p in ex.activation.params if p.latex})
    symbols.update({p.symbol.name: p.latex for p in ex.loss.params if p.latex})
    return DerivePrinter({
        "symbols": symbols,
        "words": {w_: lang.words[w_] for w_ in WORDS},
        "separator": lang.separator,
    })


@document_view.register
def _(ex: Example, lang: Language) -> ExampleView:
    printer = example_printer(ex, lang)

    def formula(e):
        return Formula(printer.doprint(e), _plain(e))

    def num(v):
        return value(v, lang)

    return ExampleView(
        kind="example",
        name=ex.name,
        title=ex.name,
        act=ex.activation.latex,
        act_name=ex.activation.name,
        loss=ex.loss.latex,
        loss_name=ex.loss.name,
        act_title=inline_title(op_title(ex.activation, lang), lang),
        loss_title=inline_title(op_title(ex.loss, lang), lang),
        identity=ex.act_forward == S,
        x=num(ex.x), w=num(ex.w), b=num(ex.b), y=num(ex.y), lr=num(ex.lr),
        params=tuple((p.latex or p.name, num(ex.params[p.symbol]))
                     for p in ex.activation.params),
        params_text="".join(f", {p.name} = {num(ex.params[p.symbol]).text}"
                            for p in ex.activation.params),
        f_s=formula(ex.act_forward),
        loss_formula=formula(ex.loss_formula),
        loss_gradient=formula(sp.factor_terms(ex.loss_gradient)),
        act_derivative=formula(ex.act_derivative),
        s=num(ex.s), yhat=num(ex.yhat), loss_value=num(ex.loss_value),
        grad_yhat=num(ex.grad_yhat), act_slope=num(ex.act_slope), ds_dw=num(ex.ds_dw),
        ds_db=num(ex.ds_db), grad_s=num(ex.grad_s), grad_w=num(ex.grad_w), grad_b=num(ex.grad_b),
        w_new=num(ex.w_new), b_new=num(ex.b_new), s_new=num(ex.s_new),
        yhat_new=num(ex.yhat_new), loss_new=num(ex.loss_new),
        decreased=bool(ex.loss_new < ex.loss_value),
        slides_grad_w=_slides_grad_w(ex, lang),
        slides_w_new=_slides_w_new(ex, lang),
    )


def _slides_grad_w(ex: Example, lang: Language) -> Value | None:
    """The wrong ∂L/∂w the slides print for this very example, if they print one."""
    key = (ex.activation.name, ex.loss.name,
           *(decimal(v) for v in (ex.x, ex.w, ex.b, ex.y, ex.lr)))
    printed = SLIDES_GRAD_W.get(key)
    return value(sp.Rational(printed), lang) if printed is not None else None


def _slides_w_new(ex: Example, lang: Language) -> Value | None:
    """The update with the slides' ∂L/∂w: the weight their slip would give."""
    key = (ex.activation.name, ex.loss.name,
           *(decimal(v) for v in (ex.x, ex.w, ex.b, ex.y, ex.lr)))
    printed = SLIDES_GRAD_W.get(key)
    return value(ex.w - ex.lr * sp.Rational(printed), lang) if printed is not None else None


def render_text(ex: Example, lang: str = "pt") -> str:
    """The worked example as plain text for the terminal."""
    from derive.latex.render import environment, language

    words = language(lang)
    view = document_view(ex, words)
    template = environment().get_template(f"latex/{lang}/example.txt.jinja")
    return template.render(view=view, words=words.words)

