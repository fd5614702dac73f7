"""A recurrent layer's document: one time step derived, then backpropagation through time.

The step is the layer cut at time t (:func:`derive.calculus.recurrence.cut_step`), an
ordinary layer: its page is the layer document's, with every array marked by its time
step (x^⟨t⟩, s^⟨t⟩, h^⟨t⟩ and the state it reads, h^⟨t−1⟩). What follows is built from
the same derivation:

- ∂E/∂h^⟨t⟩ collects the gradient from above at t and what step t + 1 sends back, the
  step's gradient with respect to its previous state, one step later;
- a weight's gradient is the step's, summed over t;
- h_0 gets what step 1 sends back;
- the Jacobian ∂h^⟨t+1⟩/∂h^⟨t⟩ is read off the same gradient (f'(s) times W_hh), and the
  product of T − t of them is bounded by (max f' · σ_max(W_hh))^(T−t).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import sympy as sp

from derive.calculus.recurrence import derive_recurrence
from derive.latex.context import Language, document_view, op_title
from derive.latex.indexed import NOTATION, RECURRENT_VIEWS, LayerView, indexed_printer
from derive.spec import Activation, Layer

#: How each time step is marked: a superscript, as the notes mark a layer with (l).
STEP = r"^{{\langle {} \rangle}}"


def at_step(name: str, time: str) -> str:
    """``name`` marked with the time step ``time``, as the recurrent documents print it."""
    return name + STEP.format(time)


#: The names of the gradient that reaches a state from the layers above, the first one no
#: array of the layer uses: g, but ε in an LSTM, whose candidate is g. Never δ, which the
#: time step's derivation already gives to the whole gradient of its output.
FROM_ABOVE = ("g", r"\varepsilon")


def from_above(op: Layer) -> str:
    """The name of the gradient from the layers above at each time step (g^⟨t⟩)."""
    used = {NOTATION.get(str(a), str(a)) for a, _ in op.arrays}
    return next(name for name in FROM_ABOVE if name not in used)


def back_in_time(view: LayerView, states: set[str]) -> LayerView:
    """The step's view with each previous state's gradient in the role ``"state"``.

    The step reads h^⟨t−1⟩ as an input, but its gradient goes back to the previous time
    step, not on to a layer below as an input's does.
    """
    return replace(view, gradients=tuple(replace(g, role="state") if g.array in states else g
                                         for g in view.gradients))


@dataclass(frozen=True)
class RecurrentView:
    """Everything a recurrent layer's templates print."""

    kind: str
    #: The language's code: the templates read their sentences from its recurrent.tex.
    lang: str
    name: str
    title: str
    #: The recurrence for t = 1, …, T: (left-hand side, right-hand side) pairs.
    recurrence: tuple[tuple[str, str], ...]
    #: The state before the first step, and the given initial state it equals.
    first: str
    initial: str
    state: str
    state_last: str
    inputs: tuple[str, ...]
    weights: tuple[str, ...]
    #: The layer at one time step, as a layer's document prints it.
    step: LayerView
    #: ∂E/∂h^⟨t⟩ = g^⟨t⟩ + what step t + 1 sends back (lhs, gradient from above, rhs).
    total_lhs: str
    from_above: str
    total: str
    total_last: str
    last_lhs: str
    #: What the step sends back through its previous state, and h_0's gradient.
    sent_back: tuple[str, str]
    initial_gradient: tuple[str, str]
    #: Each weight's gradient: (lhs, sum over t).
    sums: tuple[tuple[str, str], ...]
    #: One input's gradient at each t: (lhs, rhs).
    per_step: tuple[tuple[str, str], ...]
    #: ∂h^⟨t+1⟩_{n,j}/∂h^⟨t⟩_{n,k}, element and matrix; the product from t to T; the bound.
    jacobian: tuple[str, str]
    jacobian_matrix: tuple[str, str]
    product: tuple[str, str]
    bound: tuple[str, str]
    product_bound: tuple[str, str]
    #: max |f'|, printed, and whether the derivative is written in the output (1 − h²).
    dmax: str
    in_output: bool

    @property
    def gradients(self) -> tuple:
        """The gradients of one time step, derived step by step."""
        return self.step.gradients


def _names(op: Layer, previous: sp.IndexedBase, time: str, before: str) -> dict:
    """Each array of the step renamed with its time step marked (x → x^⟨t⟩)."""
    rec = op.recurrence
    marked = {a: sp.IndexedBase(at_step(str(a), time), real=True) for a in
              (*(b for b in op.inputs if b != rec.initial), *(t.base for t, _ in op.steps),
               rec.state)}
    marked[previous] = sp.IndexedBase(at_step(str(rec.state), before), real=True)
    return marked


