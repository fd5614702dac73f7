"""Derivation records → template context: every formula and number as LaTeX.

The templates receive plain records of strings, booleans and small tuples; they hold
all the words. Numbers are formatted here (deterministically, with the language's
decimal separator) and formulas printed by :class:`DerivePrinter`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction
from functools import singledispatch

import sympy as sp

from derive.calculus.derivation import derive_activation
from derive.calculus.functions import NamedFunction
from derive.calculus.steps import Step, StepChain, derivation_steps
from derive.errors import DeriveError
from derive.latex.facts import (
    SATURATION,
    Bound,
    Curve,
    Extremum,
    Facts,
    Kink,
    Limit,
    activation_facts,
)
from derive.latex.printer import WORDS, DerivePrinter, format_number
from derive.spec import Activation, x

#: Significant digits of computed numbers in prose.
DIGITS = 5


@dataclass(frozen=True)
class Language:
    """What the printer and number formatting need from a language's ``words`` template."""

    code: str
    separator: str
    words: dict


@dataclass(frozen=True)
class StepView:
    """One recorded step, printed.

    ``identities`` are chains a = b = ... (most are pairs); ``folded`` lists the trivial
    rules done in the same step, each with a derivative it cleared (d/dx x), so the
    prose can mention them in a clause.
    """

    number: int
    rule: str
    tex: str
    focus: str
    result: str
    inner: tuple[tuple[str, str], ...]
    identities: tuple[tuple[str, ...], ...]
    quote: tuple[str, ...] = ()
    lhs: str = ""
    folded: tuple[tuple[str, str], ...] = ()
    #: The variable the step differentiates by, when not the chain's (a chain rule
    #: inside another: d/du ln cosh(u), with v = cosh(u)); empty otherwise.
    by: str = ""


@dataclass(frozen=True)
class ChainView:
    r"""A recorded derivation, printed.

    ``lhs`` is what every line equals (d/dx f(x)); ``d`` is ``d`` or ``\partial``.
    """

    var: str
    d: str
    lhs: str
    steps: tuple[StepView, ...]
    derivative: str
    in_output: str
    case: str = ""
    var_short: str = ""
    #: Once the case index is dropped (steps numbered from ``short_from`` on), a line
    #: printed with a left-hand side of its own uses ``lhs_short``, without it.
    lhs_short: str = ""
    short_from: int = 0


@dataclass(frozen=True)
class ParamView:
    """A parameter: its LaTeX, default value and whether it is learned."""

    name: str
    tex: str
    default: str
    learnable: bool
    rel: str = "="


@dataclass(frozen=True)
class NoiseView:
    """A random draw: LaTeX, distribution, bounds and evaluation-mode value."""

    tex: str
    distribution: str
    low: str
    high: str
    eval_value: str


@dataclass(frozen=True)
class Number:
    """A computed number in LaTeX; ``approx`` when the digits shown are rounded."""

    tex: str
    approx: bool

    @property
    def rel(self) -> str:
        r"""``=`` or ``\approx``, to write "f'(0) = 0.25" or "x ≈ 6.9058"."""
        return r"\approx" if self.approx else "="


@dataclass(frozen=True)
class KinkView:
    """One-sided values of f and f' at a kink."""

    at: Number
    f_left: Number
    f_at: Number
    f_right: Number
    df_left: Number
    df_at: Number
    df_right: Number
    continuous: bool
    smooth: bool
    owner: int = 0
    #: The one-sided values in the parameters' symbols when they depend on them
    #: ("\\alpha = 0{,}01"); "" when the value is a plain number.
    sym_left: str = ""
    sym_at: str = ""
    sym_right: str = ""
    #: When the one-sided derivatives, equal at the defaults, differ ("\\alpha \\neq 1"),
    #: and the value adopted at the point then, in symbols ("\\alpha").
    differ_when: str = ""
    differ_at: str = ""
    #: The jump a random draw makes at the point in training mode (Noisy ReLU's εσ), "" if none.
    training_jump: str = ""


@dataclass(frozen=True)
class EndView:
    """One end of the range: a number or ±∞, and whether it is included."""

    value: Number
    closed: bool
    infinite: bool


