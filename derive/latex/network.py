"""A network spec → template context: forward pass, δ recursion, gradients, explicit formulas.

Every formula is a layer's (or loss's) derived result with the layer's arrays renamed
W → W⁽ˡ⁾, δ → δ⁽ˡ⁾, x → x⁽ˡ⁻¹⁾ and its sizes replaced by the spec's numbers; the
all-dense networks also get the notes' explicit matrix formulas (seed 002), built as
SymPy matrix expressions by :func:`explicit_formulas` (which tests evaluate against
PyTorch's autograd).
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from derive import registry
from derive.calculus.derivation import derive_activation, derive_loss
from derive.calculus.indexed import ArgMax, K, N, p, q, softmax_of
from derive.calculus.steps import D, derivation_steps, loss_indices
from derive.errors import DeriveError
from derive.latex.context import Language, document_view, inline_title, op_title, printer_for
from derive.latex.facts import activation_facts
from derive.latex.indexed import (
    NOTATION,
    PositionPrinter,
    indexed_printer,
    plain_indices,
    position_steps,
    window_positions,
)
from derive.latex.lines import LINE, split, width
from derive.latex.penalty import training_terms
from derive.netplan import SKIP_SUM, NetworkPlan, NetworkSpec
from derive.spec import y


@dataclass(frozen=True)
class NetLayerView:
    """One layer of the network."""

    number: int
    type: str
    title: str
    activation: str
    act_symbol: str
    in_shape: str
    out_shape: str
    params: tuple[tuple[str, str], ...]
    forward: tuple[tuple[str, str], ...]
    #: A layer that reads its input zero-padded: the padded array's symbol (x̃⁽⁰⁾), the
    #: input it pads, the zeros added on each side and the padded shape; else "".
    padded: str = ""
    unpadded: str = ""
    padding: str = ""
    padded_shape: str = ""
    #: A pooling layer's window positions, which the text defines: per position (r^*,
    #: r, the window's first and last r); else ().
    positions: tuple[tuple[str, str, str, str], ...] = ()
    #: The output whose window they are in (s⁽ˡ⁾_{n,c,h,w}); else "".
    window_of: str = ""
    #: With a skip connection, the earlier output it adds (x⁽ᵏ⁾) and k; else "" and -1.
    skip: str = ""
    skip_from: int = -1


@dataclass(frozen=True)
class ActView:
    """An activation the network uses, with its derivative."""

    name: str
    symbol: str
    derivative: str
    in_output: str


@dataclass(frozen=True)
class SlopeView:
    """What the hidden layers' activation derivatives f' do to the gradient passed down.

    ``kind`` is "below" when every f' is at most a number below 1 (σ' ≤ 1/4: the product
    of the factors shrinks), "unit" when every f' is 1 on a whole half-line (ReLU' is 1
    where a unit is active: the factors do not shrink it), else "". Computed from each
    activation's derivative (:func:`~derive.latex.facts.activation_facts`), not its name.
    """

    kind: str = ""
    #: The largest bound's value (1/4) and each activation's bound (σ' ≤ 1/4), as LaTeX.
    most: str = ""
    bounds: tuple[str, ...] = ()
    #: The activations' f' (ReLU'), and whether f' is 0 on the other half-line (a unit
    #: inactive there passes nothing back).
    derivatives: tuple[str, ...] = ()
    zero: bool = False


@dataclass(frozen=True)
class Formula:
    """One displayed equation: what it is (for the words), its layer, both sides."""

    kind: str
    layer: int
    lhs: str
    rhs: str
    type: str = ""
    #: The array whose gradient this is (b^{(3)}), for the caption of a parameter's.
    array: str = ""
    #: The layers whose skip connections add the array (x⁽ᵏ⁾) to their output, in order.
    sums: tuple[int, ...] = ()
    #: A layer that stores its output flat (flatten): (δ⁽ˡ⁾_{n,c,h,w}, its place i in
    #: δ⁽ˡ⁾_{n,i} from the indices counted from 1, δ⁽ˡ⁾_{n,i}); else ().
    flat: tuple[str, str, str] = ()


@dataclass(frozen=True)
class NetworkView:
    """Everything a network's templates print."""

    kind: str
    name: str
    title: str
    layers: tuple[NetLayerView, ...]
    forward: tuple[tuple[str, str], ...]
    depth: int
    loss: str
    loss_title: str
    loss_symbol: str
    fused: str
    output_act: str
    activations: tuple[ActView, ...]
    output_delta: tuple[Formula, ...]
    backward: tuple[Formula, ...]
    explicit: tuple[Formula, ...]
    dense_only: bool
    optimizer: str
    lr: str
    batch_size: str
    #: The output activation's LaTeX (σ, softmax) and the fused loss's title, for the words.
    output_symbol: str = ""
    fused_title: str = ""
    #: The layers with a skip connection, as their views (number, skip, skip_from).
    skips: tuple[NetLayerView, ...] = ()
    #: What training adds to the gradients (a penalty, clipping, a decay) and the layers
    #: that normalise with running statistics in evaluation, or None.
    training: object = None
    #: The layers 1, …, ``explicit_below`` whose explicit formulas are too wide to print
    #: (0 when every layer's is printed).
    explicit_below: int = 0
    #: What the hidden layers' f' do to the gradient, for the vanishing-gradient sentence.
    slope: SlopeView = SlopeView()

    def forward_frames(self, most: int = 4) -> tuple[tuple[tuple[str, str], ...], ...]:
        """The forward equations grouped for slides, at most ``most`` to a group.

        A layer's equations stay together (a layer with more than ``most`` gets a group
        of its own): cut by count, the last slide of a CNN held its x⁽⁴⁾ = softmax(s⁽⁴⁾)
        alone, apart from the s⁽⁴⁾ it applies to.
        """
        groups: list[list] = []
        for layer in self.layers:
            if not groups or len(groups[-1]) + len(layer.forward) > most:
                groups.append([])
            groups[-1].extend(layer.forward)
        return tuple(tuple(g) for g in groups if g)


