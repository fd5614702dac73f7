"""Losses and layers → template context: derivations over indexed sums, printed.

A loss derivation fixes one case c of the batch and, once the sum over the cases has
been dropped, no longer prints its index (the notes write ŷ_k, not ŷ_{c,k}); a layer
derivation keeps every index. Arrays print in the notes' notation (:data:`NOTATION`),
the upstream gradient ∂E/∂out as δ and the gradient of an intermediate array A as
∂E/∂A. All words are in the templates.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp
from sympy.printing.precedence import PRECEDENCE

from derive.calculus.derivation import LABELS, derive_loss, output_upstream
from derive.calculus.functions import NamedFunction, softplus, uniform01
from derive.calculus.indexed import ArgMax, K, N, lse, p, q, softmax_of
from derive.calculus.steps import (
    CASE,
    ROW,
    D,
    GradientSteps,
    LayerSteps,
    LossSteps,
    OpenSum,
    Step,
    StepChain,
    derivation_steps,
    loss_indices,
    prediction_first,
)
from derive.calculus.steps.loss import elements_first, even_first, written
from derive.errors import DeriveError
from derive.latex.context import (
    ChainView,
    Language,
    ParamView,
    StepView,
    default_value,
    document_view,
    number,
    op_title,
)
from derive.latex.lines import LINE, width
from derive.latex.printer import WORDS, DerivePrinter
from derive.spec import Layer, Loss, VectorFunction

#: How arrays and scalars of losses and layers are written (notation, not words).
NOTATION = {
    "yhat": r"\hat{y}",
    "softmax(z)": r"\operatorname{softmax}(z)",
    "softmax": r"\operatorname{softmax}",
    "x_pad": r"\tilde{x}",
    "xhat": r"\hat{x}",
    "htilde": r"\tilde{h}",
    "var": r"\sigma^{2}",
    "mu": r"\mu",
    "running_mean": r"\bar{\mu}",
    "running_var": r"\bar{\sigma}^{2}",
    "gamma": r"\gamma",
    "beta": r"\beta",
    "epsilon": r"\varepsilon",
    "keep": "m",
    "arg": "a",
    "p_drop": "p",
    "KH": "k_{h}",
    "KW": "k_{w}",
    "HP": r"\tilde{H}",
    "WP": r"\tilde{W}",
    "OH": r"H_{\mathrm{out}}",
    "OW": r"W_{\mathrm{out}}",
    "KL": "k",
    "LP": r"\tilde{L}",
    "OL": r"L_{\mathrm{out}}",
}
#: A uniform draw in [0, 1) at an element's position (dropout's mask).
DRAW = sp.IndexedBase("u", real=True)
#: Integer labels, printed t (c is the case index of the derivations).
TARGET_LABELS = sp.IndexedBase("t", integer=True)


def hide_case(expr: sp.Expr, case: sp.Symbol) -> sp.Expr:
    """``expr`` with the case index dropped from every array element that has it first."""
    def short(e):
        rest = e.indices[1:]
        return e.base[rest] if rest else e.base.label

    return expr.replace(
        lambda e: isinstance(e, sp.Indexed) and e.indices and e.indices[0] == case, short)


def indexed_printer(lang: Language, symbols: dict | None = None,
                    gradients: dict | None = None, loss: str = "E",
                    functions: dict | None = None, one_based: bool = True) -> DerivePrinter:
    """A printer with the notation of indexed derivations.

    Indices count from 1, as in the course notes, unless ``one_based`` is false (for
    formulas with offsets such as S h + i, which depend on where counting starts).
    """
    return DerivePrinter({
        "symbols": {**NOTATION, **(symbols or {})},
        "functions": functions or {},
        "words": {w: lang.words[w] for w in WORDS},
        "partial": True,
        "separator": lang.separator,
        "gradients": gradients or {},
        "loss": loss,
        "one_based": one_based,
    })


def plain_indices(*exprs: sp.Expr) -> bool:
    """Whether every array element in ``exprs`` is indexed by plain names (x[n, i]).

    Then counting from 1 changes no formula (x[n, S h + i] would).
    """
    return all(isinstance(i, sp.Symbol)
               for e in exprs for el in e.atoms(sp.Indexed) for i in el.indices)


#: Rules whose sentence names no term: folded into a step of the same rule, they would
#: repeat its sentence word for word.
STATED_ONCE = ("sum", "constant", "constant_factor")


def _step_view(i: int, step: Step, printer: DerivePrinter, show) -> StepView:
    p_ = printer.doprint

    def pr(e):
        return p_(show(e))

    return StepView(
        number=i,
        rule=step.rule,
        tex=pr(step.after),
        focus=pr(step.focus) if step.focus is not None else "",
        result=pr(step.result) if step.result is not None else "",
        inner=tuple((pr(a), pr(b)) for a, b in step.inner),
        identities=tuple(tuple(pr(e) for e in identity) for identity in step.identities),
        quote=tuple(pr(q_) for q_ in step.quote),
        # The step's own rule is its sentence already: a sum rule folded into a sum
        # rule's step would say "the derivative of a sum is ..." twice. A clause on the
        # other sum ("of the other sum only … remains") says something new.
        folded=tuple((rule, pr(node)) for rule, node in step.folded
                     if rule != step.rule or rule not in STATED_ONCE),
        # A chain rule inside another differentiates by the inner function (d/du ln cosh u).
        by=pr(step.focus.variables[0]) if isinstance(step.focus, sp.Derivative)
        and isinstance(step.focus.variables[0], sp.Symbol) else "",
    )


def indexed_chain_view(chain: StepChain, printer: DerivePrinter) -> ChainView:
    """Print an indexed chain; after "drop the cases" the case index is no longer shown."""
    printer = printer.ordered(chain.outer_first())
    rules = chain.rules()
    hide_after = rules.index("drop_cases") + 1 if "drop_cases" in rules else None
    steps = []
    for i, step in enumerate(chain.steps):
        hidden = hide_after is not None and i + 1 > hide_after and chain.case is not None

        def show(e, hidden=hidden):
            return hide_case(e, chain.case) if hidden else e

        steps.append(_step_view(i + 1, step, printer, show))
    short = hide_case(chain.var, chain.case) if chain.case is not None else chain.var
    return ChainView(
        var=printer.doprint(chain.var),
        d=r"\partial",
        lhs=printer.doprint(chain.start),
        steps=tuple(steps),
        derivative=steps[-1].tex if steps else "",
        in_output="",
        case=printer.doprint(chain.case) if chain.case is not None else "",
        var_short=printer.doprint(short),
        lhs_short=printer.doprint(hide_case(chain.start, chain.case))
        if hide_after is not None and chain.case is not None else "",
        short_from=hide_after + 1 if hide_after is not None else 0,
    )


def _params(op, printer: DerivePrinter, lang: Language) -> tuple[ParamView, ...]:
    return tuple(ParamView(p_.name, printer.doprint(p_.symbol) if not p_.latex else p_.latex,
                           default_value(p_.default, lang), p_.learnable)
                 for p_ in op.params if p_.latex)


# --- losses ---------------------------------------------------------------------------


@dataclass(frozen=True)
class KernelForm:
    """One target encoding as the kernel computes it: the loss of a case and the gradient."""

    encoding: str
    row: str
    gradient_lhs: str
    gradient: str


@dataclass(frozen=True)
class LossView:
    """Everything a loss's templates print."""

    kind: str
    name: str
    title: str
    symbol: str
    pred: str
    target: str
    logits: bool
    probabilities: bool
    scale: str
    definition: str
    params: tuple[ParamView, ...]
    chain: ChainView
    result_lhs: str
    result: str
    index_result: str
    kernel: tuple[KernelForm, ...]
    stable: tuple[str, ...]
    log_floor: str
    grad_floor: str
    one_hot: bool
    case_loss: str
    output_def: str


