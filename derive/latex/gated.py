"""The document of a gated recurrent layer whose output reads itself one step back (the GRU).

The layer carries one state h, but reads it twice: through the state's part of its
pre-activations (a product with W_hh), and directly, in h_t = (1 − z_t) h̃_t + z_t h_{t−1}.
As for the Elman layer (:mod:`derive.latex.recurrent`), one time step is an ordinary
layer whose page is the layer document's, every array marked by its time step; what
follows is read off the same derivation:

- the gradients of the two parts of the pre-activations block by block, each gate's rows
  written in the gate's value (∂E/∂r r (1 − r));
- ∂E/∂h^⟨t⟩ collects the gradient from above at t and what step t + 1 sends back through
  its previous state, on both of its paths;
- a weight's gradient is the step's, summed over t; h_0 gets what step 1 sends back;
- the Jacobian ∂h^⟨t⟩/∂h^⟨t−1⟩ = diag(z^⟨t⟩) + (∂h^⟨t⟩/∂v^⟨t⟩) W_hh, read off the gradient
  the step sends back: its first term, the update gate alone, is the path along which the
  gradient is only scaled by gates, with no weight matrix and no activation's derivative.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from derive.calculus.derivation import gradient_array
from derive.calculus.recurrence import derive_recurrence
from derive.latex.cell import gradient_first, marked_names, on_block, printed_step, squared
from derive.latex.context import Language, document_view, op_title
from derive.latex.indexed import NOTATION, RECURRENT_VIEWS, LayerView, indexed_printer
from derive.latex.recurrent import at_step, back_in_time, from_above
from derive.spec import Layer


@dataclass(frozen=True)
class GatedView:
    """Everything the templates of a gated recurrent layer (the GRU) print."""

    kind: str
    #: The language's code: the templates read their sentences from its gated.tex.
    lang: str
    name: str
    title: str
    #: The recurrence for t = 1, …, T: (left-hand side, right-hand side) pairs.
    recurrence: tuple[tuple[str, str], ...]
    #: The two parts of the pre-activations, the input's and the state's, each of three
    #: blocks of H rows; the gates in PyTorch's order (reset, update, candidate).
    parts: tuple[str, ...]
    gates: tuple[str, ...]
    #: The state at t, before the first step, the given initial state, the last state.
    state: str
    first: str
    initial: str
    last: str
    inputs: tuple[str, ...]
    weights: tuple[str, ...]
    #: The layer at one time step, as a layer's document prints it.
    step: LayerView
    #: Each part's gradient on each gate's block of rows, in the gate's value: (lhs, rhs).
    preactivation_gradient: tuple[tuple[str, str], ...]
    #: ∂E/∂h^⟨t⟩ through time (lhs, rhs), and the gradient from above.
    total: tuple[str, str]
    from_above: str
    #: What the step sends back through its previous state, and h_0's gradient.
    sent_back: tuple[str, str]
    initial_gradient: tuple[str, str]
    #: Each weight's gradient: (lhs, sum over t).
    sums: tuple[tuple[str, str], ...]
    #: One input's gradient at each t: (lhs, rhs).
    per_step: tuple[tuple[str, str], ...]
    #: ∂h^⟨t⟩/∂h^⟨t−1⟩ as matrices: the direct path's diagonal plus the path through W_hh.
    jacobian: tuple[str, str]
    #: The direct path's factors from t + 1 to T multiplied: (lhs, rhs).
    direct_product: tuple[str, str]

    @property
    def gradients(self) -> tuple:
        """The gradients of one time step, derived step by step."""
        return self.step.gradients


def gated_view(op: Layer, lang: Language) -> GatedView:
    """The document view of a recurrent layer whose output reads its previous value."""
    rd = derive_recurrence(op)
    step, d = rd.step, rd.derivation
    ((h, h0, h_prev),) = rd.states
    n, j = step.out.indices
    k = sp.Symbol("k", integer=True, nonnegative=True)
    t = sp.Symbol("t", integer=True, nonnegative=True)
    p, q = sp.symbols("p q", integer=True, nonnegative=True)
    now, after, first = (marked_names(op, rd, a, b) for a, b in
                         (("t", "t-1"), ("t+1", "t"), ("1", "0")))
    step_view = document_view(printed_step(rd, now), lang)
    above = from_above(op)
    symbols = {at_step(above, "t"): at_step(above, "t")}
    label = indexed_printer(lang, symbols).doprint

    # ∂E/∂A for arrays named by their LaTeX (the printer's gradient notation).
    wrt: dict = {}

    def grad(tex: str) -> sp.IndexedBase:
        base = sp.IndexedBase(f"dE_{len(wrt)}", real=True)
        # A name with its own subscript (W_{hh}) is braced before the element's.
        wrt[base.label.name] = tex if "^" in tex or "_" not in tex else f"{{{tex}}}"
        return base

    # Every step array's gradient at t, t + 1 and 1, and the state's at t, t − 1 and 0.
    arrays = [t_.base for t_, _ in step.steps] + [h]
    at_time = {key: {a: grad(label(names[a].label)) for a in arrays}
               for key, names in (("t", now), ("t+1", after), ("1", first))}
    prev_grad = grad(label(now[h_prev].label))
    initial_grad = grad(at_step(label(h.label), "0"))
    weight_grad = {w: grad(label(w.label)) for w in op.weights}
    input_grad = {a: grad(label(now[a].label)) for a in op.inputs if a != h0}
    pr = indexed_printer(lang, symbols, gradients=wrt).doprint

    def lab(base) -> str:
        return pr(base.label)

    def renames(key):
        """The step's gradient arrays (d_s, d_r, …) as the gradients at one time step."""
        return {gradient_array(a): at_time[key][a] for a in arrays}

    def at(expr, free, key, extra=None):
        """A step gradient at the indices ``free`` with the arrays of time ``key``."""
        named = {"t": now, "t+1": after, "1": first}[key]
        return (expr.xreplace(dict(zip((p, q), free, strict=False)))
                .xreplace({**renames(key), **(extra or {})}).xreplace(named))

    upstream = sp.IndexedBase(at_step(above, "t"), real=True)
    back = d.gradient(h_prev)
    # ∂E/∂h^⟨t⟩: the gradient from above, and what step t + 1 sends back through h^⟨t⟩,
    # written at the state's unit k (the sum over the gates' rows j is the step's).
    total = (pr(at_time["t"][h][n, k]),
             f'{pr(upstream[n, k])} + {pr(at(back.expr, (n, k), "t+1"))}')
    sent_back = (pr(prev_grad[n, k]), pr(at(back.expr, (n, k), "t")))
    initial_gradient = (pr(initial_grad[n, k]), pr(at(back.expr, (n, k), "1")))

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

    # Each part of the pre-activations on the rows each gate reads (the other gates'
    # terms vanish there), with σ(·) and tanh(·) written as the gate they are.
    parts = [t_.base for t_, _ in step.steps[:2]]
    gates = step.steps[2:]
    size = next(iter(sp.sympify(op.shape(h0)[1]).free_symbols))
    rows = []
    for part in parts:
        local = next(g for g in d.intermediates if g.array == part)
        for _, definition in gates:
            (read,) = [a for a in definition.atoms(sp.Indexed) if a.base == part]
            ex = local.expr.xreplace({local.index[1]: read.indices[1], local.index[0]: n})
            ex = ex.replace(lambda a: isinstance(a, sp.Piecewise),
                            lambda a: on_block(a, j, size))
            ex = sp.factor_terms(ex.xreplace({f: t_ for t_, f in gates}))
            rows.append((pr(at_time["t"][part][read.indices]),
                         squared(gradient_first(ex.xreplace(renames("t")).xreplace(now),
                                                tuple(renames("t").values()), pr))))

    # The step sends back d_h ⊙ z (the output reads h^⟨t−1⟩ itself) and Σ W_hh ∂E/∂v (its
    # state part reads it): one step's Jacobian is diag(z) + (∂h/∂v) W_hh.
    d_h = gradient_array(h)
    direct = sp.Add(*(a for a in sp.Add.make_args(back.expr) if a.has(d_h)))
    through = [a for a in sp.Add.make_args(back.expr) if not a.has(d_h)]
    slope = direct.xreplace({d_h[p, q]: 1})
    (path,) = through
    summand = path.function if isinstance(path, sp.Sum) else path
    (read_part,) = {g.base for g in summand.atoms(sp.Indexed)} & set(renames("t"))
    part = next(a for a in arrays if gradient_array(a) == read_part)
    (weight,) = {e.base for e in summand.atoms(sp.Indexed)} - {read_part}
    # The direct path's factor is one gate's vector, diag(z^⟨t⟩); along it alone the
    # steps from t + 1 to T multiply the gradient by the product of those gates.
    (gate,) = slope.atoms(sp.Indexed)
    state_t, state_before = at_step(lab(h), "t"), at_step(lab(h), "t-1")
    jacobian = (rf"\frac{{\partial {state_t}}}{{\partial {state_before}}}",
                rf"\operatorname{{diag}}\!\left({lab(now[gate.base])}\right) + "
                rf"\frac{{\partial {state_t}}}{{\partial {lab(now[part])}}} {lab(weight)}")
    over_u = at_step(NOTATION.get(str(gate.base), str(gate.base)), "u")
    direct_product = (rf"\prod_{{u=t+1}}^{{T}} \operatorname{{diag}}\!\left({over_u}\right)",
                      rf"\operatorname{{diag}}\!\left(\prod_{{u=t+1}}^{{T}} {over_u}\right)")
    return GatedView(
        kind="gated",
        lang=lang.code,
        name=op.name,
        title=op_title(op, lang),
        recurrence=tuple(step_view.steps) + ((step_view.out, step_view.definition),),
        parts=tuple(lab(now[a]) for a in parts),
        gates=tuple(lab(now[t_.base]) for t_, _ in gates),
        state=lab(now[h]),
        first=at_step(lab(h), "0"),
        initial=lab(h0),
        last=at_step(lab(h), "T"),
        inputs=tuple(lab(now[a]) for a in op.inputs if a != h0),
        weights=tuple(lab(w) for w in op.weights),
        step=back_in_time(step_view, {lab(now[h_prev])}),
        preactivation_gradient=tuple(rows),
        total=total,
        from_above=pr(upstream[n, k]),
        sent_back=sent_back,
        initial_gradient=initial_gradient,
        sums=tuple(sums),
        per_step=per_step,
        jacobian=jacobian,
        direct_product=direct_product,
    )


# A recurrence that carries one state and whose output reads it one step back directly
# (the GRU) gets this document.
RECURRENT_VIEWS[1, True] = gated_view