def _shape(shape) -> str:
    return r" \times ".join(str(d) for d in shape)


def layer_sizes(op, layer) -> dict:
    """The declaration's size symbols with this layer's numbers (the batch N stays N)."""
    values = dict(layer.sizes)
    # Two spellings of the padding symbol exist in the declarations: match by name.
    by_name = {s.name: v for s, v in values.items()}
    for s in set().union(*(sp.sympify(d).free_symbols for _, sh in op.arrays for d in sh)):
        if s not in values and s.name in by_name and s != N:
            values[s] = by_name[s.name]
    return values


#: Keys of the renamer's symbols: the exponents of arrays such as σ², and the gradient
#: arrays of a layer's intermediate steps (∂E/∂μ⁽ˡ⁾).
POWERS, GRADIENTS = "__powers__", "__gradients__"


def _renamer(op, number: int):
    """IndexedBase renames of one layer: its arrays with the layer's superscript."""
    steps = derivation_steps(op)
    names: dict = {}
    symbols: dict = {POWERS: {}, GRADIENTS: {}}

    def rename(base, name, tex):
        new = sp.IndexedBase(name, real=True)
        names[base] = new
        symbols[name] = tex

    rename(steps.upstream, f"delta{number}", rf"\delta^{{({number})}}")
    rename(op.out.base, f"s{number}", rf"s^{{({number})}}")
    for a in op.inputs:
        tex = NOTATION.get(a.label.name, a.label.name)
        rename(a, f"x{number}_{a.label.name}", rf"{tex}^{{({number - 1})}}")
    for w in op.weights:
        tex = NOTATION.get(w.label.name, w.label.name)
        rename(w, f"w{number}_{w.label.name}", rf"{tex}^{{({number})}}")
    # Arrays a layer computes on the way (a pooling window's arg-max a): shown in the
    # forward pass, so they carry the layer's number like the others.
    for t, _ in steps.steps:
        name = t.base.label.name
        tex = NOTATION.get(name, name)
        # A symbol with its own exponent (σ²) takes the layer's number on its letter and
        # the exponent outside, (σ⁽ˡ⁾_c)², as the printer's ``powers`` say.
        letter, _, power = tex.partition("^")
        rename(t.base, f"i{number}_{name}", rf"{letter}^{{({number})}}")
        if power:
            symbols[POWERS][f"i{number}_{name}"] = power.strip("{}")
        # Its gradient array (d_mu), which the input's gradient reads, is ∂E/∂μ⁽ˡ⁾.
        symbols[GRADIENTS][f"d{number}_{name}"] = rf"{letter}^{{({number})}}"
        for g in (*steps.gradients, *steps.intermediates):
            for el in g.result.atoms(sp.Indexed):
                if el.base.label.name == f"d_{name}":
                    names[el.base] = sp.IndexedBase(f"d{number}_{name}", real=True)
        if power:
            symbols[POWERS][f"d{number}_{name}"] = power.strip("{}")
    return names, symbols


def _act_function(number: int):
    """f'⁽ˡ⁾ as an undefined function, printed with the activation's name."""
    return sp.Function(f"fprime{number}", real=True)


#: The deepest network typeset. The explicit gradient of the first layer nests one matrix
#: product per layer above it; past a few dozen the formula is neither printable nor
#: readable, and the δ recursion it illustrates is the same at any depth.
MAX_LAYERS = 40

#: The widest explicit formula written out, in estimated characters (lines.LINE is one
#: line): two lines. Each layer further from the output nests one more (W)ᵀ(…) ⊙ f'(s)
#: pair; past two lines the nested brackets break inside one another and shrink, and
#: the δ recursion says the same at normal size.
EXPLICIT_WIDTH = 2 * LINE


@document_view.register
def _(spec: NetworkSpec, lang: Language) -> NetworkView:
    _check_depth(spec)
    plan = spec.plan
    symbols: dict = {}
    functions, activations = activation_views(plan, lang)
    renames = {}
    powers: dict = {}
    gradients: dict = {}
    for layer in plan.layers:
        names, syms = _renamer(layer.op, layer.spec.index + 1)
        powers |= syms.pop(POWERS)
        gradients |= syms.pop(GRADIENTS)
        symbols |= syms
        renames[layer.spec.index] = names
    # The notes' matrix formulas hold when every layer declares itself s = W x + b; they
    # multiply one factor per layer, which a skip connection's sum is not.
    dense_only = all(layer.op.matrix_form for layer in plan.layers)
    formulas = explicit_formulas(spec, symbols)[0] if dense_only and not plan.skips else []
    # The output x⁽ᴸ⁾, and the outputs of layers with a skip connection (whose gradient
    # the identity path sends down), are named before the printer copies the names.
    for number in (len(spec.layers), *(layer.spec.index + 1 for layer in plan.skips),
                   *(layer.spec.skip_from + 1 for layer in plan.skips)):
        symbols[f"x{number}"] = rf"x^{{({number})}}"
    printer = network_printer(plan, renames, symbols, functions, lang, powers, gradients)
    layer_views = forward_views(plan, renames, printer, lang)
    output = output_delta(plan, renames, symbols, printer.doprint)
    backward = backward_formulas(plan, renames, printer.doprint)
    explicit, explicit_below = readable_explicit(
        Formula(kind, number, printer.doprint(lhs), printer.doprint(rhs))
        for kind, number, lhs, rhs in formulas)
    train = spec.train
    return NetworkView(
        kind="network",
        name=spec.name,
        title=spec.name,
        layers=layer_views,
        forward=tuple(eq for lv in layer_views for eq in lv.forward),
        depth=len(spec.layers),
        loss=spec.loss,
        loss_title=inline_title(op_title(plan.loss, lang), lang),
        loss_symbol=plan.loss.latex,
        fused=plan.computed_loss.name if plan.fused else "",
        output_act=spec.layers[-1].activation or "",
        activations=activations,
        output_delta=output,
        backward=backward,
        explicit=explicit,
        dense_only=dense_only,
        optimizer=str(train.get("optimizer", "")),
        lr=printer.doprint(sp.Float(train["lr"], 6)) if "lr" in train else "",
        batch_size=str(train.get("batch_size", "")),
        output_symbol=_output_symbol(spec),
        fused_title=(inline_title(op_title(plan.computed_loss, lang), lang)
                     if plan.fused else ""),
        skips=tuple(view for view in layer_views if view.skip),
        training=training_terms(spec, lang),
        explicit_below=explicit_below,
        slope=hidden_slope(plan, printer),
    )