def _scale_kind(op) -> str:
    if op.scale == 1 / (N * K):
        return "mean_all"
    if op.scale == 1 / N:
        return "mean_batch"
    if op.scale == sp.Rational(1, 2):
        return "half_sum"
    return "other"


def _stable_features(op, exprs) -> tuple[str, ...]:
    features = []
    if op.term.has(sp.cosh):
        # The declared ln cosh is evaluated through its overflow-free rewrite.
        features.append("log_cosh")
    if any(e.has(softplus) for e in exprs):
        features.append("softplus")
    if any(e.has(lse) for e in exprs):
        features.append("lse")
    if any(e.has(sp.codegen.cfunctions.log1p) for e in exprs):
        features.append("log1p")
    if op.log_floor is not None:
        features.append("log_floor")
    if op.grad_floor is not None:
        features.append("grad_floor")
    return tuple(features)


def _kernel_printed(expr: sp.Expr, free_case, free_out) -> sp.Expr:
    """An engine expression in p, q (and the declaration's k, j) with the printed indices."""
    n, j, k, _, _ = loss_indices()
    expr = expr.xreplace({j: ROW}).xreplace({k: j, LABELS: TARGET_LABELS})
    return expr.xreplace({p: free_case, q: free_out})


@document_view.register
def _(op: Loss, lang: Language) -> LossView:
    import sympy.codegen.cfunctions  # noqa: F401  (log1p, for _stable_features)

    steps: LossSteps = derivation_steps(op)
    n, j, k, _, _ = loss_indices()
    # A composite name (CE∘softmax) reads badly in ∂·/∂z: such losses are called L.
    symbol = "L" if r"\circ" in op.latex else op.latex
    printer = indexed_printer(lang, {"L": symbol, **{p_.symbol.name: p_.latex
                                                     for p_ in op.params if p_.latex}})
    chain = indexed_chain_view(steps.chain, printer)
    result_lhs = hide_case(D(steps.name, op.pred[CASE, k]), CASE)
    kernel, exprs = [], []
    for variant in derive_loss(op).variants:
        # In the definition's order and signs: −Σ(y ln ŷ + …), |ŷ − y|.
        row = written(_kernel_printed(variant.row_value, n, j), op.pred)
        # The softmax of the logits by the name the definition gives it (ŷ), as in §2.
        gradient = _kernel_printed(variant.gradient, n, j).xreplace(
            {softmax_of(op.pred): sp.IndexedBase("yhat", real=True)})
        # Read in ŷ − y, as the boxed result (sgn(ŷ − y), not −sgn(y − ŷ)), common factors
        # out as the box has them: 2(ŷ − y)/(KN), not (2ŷ − 2y)/(KN).
        gradient = sp.factor_terms(
            even_first(prediction_first(gradient, op.pred[n, j]) or gradient, op.pred))
        exprs += [row, gradient]
        kernel.append(KernelForm(variant.encoding, printer.doprint(row),
                                 printer.doprint(D(steps.name, op.pred[n, j])),
                                 printer.doprint(gradient)))
    index_result = ""
    if steps.index_gradient is not None:
        index = hide_case(steps.index_gradient.xreplace(
            {LABELS: TARGET_LABELS, softmax_of(op.pred): sp.IndexedBase("yhat", real=True)}), CASE)
        index_result = printer.doprint(index)
    case_loss = printer.doprint(op.scale.xreplace({N: 1, K: 1}))
    outputs = [s_ for s_ in steps.chain.steps[1:] if s_.rule == "definition" and s_.inner]
    output_def = ""
    if outputs:
        (named, value), = outputs[0].inner
        output_def = f"{printer.doprint(named)} = {printer.doprint(value)}"
    return LossView(
        kind="loss",
        name=op.name,
        title=op_title(op, lang),
        symbol=symbol,
        pred=printer.doprint(op.pred.label),
        target=printer.doprint(op.target.label),
        logits=op.samples == "logits",
        probabilities=op.samples in ("probabilities",),
        scale=_scale_kind(op),
        definition=printer.doprint(steps.definition),
        params=_params(op, printer, lang),
        chain=chain,
        result_lhs=printer.doprint(result_lhs),
        result=printer.doprint(hide_case(steps.chain.result, CASE)),
        index_result=index_result,
        kernel=tuple(kernel),
        stable=_stable_features(op, exprs),
        log_floor=f"{op.log_floor:g}" if op.log_floor is not None else "",
        # PyTorch's 1e-12 is the float32 nearest to it: 10⁻¹², not 1.0000889·10⁻¹².
        grad_floor=number(op.grad_floor, lang).tex if op.grad_floor else "",
        one_hot=bool(op.identities) or "index" in op.targets,
        case_loss=case_loss,
        output_def=output_def,
    )


