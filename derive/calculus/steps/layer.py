"""Layers: ∂E/∂A for each input and weight, through the outputs that depend on it.

The chain rule through every output (Σ δ · ∂out/∂A), then only the outputs connected
to the element, then the layer's definition and the rule table — the sum opened as in
the notes — or, where the outputs read A at shifted indices, SymPy's Kronecker deltas
eliminated. Each result is checked equal to the engine's
(:func:`derive.calculus.derivation.derive_layer`).
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache

import sympy as sp

from derive.calculus.indexed import ArgMax
from derive.calculus.recurrence import cut_step
from derive.calculus.steps.checking import check_equal
from derive.calculus.steps.recording import Recorder, derivation_steps
from derive.calculus.steps.records import (
    LOSS_NAME,
    D,
    GradientSteps,
    LayerSteps,
    NoRuleError,
    OpenSum,
    StepError,
)
from derive.spec import Layer

#: Index names a lecture uses instead of the declaration's (outputs j, as in the notes).
PRINTED_INDEX = {"o": "j"}
#: Sizes at which layer derivations are checked (others: 2); free indices sit inside.
LAYER_SIZES = {"N": 2, "I": 3, "O": 2, "H": 3, "W": 3, "D": 3, "KH": 2, "KW": 2}
#: Values of the hyper-parameters at the checks (a stride S of 1, no padding P); a size
#: of the same name that is not a hyper-parameter (attention's S keys) is a size, 2.
LAYER_HYPER = {"S": 1, "P": 0}


def _primed(symbol: sp.Symbol) -> sp.Symbol:
    return sp.Symbol(symbol.name + "'", **symbol.assumptions0)


def _rename_bound(expr: sp.Expr, avoid) -> sp.Expr:
    """Prime the summation indices of ``expr`` that clash with the names in ``avoid``."""
    avoid = set(avoid)

    def rename(e):
        clash = {lim[0]: _primed(lim[0]) for lim in e.limits if lim[0] in avoid}
        return e.xreplace(clash) if clash else e

    return expr.replace(lambda e: isinstance(e, sp.Sum | OpenSum), rename)


def _bound(expr: sp.Expr) -> set:
    """Summation indices of every sum in ``expr``."""
    return {lim[0] for e in sp.preorder_traversal(expr) if isinstance(e, sp.Sum | OpenSum)
            for lim in e.limits}


def layer_index_names(op) -> dict:
    """Declaration index → printed index (o → j unless j is already used)."""
    used = {str(s) for s in op.expr.free_symbols | op.out.free_symbols}
    for _, e in op.steps:
        used |= {str(s) for s in e.free_symbols}
    names = {}
    for sym in op.out.free_symbols | op.expr.free_symbols:
        if isinstance(sym, sp.Symbol) and sym.name in PRINTED_INDEX:
            new = PRINTED_INDEX[sym.name]
            if new not in used:
                names[sym] = sp.Symbol(new, **sym.assumptions0)
    return names


def _free_element(op, array, names, reads) -> sp.Indexed:
    """The element ∂E/∂A is taken at: indices named as where A is read, else p, q, r, u."""
    from derive.calculus.derivation import FREE

    dims = len(op.shape(array))
    occurrences = sorted((a for e in reads for a in e.atoms(sp.Indexed) if a.base == array),
                         key=sp.default_sort_key)
    indices = list(FREE[:dims])
    if occurrences:
        for pos, index in enumerate(occurrences[0].indices):
            if isinstance(index, sp.Symbol) and index not in indices[:pos]:
                indices[pos] = names.get(index, index)
    return array[tuple(indices)]


def _engine_printed(expr, names, element, free) -> sp.Expr:
    """An engine gradient in free indices p, q, ... with the printed names."""
    expr = _rename_bound(expr.xreplace(names), element.indices)
    return expr.xreplace(dict(zip(free, element.indices, strict=False)))


def layer_instance(op, element: sp.Indexed | None = None) -> dict:
    """Sizes (and the free indices of ``element``) at which a layer's steps are checked."""
    symbols = set()
    for _, shape in op.arrays:
        for d in shape:
            symbols |= sp.sympify(d).free_symbols
    for p in op.hyper:
        symbols.add(p.symbol)
    for _, value in op.sizes:
        symbols |= value.free_symbols
    hyper = {p.symbol for p in op.hyper}
    at = {s: (LAYER_HYPER if s in hyper else LAYER_SIZES).get(s.name, 2)
          for s in symbols if s not in dict(op.sizes)}
    for size, value in op.sizes:
        at[size] = int(value.xreplace(at))
    if element is not None:
        shape = op.shape(element.base)
        for pos, index in enumerate(element.indices):
            size = int(sp.sympify(shape[pos]).xreplace(at))
            at[index] = min(size - 1, pos + 1)
    return at