def hidden_slope(plan: NetworkPlan, printer) -> SlopeView:
    """The bound of the hidden layers' activation derivatives (see :class:`SlopeView`)."""
    acts = {layer.activation.name: layer.activation for layer in plan.layers[:-1]
            if layer.activation is not None}
    if not acts:
        return SlopeView()
    facts = {}
    for name, act in acts.items():
        found = derive_activation(act)
        facts[name] = activation_facts(act, found.forward, found.derivative, found.kinks)
    tops = {name: f.dmax for name, f in facts.items()}
    if any(top is None or not top.attained for top in tops.values()):
        return SlopeView()
    values = {name: sp.nsimplify(top.value, rational=True) for name, top in tops.items()}
    derivatives = tuple(f"{act.latex}'" for act in acts.values())
    if all(v < 1 for v in values.values()):
        return SlopeView(
            "below", printer.doprint(max(values.values())),
            tuple(rf"{acts[name].latex}' \le {printer.doprint(v)}" for name, v in values.items()),
            derivatives)
    if all(v == 1 and tops[name].hi is None and tops[name].lo is not None
           for name, v in values.items()):
        zero = all(any(s.zero for s in f.saturation) for f in facts.values())
        return SlopeView("unit", "1", (), derivatives, zero)
    return SlopeView()


def readable_explicit(formulas) -> tuple[tuple[Formula, ...], int]:
    """The explicit formulas of the layers whose formulas all fit two lines.

    A layer is written out when each of its formulas (∂E/∂W⁽ˡ⁾, ∂E/∂b⁽ˡ⁾) is at most
    :data:`EXPLICIT_WIDTH` wide and breaks into two lines that fit. The width grows by one
    nested factor pair per layer from the output down, so the kept layers are the top ones.

    Returns
    -------
    kept : tuple of Formula
        The formulas of the layers written out, in the given order.
    below : int
        The highest layer left out (its layers 1, …, below are not written), or 0.
    """
    formulas = tuple(formulas)
    wide = {f.layer for f in formulas if not _two_lines(f)}
    below = max(wide, default=0)
    return tuple(f for f in formulas if f.layer > below), below


def _two_lines(formula: Formula) -> bool:
    """Whether ``formula`` breaks into at most two lines that fit beside its ∂E/∂W⁽ˡ⁾ =.

    It is also at most :data:`EXPLICIT_WIDTH` wide.

    Its breaks are at its ⊙ signs; a nested product (W⁽⁶⁾)ᵀ((W⁽⁷⁾)ᵀ(…)) has none, so the
    first line of a deep layer's formula is wider than a line however it is cut, and
    would shrink.
    """
    line = LINE - width(formula.lhs + " = ")
    pieces = split(formula.rhs, line)
    return (width(formula.rhs) <= EXPLICIT_WIDTH and len(pieces) <= 2
            and max(width(piece) for piece in pieces) <= line)