@dataclass(frozen=True)
class MaxView:
    """The supremum of f' and where: ``kind`` is point, interval, limit or unbounded."""

    kind: str
    value: Number | None
    at: Number | None
    lo: Number | None
    hi: Number | None
    lo_closed: bool
    hi_closed: bool
    towards: int


@dataclass(frozen=True)
class SaturationView:
    """|f'| < threshold beyond ``threshold`` on ``side`` (−1 left, +1 right)."""

    side: int
    threshold: Number
    zero: bool


@dataclass(frozen=True)
class PropertiesView:
    """The computed properties, ready to print."""

    limits: tuple[Number | None, Number | None]
    dlimits: tuple[Number | None, Number | None]
    lower: EndView
    upper: EndView
    dmax: MaxView
    increasing: bool
    decreasing: bool
    flat: bool
    shrinks: bool
    threshold: str
    saturation: tuple[SaturationView, ...]
    symmetric: Number | None
    leaks: tuple[tuple[int, Number], ...]
    #: A step function's values (its range is this set): LaTeX of each, in order.
    levels: tuple[str, ...] = ()
    #: f' > 0 everywhere checked: f is increasing, not merely non-decreasing.
    strictly_increasing: bool = False


@dataclass(frozen=True)
class PlotView:
    """A pgfplots graph: window, y range, coordinate lists and shaded x ranges."""

    xmin: str
    xmax: str
    ymin: str
    ymax: str
    segments: tuple[str, ...]
    filled: str
    hollow: str
    shade: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ActivationView:
    """Everything an activation's templates print."""

    kind: str
    name: str
    title: str
    symbol: str
    fx: str
    prime: str
    definition: str
    params: tuple[ParamView, ...]
    noise: tuple[NoiseView, ...]
    derivative: ChainView
    param_chains: tuple[tuple[ParamView, ChainView], ...]
    kinks: tuple[KinkView, ...]
    properties: PropertiesView
    f_plot: PlotView
    df_plot: PlotView
    remarks: tuple[str, ...] = ()
    #: What the course notes say about this function's definition and its saturation.
    definition_note: str = ""
    saturation_note: str = ""
    #: The derivative as the program computes it, when that is a branch-by-branch
    #: spelling only for overflow (bent identity); the page boxes the plain one.
    computed: str = ""
    #: Where f jumps, as a condition on x (x ≠ 0): the derivative holds off it.
    except_at: str = ""
    #: The named functions the derivation uses besides f itself, (name, LaTeX
    #: definition), e.g. ("sigmoid", "\\sigma(u) = ..."), so the page can define them.
    named: tuple[tuple[str, str], ...] = ()


# --- titles ---------------------------------------------------------------------------


def op_title(op, lang: Language) -> str:
    """An op's title as LaTeX text: the language's word table, else its declaration's.

    A language that translates titles (``fallback_titles`` in its words) names an op it
    has no title for by its kind and catalogue name, never in another language.
    """
    from derive.latex.render import latex_text

    titles = lang.words["titles"]
    if op.name in titles:
        return titles[op.name]
    fallback = lang.words.get("fallback_titles", {})
    if op.kind in fallback:
        return rf"{fallback[op.kind]} \texttt{{{latex_text(op.name)}}}"
    return latex_text(op.title)


def op_words(op, lang: Language, table: str) -> str:
    """The sentence a language's word table keeps for this declaration, or "".

    ``table`` is ``optimizer_notes``, ``saturation_notes``, ...

    The tables are keyed by the declaration's name, in the words templates, so that a
    template never asks which op it is printing.
    """
    return lang.words.get(table, {}).get(op.name, "")


def inline_title(title: str, lang: Language) -> str:
    r"""A title inside a sentence: its first letter in lower case, unless it is a name.

    "Erro quadrático médio (MSE)" → "erro quadrático médio (MSE)"; "ReLU paramétrica",
    "Heaviside step" and "\texttt{...}" keep theirs (acronyms, the language's
    ``proper_nouns``, commands).
    """
    first = title.split(" ", 1)[0]
    if (not first[:1].isupper() or any(c.isupper() or c.isdigit() for c in first[1:])
            or first in lang.words.get("proper_nouns", ())):
        return title
    return title[0].lower() + title[1:]