def _layer_gradient(op, array, names, out, expr, upstream, engine,
                    counts=None, defined=None) -> GradientSteps:
    """∂E/∂A, recorded: the chain rule through the outputs, then the connected ones.

    Then the rule table (the sum opened, as in the notes), or SymPy's Kronecker deltas
    where the outputs read A at shifted indices and no sum opens around one term.
    """
    from derive.calculus.derivation import FREE

    element = _free_element(op, array, names, [expr])
    free = set(element.indices)
    printed_engine = _engine_printed(engine, names, element, FREE)
    out_indices = list(out.indices)
    pair = {i: (_primed(i) if i in free else i) for i in out_indices}
    fixed: dict = {}
    for a in expr.atoms(sp.Indexed):
        if a.base != array:
            continue
        for pos, index in enumerate(a.indices):
            if index in out_indices:
                if fixed.get(index, element.indices[pos]) != element.indices[pos]:
                    fixed = {}
                    break
                fixed[index] = element.indices[pos]
    shape = dict(zip(out_indices, op.shape(op.out.base), strict=True))
    out_base = out.base
    a_syms = sp.symbols(f"a0:{len(out_indices)}", integer=True)
    body = _rename_bound(expr, free | set(pair.values()))
    definition = sp.Lambda(a_syms, body.xreplace(dict(zip(out_indices, a_syms, strict=True))))
    pairing_idx = [pair[i] for i in out_indices]
    pairing = sp.Sum(upstream[tuple(pairing_idx)] * out_base[tuple(pairing_idx)],
                     *[(pair[i], 0, shape[i] - 1) for i in out_indices])
    instance = layer_instance(op, element)
    for size, name in (counts or {}).items():
        instance[name] = int(size.xreplace(instance))
    if any(body.has(ArgMax) for body in (defined or {}).values()):
        # An element in the middle of the input lies in several windows, so that it is
        # the maximum of some at the check points (a corner rarely is, and the check
        # would compare zeros).
        dims = op.shape(element.base)
        for pos, index in enumerate(element.indices):
            instance[index] = int(sp.sympify(dims[pos]).xreplace(instance)) // 2

    def recorder():
        # Intermediates (an arg-max) take the values their definitions give.
        rec = Recorder(D(LOSS_NAME, element), element,
                       expansions=((LOSS_NAME, pairing), (out_base, definition),
                                   *(defined or {}).items()),
                       instance=tuple(instance.items()),
                       samples=tuple((base, "defined") for base in defined or {}))
        rec.step("chain_layer", sp.Sum(
            upstream[tuple(pairing_idx)] * D(out_base[tuple(pairing_idx)], element),
            *[(pair[i], 0, shape[i] - 1) for i in out_indices]))
        kept = [fixed.get(i, pair[i]) for i in out_indices]
        limits = [(pair[i], 0, shape[i] - 1) for i in out_indices if i not in fixed]
        term = upstream[tuple(kept)] * D(out_base[tuple(kept)], element)
        if fixed:
            rec.step("connected", sp.Sum(term, *limits) if limits else term,
                     quote=(out_base[tuple(pairing_idx)],
                            *[sp.Eq(pair[i], fixed[i]) for i in out_indices if i in fixed]))
        local = definition(*kept)
        inside = upstream[tuple(kept)] * D(local, element)
        primed = sorted({s for s in local.free_symbols | _bound(local)
                         if isinstance(s, sp.Symbol) and s.name.endswith("'")},
                        key=sp.default_sort_key)
        rec.step("definition", sp.Sum(inside, *limits) if limits else inside,
                 inner=((out_base[tuple(kept)], local),), quote=tuple(primed))
        return rec, local, kept, limits

    rec, local, kept, limits = recorder()
    try:
        rec.auto()
        rec.steps[:] = fold_trivial_runs(rec.steps)
        route = "rules"
    except NoRuleError:
        rec, local, kept, limits = recorder()
        raw = upstream[tuple(kept)] * sp.diff(local, element)
        raw = sp.Sum(raw, *limits) if limits else raw
        rec.step("kronecker", raw)
        route = "routed"  # the brackets stay: they test a position computed from data
        if printed_engine != raw:
            rec.step("eliminate_deltas", printed_engine)
            route = "kronecker"
    chain = rec.chain()
    check_equal(chain.result, printed_engine, chain, f"∂E/∂{element} of {op.name}")
    result = chain.result
    if sp.count_ops(printed_engine) < sp.count_ops(result):
        result = printed_engine
    return GradientSteps(array, element, chain, result, route)