class NetworkPrinter(PositionPrinter):
    """A network's printer: an array with its own exponent (σ²) as (σ⁽ˡ⁾_c)²."""

    _default_settings = {**PositionPrinter._default_settings, "powers": {}, "leading": frozenset(),
                         "origins": {}}

    def _lead_positive(self, terms: list) -> list:
        # A number added to positive terms is the small constant that keeps a division or
        # a root away from zero (batch norm's ε, the clipping's 10⁻⁶): written last, as
        # σ² + ε is, not ε + σ². With a negative term the number leads (1 − x).
        terms = super()._lead_positive(terms)
        numbers = [t for t in terms if t.is_number]
        if numbers and len(numbers) < len(terms) and not any(
                t.could_extract_minus_sign() for t in terms):
            return [t for t in terms if not t.is_number] + numbers
        return terms

    def _print_plain_Mul(self, expr):
        # A product of a layer's arrays in the order of the layer's own document, γ x̂⁽²⁾
        # and Σ W δ: SymPy sorts the renamed arrays by their new names (x̂⁽²⁾ γ⁽²⁾, as
        # i2_xhat < w2_gamma).
        origins = self._settings["origins"]
        factors = sp.Mul.make_args(expr)
        if len(factors) > 1 and all(isinstance(f, sp.Indexed) and f.base in origins
                                    for f in factors):
            ordered = sorted(factors, key=lambda f: sp.default_sort_key(origins[f.base].label))
            return " ".join(self._print(f) for f in ordered)
        return super()._print_plain_Mul(expr)

    def _print_Sum(self, expr):
        # A sum over a range of one value (the one input channel, a 1 × 1 map) is its
        # term: Σ_{c=1}^{1} K_{f,c} x_{n,c} is K_{f,1} x_{n,1}, written without the Σ.
        one = {var: lo for var, lo, hi in expr.limits if lo == hi}
        if not one:
            return super()._print_Sum(expr)
        rest = [lim for lim in expr.limits if lim[0] not in one]
        term = expr.function.xreplace(one)
        tex = self._print(sp.Sum(term, *rest) if rest else term)
        return rf"\left({tex}\right)" if not rest and isinstance(term, sp.Add) else tex

    def _print_Indexed(self, expr):
        # An index with an offset names the output's position first and the number last,
        # as the notes' code reads a window (start = h·S, then start + i): h + i − 1 and
        # w + j − 1, not SymPy's alphabetical h + i − 1 beside j + w − 1.
        moved = {}
        for index in expr.indices:
            if not isinstance(index, sp.Add) or self._settings["one_based"]:
                continue
            number, rest = sp.sympify(index).as_coeff_Add()
            terms = sorted(rest.as_ordered_terms(),
                           key=lambda t_: not t_.free_symbols & self._settings["leading"])
            if number == 0 and terms == rest.as_ordered_terms():
                continue
            text = self._print(terms[0]) + "".join(
                f" - {self._print(-t_)}" if t_.could_extract_minus_sign()
                else f" + {self._print(t_)}" for t_ in terms[1:])
            if number != 0:
                text += f" - {-number}" if number < 0 else f" + {number}"
            moved[index] = sp.Symbol(text)
        if moved:
            expr = expr.base[tuple(moved.get(i, i) for i in expr.indices)]
        tex = super()._print_Indexed(expr)
        power = self._settings["powers"].get(expr.base.label.name)
        if power is None:
            return tex
        # The gradient of such an array, ∂E/∂(σ⁽ˡ⁾_c)²: the exponent inside the fraction.
        loss = rf"\frac{{\partial {self._settings['loss']}}}{{\partial "
        if tex.startswith(loss):
            return rf"{loss}\left({tex[len(loss):-1]}\right)^{{{power}}}}}"
        return rf"\left({tex}\right)^{{{power}}}"


def network_printer(plan: NetworkPlan, renames: dict, symbols: dict, functions: dict,
                    lang: Language, powers: dict | None = None,
                    gradients: dict | None = None) -> PositionPrinter:
    """The printer of a network's formulas, its indices counted from 1 as in the notes.

    Plain indices (x_{n,i}) count from 1 by their sums' bounds alone; a layer that reads
    at offsets (x̃_{n,c,h+i,w+j}) has every index renamed, as in the layer's own document
    (:func:`~derive.latex.indexed.count_from_one`), its settings (stride, padding) left
    alone. A pooling window's arg max is written under the names of its row and column
    (r^*, u^*), with each layer's arrays renamed.
    """
    plain = all(plain_indices(layer.op.expr, *(e for _, e in layer.op.steps))
                for layer in plan.layers)
    base = indexed_printer(lang, symbols, gradients, functions=functions, one_based=plain)
    fixed = None if plain else frozenset(h.symbol for layer in plan.layers
                                         for h in layer.op.hyper)
    positions = tuple(
        (definition.xreplace(renames[layer.spec.index]).xreplace(layer_sizes(layer.op, layer.spec)),
         arg.xreplace(renames[layer.spec.index]), name, axis)
        for layer in plan.layers
        for definition, arg, name, axis in window_positions(layer.op, derivation_steps(layer.op)))
    settings = {k: v for k, v in base._settings.items() if k in PositionPrinter._default_settings}
    # The output indices of the layers that read at offsets (h, w of x̃_{n,c,h+i−1,w+j−1}),
    # which an offset index names first.
    leading = frozenset() if plain else frozenset(
        index for layer in plan.layers
        if not plain_indices(layer.op.expr, *(e for _, e in layer.op.steps))
        for index in layer.op.out.indices[1:])
    # Each layer's weights in its declared order, so a sum reads as the layer's own
    # document writes it (Σ W x + b, not SymPy's b + Σ W x).
    weights = tuple(renames[layer.spec.index][w] for layer in plan.layers
                    for w in layer.op.weights if w in renames[layer.spec.index])
    return NetworkPrinter({**settings, "positions": positions, "fixed": fixed,
                           "powers": powers or {}, "leading": leading, "weights": weights,
                           "origins": {new: old for names in renames.values()
                                       for old, new in names.items()
                                       if isinstance(new, sp.IndexedBase)}})


def _output_symbol(spec: NetworkSpec) -> str:
    """The LaTeX of the last layer's activation (σ, softmax), or empty."""
    act = spec.layers[-1].activation
    return registry.get(act).latex if act else ""


def _check_depth(spec: NetworkSpec) -> None:
    # A recurrent layer's document is its own (the gradient through time), and so is an
    # embedding's (tokens in, a sequence out); a network document composes one δ per layer
    # and has no time axis yet.
    sequences = [layer for layer in spec.plan.layers
                 if layer.op.recurrence is not None or layer.op.indices]
    if sequences:
        layer = sequences[0].spec
        kind = "is recurrent" if sequences[0].op.recurrence is not None else "reads tokens"
        raise DeriveError(f"layers[{layer.index}] ({layer.type}) {kind}, and a network "
                          "document with a sequence (a time axis) is not typeset yet.",
                          where=spec.source, fix=f"Typeset the layer's own derivation: "
                          f"`derive latex {layer.type}`.")
    depth = len(spec.layers)
    if depth > MAX_LAYERS:
        raise DeriveError(f"the network has {depth} layers; its derivation is typeset for "
                          f"up to {MAX_LAYERS}.", where=spec.source,
                          fix="Typeset a shallower spec with the same kinds of layers: the "
                              "δ recursion is the same at every depth.")