# --- layers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class GradView:
    """One gradient of a layer, printed."""

    role: str
    array: str
    lhs: str
    result: str
    route: str
    chain: ChainView | None
    single: str
    #: Steps to a slide: one when a step breaks over lines (two would overfill it).
    per_frame: int = 2
    #: The two sides of :attr:`single`, for an article's align at its "=".
    single_sides: tuple[str, str] = ("", "")


@dataclass(frozen=True)
class HyperView:
    """A hyper-parameter: its keyword (for the words), LaTeX and default."""

    keyword: str
    tex: str
    default: str


@dataclass(frozen=True)
class LayerView:
    """Everything a layer's templates print."""

    kind: str
    name: str
    title: str
    symbol: str
    out: str
    definition: str
    steps: tuple[tuple[str, str], ...]
    hyper: tuple[HyperView, ...]
    upstream: str
    upstream_def: str
    inputs: tuple[str, ...]
    weights: tuple[str, ...]
    buffers: tuple[str, ...]
    gradients: tuple[GradView, ...]
    intermediates: tuple[GradView, ...]
    single: bool
    sizes: tuple[tuple[str, str], ...]
    padded: str
    routes: bool
    mask: bool
    derived: bool
    zero_based: bool = False
    batch_stats: bool = False
    #: A step computes a statistic (μ, σ²): its array has fewer indices than the output.
    stats: bool = False
    padded_axes: int = 0
    flat: tuple[str, str, str] = ()
    positions: tuple[tuple[str, str, str, str], ...] = ()
    #: Integer inputs read as row numbers (an embedding's tokens) and the array they index.
    indices: tuple[tuple[str, str], ...] = ()


