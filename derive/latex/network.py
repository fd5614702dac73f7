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
from derive.calculus.indexed import K, N, p, q, softmax_of
from derive.calculus.steps import D, derivation_steps, loss_indices
from derive.errors import DeriveError
from derive.latex.context import Language, document_view, inline_title, op_title, printer_for
from derive.latex.indexed import NOTATION, indexed_printer
from derive.network import NetworkSpec

#: (last activation, loss) pairs the generated network computes as one stable loss.
FUSED = {
    ("softmax", "categorical_cross_entropy"): "softmax_cross_entropy",
    ("softmax", "sparse_categorical_cross_entropy"): "softmax_cross_entropy",
    ("softmax", "softmax_cross_entropy"): "softmax_cross_entropy",
    ("sigmoid", "binary_cross_entropy"): "binary_cross_entropy_with_logits",
}


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
    padded: bool


@dataclass(frozen=True)
class ActView:
    """An activation the network uses, with its derivative."""

    name: str
    symbol: str
    derivative: str
    in_output: str


@dataclass(frozen=True)
class Formula:
    """One displayed equation: what it is (for the words), its layer, both sides."""

    kind: str
    layer: int
    lhs: str
    rhs: str
    type: str = ""


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


def _shape(shape) -> str:
    return r" \times ".join(str(d) for d in shape)


def layer_sizes(op, layer) -> dict:
    """The declaration's size symbols with this layer's numbers (the batch N stays N)."""
    values: dict = {}

    def match(symbols, dims):
        for s, d in zip(symbols, dims, strict=False):
            s = sp.sympify(s)
            if s.is_Symbol and s != N:
                values[s] = d

    inputs = [a for a in op.inputs if not (op.padding and a == op.padding[0])]
    if op.padding:
        inputs = [op.padding[1]]
    for a in inputs:
        match(op.shape(a)[1:], layer.in_shape)
    out_dims = layer.in_shape if op.view is not None else layer.out_shape
    match(op.shape(op.out.base)[1:], out_dims)
    for (_, shape), w in zip(layer.params, op.weights, strict=True):
        match(op.shape(w), shape)
    for p_ in op.hyper:
        if p_.name in layer.hyper:
            values[p_.symbol] = layer.hyper[p_.name]
    for size, value in op.sizes:
        values[size] = int(value.xreplace(values))
    # Two spellings of the padding symbol exist in the declarations: match by name.
    by_name = {s.name: v for s, v in values.items()}
    for s in set().union(*(sp.sympify(d).free_symbols for _, sh in op.arrays for d in sh)):
        if s not in values and s.name in by_name and s != N:
            values[s] = by_name[s.name]
    return values


def _renamer(op, number: int):
    """IndexedBase renames of one layer: its arrays with the layer's superscript."""
    steps = derivation_steps(op)
    names: dict = {}
    symbols: dict = {}

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
    return names, symbols


def _act_function(number: int):
    """f'⁽ˡ⁾ as an undefined function, printed with the activation's name."""
    return sp.Function(f"fprime{number}", real=True)


#: The deepest network typeset. The explicit gradient of the first layer nests one matrix
#: product per layer above it; past a few dozen the formula is neither printable nor
#: readable, and the δ recursion it illustrates is the same at any depth.
MAX_LAYERS = 40