def activation_views(plan: NetworkPlan, lang: Language) -> tuple[dict, tuple[ActView, ...]]:
    """The activations computed inside the network: f'⁽ˡ⁾ names and their derivatives.

    Returns
    -------
    functions : dict
        ``fprime<l>`` → how the derivative of layer l's activation is printed.
    views : tuple of ActView
        Each activation once, with its derivative (and that in terms of its output).
    """
    functions: dict = {}
    views: dict = {}
    for layer in plan.layers:
        act = layer.activation
        if act is None:
            continue
        functions[f"fprime{layer.spec.index + 1}"] = f"{act.latex}'"
        if act.name not in views:
            act_printer = printer_for(act, lang)
            d = derive_activation(act)
            views[act.name] = ActView(
                act.name, act.latex, act_printer.doprint(d.derivative),
                _in_layer_output(d.in_output, act_printer))
    return functions, tuple(views.values())


def _in_layer_output(form, printer) -> str:
    """The derivative in terms of the output, named x⁽ˡ⁾ (y is the network's target)."""
    if form is None:
        return ""
    output = sp.Symbol("x^{(l)}", real=True)
    return printer.doprint(form.xreplace({y: output}))


def forward_views(plan: NetworkPlan, renames: dict, printer, lang: Language):
    """Each layer's forward equations, in the order they are computed.

    Its intermediate arrays (a pooling window's arg max, as its row and column), s⁽ˡ⁾
    from the layer below, then x⁽ˡ⁾ = f(s⁽ˡ⁾).
    """
    pr = printer.doprint
    views = []
    for layer in plan.layers:
        spec, op = layer.spec, layer.op
        number = spec.index + 1
        steps = derivation_steps(op)
        names = renames[spec.index]
        sizes = layer_sizes(op, spec)
        sizes |= {s: sp.sympify(v).xreplace(sizes) for s, v in steps.counts}
        # Switches printed as nothing (training) take their defaults, as in the layer's
        # own document.
        hidden = {h.symbol: h.default for h in op.hyper if not h.latex}
        own = renamed(op, spec, names)
        out = own(steps.out)
        pairs = [(own(t), own(e).xreplace(sizes).xreplace(hidden)) for t, e in steps.steps]
        arg = next((t for t, e in pairs if e.has(ArgMax)), None)
        mine = tuple(p_ for p_ in printer._settings["positions"]
                     if arg is not None and p_[1].base == arg.base)
        if mine:
            printed, positions = position_steps(pairs, mine, printer)
            forward = list(printed)
        else:
            forward, positions = [(pr(t), pr(e)) for t, e in pairs], ()
        forward.append((pr(out), pr(own(steps.expr).xreplace(sizes))))
        symbol = registry.get(spec.activation).latex if spec.activation else ""
        own = (rf"{symbol}\left(s^{{({number})}}\right)" if spec.activation
               else rf"s^{{({number})}}")
        # A skip connection adds an earlier output x⁽ᵏ⁾ (x⁽⁰⁾ the input) to the layer's own.
        skip = "" if spec.skip_from is None else rf"x^{{({spec.skip_from + 1})}}"
        forward.append((rf"x^{{({number})}}", f"{own} + {skip}" if skip else own))
        views.append(NetLayerView(
            number, spec.type, inline_title(op_title(op, lang), lang), spec.activation or "",
            symbol, _shape(spec.in_shape), _shape(spec.out_shape),
            tuple((rf"{NOTATION.get(n_, n_)}^{{({number})}}", _shape(s))
                  for n_, s in spec.params),
            tuple(forward), *_padding(op, spec, names, pr), positions,
            pr(out) if positions else "",
            skip, -1 if spec.skip_from is None else spec.skip_from + 1))
    return tuple(views)


def renamed(op, spec, names: dict):
    """The function that writes an expression of a layer with this layer's arrays.

    Its arrays get the layer's names (x → x⁽ˡ⁻¹⁾, W → W⁽ˡ⁾), and the axes the network does
    not give the layer's input go: a batch norm after a dense layer reads (N, C) as its
    declared (N, C, H, W) with H = W = 1, so x⁽¹⁾_{n,c,h,w} is x⁽¹⁾_{n,c}, and its
    statistics sum over n alone.
    """
    unit = unit_axes(op, spec)

    def own(expr):
        if unit:
            expr = expr.replace(
                lambda e: isinstance(e, sp.Indexed) and any(i in unit for i in e.indices),
                lambda e: e.base[tuple(i for i in e.indices if i not in unit)])
        return expr.xreplace(names)
    return own


def unit_axes(op, spec) -> frozenset:
    """The index symbols of the axes of size 1 that a network adds to a layer's input.

    A layer that reads any input (:attr:`~derive.spec.Layer.any_input` ``"unit_axes"``)
    pads a shorter shape with axes of size 1 at the end; their indices (h, w of the output
    y_{n,c,h,w}) name nothing the network has.
    """
    declared = op.shape(op.source)[1:]
    if op.any_input != "unit_axes" or len(spec.in_shape) >= len(declared):
        return frozenset()
    if len(op.out.indices) != len(declared) + 1:
        return frozenset()
    return frozenset(op.out.indices[1 + len(spec.in_shape):])