def _simplify(expr: sp.Expr) -> sp.Expr:
    """Every factor that does not depend on a sum's index taken out of the sum.

    The summand is factored first (2μ − 2x becomes −2(x − μ)), so what stays inside
    is the part that changes from term to term.
    """
    def pull(e):
        indices = {lim[0] for lim in e.limits}
        factors = sp.Mul.make_args(sp.factor_terms(e.function))
        outside = [f for f in factors if not f.free_symbols & indices]
        inside = sp.Mul(*[f for f in factors if f.free_symbols & indices])
        varying = [t for t in sp.Add.make_args(inside) if t.free_symbols & indices]
        if all(t.could_extract_minus_sign() for t in varying):
            return -sp.Mul(*outside) * sp.Sum(-inside, *e.limits)
        return sp.Mul(*outside) * sp.Sum(inside, *e.limits)

    return expr.replace(lambda e: isinstance(e, sp.Sum), pull)


def _through_steps(op, array, element, readers, upstreams, instance, engine,
                   defined, counts) -> GradientSteps:
    """∂E/∂A for an array read by intermediate steps: the chain through each of them.

    Backpropagation takes the steps in reverse order, so the gradient of every step
    that reads A is known; ∂E/∂A adds, over those steps, their gradient times their
    derivative with respect to A (the other intermediates held). Terms that vanish
    because an intermediate is what its definition says (Σ (x − μ) = 0) are dropped
    in a step of their own, with the identity quoted and checked.
    """
    free = set(element.indices)
    terms, inside, inner, expansions_e = [], [], [], []
    for target, body in readers:
        out_indices = list(target.indices)
        pair = {i: (_primed(i) if i in free else i) for i in out_indices}
        # An output index is fixed by the element when every read of A has it in the
        # same place: a softmax's e^{s_ij − log Σ_k e^{s_ik}} reads the whole row too, so
        # every P_ij' of the row depends on s_ij.
        reads = [a for a in body.atoms(sp.Indexed) if a.base == array]
        fixed: dict = {}
        for index in out_indices:
            places = {tuple(pos for pos, ix in enumerate(a.indices) if ix == index)
                      for a in reads}
            if len(places) == 1 and len(place := places.pop()) == 1:
                fixed[index] = element.indices[place[0]]
        shape = dict(zip(out_indices, op.shape(target.base), strict=True))
        renamed = _rename_bound(body, free | set(pair.values()))
        up = upstreams[target.base]
        pairing_idx = tuple(pair[i] for i in out_indices)
        limits_all = [(pair[i], 0, shape[i] - 1) for i in out_indices]
        expansions_e.append(sp.Sum(up[pairing_idx] * renamed.xreplace(
            {i: pair[i] for i in out_indices}), *limits_all))
        kept = tuple(fixed.get(i, pair[i]) for i in out_indices)
        limits = [(pair[i], 0, shape[i] - 1) for i in out_indices if i not in fixed]
        term = up[kept] * D(target.base[kept], element)
        terms.append(sp.Sum(term, *limits) if limits else term)
        local = renamed.xreplace(dict(zip(out_indices, kept, strict=True)))
        d_local = up[kept] * D(local, element)
        inside.append(sp.Sum(d_local, *limits) if limits else d_local)
        inner.append((target.base[kept], local))
    pairing = sp.Add(*expansions_e)
    rec = Recorder(D(LOSS_NAME, element), element,
                   expansions=((LOSS_NAME, pairing), *defined.items()),
                   instance=tuple(instance.items()),
                   samples=tuple((base, "defined") for base in defined))
    rec.step("chain_steps", sp.Add(*terms), quote=tuple(t for t, _ in inner))
    jacobians = [(t, _row_jacobian(op, local, element)) for t, local in inner]
    if any(j is not None for _, j in jacobians):
        # A step that reads A along a whole row (a softmax): each element of its row
        # depends on A's element, which the rules, one element at a time, do not open.
        # Its Jacobian, from SymPy's derivative with the deltas solved and the step
        # named, is substituted, then multiplied out and the δ sum kept to one term.
        return _through_jacobian(op, array, element, rec, terms, jacobians, engine)
    rec.step("definition", sp.Add(*inside), inner=tuple(inner))
    rec.auto()
    rec.steps[:] = fold_regrouping(rec.steps)
    simple = _simplify(rec.current).subs(counts)
    if simple != rec.current:
        rec.step("common_factor", simple)
    # A term whose sum is zero once the intermediates are what they are defined as.
    zero = _zero_sums(rec.current, rec, defined, counts)
    if zero:
        kept_terms = [t for t in sp.Add.make_args(rec.current)
                      if not any(t.has(z[0]) for z in zero)]
        rec.step("zero_sum", sp.Add(*kept_terms), identities=tuple(zero))
    chain = rec.chain()
    check_equal(chain.result, engine, chain, f"∂E/∂{element} of {op.name}")
    return GradientSteps(array, element, chain, chain.result, "rules")