# --- numbers --------------------------------------------------------------------------


def number(value: float, lang: Language) -> Number:
    """A computed float: exact when it is (0.25, 1/6), else :data:`DIGITS` digits."""
    if abs(value) == float("inf"):
        return Number(r"+\infty" if value > 0 else r"-\infty", False)
    short = format_number(value, lang.separator, DIGITS)
    if float(f"{value:.{DIGITS}g}") == value:
        return Number(short, False)
    # 1/6 and 1/3 come out of 50-digit arithmetic as the nearest floats; say them exactly.
    frac = Fraction(value).limit_denominator(100)
    if frac.denominator > 1 and abs(frac - Fraction(value)) <= 1e-12 * max(1, abs(value)):
        sign = "-" if frac < 0 else ""
        return Number(rf"{sign}\frac{{{abs(frac.numerator)}}}{{{frac.denominator}}}", False)
    return Number(short, True)


def default_value(value: float, lang: Language) -> str:
    """A declared default: all its digits, or a fraction when that is what it is (1/3)."""
    frac = Fraction(value).limit_denominator(1000)
    text = format_number(float(value), lang.separator)
    if frac.denominator > 1 and float(frac) == value and len(text) > 8:
        sign = "-" if frac < 0 else ""
        return rf"{sign}\frac{{{abs(frac.numerator)}}}{{{frac.denominator}}}"
    return text


def default_number(value: float, lang: Language) -> Number:
    """A declared default as prose shows it: exact when short, else ≈ :data:`DIGITS` digits.

    SELU's α = 1.6732632423543772 reads α ≈ 1.6733; 0.01 and 1/3 stay exact.
    """
    text = default_value(value, lang)
    digits = sum(c.isdigit() for c in text.lstrip("-0{,}."))
    if "frac" in text or digits <= DIGITS + 1:
        return Number(text, False)
    return number(value, lang)


def param_defaults(op, lang: Language) -> dict:
    """Each parameter's default as prose shows it, in one form per declaration.

    When one default can only be written exactly as a fraction (RReLU's u = 1/3), the
    others that are fractions too are written so (l = 1/8, not 0,125 beside 1/3).
    """
    shown = {p.symbol: default_number(p.default, lang) for p in op.params}
    if any("frac" in n.tex for n in shown.values()):
        for p in op.params:
            frac = Fraction(p.default).limit_denominator(1000)
            if frac.denominator > 1 and float(frac) == p.default:
                sign = "-" if frac < 0 else ""
                shown[p.symbol] = Number(
                    rf"{sign}\frac{{{abs(frac.numerator)}}}{{{frac.denominator}}}", False)
    return shown


def power_of_ten(value: sp.Rational, lang: Language) -> str:
    """10⁻³ as ``10^{-3}`` (other numbers as they are)."""
    exponent = sp.log(value, 10)
    if exponent.is_Integer:
        return rf"10^{{{int(exponent)}}}"
    return format_number(float(value), lang.separator)


def exact_number(value: sp.Expr, lang: Language, printer: DerivePrinter) -> Number:
    """An exact SymPy value: printed when short (integers, small fractions, ±∞)."""
    if value.is_infinite:
        return Number(r"+\infty" if value > 0 else r"-\infty", False)
    if value.is_Integer or (
        value.is_Rational and value.q <= 100
    ):
        return Number(printer.doprint(value), False)
    return number(float(value), lang)


def _limit(lim: Limit, lang, printer) -> Number | None:
    if lim.value is None:
        return None
    return exact_number(lim.value, lang, printer) if lim.exact else number(lim.number, lang)


# --- chains ---------------------------------------------------------------------------


def step_view(i: int, step: Step, printer: DerivePrinter) -> StepView:
    """Print one step."""
    p = printer.doprint
    return StepView(
        number=i,
        rule=step.rule,
        tex=p(step.after),
        # A step's rule (d/du ln(u) = 1/u), its inner functions and its quoted formulas
        # stand in sentences, inline.
        focus=printer.inline(step.focus) if step.focus is not None else "",
        result=printer.inline(step.result) if step.result is not None else "",
        inner=tuple((printer.inline(a), printer.inline(b)) for a, b in step.inner),
        identities=tuple(tuple(p(e) for e in identity) for identity in step.identities),
        quote=tuple(printer.inline(q) for q in step.quote),
        folded=tuple((rule, p(node)) for rule, node in step.folded),
        by=_by(step, p),
    )