class PositionPrinter(DerivePrinter):
    """A layer's printer that first writes each window position under its own name.

    x_{n,c,r^*,u^*}, not x_{n,c,S h + ⌊a/k⌋, S w + (a mod k)}: a subscript inside a
    subscript cannot be read. With ``fixed`` set (a layer whose indices have offsets),
    every index is then counted from 1 (:func:`count_from_one`).
    """

    _default_settings = {**DerivePrinter._default_settings, "positions": (), "fixed": None,
                         "trailing": (), "weights": (), "computed": (), "inputs": (),
                         "gates": ()}

    def _as_ordered_terms(self, expr, order=None):
        terms = list(super()._as_ordered_terms(expr, order=order))
        # A sum whose every term reads a weight follows the declaration's order of the
        # weights, as one writes it: W_ih x + b_ih + W_hh h + b_hh and W x + b, not
        # SymPy's b_hh + b_ih + … (the sort is stable: terms of one weight keep theirs).
        rank = {w: k_ for k_, w in enumerate(self._settings["weights"])}

        def first_weight(term):
            held = [rank[el.base] for el in term.atoms(sp.Indexed) if el.base in rank]
            return min(held) if held else None

        ranks = [first_weight(t_) for t_ in terms]
        if len(terms) > 1 and None not in ranks:
            terms = [t_ for _, t_ in sorted(zip(ranks, terms, strict=True), key=lambda p_: p_[0])]
        else:
            # A sum of the layer's own arrays and their products, in the order they can be
            # computed (an input is ready first): s + r v in a GRU's candidate, as
            # declared, f c^⟨t−1⟩ + i g in an LSTM's cell (SymPy's: v r + s).
            ready = [self._ready(t_) for t_ in terms]
            if len(terms) > 1 and None not in ready:
                terms = [t_ for _, t_ in sorted(zip(ready, terms, strict=True),
                                                key=lambda p_: p_[0])]
        # The chain rule's terms, one for each intermediate array the variable feeds, keep
        # the order of the layer's steps from line to line (∂E/∂μ … + ∂E/∂σ² … + ∂E/∂x̂ …):
        # SymPy's order changed with each step's factors, and the terms moved about.
        held = [self._gradient_of(t_) for t_ in terms]
        if len(terms) > 1 and None in ranks and None not in held:
            terms = [t_ for _, t_ in sorted(zip(held, terms, strict=True), key=lambda p_: p_[0])]
        # A setting standing alone as a term comes last, as one writes a small constant
        # added to keep a quantity away from zero: σ² + ε, not ε + σ² (SymPy's order).
        alone = [t_ for t_ in terms if t_ in self._settings["trailing"]]
        return [t_ for t_ in terms if t_ not in alone] + alone

    def _gradient_of(self, term) -> int | None:
        """The step whose array's gradient ∂E/∂A the term holds (its rank), or None.

        None for a term that holds no such gradient or more than one. An element's label
        is a symbol, and one example's ∂E/∂μ (its index dropped) a symbol of that name.
        """
        rank = {name: k_ for k_, name in enumerate(self._settings["gradients"])}
        held = {rank[s_.name] for s_ in term.atoms(sp.Symbol) if s_.name in rank}
        return held.pop() if len(held) == 1 else None

    def _ready(self, term) -> int | None:
        """When a term of the layer's own arrays can be computed, None for another term.

        The rank of the last array it reads; an input is ready before any step.
        """
        computed, inputs = self._settings["computed"], self._settings["inputs"]
        factors = sp.Mul.make_args(term)
        if not all(isinstance(f, sp.Indexed) and (f.base in computed or f.base in inputs)
                   for f in factors) or not any(f.base in computed for f in factors):
            return None
        rank = {a: k_ for k_, a in enumerate(computed)}
        return max(rank.get(f.base, -1) for f in factors)

    def _print_plain_Mul(self, expr):
        # A product of the layer's own arrays names a gate first, as the fraction that
        # scales the rest (f c^⟨t−1⟩, i g, r v), then the others in the order the layer
        # computes them, its inputs last (SymPy sorts by name: c^⟨t−1⟩ f + g i, v r).
        computed, gates = self._settings["computed"], self._settings["gates"]
        factors = sp.Mul.make_args(expr)
        if len(factors) > 1 and all(isinstance(f, sp.Indexed) for f in factors) and any(
                f.base in computed for f in factors) and all(
                f.base in computed or f.base in self._settings["inputs"] for f in factors):
            rank = {a: k_ for k_, a in enumerate(computed)}
            ordered = sorted(factors, key=lambda f: (f.base not in gates,
                                                     rank.get(f.base, len(rank))))
            return " ".join(self._print(f) for f in ordered)
        # In a layer's document (its weights set), a fraction whose numerator scales a sum
        # by elements names the elements first, as one writes a product:
        # γ_c (x − μ̂_c)/√(σ̂²_c + ε) and δ (x − μ̂_c)/…, not SymPy's (x − μ̂_c) γ_c.
        numer, denom = sp.fraction(expr, exact=True)
        sign = ""
        if numer.could_extract_minus_sign():
            sign, numer = "-", -numer
        factors = numer.as_ordered_factors()
        sums = [f for f in factors if isinstance(f, sp.Add)]
        if denom == 1 or not sums or len(sums) == len(factors) or not all(
                isinstance(f, sp.Add | sp.Indexed) for f in factors) or not self._settings[
                "weights"]:
            return super()._print_plain_Mul(expr)
        ordered = [f for f in factors if not isinstance(f, sp.Add)] + sums
        top = " ".join(self.parenthesize(f, PRECEDENCE["Mul"], strict=True) for f in ordered)
        return rf"{sign}\frac{{{top}}}{{{self._print(denom)}}}"

    def _print_StrictGreaterThan(self, expr):
        # A value compared with a setting names the value first, as one says it: the
        # element is dropped if u < p (Piecewise keeps it as p > u).
        if expr.lhs in self._settings["trailing"]:
            return rf"{self._print(expr.rhs)} < {self._print(expr.lhs)}"
        return super()._print_StrictGreaterThan(expr)

    def doprint(self, expr):
        """Print ``expr`` with the named window positions in place."""
        expr = name_positions(sp.sympify(expr), self._settings["positions"])
        # A lone index is a name (the sum's index c'), not a position.
        if self._settings["fixed"] is not None and not isinstance(expr, sp.Symbol):
            expr = count_from_one(expr, self._settings["fixed"])
        return super().doprint(expr)


