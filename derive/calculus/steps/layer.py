"""Layers: ∂E/∂A for each input and weight, through the outputs that depend on it.

The chain rule through every output (Σ δ · ∂out/∂A), then only the outputs connected
to the element, then the layer's definition and the rule table — the sum opened as in
the notes — or, where the outputs read A at shifted indices, SymPy's Kronecker deltas
eliminated. Each result is checked equal to the engine's
(:func:`derive.calculus.derivation.derive_layer`).
"""

from __future__ import annotations

from functools import cache

import sympy as sp

from derive.calculus.steps.checking import check_equal
from derive.calculus.steps.recording import Recorder, derivation_steps
from derive.calculus.steps.records import (
    LOSS_NAME,
    D,
    GradientSteps,
    LayerSteps,
    NoRuleError,
    OpenSum,
)
from derive.spec import Layer

#: Index names a lecture uses instead of the declaration's (outputs j, as in the notes).
PRINTED_INDEX = {"o": "j"}
#: Sizes at which layer derivations are checked (others: 2); free indices sit inside.
LAYER_SIZES = {"N": 2, "I": 3, "O": 2, "H": 3, "W": 3, "D": 3, "KH": 2, "KW": 2, "S": 1,
               "P": 0}


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
    at = {s: LAYER_SIZES.get(s.name, 2) for s in symbols if s not in dict(op.sizes)}
    for size, value in op.sizes:
        at[size] = int(value.xreplace(at))
    if element is not None:
        shape = op.shape(element.base)
        for pos, index in enumerate(element.indices):
            size = int(sp.sympify(shape[pos]).xreplace(at))
            at[index] = min(size - 1, pos + 1)
    return at


def _layer_gradient(op, array, names, out, expr, upstream, engine) -> GradientSteps:
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

    def recorder():
        rec = Recorder(D(LOSS_NAME, element), element,
                       expansions=((LOSS_NAME, pairing), (out_base, definition)),
                       instance=tuple(instance.items()))
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
        route = "rules"
    except NoRuleError:
        rec, local, kept, limits = recorder()
        raw = upstream[tuple(kept)] * sp.diff(local, element)
        rec.step("kronecker", sp.Sum(raw, *limits) if limits else raw)
        rec.step("eliminate_deltas", printed_engine)
        route = "kronecker"
    chain = rec.chain()
    check_equal(chain.result, printed_engine, chain, f"∂E/∂{element} of {op.name}")
    result = chain.result
    if sp.count_ops(printed_engine) < sp.count_ops(result):
        result = printed_engine
    return GradientSteps(array, element, chain, result, route)


@derivation_steps.register
def _(op: Layer) -> LayerSteps:
    return _layer_steps(op)


@cache
def _layer_steps(op: Layer) -> LayerSteps:
    from derive.calculus.derivation import FREE, derive_layer

    derivation = derive_layer(op)
    names = layer_index_names(op)
    out = op.out.xreplace(names)
    expr = op.expr.xreplace(names)
    steps = tuple((t.xreplace(names), e.xreplace(names)) for t, e in op.steps)
    upstream = derivation.upstream
    reads = [e for _, e in steps] + [expr]
    gradients = []
    for array in op.inputs + op.weights:
        engine = derivation.gradient(array).expr
        # The chain through the outputs alone holds for an array no step reads (γ and β
        # of a normalisation, read by the output next to the intermediate x̂).
        read_by_steps = any(e.has(array) for _, e in op.steps)
        padded = bool(op.padding) and array == op.padding[1]
        if not read_by_steps and not padded:
            gradients.append(_layer_gradient(op, array, names, out, expr, upstream, engine))
        else:
            element = _free_element(op, array, names, reads)
            gradients.append(GradientSteps(array, element, None,
                                           _engine_printed(engine, names, element, FREE),
                                           "derived"))
    intermediates = []
    for g in derivation.intermediates:
        target = next(t for t, _ in steps if t.base == g.array)
        element = g.array[target.indices]
        intermediates.append(GradientSteps(g.array, element, None,
                                           _engine_printed(g.expr, names, element, FREE),
                                           "derived"))
    return LayerSteps(op, out, expr, steps, upstream, tuple(gradients), tuple(intermediates))