def _printed_step(rd, names: dict) -> Layer:
    step = rd.step

    def mark(e):
        return e.xreplace(names)

    return replace(step, out=mark(step.out), expr=mark(step.expr),
                   steps=tuple((mark(t), mark(e)) for t, e in step.steps),
                   arrays=tuple((names.get(a, a), d) for a, d in step.arrays),
                   inputs=tuple(names.get(a, a) for a in step.inputs))


def _activation(op: Layer, element: sp.Indexed) -> Activation | None:
    """The catalogue's activation the step applies to s (None for another formula)."""
    from derive import registry
    from derive.spec import x

    applied = op.expr.xreplace({element: x})
    return next((a for a in registry.all_ops("activation") if a.expr == applied), None)


def recurrent_view(op: Layer, lang: Language) -> RecurrentView:
    """The document view of a layer with a :class:`~derive.spec.Recurrence`."""
    from derive.calculus.derivation import derive_activation, gradient_array
    from derive.latex.facts import activation_facts
    from derive.spec import y as output

    rd = derive_recurrence(op)
    rec, step, d = op.recurrence, rd.step, rd.derivation
    state, previous = rd.carried
    ((s_el, s_def),) = step.steps
    s_arr = s_el.base
    n, o = step.out.indices
    i, j, k = (sp.Symbol(c, integer=True, nonnegative=True) for c in "ijk")
    t = sp.Symbol("t", integer=True, nonnegative=True)
    now, after, first = (_names(op, previous, a, b) for a, b in
                         (("t", "t-1"), ("t+1", "t"), ("1", "0")))
    step_view = document_view(_printed_step(rd, now), lang)
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

    s_grad = {key: grad(label(names[s_arr].label)) for key, names in
              (("t", now), ("t+1", after), ("1", first))}
    h_grad, prev_grad = grad(label(now[state].label)), grad(label(now[previous].label))
    # h^⟨0⟩ = h_0: its gradient is written at the state's name, with the time step 0.
    initial_grad = grad(at_step(label(state.label), "0"))
    last_grad = grad(label(_names(op, previous, "T", "T-1")[state].label))
    weight_grad = {w: grad(label(w.label)) for w in op.weights}
    input_grad = {a: grad(label(now[a].label)) for a in op.inputs if a != rec.initial}
    pr = indexed_printer(lang, symbols, gradients=wrt).doprint

    def lab(base) -> str:
        return pr(base.label)

    d_s, d_h = gradient_array(s_arr), gradient_array(state)
    back = d.gradient(previous)
    p, q = back.index

    def at(expr, free, renames, bound=None):
        """A step gradient at the indices ``free``; its sums but the batch's over ``bound``."""
        sums = {lim[0]: bound for s_ in expr.atoms(sp.Sum) for lim in s_.limits
                if lim[0] != n and bound is not None}
        return expr.xreplace(sums).xreplace(dict(zip((p, q), free, strict=False))
                                            ).xreplace(renames)

    upstream = sp.IndexedBase(at_step(above, "t"), real=True)
    sent_next = at(back.expr, (n, j), {d_s: s_grad["t+1"]}, k)
    total = (pr(h_grad[n, j]), pr(upstream[n, j] + sent_next))
    upstream_last = sp.IndexedBase(at_step(above, "T"), real=True)
    sent_back = (pr(prev_grad[n, k]), pr(at(back.expr, (n, k), {d_s: s_grad["t"]}, j)))
    initial_gradient = (pr(initial_grad[n, k]), pr(at(back.expr, (n, k), {d_s: s_grad["1"]}, j)))

    def read_at(w) -> tuple:
        """The indices a weight is read at in the step (W_ih[j, i], W_hh[j, k], b[j])."""
        element = next(a for a in s_def.atoms(sp.Indexed) if a.base == w)
        return tuple(j if ix == o else ix for ix in element.indices)

    # A weight's gradient: the step's with its arrays at t, summed over t = 1, …, T.
    sums = []
    for w in op.weights:
        free = read_at(w)
        g = at(d.gradient(w).expr, free, {d_s: s_grad["t"], **now})
        inner = g.function if isinstance(g, sp.Sum) else g
        limits = g.limits if isinstance(g, sp.Sum) else ()
        sums.append((pr(weight_grad[w][free]),
                     pr(sp.Sum(inner, *limits, (t, 0, rd.length - 1)))))
    per_step = tuple(
        (pr(input_grad[a][n, i]), pr(at(d.gradient(a).expr, (n, i), {d_s: s_grad["t"]}, j)))
        for a in input_grad)

    # One step's Jacobian ∂h^⟨t+1⟩_{n,j}/∂h^⟨t⟩_{n,k}, read off the same derivation: the
    # step sends back Σ_j W_hh[j, k] ∂E/∂s_{n,j}, and ∂E/∂s = f'(s) ∂E/∂h.
    local = next(g for g in d.intermediates if g.array == s_arr)
    slope = local.expr.xreplace({d_h[p, q]: 1})
    activation = _activation(step, s_el)
    in_output = activation is not None and activation.grad_in_output is not None
    if in_output:  # 1 − h², as the notes write tanh' in the output
        slope = activation.grad_in_output.xreplace({output: state[p, q]})
    summand = back.expr.function if isinstance(back.expr, sp.Sum) else back.expr
    (o_bound,) = {lim[0] for lim in back.expr.limits} if isinstance(back.expr, sp.Sum) \
        else {p}
    weight = summand.xreplace({d_s[p, o_bound]: 1})
    element = slope.xreplace({q: o_bound}) * weight
    element = element.xreplace({o_bound: j, q: k, p: n}).xreplace(after)
    # A marked element squared is parenthesised: h^⟨t+1⟩_{n,j} has its superscript.
    squared = re.sub(r"(\w\^\{\\langle [^}]*\\rangle\}_\{[^}]*\})\^\{", r"\\left(\1\\right)^{",
                     pr(element))
    jacobian = (rf"\frac{{\partial {pr(after[state][n, j])}}}"
                rf"{{\partial {pr(now[state][n, k])}}}", squared)

    def vector(time: str):
        """f'(s) of the whole state at one time step, for diag(…)."""
        return pr(slope.xreplace({state[p, q]: sp.Symbol(at_step(lab(state), time)),
                                  s_arr[p, q]: sp.Symbol(at_step(lab(s_arr), time))}))

    W_hh = weight.base
    matrix_lhs = (rf"\frac{{\partial {at_step(lab(state), 't+1')}}}"
                  rf"{{\partial {at_step(lab(state), 't')}}}")

    def diag(time: str) -> str:
        return rf"\operatorname{{diag}}\!\left({vector(time)}\right) {lab(W_hh)}"

    facts = None
    if activation is not None:
        found = derive_activation(activation)
        facts = activation_facts(activation, found.forward, found.derivative, found.kinks)
    dmax = sp.nsimplify(facts.dmax.value) if facts is not None and facts.dmax else None
    sigma = rf"\sigma_{{\max}}({lab(W_hh)})"
    rate = sigma if dmax == 1 else rf"{pr(dmax)} \, {sigma}"
    product_lhs = (rf"\frac{{\partial {at_step(lab(state), 'T')}}}"
                   rf"{{\partial {at_step(lab(state), 't')}}}")
    return RecurrentView(
        kind="recurrent",
        lang=lang.code,
        name=op.name,
        title=op_title(op, lang),
        recurrence=(step_view.steps[0], (step_view.out, step_view.definition)),
        first=at_step(lab(state), "0"),
        initial=lab(rec.initial),
        state=lab(now[state]),
        state_last=at_step(lab(state), "T"),
        inputs=tuple(lab(now[a]) for a in op.inputs if a != rec.initial),
        weights=tuple(lab(w) for w in op.weights),
        step=back_in_time(step_view, {lab(now[previous])}),
        total_lhs=total[0],
        from_above=pr(upstream[n, j]),
        total=total[1],
        total_last=pr(upstream_last[n, j]),
        last_lhs=pr(last_grad[n, j]),
        sent_back=sent_back,
        initial_gradient=initial_gradient,
        sums=tuple(sums),
        per_step=per_step,
        jacobian=jacobian,
        jacobian_matrix=(matrix_lhs, diag("t+1")),
        product=(product_lhs, r"\prod_{u=t+1}^{T} " + diag("u")),
        bound=(rf"\left\lVert {matrix_lhs} \right\rVert", rate),
        product_bound=(rf"\left\lVert {product_lhs} \right\rVert",
                       rf"\left({rate}\right)^{{T-t}}"),
        dmax=pr(dmax) if dmax is not None else "",
        in_output=in_output,
    )


# A recurrence that carries one state, which its output reads only through the step's
# pre-activation (the Elman layer's h), gets this document.
RECURRENT_VIEWS[1, False] = recurrent_view