def _padding(op, spec, names: dict, pr) -> tuple[str, str, str, str]:
    """(x̃⁽ˡ⁻¹⁾, x⁽ˡ⁻¹⁾, the zeros per side, the padded shape) of a padded layer, or ""s."""
    if op.padding is None:
        return "", "", "", ""
    padded, original, amount = op.padding
    sizes = layer_sizes(op, spec)
    shape = [sp.sympify(d).xreplace(sizes) for d in op.shape(padded)]
    tex = NOTATION.get(original.label.name, original.label.name)
    return (pr(names[padded].label), rf"{tex}^{{({spec.index})}}", pr(amount.xreplace(sizes)),
            _shape(shape[1:]))


def _delta_base(names: dict, op):
    """The renamed δ of a layer (its upstream gradient array)."""
    return names[derivation_steps(op).upstream]


def output_delta(plan: NetworkPlan, renames: dict, symbols: dict, pr) -> tuple[Formula, ...]:
    """δ at the output: the fused loss's gradient on the logits, or ∂E/∂x⁽ᴸ⁾ ⊙ f'(s⁽ᴸ⁾).

    Adds the output x⁽ᴸ⁾'s symbol to ``symbols`` (the printer's) when it is named.
    """
    last = plan.layers[-1]
    depth = len(plan.layers)
    n, j, _, _, _ = loss_indices()
    loss_op = plan.computed_loss
    derived = derive_loss(loss_op)
    dense = next((v for v in derived.variants if v.encoding == "dense"), derived.variants[0])
    top = renames[last.spec.index]
    s_top = top[last.op.out.base]
    delta_top = _delta_base(top, last.op)
    units = last.spec.out_shape[0] if len(last.spec.out_shape) == 1 else None
    at = {K: units} if units else {}
    gradient = dense.gradient.xreplace({p: n, q: j}).xreplace(at)
    E = sp.Symbol("E")
    if plan.fused:
        yhat = sp.IndexedBase("yhat", real=True)
        gradient = gradient.xreplace({loss_op.pred: s_top, softmax_of(loss_op.pred): yhat})
        return (Formula("fused", depth, pr(delta_top[n, j]), pr(gradient)),)
    x_top = sp.IndexedBase(f"x{depth}", real=True)
    symbols[f"x{depth}"] = rf"x^{{({depth})}}"
    gradient = gradient.xreplace({loss_op.pred: x_top})
    formulas = [Formula("loss_gradient", depth, pr(D(E, x_top[n, j])), pr(gradient))]
    if last.spec.activation:
        f = _act_function(depth)
        formulas.append(Formula("delta_activation", depth, pr(delta_top[n, j]),
                                pr(D(E, x_top[n, j]) * f(s_top[n, j]))))
    else:
        formulas.append(Formula("delta_identity", depth, pr(delta_top[n, j]),
                                pr(D(E, x_top[n, j]))))
    return tuple(formulas)


def backward_formulas(plan: NetworkPlan, renames: dict, pr) -> tuple[Formula, ...]:
    """The δ recursion, last layer first: each layer's weight gradients, then the δ below."""
    E = sp.Symbol("E")
    backward: list[Formula] = []
    for layer in reversed(plan.layers):
        spec, op = layer.spec, layer.op
        number = spec.index + 1
        steps = derivation_steps(op)
        sizes = layer_sizes(op, spec)
        # A count the layer names (m = N·H·W) with this layer's sizes: the page does not
        # define m.
        sizes |= {s: sp.sympify(v).xreplace(sizes) for s, v in steps.counts}
        names = renames[spec.index]
        own = renamed(op, spec, names)
        # The weights of the layer first, then its intermediate steps' gradients (last
        # step first), which the gradient it sends down to the layer below reads.
        ordered = sorted(steps.gradients, key=lambda g: g.array not in op.weights)
        weights = [g for g in ordered if g.array in op.weights]
        for g in weights:
            backward.append(Formula("weight", number, pr(D(E, own(g.element))),
                                    pr(own(g.result).xreplace(sizes)), spec.type,
                                    pr(names[g.array].label)))
        for g in steps.intermediates:
            element = own(g.element)
            backward.append(Formula("intermediate", number, pr(D(E, element)),
                                    pr(own(g.result).xreplace(sizes)), spec.type,
                                    pr(element)))
        for g in ordered[len(weights):]:
            element = own(g.element)
            result = own(g.result).xreplace(sizes)
            if number > 1 and g.array not in op.weights and op.padding is None:
                shared = {names[w] for w in op.weights} | {_delta_base(names, op), element.base}
                element, result = below_letters(element, result, plan.layers[spec.index - 1],
                                                renames, shared)
            if g.array in op.weights:
                backward.append(Formula("weight", number, pr(D(E, element)), pr(result),
                                        spec.type, pr(names[g.array].label)))
            elif number > 1:
                sums = plan.skips_into(spec.index - 1)
                if sums and not (op.padding is not None and g.array == op.padding[0]):
                    backward += skip_formulas(element, result, sums, spec, pr)
                else:
                    backward.append(Formula("input", number, pr(D(E, element)), pr(result),
                                            spec.type, flat=_flat_place(op, spec, names, pr)))
                below = plan.layers[spec.index - 1]
                below_names = renames[below.spec.index]
                delta = _delta_base(below_names, below.op)
                s_below = below_names[below.op.out.base]
                index = element.indices
                x_below = element.base
                if op.padding is not None and g.array == op.padding[0]:
                    if sums:  # x⁽ᵏ⁾ is x̃⁽ᵏ⁾ without its border: the block's path is cropped
                        amount = op.padding[2].xreplace(sizes)
                        inner = index[:2] + tuple(i + amount for i in index[2:])
                        source = sp.IndexedBase(f"x{number - 1}", real=True)[index]
                        backward += skip_formulas(source, D(E, x_below[inner]), sums, spec, pr)
                    continue  # cropped first: the formula below names the unpadded input
                if below.spec.activation:
                    f = _act_function(number - 1)
                    backward.append(Formula("delta_activation", number - 1, pr(delta[index]),
                                            pr(D(E, x_below[index]) * f(s_below[index])),
                                            below.spec.type))
                else:
                    backward.append(Formula("delta_identity", number - 1, pr(delta[index]),
                                            pr(D(E, x_below[index])), below.spec.type))
    return tuple(backward)