@document_view.register
def _(spec: NetworkSpec, lang: Language) -> NetworkView:
    layers = spec.layers
    depth = len(layers)
    if depth > MAX_LAYERS:
        raise DeriveError(f"the network has {depth} layers; its derivation is typeset for "
                          f"up to {MAX_LAYERS}.", where=spec.source,
                          fix="Typeset a shallower spec with the same kinds of layers: the "
                              "δ recursion is the same at every depth.")
    last = layers[-1]
    fused = FUSED.get((last.activation, spec.loss), "")
    symbols: dict = {}
    functions: dict = {}
    act_views: dict = {}
    for layer in layers:
        if layer.activation and not (layer is last and fused):
            act = registry.get(layer.activation, "activation")
            functions[f"fprime{layer.index + 1}"] = f"{act.latex}'"
            if act.name not in act_views:
                act_printer = printer_for(act, lang)
                d = derive_activation(act)
                act_views[act.name] = ActView(
                    act.name, act.latex, act_printer.doprint(d.derivative),
                    act_printer.doprint(d.in_output) if d.in_output is not None else "")
    renames = {}
    for layer in layers:
        op = registry.get(layer.type, "layer")
        names, syms = _renamer(op, layer.index + 1)
        symbols |= syms
        renames[layer.index] = names
    dense_only = all(layer.type == "dense" for layer in layers)
    formulas = explicit_formulas(spec, symbols)[0] if dense_only else []
    printer = indexed_printer(lang, symbols, functions=functions)
    pr = printer.doprint

    layer_views = []
    backward: list[Formula] = []
    for layer in layers:
        number = layer.index + 1
        op = registry.get(layer.type, "layer")
        steps = derivation_steps(op)
        sizes = layer_sizes(op, layer)
        names = renames[layer.index]
        out = steps.out.xreplace(names)
        forward = [(pr(out), pr(steps.expr.xreplace(names).xreplace(sizes)))]
        if layer.activation:
            act = registry.get(layer.activation, "activation") \
                if layer.activation != "softmax" else None
            symbol = act.latex if act else r"\operatorname{softmax}"
            forward.append((rf"x^{{({number})}}", rf"{symbol}\left(s^{{({number})}}\right)"))
        else:
            forward.append((rf"x^{{({number})}}", rf"s^{{({number})}}"))
        layer_views.append(NetLayerView(
            number, layer.type, inline_title(op_title(op, lang), lang), layer.activation or "",
            (registry.get(layer.activation).latex if layer.activation
             and layer.activation != "softmax" else
             (r"\operatorname{softmax}" if layer.activation else "")),
            _shape(layer.in_shape), _shape(layer.out_shape),
            tuple((rf"{NOTATION.get(n_, n_)}^{{({number})}}", _shape(s)) for n_, s in layer.params),
            tuple(forward), op.padding is not None))

    # δ at the output.
    n, j, _, _, _ = loss_indices()
    output_delta = []
    loss_op = registry.get(fused or spec.loss, "loss")
    dense = next((v for v in derive_loss(loss_op).variants if v.encoding == "dense"),
                 derive_loss(loss_op).variants[0])
    top = renames[last.index]
    s_top = next(v for k_, v in top.items() if k_ == registry.get(last.type).out.base)
    delta_top = next(v for k_, v in top.items() if k_.label.name.startswith("d_"))
    yhat = sp.IndexedBase("yhat", real=True)
    units = last.out_shape[0] if len(last.out_shape) == 1 else None
    at = {K: units} if units else {}
    gradient = dense.gradient.xreplace({p: n, q: j}).xreplace(at)
    if fused:
        gradient = gradient.xreplace({loss_op.pred: s_top, softmax_of(loss_op.pred): yhat})
        output_delta.append(Formula("fused", depth, pr(delta_top[n, j]), pr(gradient)))
    else:
        x_top = sp.IndexedBase(f"x{depth}", real=True)
        symbols[f"x{depth}"] = rf"x^{{({depth})}}"
        gradient = gradient.xreplace({loss_op.pred: x_top})
        output_delta.append(Formula("loss_gradient", depth, pr(D(sp.Symbol("E"), x_top[n, j])),
                                    pr(gradient)))
        if last.activation:
            f = _act_function(depth)
            output_delta.append(Formula(
                "delta_activation", depth, pr(delta_top[n, j]),
                pr(D(sp.Symbol("E"), x_top[n, j]) * f(s_top[n, j]))))
        else:
            output_delta.append(Formula("delta_identity", depth, pr(delta_top[n, j]),
                                        pr(D(sp.Symbol("E"), x_top[n, j]))))

    for layer in reversed(layers):
        number = layer.index + 1
        op = registry.get(layer.type, "layer")
        steps = derivation_steps(op)
        sizes = layer_sizes(op, layer)
        names = renames[layer.index]
        # The weights of the layer first, then what it sends down to the layer below.
        ordered = sorted(steps.gradients, key=lambda g: g.array not in op.weights)
        for g in ordered:
            element = g.element.xreplace(names)
            result = g.result.xreplace(names).xreplace(sizes)
            if g.array in op.weights:
                backward.append(Formula("weight", number, pr(D(sp.Symbol("E"), element)),
                                        pr(result), layer.type))
            elif number > 1:
                backward.append(Formula("input", number, pr(D(sp.Symbol("E"), element)),
                                        pr(result), layer.type))
                below = layers[layer.index - 1]
                below_names = renames[below.index]
                below_op = registry.get(below.type, "layer")
                delta = next(v for k_, v in below_names.items()
                             if k_.label.name.startswith("d_"))
                s_below = below_names[below_op.out.base]
                index = element.indices
                x_below = element.base
                if op.padding is not None and g.array == op.padding[0]:
                    continue  # cropped first: the formula below names the unpadded input
                if below.activation:
                    f = _act_function(number - 1)
                    backward.append(Formula("delta_activation", number - 1,
                                            pr(delta[index]),
                                            pr(D(sp.Symbol("E"), x_below[index])
                                               * f(s_below[index])), below.type))
                else:
                    backward.append(Formula("delta_identity", number - 1, pr(delta[index]),
                                            pr(D(sp.Symbol("E"), x_below[index])),
                                            below.type))
    explicit = tuple(Formula(kind, number, pr(lhs), pr(rhs))
                     for kind, number, lhs, rhs in formulas)
    train = spec.train
    return NetworkView(
        kind="network",
        name=spec.name,
        title=spec.name,
        layers=tuple(layer_views),
        forward=tuple(eq for lv in layer_views for eq in lv.forward),
        depth=depth,
        loss=spec.loss,
        loss_title=inline_title(op_title(registry.get(spec.loss), lang), lang),
        loss_symbol=registry.get(spec.loss).latex,
        fused=fused,
        output_act=last.activation or "",
        activations=tuple(act_views.values()),
        output_delta=tuple(output_delta),
        backward=tuple(backward),
        explicit=explicit,
        dense_only=dense_only,
        optimizer=str(train.get("optimizer", "")),
        lr=printer.doprint(sp.Float(train["lr"], 6)) if "lr" in train else "",
        batch_size=str(train.get("batch_size", "")),
    )


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
    fused = FUSED.get((last.activation, spec.loss))
    names: dict = {}
    sizes = [spec.input_shape[0]] + [layer.out_shape[0] for layer in layers]
    for l_ in range(depth + 1):
        names[("x", l_)] = sp.MatrixSymbol(f"xv{l_}", sizes[l_], 1)
        symbols[f"xv{l_}"] = "x" if l_ == 0 else rf"x^{{({l_})}}"
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
        delta = names["grad"]
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