def _by(step: Step, p) -> str:
    """The variable of the step's derivative, printed, when it is a named inner function."""
    focus = step.focus
    if isinstance(focus, sp.Derivative) and isinstance(focus.variables[0], sp.Symbol):
        return p(focus.variables[0])
    return ""


def _one_substitution(steps) -> list[Step]:
    """Consecutive substitutions back (u = 1 + e^v, then v = βx) as one step.

    Each alone would repeat the same sentence for a line that teaches nothing new.
    """
    merged: list[Step] = []
    for step in steps:
        if merged and step.rule == merged[-1].rule == "substitute_back":
            merged[-1] = replace(merged[-1], after=step.after,
                                 inner=merged[-1].inner + step.inner)
        else:
            merged.append(step)
    return merged


def chain_view(chain: StepChain, printer: DerivePrinter) -> ChainView:
    """Print a chain; ``derivative`` is the result before any form in terms of y."""
    printer = printer.ordered(chain.outer_first())
    steps = _one_substitution(chain.steps)
    in_output = steps[-1] if steps and steps[-1].rule == "in_terms_of_output" else None
    derivative = in_output.before if in_output is not None else chain.result
    return ChainView(
        var=printer.doprint(chain.var),
        d=r"\partial" if printer._settings["partial"] else "d",
        lhs=printer.doprint(chain.start),
        steps=tuple(step_view(i + 1, s, printer) for i, s in enumerate(steps)),
        derivative=printer.doprint(derivative),
        in_output=printer.doprint(in_output.after) if in_output is not None else "",
        var_short=printer.doprint(chain.var),
    )


# --- facts ----------------------------------------------------------------------------


def _end(bound: Bound, lang, printer) -> EndView:
    infinite = abs(bound.value) == float("inf")
    if bound.exact is not None:
        value = exact_number(bound.exact, lang, printer)
    else:
        value = number(bound.value, lang)
    return EndView(value, bound.closed, infinite)


def _dmax(e: Extremum | None, lang, printer) -> MaxView:
    if e is None:
        return MaxView("unbounded", None, None, None, None, False, False, 0)
    value = number(e.value, lang)
    if not e.attained:
        return MaxView("limit", value, None, None, None, False, False, e.towards)
    if e.lo is not None and e.lo == e.hi:
        # An exact location the decimals would only approximate (x = √2) is printed so.
        at = number(e.lo, lang) if e.at is None else Number(printer.doprint(e.at), False)
        if not e.exact_at:
            at = Number(at.tex, True)
        return MaxView("point", value, at, None, None, True, True, 0)
    def end(v):
        return None if v is None else number(v, lang)

    kind = "everywhere" if e.lo is None and e.hi is None else "interval"
    return MaxView(kind, value, None, end(e.lo), end(e.hi), e.lo_closed, e.hi_closed, 0)


def _in_symbols_limit(value: Number | None, symbolic, defaults: dict, noise: frozenset,
                      lang: Language, printer: DerivePrinter) -> Number | None:
    """A limit of f' that is a parameter as the symbol, then its value (α = 0,01).

    The value is the parameter's default as declared (0,01, not the fraction 1/100); a
    random slope has its number only in evaluation mode, and says so.
    """
    if symbolic is None or value is None:
        return value
    tex = printer.doprint(symbolic)
    if symbolic.free_symbols & noise:
        word = lang.words["in_evaluation"]
        return Number(rf"{tex} \; ({value.rel} {value.tex} \text{{ {word}}})", False)
    if symbolic in defaults:
        value = defaults[symbolic]
    return Number(f"{tex} {value.rel} {value.tex}", False)