def _row_jacobian(op, local: sp.Expr, element: sp.Indexed) -> sp.Expr | None:
    """∂t/∂A of a step that reads A along a row with a log-sum-exp, or None for others."""
    from derive.calculus.indexed import eliminate_deltas, lse, name_softmax_steps

    if not local.has(lse):
        return None
    return name_softmax_steps(eliminate_deltas(sp.diff(local, element)), op.steps)


def _through_jacobian(op, array, element, rec, terms, jacobians, engine) -> GradientSteps:
    """The chain through softmax steps: their Jacobians substituted, the δ sums kept."""
    replaced = {D(target, element): jacobian for target, jacobian in jacobians}
    # Quoted at an element j' of the row, which the sums bind: the step after the
    # substitution is checked equal to the one before, as every step.
    quoted = tuple(sp.Eq(lhs, rhs, evaluate=False) for lhs, rhs in replaced.items())
    rec.step("row_jacobian", sp.Add(*terms).xreplace(replaced), quote=quoted)

    def pull(e):
        indices = {lim[0] for lim in e.limits}
        parts = []
        for t in sp.Add.make_args(sp.expand(e.function)):
            outside = [f for f in sp.Mul.make_args(t) if not f.free_symbols & indices]
            inside = [f for f in sp.Mul.make_args(t) if f.free_symbols & indices]
            parts.append(sp.Mul(*outside) * sp.Sum(sp.Mul(*inside), *e.limits))
        return sp.Add(*parts)

    rows = sorted({lim[0] for e in rec.current.atoms(sp.Sum) for lim in e.limits},
                  key=sp.default_sort_key)
    rec.step("distribute", rec.current.replace(lambda e: isinstance(e, sp.Sum), pull),
             quote=tuple(rows[:1]))
    deltas = sorted(rec.current.atoms(sp.KroneckerDelta), key=sp.default_sort_key)
    rec.step("delta_sum", engine,
             quote=(deltas[0], sp.Eq(*deltas[0].args, evaluate=False)) if deltas else ())
    chain = rec.chain()
    check_equal(chain.result, engine, chain, f"∂E/∂{element} of {op.name}")
    return GradientSteps(array, element, chain, chain.result, "rules")


#: Rules that only regroup: a constant factor out of a derivative, the derivative of a sum
#: split into the derivatives of its terms. Through a layer's steps the expression has a
#: term per step, and the rule table applies these to each term in turn; they teach
#: nothing after the first time, so they become clauses of the step before them.
REGROUPING = ("constant_factor", "sum")
#: Rules that, applied to a second sum right after the first, say nothing new: the second
#: application is a clause of the first ("likewise, of the other sum only ... remains").
REPEATED = ("open_sum", "constant_terms")
#: Rules that teach nothing on a line of their own in a layer's gradient: after the
#: substitution (and the opened sum) they only regroup and close with ∂x/∂x = 1.
TRIVIAL = (*REGROUPING, "constant", "identity")