def is_index(symbol: sp.Symbol, fixed: frozenset) -> bool:
    """Whether ``symbol`` runs over positions: an integer from 0, not a size or a setting."""
    return bool(symbol.is_integer and symbol.is_nonnegative and not symbol.is_positive
                and symbol not in fixed)


def count_from_one(expr: sp.Expr, fixed: frozenset) -> sp.Expr:
    """``expr``, written with indices from 0, rewritten for indices that count from 1.

    The same quantity under new names: each index v is v − 1 in the old count and each
    position one more, so x̃_{n,c,S h + i} becomes x̃_{n,c,S (h − 1) + i} and a sum
    from 0 to K − 1 runs from 1 to K. Symbols in ``fixed`` (settings such as the
    padding P) are not indices.
    """
    return _shift(expr, fixed)


def _shift(e, fixed):
    if isinstance(e, sp.Symbol):
        return e - 1 if is_index(e, fixed) else e
    if isinstance(e, sp.Indexed):
        element = e.base[tuple(_shift(i, fixed) + 1 for i in e.indices)]
        # An array of positions (an embedding's tokens) holds them counted from 1 too.
        return element - 1 if is_index(e.base.label, fixed) else element
    if isinstance(e, sp.KroneckerDelta):
        return sp.KroneckerDelta(*(_shift(a, fixed) + 1 for a in e.args), evaluate=False)
    if isinstance(e, sp.core.relational.Relational):
        # A relation between positions (n' = n, r − S h ≥ 0) holds between them counted
        # from 1: both sides one more.
        return e.func(*(_shift(a, fixed) + 1 for a in e.args), evaluate=False)
    if isinstance(e, sp.Sum | ArgMax | OpenSum):
        limits = [(v, _shift(lo, fixed) + 1, _shift(hi, fixed) + 1) for v, lo, hi in e.limits]
        body = _shift(e.function if isinstance(e, sp.Sum) else e.body, fixed)
        if isinstance(e, OpenSum):
            return OpenSum(body, limits, [_shift(p_, fixed) + 1 for p_ in e.picks])
        return type(e)(body, *limits)
    if not e.args or isinstance(e, sp.Number):
        return e
    return e.func(*(_shift(a, fixed) for a in e.args))


def name_positions(expr: sp.Expr, positions) -> sp.Expr:
    """``expr`` with each (definition, element of the arg max, name) written as the name.

    A definition such as S h + ⌊a_{n,c,h,w}/k⌋ is matched at any indices of the arg max
    (a_{n,c,h',w'} as well as a_{n,c,h,w}).
    """
    for definition, arg, name, _ in positions:
        def named(e, definition=definition, arg=arg, name=name):
            for el in e.atoms(sp.Indexed):
                if el.base != arg.base:
                    continue
                moved = definition.xreplace(dict(zip(arg.indices, el.indices, strict=True)))
                rest = sp.expand(e - moved)
                if not rest.has(arg.base):
                    return name + rest
            return e

        expr = expr.replace(lambda e, arg=arg: isinstance(e, sp.Add) and e.has(arg.base), named)
    return expr


def window_positions(op: Layer, steps: LayerSteps):
    """The row and column (…) of each window's arg max, named after the input's indices.

    (definition, arg-max element, named array) for each index of the output's formula
    that holds an arg max: S h + ⌊a/k⌋ is r^*, the row of the gradient ∂E/∂x_{n,c,r,u}.
    """
    argmaxes = [t for t, e in op.steps if e.has(ArgMax)]
    if not argmaxes:
        return ()
    arg = argmaxes[0]
    read = next(el for el in steps.expr.atoms(sp.Indexed)
                if el.base != arg.base and el.has(arg.base))
    element = next(g.element for g in steps.gradients if g.array == read.base)
    # r^*, without the indices n, c, h, w it depends on: as a subscript of x's subscript
    # it could not be read.
    pairs = enumerate(zip(read.indices, element.indices, strict=True))
    return tuple((index, arg, sp.Symbol(rf"{named.name}^{{*}}", integer=True, nonnegative=True),
                  axis)
                 for axis, (index, named) in pairs if index.has(arg.base))