def properties_view(facts: Facts, lang: Language, printer: DerivePrinter,
                    op: Activation | None = None) -> PropertiesView:
    """Format the computed properties (limits of f' in the parameters of ``op``)."""
    sat = tuple(SaturationView(s.side, number(s.threshold, lang), s.zero)
                for s in facts.saturation)
    symmetric = None
    if len(sat) == 2 and abs(facts.saturation[0].threshold + facts.saturation[1].threshold) < 1e-9:
        symmetric = number(facts.saturation[1].threshold, lang)
    sides = {s.side for s in facts.saturation}
    defaults = param_defaults(op, lang) if op else {}
    noise = frozenset(n.symbol for n in (op.noise if op else ()))
    dlimits = tuple(
        _in_symbols_limit(_limit(lim, lang, printer), symbolic, defaults, noise, lang, printer)
        for lim, symbolic in zip(facts.dlimits, facts.dlimits_symbolic, strict=True))
    # A supremum only approached far out already says that side keeps its gradient.
    approached = facts.dmax.towards if facts.dmax is not None and not facts.dmax.attained else 0
    leaks = tuple(
        (side, dlimits[0 if side < 0 else 1])
        for side, lim in ((-1, facts.dlimits[0]), (1, facts.dlimits[1]))
        if side not in sides and lim.number not in (None, 0.0) and not facts.flat
        and side != approached
    )
    dmax = _dmax(facts.dmax, lang, printer)
    if dmax.kind == "limit" and dlimits[0 if dmax.towards < 0 else 1] is not None:
        # The limit as the derivation has it (3/2, not 1,5 beside a bullet saying 3/2).
        dmax = replace(dmax, value=dlimits[0 if dmax.towards < 0 else 1])
    return PropertiesView(
        limits=tuple(_limit(lim, lang, printer) for lim in facts.limits),
        dlimits=tuple(_limit(lim, lang, printer) for lim in facts.dlimits),
        lower=_end(facts.lower, lang, printer),
        upper=_end(facts.upper, lang, printer),
        dmax=dmax,
        increasing=facts.increasing,
        decreasing=facts.decreasing,
        flat=facts.flat,
        shrinks=(facts.dmax is not None and facts.dmax.attained and not facts.flat
                 and facts.dmax.value < 1),
        threshold=power_of_ten(SATURATION, lang),
        saturation=sat,
        symmetric=symmetric,
        leaks=leaks,
        levels=facts.levels,
        strictly_increasing=facts.strictly_increasing,
    )


def kink_view(k: Kink, lang: Language) -> KinkView:
    """Format a kink's one-sided values."""
    def n(v):
        return number(v, lang)

    return KinkView(n(k.at), n(k.f_left), n(k.f_at), n(k.f_right), n(k.df_left), n(k.df_at),
                    n(k.df_right), k.continuous, k.smooth, k.owner)


def _coord(v: float) -> str:
    """Plot coordinates: 6 significant digits, always with a point (pgfplots reads it)."""
    return f"{float(v) + 0.0:.6g}"