def fold_trivial_runs(steps) -> list:
    """The steps with each run of trivial ones (:data:`TRIVIAL`) made one step.

    The first of a run keeps its rule and names the others in a clause ("the derivative
    of a constant is zero and ∂b/∂b = 1"); the steps before it (the substitution, which
    teaches) stay as they are, except that a closing ∂x/∂x = 1 is always a clause of the
    step before it. Equality is checked like any other step's.
    """
    out: list = []
    for s in steps:
        # ∂x/∂x = 1 closes whatever step comes before it (flatten: the substitution).
        if out and (s.rule == "identity" or s.rule in TRIVIAL and out[-1].rule in TRIVIAL):
            node = s.focus
            out[-1] = replace(out[-1], after=s.after,
                              folded=_clauses(out[-1].folded + ((s.rule, node),) + s.folded))
        else:
            out.append(s)
    return out


def fold_regrouping(steps) -> list:
    """The steps with the regrouping ones folded into the step before them.

    A folded step keeps its rule, focus and quotes, ends where the last step folded into
    it ends, and lists the folded rules (``Step.folded``) so the prose names them in a
    clause; equality with its predecessor is checked like any other step's.

    Parameters
    ----------
    steps : list of Step
        A chain's steps, in order.

    Returns
    -------
    list of Step
        Fewer steps, from the same first expression to the same last one.

    """
    out: list = []
    for s in steps:
        fold = out and (s.rule in REGROUPING
                        or (s.rule in REPEATED and s.rule == out[-1].rule))
        if not fold:
            out.append(s)
            continue
        # The node a clause names: the term an opened sum keeps, else the one rewritten.
        node = s.quote[0] if s.rule == "constant_terms" and s.quote else s.focus
        out[-1] = replace(out[-1], after=s.after,
                          folded=_clauses(out[-1].folded + ((s.rule, node),) + s.folded))
    return out


def _clauses(folded) -> tuple:
    """Each folded rule once (its first node), d/dx x = 1 last: it closes the sentence."""
    seen: dict = {}
    for rule, node in folded:
        seen.setdefault(rule, node)
    return tuple(sorted(seen.items(), key=lambda item: item[0] == "identity"))


def _zero_sums(expr, rec, defined, counts) -> list:
    """Sums of ``expr`` that vanish by an intermediate's definition, with the reason.

    Σ (x − μ) over the elements μ is the mean of: Σ x − m·μ, zero since m·μ = Σ x.
    """
    found = []
    for s in sorted(expr.atoms(sp.Sum), key=sp.default_sort_key):
        if not any(a.base in defined for a in s.atoms(sp.Indexed)):
            continue
        indices = {lim[0] for lim in s.limits}
        split = sp.Add(*[sp.Sum(t, *s.limits) if t.free_symbols & indices
                         else sp.Sum(t, *s.limits).doit()
                         for t in sp.Add.make_args(sp.expand(s.function))])
        split = split.subs(counts)
        probe = Recorder(s, rec.var, expansions=rec.expansions, instance=rec.instance,
                         samples=rec.samples)
        probe.step("rewrite", sp.S.Zero)
        try:
            probe.chain()
        except StepError:
            continue
        found.append((s, split, sp.S.Zero))
    return found


@derivation_steps.register
def _(op: Layer) -> LayerSteps:
    if op.recurrence is not None:
        # A recurrence is derived one time step at a time: the step is an ordinary layer.
        return _layer_steps(cut_step(op)[0])
    return _layer_steps(op)


def _counts(steps) -> dict:
    """Element counts a step divides by (N·H·W for a mean over a channel) → m.

    A product of sizes that is the number of terms of a sum it divides is named, so
    the page reads 1/m and states m = N·H·W once.
    """
    used = {s.name for _, e in steps for s in e.free_symbols}
    counts = {}
    for _, e in steps:
        for s in e.atoms(sp.Sum):
            size = sp.Mul(*[hi - lo + 1 for _, lo, hi in s.limits])
            if len(sp.Mul.make_args(size)) > 1 and e.has(1 / size) and size not in counts:
                name = next(n for n in ("m", "M", "m_1", "m_2") if n not in used)
                used.add(name)
                counts[size] = sp.Symbol(name, integer=True, positive=True)
    return counts