def layer_printer(op: Layer, lang: Language, steps: LayerSteps) -> DerivePrinter:
    """The printer of a layer: δ for the upstream gradient, ∂E/∂A for the others."""
    upstream = steps.upstream.label.name
    gradients = {f"d_{t.base.label.name}": NOTATION.get(t.base.label.name, t.base.label.name)
                 for t, _ in steps.steps}
    symbols = {upstream: r"\delta"}
    # A step the layer also returns (an LSTM step's cell state c) has its caller's
    # gradient, δ marked with the step's name.
    symbols.update({output_upstream(a).label.name: rf"\delta^{{{NOTATION.get(str(a), a)}}}"
                    for a in op.extra_outputs})
    symbols.update({p_.symbol.name: p_.latex for p_ in op.hyper if p_.latex})
    exprs = [steps.expr, *(e for _, e in steps.steps)]
    # Plain indices count from 1 by their bounds alone; offsets (x̃_{n,c,S h + i}) by
    # renaming every index, as the notes count from 1 too.
    plain = plain_indices(*exprs)
    base = indexed_printer(lang, symbols, gradients, one_based=plain)
    settings = {k: v for k, v in base._settings.items()
                if k in PositionPrinter._default_settings}
    fixed = None if plain else frozenset(p_.symbol for p_ in op.hyper)
    return PositionPrinter({**settings, "positions": window_positions(op, steps),
                            "fixed": fixed,
                            "trailing": tuple(p_.symbol for p_ in op.hyper if p_.latex),
                            "weights": op.weights,
                            "computed": tuple(t_.base for t_, _ in op.steps),
                            "gates": tuple(t_.base for t_, e in op.steps if isinstance(
                                e, NamedFunction) and e.in_unit_interval),
                            "inputs": op.inputs})


def _single_case(result: sp.Expr, batch: sp.Symbol) -> sp.Expr:
    """A gradient for a batch of one case, the case index dropped: the notes' δ_j x_i.

    The gradient of an intermediate array that loses its only index (d_mu[n] → d_mu)
    still prints as ∂E/∂μ (the printer knows the gradients' names).
    """
    one = result.xreplace({N: 1}).doit()
    return hide_case(hide_case(one, sp.Integer(0)), batch)


def _grad_view(g: GradientSteps, role: str, printer, batch, single: bool) -> GradView:
    lhs = printer.doprint(D(sp.Symbol("E"), g.element))
    chain = indexed_chain_view(g.chain, printer) if g.chain is not None else None
    sides = ("", "")
    if single:
        short = hide_case(g.element, batch)
        sides = (printer.doprint(D(sp.Symbol("E"), short)),
                 printer.doprint(_single_case(g.result, batch)))
    tall = chain is not None and any(width(s.tex) > LINE for s in chain.steps)
    return GradView(role, printer.doprint(g.array.label), lhs, printer.doprint(g.result),
                    g.route, chain, " = ".join(sides) if single else "", 1 if tall else 2,
                    sides)


#: Document views of layers whose declaration has a recurrence, by its
#: :func:`recurrence_kind` (the Elman layer's h; the GRU's h, which also reads itself one
#: step back; the LSTM's h and cell state c), filled by the modules that define them
#: (derive.latex.recurrent, derive.latex.gated, derive.latex.cell).
RECURRENT_VIEWS: dict = {}


def recurrence_kind(op: Layer) -> tuple[int, bool]:
    """(states carried through time, whether the output reads its own previous value).

    (1, False) for the Elman layer, h_t = f(s_t); (1, True) for the GRU, whose
    h_t = (1 − z_t) h̃_t + z_t h_{t−1} reads h_{t−1} directly; (2, False) for the LSTM.
    """
    rec = op.recurrence
    direct = any(el.base == rec.state for el in op.expr.atoms(sp.Indexed))
    return len(rec.states), direct


@document_view.register
def _(op: Layer, lang: Language):
    if op.recurrence is not None:
        # Chosen by the declaration's fields: a layer with a recurrence gets the document
        # through time of its kind of recurrence, every other layer the one below.
        kind = recurrence_kind(op)
        if kind not in RECURRENT_VIEWS:
            raise DeriveError(
                f"no document for a recurrence that carries {kind[0]} states"
                + (" and reads its output one step back" if kind[1] else ""),
                where=f"layer {op.name!r}",
                fix="Import derive.latex.render, which loads every recurrent document.")
        return RECURRENT_VIEWS[kind](op, lang)
    return layer_view(op, lang)