def plot_view(curve: Curve, window, saturation) -> PlotView:
    """Coordinates of a graph; the y range is computed so that flat graphs still show."""
    ys = [p[1] for seg in curve.segments for p in seg] + [p[1] for p in curve.filled + curve.hollow]
    lo, hi = (min(ys), max(ys)) if ys else (-1.0, 1.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 1, hi + 1
    pad = 0.08 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    def points(pts):
        return " ".join(f"({_coord(a)},{_coord(b)})" for a, b in pts)

    xmin, xmax = window
    shade = []
    for s in saturation:
        if s.side < 0 and s.threshold > xmin:
            shade.append((_coord(xmin), _coord(s.threshold)))
        if s.side > 0 and s.threshold < xmax:
            shade.append((_coord(s.threshold), _coord(xmax)))
    return PlotView(_coord(xmin), _coord(xmax), f"{lo:.4g}", f"{hi:.4g}",
                    tuple(points(seg) for seg in curve.segments), points(curve.filled),
                    points(curve.hollow), tuple(shade))


# --- declarations → views ---------------------------------------------------------------


def printer_for(op, lang: Language, partial: bool = False) -> DerivePrinter:
    """The printer for one declaration: its parameters' and its own LaTeX names."""
    symbols = {p.symbol.name: p.latex for p in getattr(op, "params", ()) if p.latex}
    return DerivePrinter({
        "symbols": symbols,
        "functions": {"f": op.latex},
        "words": {w: lang.words[w] for w in WORDS},
        "partial": partial,
        "separator": lang.separator,
    })


@singledispatch
def document_view(op, lang: Language):
    """The template context of a declaration (dispatched on its type)."""
    kind = getattr(op, "kind", type(op).__name__)
    raise DeriveError(
        f"LaTeX derivations of a {kind} are not available yet.",
        where=f"{kind} {getattr(op, 'name', op)!r}",
        fix="Activations, losses, layers, optimizers and network specs are supported; "
            "see `derive list`.",
    )


def _one_sided(expr: sp.Expr, at: float, side: int) -> sp.Expr:
    """The derivative just left of ``at`` (side −1), at it (0) or just right (+1), in symbols."""
    point = sp.nsimplify(at, rational=True)
    probe = point + side * sp.Rational(1, 10**9)

    def pick(*args):
        for e, c in args:
            if bool(c.subs(x, probe)) is True:
                return e
        return sp.nan

    return expr.replace(sp.Piecewise, lambda *a: pick(*a)).subs(x, point)


def _in_symbols(kink: KinkView, derivative: sp.Expr, at: float, printer: DerivePrinter,
                noise: frozenset, lang: Language, forward: sp.Expr | None = None) -> KinkView:
    """A kink whose one-sided values depend on a parameter states them in its symbol.

    Leaky ReLU's derivation ends in α, so its kink reads LReLU'(0⁻) = α = 0,01, not a
    bare 0,01 the derivation never wrote. A value drawn at random (RReLU's r) has its
    number only in evaluation mode, and says so.
    """
    def sym(side, number):
        value = _one_sided(derivative, at, side)
        if value.has(sp.nan) or not value.free_symbols:
            return ""
        if value.free_symbols & noise:
            word = lang.words["in_evaluation"]
            return rf"{printer.doprint(value)} \; ({number.rel} {number.tex} \text{{ {word}}})"
        return f"{printer.doprint(value)} {number.rel} {number.tex}"

    differ = differ_at = ""
    if kink.smooth:
        left, right = _one_sided(derivative, at, -1), _one_sided(derivative, at, 1)
        if not (left.has(sp.nan) or right.has(sp.nan)) and sp.simplify(left - right) != 0:
            # ELU: α = 1 makes them equal, so they differ exactly when α ≠ 1.
            solved = sp.solve(sp.Eq(left, right), dict=True)
            differ = printer.doprint(sp.Ne(left, right, evaluate=False))
            if len(solved) == 1 and len(solved[0]) == 1:
                ((symbol, value),) = solved[0].items()
                differ = printer.doprint(sp.Ne(symbol, value, evaluate=False))
            differ_at = printer.doprint(_one_sided(derivative, at, 0))
    jump = ""
    if forward is not None and noise:
        # Continuous in evaluation mode, but a draw that shifts one branch opens a jump.
        gap = sp.simplify(_one_sided(forward, at, 1) - _one_sided(forward, at, -1))
        if not gap.has(sp.nan) and gap.free_symbols & noise:
            jump = printer.doprint(gap)
    return replace(kink, sym_left=sym(-1, kink.df_left), sym_at=sym(0, kink.df_at),
                   sym_right=sym(1, kink.df_right), differ_when=differ, differ_at=differ_at,
                   training_jump=jump)


def _except_at(kinks, lang: Language) -> str:
    r"""The points where f jumps as a condition on x: ``x \neq 0``, ``x \notin \{a, b\}``."""
    jumps = [number(k.at, lang).tex for k in kinks if not k.continuous]
    if not jumps:
        return ""
    if len(jumps) == 1:
        return rf"x \neq {jumps[0]}"
    return rf"x \notin \{{{', '.join(jumps)}\}}"


def named_definitions(op: Activation, steps, printer: DerivePrinter
                      ) -> tuple[tuple[str, str], ...]:
    """The named functions (σ, softplus, Φ) a derivation uses, each with its definition.

    A document that writes σ(x) or softplus(x) in its definition or its steps says what
    they are; the op's own function (the sigmoid's σ) is defined by the document itself.
    """
    exprs = list(steps.shown) + [e for s in steps.derivative.steps
                                 for e in (s.after, *[i for ident in s.identities
                                                      for i in ident])]
    found: dict[str, type] = {}
    for e in exprs:
        if not isinstance(e, sp.Basic):
            continue
        for node in e.atoms(NamedFunction):
            kind = type(node)
            if kind.explicit_in is not None and kind.latex_name != op.latex:
                found.setdefault(kind.__name__, kind)
    u = sp.Symbol("u", real=True)
    return tuple(
        (name, f"{printer.doprint(kind(u))} = {printer.doprint(kind(u).rewrite(kind.explicit_in))}")
        for name, kind in sorted(found.items())
    )


def lecture_chain(op: Activation, chain: StepChain) -> tuple[StepChain, sp.Expr | None]:
    """The chain ending where a lecture ends it, and the form the program computes instead.

    A declaration written in branches only to avoid overflow, and shown without them
    (``shown_as``), ends its chain with a rewrite into those branches. That is how the
    program computes the derivative, not algebra for the student: the chain stops before
    it, and the branches are returned to be mentioned as the program's form.
    """
    last = chain.steps[-1] if chain.steps else None
    shown = op.shown_as[0] if op.shown_as else None
    if (shown is None or shown.has(sp.Piecewise) or last is None or last.rule != "rewrite"
            or not last.after.has(sp.Piecewise) or last.before.has(sp.Piecewise)):
        return chain, None
    return replace(chain, steps=chain.steps[:-1]), last.after


@document_view.register
def _(op: Activation, lang: Language) -> ActivationView:
    steps = derivation_steps(op)
    derivative, computed = lecture_chain(op, steps.derivative)
    derivation = derive_activation(op)
    printer = printer_for(op, lang)
    partial = printer_for(op, lang, partial=True)
    facts = activation_facts(op, derivation.forward, derivation.derivative, derivation.kinks)
    defaults = param_defaults(op, lang)
    params = tuple(
        ParamView(p.name, printer.doprint(p.symbol), default.tex, p.learnable, default.rel)
        for p in op.params
        for default in [defaults[p.symbol]]
    )
    by_name = {pv.name: pv for pv in params}
    noise = tuple(
        NoiseView(printer.doprint(n.symbol), n.distribution, printer.doprint(n.low),
                  # (l + u)/2, the mean as it is said, not SymPy's l/2 + u/2; a sentence
                  # quotes it, so with a slash.
                  printer.doprint(n.high), printer.inline(sp.factor(n.eval_value)))
        for n in op.noise
    )
    fx = printer.doprint(steps.function)
    return ActivationView(
        kind="activation",
        name=op.name,
        title=op_title(op, lang),
        symbol=op.latex,
        fx=fx,
        prime=rf"{op.latex}'({printer.doprint(x)})",
        definition=" = ".join(printer.doprint(form) for form in steps.shown),
        params=params,
        noise=noise,
        derivative=chain_view(derivative, printer),
        param_chains=tuple((by_name[p.name], chain_view(c, partial)) for p, c in steps.params),
        # A kink only of the formula (softsign's |x|, where both sides have slope 1) is no
        # point to discuss; one that is smooth only at the defaults (ELU, α = 1) is.
        # A jump (the Heaviside step) is discussed even where both sides are flat.
        kinks=tuple(_in_symbols(kink_view(k, lang), derivation.derivative, k.at, printer,
                                frozenset(n.symbol for n in op.noise), lang,
                                derivation.forward)
                    for k in facts.kinks if not k.smooth or not k.continuous or op.params),
        properties=properties_view(facts, lang, printer, op),
        f_plot=plot_view(facts.f_curve, facts.window, ()),
        df_plot=plot_view(facts.df_curve, facts.window, facts.saturation),
        remarks=op.remarks,
        definition_note=op_words(op, lang, "definition_notes"),
        saturation_note=op_words(op, lang, "saturation_notes"),
        computed=printer.doprint(computed) if computed is not None else "",
        except_at=_except_at(facts.kinks, lang),
        named=named_definitions(op, steps, printer),
    )