@cache
def _layer_steps(op: Layer) -> LayerSteps:
    from derive.calculus.derivation import FREE, derive_layer, gradient_array

    derivation = derive_layer(op)
    names = layer_index_names(op)
    out = op.out.xreplace(names)
    expr = op.expr.xreplace(names)
    steps = tuple((t.xreplace(names), e.xreplace(names)) for t, e in op.steps)
    counts = _counts(steps)
    steps = tuple((t, e.subs(counts)) for t, e in steps)
    upstream = derivation.upstream
    reads = [e for _, e in steps] + [expr]
    differentiable = {g.array for g in derivation.intermediates}
    upstreams = {out.base: upstream} | {a: gradient_array(a) for a in differentiable}
    # Readers of an array: the steps backpropagation goes through (not an arg-max).
    all_steps = [(t, e) for t, e in steps if t.base in differentiable] + [(out, expr)]
    # Each intermediate's definition, for the checks; its summation indices renamed
    # apart from every index a chain fixes (n, n').
    def definition(t, e):
        args = sp.symbols(f"a0:{len(t.indices)}", integer=True)
        body = _rename_bound(_rename_bound(e, _bound(e)), _bound(e) | {
            _primed(i) for i in _bound(e)})
        return sp.Lambda(args, body.xreplace(dict(zip(t.indices, args, strict=True))))

    defined = {t.base: definition(t, e) for t, e in steps
               if t.base in differentiable or e.has(ArgMax)}

    def gradient(array, engine, fallback):
        readers = [(t, e) for t, e in all_steps if e.has(array)]
        padded = bool(op.padding) and array == op.padding[1]
        # A step the layer also returns (an LSTM step's cell state) starts from the
        # caller's gradient, which no chain through its readers records: shown derived.
        if padded or not readers or array in op.extra_outputs:
            return fallback()
        if readers == [(out, expr)]:
            return _layer_gradient(op, array, names, out, expr, upstream, engine, counts,
                                   defined)
        if any(not isinstance(ix, sp.Symbol) for _, e in readers for a in e.atoms(sp.Indexed)
               if a.base == array for ix in a.indices):
            # Steps that read A at shifted rows (an LSTM's gates, s[n, H + j]) each give
            # part of its rows, which the chain through them, written at one element,
            # does not tell apart: the gradient is shown as derived.
            return fallback()
        element = _free_element(op, array, names, reads)
        instance = layer_instance(op, element)
        for size, name in counts.items():
            instance[name] = int(size.xreplace(instance))
        printed = _engine_printed(engine, names, element, FREE).subs(counts)
        # An output that reads A besides the steps (a GRU's h_t reads h_{t-1} itself) is
        # expanded by its definition in the checks, as the steps are.
        expanded = defined | ({out.base: definition(out, expr)}
                              if (out, expr) in readers else {})
        return _through_steps(op, array, element, readers, upstreams, instance, printed,
                              expanded, counts)

    gradients = []
    for array in op.inputs + op.weights:
        engine = derivation.gradient(array).expr

        def fallback(array=array, engine=engine):
            element = _free_element(op, array, names, reads)
            return GradientSteps(array, element, None,
                                 _engine_printed(engine, names, element, FREE), "derived")

        gradients.append(gradient(array, engine, fallback))
    intermediates = []
    for g in derivation.intermediates:
        target = next(t for t, _ in steps if t.base == g.array)
        element = g.array[target.indices]

        def fallback(g=g, element=element):
            return GradientSteps(g.array, element, None,
                                 _engine_printed(g.expr, names, element, FREE), "derived")

        intermediates.append(gradient(g.array, g.expr, fallback))
    named = tuple((name, sp.Mul(*sorted(sp.Mul.make_args(size), key=_shape_order(op)),
                                evaluate=False)) for size, name in counts.items())
    return LayerSteps(op, out, expr, steps, upstream, tuple(gradients), tuple(intermediates),
                      named)


def _shape_order(op):
    """Sizes in the order the input's shape lists them (N·H·W, not H·N·W)."""
    order = [d for _, shape in op.arrays for d in shape]
    return lambda s: order.index(s) if s in order else len(order)
