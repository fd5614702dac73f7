"""The document of a recurrent layer with a cell state (the LSTM), derived through time.

The layer carries two states, h and the cell state c. As for the Elman layer
(:mod:`derive.latex.recurrent`), one time step is an ordinary layer whose page is the
layer document's, every array marked by its time step; what follows is read off the same
derivation:

- ∂E/∂h^⟨t⟩ collects the gradient from above at t and what step t + 1 sends back
  through its previous output h^⟨t⟩ (all four gates read it);
- ∂E/∂c^⟨t⟩ collects what reaches c^⟨t⟩ through h^⟨t⟩ and what step t + 1 sends back
  through its previous cell state, ∂E/∂c^⟨t+1⟩ f^⟨t+1⟩;
- a weight's gradient is the step's, summed over t; h_0 and c_0 get what step 1 sends;
- ∂c^⟨t⟩/∂c^⟨t−1⟩ = f^⟨t⟩ is read off the gradient the step sends back to its previous
  cell state: along the cell states the gradient is only scaled by forget gates, with no
  weight matrix and no activation's derivative, which is why it survives long spans.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import sympy as sp

from derive.calculus.derivation import gradient_array, output_upstream
from derive.calculus.recurrence import derive_recurrence
from derive.latex.context import Language, document_view, op_title
from derive.latex.indexed import NOTATION, RECURRENT_VIEWS, LayerView, indexed_printer
from derive.latex.recurrent import at_step, back_in_time, from_above
from derive.spec import Layer


@dataclass(frozen=True)
class CellView:
    """Everything the templates of a recurrent layer with a cell state print."""

    kind: str
    #: The language's code: the templates read their sentences from its cell.tex.
    lang: str
    name: str
    title: str
    #: The recurrence for t = 1, …, T: (left-hand side, right-hand side) pairs.
    recurrence: tuple[tuple[str, str], ...]
    #: The gates as the step names them, in PyTorch's order (input, forget, candidate,
    #: output), and the pre-activation whose four blocks of rows they read.
    gates: tuple[str, ...]
    preactivation: str
    #: The states at t (h, c), before the first step, and the given initial states.
    states: tuple[str, ...]
    firsts: tuple[str, ...]
    initials: tuple[str, ...]
    lasts: tuple[str, ...]
    inputs: tuple[str, ...]
    weights: tuple[str, ...]
    #: The layer at one time step, as a layer's document prints it.
    step: LayerView
    #: ∂E/∂h^⟨t⟩ and ∂E/∂c^⟨t⟩ through time: (lhs, rhs), and the gradient from above.
    total_h: tuple[str, str]
    total_c: tuple[str, str]
    from_above: str
    #: What the step sends back through each previous state, and the initial ones' gradients.
    sent_back: tuple[tuple[str, str], ...]
    initial_gradients: tuple[tuple[str, str], ...]
    #: Each weight's gradient: (lhs, sum over t).
    sums: tuple[tuple[str, str], ...]
    #: One input's gradient at each t: (lhs, rhs).
    per_step: tuple[tuple[str, str], ...]
    #: ∂E/∂s^⟨t⟩ on each gate's block of rows, in the gate's value: (lhs, rhs).
    preactivation_gradient: tuple[tuple[str, str], ...]
    #: ∂c^⟨t⟩/∂c^⟨t−1⟩, element; the product from t to T along the cell states.
    cell_jacobian: tuple[str, str]
    cell_product: tuple[str, str]

    @property
    def gradients(self) -> tuple:
        """The gradients of one time step, derived step by step."""
        return self.step.gradients


def marked_names(op: Layer, rd, time: str, before: str) -> dict:
    """Each array of the step renamed with its time step marked (x → x^⟨t⟩)."""
    initials = {initial for _, initial in op.recurrence.states}
    # In the notes' notation (a GRU's candidate htilde is h̃).
    marked = {a: sp.IndexedBase(at_step(NOTATION.get(str(a), str(a)), time), real=True)
              for a in (*(b for b in op.inputs if b not in initials),
                        *(t.base for t, _ in op.steps), op.recurrence.state)}
    for state, _, previous in rd.states:
        marked[previous] = sp.IndexedBase(at_step(str(state), before), real=True)
    return marked


def printed_step(rd, names: dict) -> Layer:
    """The step of ``rd`` with its arrays renamed by ``names`` (marked by time step)."""
    from dataclasses import replace

    step = rd.step

    def mark(e):
        return e.xreplace(names)

    return replace(step, out=mark(step.out), expr=mark(step.expr),
                   steps=tuple((mark(t), mark(e)) for t, e in step.steps),
                   arrays=tuple((names.get(a, a), d) for a, d in step.arrays),
                   inputs=tuple(names.get(a, a) for a in step.inputs),
                   extra_outputs=tuple(names.get(a, a) for a in step.extra_outputs))


def squared(tex: str) -> str:
    r"""A marked element squared parenthesised: (g^⟨t⟩_{n,j})², not a double superscript.

    The name may carry an accent (\tilde{h}^⟨t⟩_{n,j}, a GRU's candidate).
    """
    return re.sub(r"((?:\\[a-z]+\{\w\}|\w)\^\{\\langle [^}]*\\rangle\}_\{[^}]*\})\^\{",
                  r"\\left(\1\\right)^{", tex)


def gradient_first(ex: sp.Expr, gradients: tuple, pr) -> str:
    r"""∂E/∂i · i (1 − i): the gate's gradient, then the gate's derivative, the sum last.

    As the activation documents write σ′ = σ(1 − σ); SymPy's order of the factors would
    print (1 − i) ∂E/∂i i. Any other form is printed as it is.
    """
    factors = sp.Mul.make_args(ex)
    upstream = [f for f in factors if f.has(*gradients)]
    rest = [f for f in factors if not f.has(*gradients)]
    if not upstream or not rest or ex.could_extract_minus_sign():
        return pr(ex)
    ordered = ([f for f in rest if not isinstance(f, sp.Add)]
               + [f for f in rest if isinstance(f, sp.Add)])
    slope = " ".join(rf"\left({pr(f)}\right)" if isinstance(f, sp.Add) else pr(f)
                     for f in ordered)
    return rf"{pr(sp.Mul(*upstream))} \cdot {slope}"


def on_block(piece: sp.Piecewise, j: sp.Symbol, size: sp.Symbol) -> sp.Expr:
    """A guarded term of ∂E/∂s on one gate's rows j = 0, …, H − 1: kept or 0 there."""
    (value, condition), *_ = piece.args
    holds = {bool(condition.xreplace({size: 5, j: row})) for row in range(5)}
    if len(holds) != 1:
        raise ValueError(f"{piece} is not one gate's block of rows")
    return value if holds.pop() else sp.S.Zero


def cell_view(op: Layer, lang: Language) -> CellView:
    """The document view of a layer that carries a cell state besides its output."""
    rd = derive_recurrence(op)
    step, d = rd.step, rd.derivation
    (h, h0, h_prev), (c, c0, c_prev) = rd.states
    n, j = step.out.indices
    k = sp.Symbol("k", integer=True, nonnegative=True)
    t = sp.Symbol("t", integer=True, nonnegative=True)
    now, after, first = (marked_names(op, rd, a, b) for a, b in
                         (("t", "t-1"), ("t+1", "t"), ("1", "0")))
    step_view = document_view(printed_step(rd, now), lang)
    above = from_above(op)
    symbols = {at_step(above, a): at_step(above, a) for a in ("t", "T")}
    label = indexed_printer(lang, symbols).doprint

    # ∂E/∂A for arrays named by their LaTeX (the printer's gradient notation).
    wrt: dict = {}

    def grad(tex: str) -> sp.IndexedBase:
        base = sp.IndexedBase(f"dE_{len(wrt)}", real=True)
        # A name with its own subscript (W_{hh}) is braced before the element's.
        wrt[base.label.name] = tex if "^" in tex or "_" not in tex else f"{{{tex}}}"
        return base

    # Every step array's gradient at t, t + 1 and 1, and the states' at t and 0.
    arrays = [t_.base for t_, _ in step.steps]
    at_time = {key: {a: grad(label(names[a].label)) for a in arrays}
               for key, names in (("t", now), ("t+1", after), ("1", first))}
    h_grad = grad(label(now[h].label))
    initial_grad = {s: grad(at_step(label(s.label), "0")) for s in (h, c)}
    prev_grad = {p_: grad(label(now[p_].label)) for p_ in (h_prev, c_prev)}
    weight_grad = {w: grad(label(w.label)) for w in op.weights}
    initials = {h0, c0}
    input_grad = {a: grad(label(now[a].label)) for a in op.inputs if a not in initials}
    pr = indexed_printer(lang, symbols, gradients=wrt).doprint

    def lab(base) -> str:
        return pr(base.label)

    def renames(key):
        """The step's gradient arrays (d_s, d_c, …) as the gradients at one time step."""
        return {gradient_array(a): at_time[key][a] for a in arrays}

    def at(expr, free, key, extra=None):
        """A step gradient at the indices ``free`` with the arrays of time ``key``."""
        p, q = sp.symbols("p q", integer=True, nonnegative=True)
        named = {"t": now, "t+1": after, "1": first}[key]
        return (expr.xreplace(dict(zip((p, q), free, strict=False)))
                .xreplace({**renames(key), **(extra or {})}).xreplace(named))

    upstream = sp.IndexedBase(at_step(above, "t"), real=True)
    back_h, back_c = d.gradient(h_prev), d.gradient(c_prev)
    # ∂E/∂h^⟨t⟩: the gradient from above, and what step t + 1 sends back through h^⟨t⟩.
    # At the state's unit k: the sum over the gates' rows j is what the step sends back.
    total_h = (pr(h_grad[n, k]), pr(upstream[n, k] + at(back_h.expr, (n, k), "t+1")))
    # ∂E/∂c^⟨t⟩: the step's own gradient of c, whose outside part is what step t + 1 sends
    # back through its previous cell state.
    local_c = d.gradient(c)
    sent_c = at(back_c.expr, (n, j), "t+1")
    through_h = sp.factor_terms(local_c.expr - output_upstream(c)[local_c.index])
    # What reaches c^⟨t⟩ through h^⟨t⟩ as the gate rows write it, the gradient first:
    # ∂E/∂h · o (1 − tanh²(c)), then what the next step sends back.
    total_c = (pr(at_time["t"][c][n, j]),
               gradient_first(at(through_h, (n, j), "t", {gradient_array(h): h_grad}),
                              (h_grad,), pr) + " + " + pr(sent_c))
    sent_back = tuple((pr(prev_grad[p_][n, k]), pr(at(g.expr, (n, k), "t")))
                      for p_, g in ((h_prev, back_h), (c_prev, back_c)))
    initial_gradients = tuple((pr(initial_grad[s][n, k]), pr(at(g.expr, (n, k), "1")))
                              for s, g in ((h, back_h), (c, back_c)))

    sums = []
    for w in op.weights:
        g = d.gradient(w)
        free = (j, k)[: len(g.index)]
        value = at(g.expr, free, "t")
        inner = value.function if isinstance(value, sp.Sum) else value
        limits = value.limits if isinstance(value, sp.Sum) else ()
        sums.append((pr(weight_grad[w][free]),
                     pr(sp.Sum(inner, *limits, (t, 0, rd.length - 1)))))
    per_step = tuple((pr(input_grad[a][n, k]), pr(at(d.gradient(a).expr, (n, k), "t")))
                     for a in input_grad)

    # ∂E/∂s^⟨t⟩ on the rows each gate reads (the others' terms vanish there), with
    # σ(s) and tanh(s) written as the gate they are: ∂E/∂i i (1 − i).
    s_arr = step.steps[0][0].base
    d_s = next(g for g in d.intermediates if g.array == s_arr)
    size = next(iter(sp.sympify(op.shape(h0)[1]).free_symbols))
    rows = []
    for target, definition in step.steps[1:5]:
        (read,) = [a for a in definition.atoms(sp.Indexed) if a.base == s_arr]
        ex = d_s.expr.xreplace({d_s.index[1]: read.indices[1], d_s.index[0]: n})
        ex = ex.replace(lambda a: isinstance(a, sp.Piecewise),
                        lambda a: on_block(a, j, size))
        ex = sp.factor_terms(ex).xreplace({definition: target})
        rows.append((pr(at_time["t"][s_arr][read.indices]),
                     squared(gradient_first(ex.xreplace(renames("t")).xreplace(now),
                                              tuple(renames("t").values()), pr))))

    # ∂c^⟨t⟩/∂c^⟨t−1⟩: what the step sends back to its previous cell state, per unit of
    # the gradient of c (the forget gate).
    d_c = gradient_array(c)
    slope = back_c.expr.xreplace({d_c[back_c.index]: 1})
    p, q = back_c.index
    cell_jacobian = (rf"\frac{{\partial {pr(now[c][n, j])}}}{{\partial {pr(now[c_prev][n, j])}}}",
                     pr(slope.xreplace({p: n, q: j}).xreplace(now)))
    factor = slope.xreplace({p: n, q: j}).xreplace(
        {a: sp.IndexedBase(at_step(str(a), "u"), real=True) for a in arrays})
    cell_product = (rf"\frac{{\partial {pr(marked_names(op, rd, 'T', 'T-1')[c][n, j])}}}"
                    rf"{{\partial {pr(now[c][n, j])}}}",
                    r"\prod_{u=t+1}^{T} " + pr(factor))
    gates = tuple(lab(now[t_.base]) for t_, _ in step.steps[1:5])
    return CellView(
        kind="cell",
        lang=lang.code,
        name=op.name,
        title=op_title(op, lang),
        recurrence=tuple(step_view.steps) + ((step_view.out, step_view.definition),),
        gates=gates,
        preactivation=lab(now[step.steps[0][0].base]),
        states=(lab(now[h]), lab(now[c])),
        firsts=(at_step(lab(h), "0"), at_step(lab(c), "0")),
        initials=(lab(h0), lab(c0)),
        lasts=(at_step(lab(h), "T"), at_step(lab(c), "T")),
        inputs=tuple(lab(now[a]) for a in op.inputs if a not in initials),
        weights=tuple(lab(w) for w in op.weights),
        step=back_in_time(step_view, {lab(now[h_prev]), lab(now[c_prev])}),
        total_h=total_h,
        total_c=total_c,
        from_above=pr(upstream[n, k]),
        sent_back=sent_back,
        initial_gradients=initial_gradients,
        sums=tuple(sums),
        per_step=per_step,
        preactivation_gradient=tuple(rows),
        cell_jacobian=cell_jacobian,
        cell_product=cell_product,
    )


# A recurrence that carries a cell state besides its output (the LSTM) gets this document.
RECURRENT_VIEWS[2, False] = cell_view