#: Letters a summation index may take when its own is given to an axis of the layer below.
SPARE_LETTERS = ("k", "m", "p", "q", "r", "u", "v")


def below_letters(element, result, below, renames: dict, shared: set):
    """The gradient a layer sends down, indexed with the letters of the layer below.

    ∂E/∂x⁽ˡ⁻¹⁾ is the upstream gradient of layer l − 1, whose own formulas write its
    output's axes with their letters (dense: δ⁽ˡ⁻¹⁾_{n,j}); the layer above names its
    input's axes differently (dense: x_{n,i}). The same δ⁽ˡ⁻¹⁾ printed n,i in one formula
    and n,j in the next reads as two arrays, so the layer above's formula takes the letters
    of the layer below; a summation index that already had one of them gets a letter the
    formula does not use (Σ_j δ_{n,j} W_{j,i} becomes Σ_k δ_{n,k} W_{k,j}, as the notes
    write ∂E/∂x_i = Σ_j W_{j,i} δ_j with a summation letter of its own). Axes that do not
    correspond one to one (a flat input read as an image) keep their letters, and so does
    a layer whose own arrays, other than ``shared`` (its weights, its δ, its input), carry
    the letter (a batch norm's μ_c, a pooling window's arg max): those arrays have the
    letter in the layer's other formulas.
    """
    names = renames[below.spec.index]
    own = renamed(below.op, below.spec, names)
    letters = own(derivation_steps(below.op).out).indices
    here = element.indices
    if len(letters) != len(here):
        return element, result
    swap = {a: b for a, b in zip(here, letters, strict=True) if a != b}
    own = {i for el in result.atoms(sp.Indexed) if el.base not in shared
           for i in el.indices}
    if any(a in own for a in swap):
        return element, result
    read = result.atoms(sp.Symbol, sp.Idx)
    taken = {str(t) for t in read | set(here) | set(letters)}
    for b in list(swap.values()):
        if b not in swap and b in read:
            fresh = next((c for c in SPARE_LETTERS if c not in taken), None)
            if fresh is None:
                return element, result
            swap[b] = sp.Symbol(fresh, **b.assumptions0)
            taken.add(fresh)
    return element.xreplace(swap), result.xreplace(swap)


def _flat_place(op, spec, names: dict, pr) -> tuple[str, str, str]:
    """Where a flattened layer stores δ_{n,c,h,w}: i = (c − 1)·14·14 + (h − 1)·14 + w.

    With this layer's sizes and the indices counted from 1; () for a layer stored as
    declared.
    """
    if op.view is None:
        return ()
    steps = derivation_steps(op)
    upstream = names[steps.upstream]
    shape = [sp.sympify(d).xreplace(layer_sizes(op, spec))
             for d in op.shape(steps.out.base)[1:]]
    indices = steps.out.indices[1:]
    terms = []
    for axis, index in enumerate(indices):
        later = r" \cdot ".join(str(d) for d in shape[axis + 1:])
        terms.append(rf"\left({pr(index)} - 1\right) \cdot {later}" if later else pr(index))
    flat = sp.Symbol("i", integer=True, nonnegative=True)
    return (pr(upstream[steps.out.indices]), rf"{pr(flat)} = " + " + ".join(terms),
            pr(upstream[steps.out.indices[0], flat]))


def skip_formulas(element, result, sums, spec, pr) -> list[Formula]:
    """∂E/∂x⁽ᵏ⁾ for an output x⁽ᵏ⁾ that skip connections also add to later outputs.

    x⁽ᵏ⁾ is read by the layer above it (``spec``, whose derived input gradient is
    ``result``) and by each sum x⁽ˡ⁾ = f(s⁽ˡ⁾) + x⁽ᵏ⁾ of ``sums``. The chain rule makes its
    gradient add the path through the block and, for each sum, ∂E/∂x⁽ˡ⁾ times the
    sum's derivative in x⁽ᵏ⁾ (:data:`~derive.netplan.SKIP_SUM`): first with that
    derivative written, then with its value.
    """
    E = sp.Symbol("E")
    number = spec.index + 1
    index = element.indices
    tops = [sp.IndexedBase(f"x{layer.spec.index + 1}", real=True)[index] for layer in sums]
    derivative = SKIP_SUM.derivative(SKIP_SUM.skipped)

    def paths(factor):
        return " + ".join([pr(result)] + [pr(D(E, top) * factor(top)) for top in tops])

    lhs = pr(D(E, element))
    numbers = tuple(layer.spec.index + 1 for layer in sums)
    array = rf"x^{{({number - 1})}}"
    return [Formula("skip_paths", number, lhs, paths(lambda top: D(top, element)),
                    spec.type, array, numbers),
            Formula("skip_identity", number, lhs, paths(lambda top: derivative),
                    spec.type, array, numbers)]