def layer_view(op: Layer, lang: Language) -> LayerView:
    """The document view of a layer (one time step of a recurrent one, too)."""
    steps: LayerSteps = derivation_steps(op)
    printer = layer_printer(op, lang, steps)
    pr = printer.doprint
    batch = steps.out.indices[0]
    two_d = all(len(shape) <= 2 for _, shape in op.arrays)
    single = two_d and all(g.route == "rules" for g in steps.gradients)
    roles = {a: "input" for a in op.inputs} | {a: "weight" for a in op.weights}
    gradients = tuple(_grad_view(g, roles[g.array], printer, batch, single)
                      for g in steps.gradients)
    intermediates = tuple(_grad_view(g, "intermediate", printer, batch, False)
                          for g in steps.intermediates)
    hyper = tuple(HyperView(p_.keyword or p_.name, p_.latex, default_value(p_.default, lang))
                  for p_ in op.hyper if p_.latex)
    # Per-call switches printed as nothing (training, a seed) take their defaults: the
    # page shows training; a draw that is a function of (seed, position) is u at the
    # output's own indices.
    hidden = {p_.symbol: p_.default for p_ in op.hyper if not p_.latex}

    def shown(e):
        e = e.xreplace(hidden)
        return e.replace(lambda a: isinstance(a, uniform01),
                         lambda a: DRAW[steps.out.indices])

    upstream_el = steps.upstream[steps.out.indices]
    sizes = tuple((pr(s), pr(v)) for s, v in op.sizes)
    # A named count reads as the product of the sizes in the input's order: N·H·W.
    sizes += tuple((pr(s), r" \cdot ".join(pr(f) for f in v.args)) for s, v in steps.counts)
    padded, padded_axes = "", 0
    if op.padding is not None:
        padded_base, original, _ = op.padding
        padded = pr(padded_base.label)
        padded_axes = len(dict(op.arrays)[original]) - 2
    printed_steps = tuple((pr(t), pr(shown(e))) for t, e in steps.steps)
    positions = printer._settings["positions"]
    if positions:
        printed_steps, position_views = position_steps(steps.steps, positions, printer)
    else:
        position_views = ()
    return LayerView(
        kind="layer",
        name=op.name,
        title=op_title(op, lang),
        symbol=op.latex,
        out=pr(steps.out),
        definition=pr(steps.expr),
        steps=printed_steps,
        hyper=hyper,
        upstream=pr(upstream_el),
        upstream_def=pr(D(sp.Symbol("E"), steps.out)),
        inputs=tuple(pr(a.label) for a in op.inputs),
        weights=tuple(pr(a.label) for a in op.weights),
        buffers=tuple(pr(a.label) for a in op.buffers),
        gradients=gradients,
        intermediates=intermediates,
        single=single,
        sizes=sizes,
        padded=padded,
        routes=any(e.has(ArgMax) for _, e in op.steps),
        mask=any(p_.keyword == "p" for p_ in op.hyper),
        derived=any(g.route == "derived" for g in steps.gradients),
        zero_based=not printer._settings["one_based"] and printer._settings["fixed"] is None,
        # Statistics over the batch when a step's array has no batch index (μ_c, not μ_n).
        batch_stats=any(batch not in t.indices for t, _ in op.steps),
        stats=any(len(t.indices) < len(steps.out.indices) for t, _ in op.steps),
        padded_axes=padded_axes,
        flat=_flat_index(op, steps, printer),
        positions=position_views,
        indices=tuple((pr(a.label), pr(_indexed_by(op, a).label)) for a in op.indices),
    )


def _indexed_by(op: Layer, base: sp.IndexedBase) -> sp.IndexedBase:
    """The array whose subscript reads the integer input ``base`` (an embedding's table)."""
    size = op.index_range(base)
    return next(a for a, dims in op.arrays if size in dims and a not in op.indices)


def position_steps(pairs, positions, printer):
    """The arg-max step as (r^*, u^*) = arg max over the window, and each position's range.

    ``pairs`` are a layer's steps (array element, expression), e.g. ``LayerSteps.steps``
    or a network layer's with its arrays renamed. Returns the printed steps and, per
    position, (name, index, first, last): the window of output (h, w) holds rows
    S h … S h + k − 1.
    """
    pr = printer.doprint
    arg = positions[0][1]
    names = [name for _, _, name, _ in positions]
    printed, views = [], []
    for t, e in pairs:
        argmax = next(iter(e.atoms(ArgMax)), None)
        if argmax is None or t.base != arg.base:
            printed.append((pr(t), pr(e)))
            continue
        body, limits = argmax.body, []
        read, = [el for el in body.atoms(sp.Indexed)
                 if any(el.has(lim[0]) for lim in argmax.limits)]
        for (_, _, name, axis), named in zip(positions, names, strict=True):
            index = read.indices[axis]
            (var, low, high), = [lim for lim in argmax.limits if index.has(lim[0])]
            plain = sp.Symbol(name.name.split("^")[0], integer=True, nonnegative=True)
            body = body.xreplace({index: plain})
            first, last = index.xreplace({var: low}), index.xreplace({var: high})
            limits.append((plain, first, last))
            views.append((pr(named), pr(plain), *window_bounds(first, last, printer)))
        target = r"\left(" + ", ".join(pr(n_) for n_ in names) + r"\right)"
        printed.append((target, pr(ArgMax(body, *limits))))
    return tuple(printed), tuple(views)


def window_bounds(first: sp.Expr, last: sp.Expr, printer) -> tuple[str, str]:
    """The first and last position of a window (counted from 0) as the page counts.

    The last as the first plus the window: S h + k − 1, not k − 1 + S h; from 1,
    S (h − 1) + 1 and S (h − 1) + k.
    """
    if printer._settings["fixed"] is None:
        pr = printer.doprint
        return pr(first), rf"{pr(first)} + {pr(last - first)}"
    first = _shift(first, printer._settings["fixed"]) + 1
    last = _shift(last, printer._settings["fixed"]) + 1
    start, base = first.as_coeff_Add()
    def pr(e):  # already counted from 1: printed without a second shift
        return DerivePrinter.doprint(printer, e)

    # The number after the base, with its sign: a stride given as a number (a network's
    # layer) leaves 2h − 1 and 2h, not 2h + −1 and 2h + 0.
    def plus(c):
        if c == 0:
            return pr(base)
        if c.could_extract_minus_sign():
            return rf"{pr(base)} - {pr(-c)}"
        return rf"{pr(base)} + {pr(c)}"

    return plus(start), plus(sp.expand(last - base))


def _flat_index(op: Layer, steps: LayerSteps, printer) -> tuple[str, str, str]:
    """For a layer stored flat (flatten): (y_{n,i}, i from the indices, the last i).

    i = (c − 1) H W + (h − 1) W + w when counting from 1.
    """
    if op.view is None:
        return ()
    pr = printer.doprint
    shape = dict(op.arrays)[steps.out.base]
    shift = 1 if printer._settings["one_based"] else 0
    terms = []
    for axis, index in enumerate(steps.out.indices[1:], start=1):
        later = " ".join(pr(size) for size in shape[axis + 1:])
        if not later:
            terms.append(pr(index))
        elif shift:
            terms.append(rf"\left({pr(index)} - 1\right) {later}")
        else:
            terms.append(rf"{pr(index)} {later}")
    flat = sp.Symbol("i", integer=True)
    last = " ".join(pr(size) for size in shape[1:])
    return (pr(steps.out.base[steps.out.indices[0], flat]),
            rf"{pr(flat)} = " + " + ".join(terms),
            last if shift else rf"{last} - 1")


# --- row-wise vector functions (softmax) ---------------------------------------------------


@dataclass(frozen=True)
class VectorView:
    """Everything a vector function's templates print: the Jacobian and its product."""

    kind: str
    name: str
    title: str
    symbol: str
    element: str
    definition: str
    arg: str
    upstream: str
    upstream_def: str
    jacobian: ChainView
    jacobian_lhs: str
    jacobian_result: str
    vjp: ChainView
    vjp_lhs: str
    vjp_result: str
    kernel_lhs: str
    kernel: str
    #: The arriving gradient's letter (g), as the kernel's sentence names it.
    upstream_symbol: str = ""


def _hidden_chain_view(chain: StepChain, printer: DerivePrinter) -> ChainView:
    """A chain printed without the case index from its first line (one case, as the notes)."""
    def show(e):
        return hide_case(e, chain.case)

    printer = printer.ordered(chain.outer_first())
    steps = tuple(_step_view(i + 1, s, printer, show) for i, s in enumerate(chain.steps))
    return ChainView(var=printer.doprint(show(chain.var)), d=r"\partial",
                     lhs=printer.doprint(show(chain.start)), steps=steps,
                     derivative=steps[-1].tex, in_output="", case="",
                     var_short=printer.doprint(show(chain.var)))


@document_view.register
def _(op: VectorFunction, lang: Language) -> VectorView:
    from derive.calculus.derivation import derive_vector

    steps = derivation_steps(op)
    symbols = {op.output.label.name: op.latex}
    printer = indexed_printer(lang, symbols)
    printer._settings["kronecker"] = "delta"
    case = steps.case

    def pr(e):
        return printer.doprint(hide_case(e, case))

    n, j, k, _, _ = loss_indices()
    upstream = op.upstream[case, k]
    kernel = derive_vector(op).vjp_in_output
    # The kernel's form in the derivation's own letters: case n, output j, the arriving
    # gradient by the same name as above (g), the saved output by the function's name
    # (y is the target in the loss documents), the result as ∂E/∂z (not p, q, ȳ, x̄).
    kernel_printer = indexed_printer(lang, {"d_y": printer.doprint(op.upstream.label),
                                            "y": op.latex})
    if kernel is not None:
        # softmax_{n,j} (g_{n,j} − Σ …), the saved output in front as in the boxed result.
        kernel = elements_first(kernel.xreplace({p: n, q: j}))
    return VectorView(
        kind="vector",
        name=op.name,
        title=op_title(op, lang),
        symbol=op.latex,
        element=pr(steps.element),
        definition=pr(steps.definition),
        arg=printer.doprint(op.arg.label),
        upstream=pr(upstream),
        upstream_def=pr(D(sp.Symbol("E"), op.output[case, k])),
        jacobian=_hidden_chain_view(steps.jacobian, printer),
        jacobian_lhs=pr(steps.jacobian.start),
        jacobian_result=pr(steps.jacobian.result),
        vjp=_hidden_chain_view(steps.vjp, printer),
        vjp_lhs=pr(steps.vjp.start),
        vjp_result=pr(steps.vjp.result),
        kernel_lhs=kernel_printer.doprint(D(sp.Symbol("E"), op.arg[n, j])),
        kernel=kernel_printer.doprint(kernel) if kernel is not None else "",
        upstream_symbol=printer.doprint(op.upstream.label),
    )