def explicit_formulas(spec: NetworkSpec, symbols: dict | None = None):
    """The notes' explicit formulas of an all-dense network, for one case.

    Column vectors as in the notes: s⁽ˡ⁾ = W⁽ˡ⁾x⁽ˡ⁻¹⁾ + b⁽ˡ⁾, x⁽ˡ⁾ = f(s⁽ˡ⁾);
    δ⁽ᴸ⁾ = ŷ − y for softmax with cross-entropy (otherwise ∇L ⊙ f'(s⁽ᴸ⁾)),
    δ⁽ˡ⁾ = ((W⁽ˡ⁺¹⁾)ᵀ δ⁽ˡ⁺¹⁾) ⊙ f'(s⁽ˡ⁾), ∂E/∂W⁽ˡ⁾ = δ⁽ˡ⁾(x⁽ˡ⁻¹⁾)ᵀ, ∂E/∂b⁽ˡ⁾ = δ⁽ˡ⁾,
    each δ written out in full, as in seed 002.

    Returns
    -------
    formulas : list of (kind, layer, lhs, rhs)
        sympy matrix expressions, ∂E/∂W and ∂E/∂b for every layer, last layer first.
    names : dict
        The matrix symbols by role: ``("W", l)``, ``("b", l)``, ``("x", l)``, ``("fprime",
        l)`` (the vector f'(s⁽ˡ⁾)), ``"yhat"``, ``"y"``, ``"grad"`` (∇_{x⁽ᴸ⁾}L).
    """
    symbols = symbols if symbols is not None else {}
    layers = spec.layers
    depth = len(layers)
    last = layers[-1]
    fused = spec.plan.fused
    names: dict = {}
    sizes = [spec.input_shape[0]] + [layer.out_shape[0] for layer in layers]
    for l_ in range(depth + 1):
        names[("x", l_)] = sp.MatrixSymbol(f"xv{l_}", sizes[l_], 1)
        symbols[f"xv{l_}"] = rf"x^{{({l_})}}"
    for layer in layers:
        l_ = layer.index + 1
        names[("W", l_)] = sp.MatrixSymbol(f"Wm{l_}", sizes[l_], sizes[l_ - 1])
        names[("b", l_)] = sp.MatrixSymbol(f"bv{l_}", sizes[l_], 1)
        symbols[f"Wm{l_}"] = rf"W^{{({l_})}}"
        symbols[f"bv{l_}"] = rf"b^{{({l_})}}"
        if layer.activation and not (layer is last and fused):
            act = registry.get(layer.activation, "activation")
            names[("fprime", l_)] = sp.MatrixSymbol(f"fp{l_}", sizes[l_], 1)
            symbols[f"fp{l_}"] = rf"{act.latex}'\left(s^{{({l_})}}\right)"
    if fused:
        names["yhat"] = sp.MatrixSymbol("yhatv", sizes[-1], 1)
        names["y"] = sp.MatrixSymbol("yv", sizes[-1], 1)
        symbols["yhatv"], symbols["yv"] = r"\hat{y}", "y"
        delta = names["yhat"] - names["y"]
    else:
        names["grad"] = sp.MatrixSymbol("gradL", sizes[-1], 1)
        symbols["gradL"] = rf"\nabla_{{x^{{({depth})}}}} E"
        names["y"] = sp.MatrixSymbol("yv", sizes[-1], 1)
        symbols["yv"] = "y"
        # A loss whose gradient is linear in the prediction (½SSE: x⁽ᴸ⁾ − y) is written
        # out, as the slides do; any other stays ∇E.
        delta = _linear_gradient(spec.loss, names[("x", depth)], names["y"], sizes[-1]) \
            or names["grad"]
        if ("fprime", depth) in names:
            delta = sp.HadamardProduct(delta, names[("fprime", depth)])
    formulas = []
    for l_ in range(depth, 0, -1):
        if l_ < depth:
            back = names[("W", l_ + 1)].T * delta
            delta = sp.HadamardProduct(back, names[("fprime", l_)]) \
                if ("fprime", l_) in names else back
        formulas.append(("weight", l_, sp.MatrixSymbol(f"dEdW{l_}", 1, 1),
                         delta * names[("x", l_ - 1)].T))
        formulas.append(("bias", l_, sp.MatrixSymbol(f"dEdb{l_}", 1, 1), delta))
        symbols[f"dEdW{l_}"] = rf"\frac{{\partial E}}{{\partial W^{{({l_})}}}}"
        symbols[f"dEdb{l_}"] = rf"\frac{{\partial E}}{{\partial b^{{({l_})}}}}"
    return formulas, names


def _linear_gradient(loss_name: str, x_top, y, units: int):
    """The loss's gradient for one case as a vector expression a x⁽ᴸ⁾ + b y, or None.

    a and b are numbers (½SSE: x⁽ᴸ⁾ − y); a gradient of any other form is None.
    """
    loss = registry.get(loss_name, "loss")
    derived = derive_loss(loss)
    dense = next((v for v in derived.variants if v.encoding == "dense"), None)
    if dense is None:
        return None
    X, Y = sp.symbols("X Y")
    g = dense.gradient.xreplace({N: 1, K: units}).xreplace(
        {loss.pred[p, q]: X, loss.target[p, q]: Y})
    g = sp.expand(g)
    if g.free_symbols - {X, Y} or not g.is_polynomial(X, Y):
        return None
    a, b = g.coeff(X), g.coeff(Y)
    if sp.expand(g - a * X - b * Y) != 0 or not (a.is_number and b.is_number):
        return None
    terms = [c * m for c, m in ((a, x_top), (b, y)) if c != 0]
    return sp.MatAdd(*terms) if len(terms) > 1 else (terms[0] if terms else None)
