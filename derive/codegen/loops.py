"""Indexed assignments → loop nests and BLAS calls.

An assignment ``A[free] = expr`` whose expr holds ``Sum``s is lowered term by term: a
full-range sum of a product of two matrices (Σ_n d_s[n, p] x[n, q]) becomes one
``np.dot`` (BLAS); every other sum becomes an accumulator loop nest inside loops over
the free indices. Range guards left by the Kronecker-delta pass (0 ≤ r − S·h < KH)
are turned into loop bounds where they are linear in one summation index, so a
convolution's input gradient visits only the windows that touch each pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from derive.calculus.indexed import ArgMax


class floordiv(sp.Function):  # noqa: N801
    """Integer floor division a // b (printed as such; SymPy's floor(a/b) is a float op)."""


@dataclass(frozen=True)
class Loop:
    """``for index in range(low, high + 1)``."""

    index: sp.Symbol
    low: sp.Expr
    high: sp.Expr


@dataclass(frozen=True)
class Accumulator:
    """``target = Σ body`` over ``loops`` (or, for ``kind="argmax"``, the flat position of
    the first maximum of body, as PyTorch breaks ties)."""

    target: sp.Symbol
    loops: tuple[Loop, ...]
    body: sp.Expr
    kind: str = "sum"


@dataclass(frozen=True)
class LoopNest:
    """``array[index] (+)= value`` for every index in ``loops``, after the accumulators."""

    array: sp.IndexedBase
    index: tuple
    loops: tuple[Loop, ...]
    accumulators: tuple[Accumulator, ...]
    value: sp.Expr
    accumulate: bool = False


@dataclass(frozen=True)
class Scatter:
    """``array[target_index] += value`` over ``loops``, after zeroing ``array``.

    The gather form Σ_h d_y[h]·δ(r, S·h + idx[h]) visits every h for every r; when the
    delta cannot be solved for h (the arg-max of max pooling), walking h and adding
    into r = S·h + idx[h] computes the same sum in one pass.
    """

    array: sp.IndexedBase
    target_index: tuple
    loops: tuple[Loop, ...]
    value: sp.Expr


@dataclass(frozen=True)
class Gemm:
    """``array[:] = left @ right`` with optional transposes, through BLAS."""

    array: sp.IndexedBase
    left: sp.IndexedBase
    left_transposed: bool
    right: sp.IndexedBase
    right_transposed: bool


def as_gemm(term: sp.Expr, array: sp.IndexedBase, index: tuple) -> Gemm | None:
    """Recognise ``Σ_k A[·]·B[·]`` over a full range as a matrix product, or None."""
    if len(index) != 2 or not isinstance(term, sp.Sum) or len(term.limits) != 1:
        return None
    (k, low, _), factors = term.limits[0], sp.Mul.make_args(term.function)
    if low != 0 or len(factors) != 2 or not all(isinstance(f, sp.Indexed) for f in factors):
        return None
    row, col = index
    by_free = {}
    for f in factors:
        if len(f.indices) != 2 or k not in f.indices:
            return None
        other = f.indices[1] if f.indices[0] == k else f.indices[0]
        by_free[other] = f
    if set(by_free) != {row, col}:
        return None
    left, right = by_free[row], by_free[col]
    # out[row, col] = Σ_k left[row, k] right[k, col]; any other order is a transpose.
    return Gemm(array, left.base, left.indices[0] == k, right.base, right.indices[1] == k)


def _linear_bound(condition, index: sp.Symbol):
    """(kind, bound) for a condition linear in ``index``: kind is "low" or "high"."""
    if isinstance(condition, sp.GreaterThan | sp.StrictGreaterThan):
        e = condition.lhs - condition.rhs
    elif isinstance(condition, sp.LessThan | sp.StrictLessThan):
        e = condition.rhs - condition.lhs
    else:
        return None
    if condition.is_Relational and not isinstance(condition, sp.GreaterThan | sp.LessThan):
        e = e - 1  # integers: e > 0 is e − 1 ≥ 0
    e = sp.expand(e)
    rest, term = e.as_independent(index, as_Add=True)
    coeff = sp.simplify(term / index)
    if index in coeff.free_symbols or index in rest.free_symbols or coeff.is_zero:
        return None
    # coeff·index + rest ≥ 0
    if coeff.is_positive:
        return "low", -floordiv(rest, coeff)  # index ≥ ceil(−rest/coeff)
    if coeff.is_negative:
        return "high", floordiv(rest, -coeff)  # index ≤ floor(rest/(−coeff))
    return None


def bounded_loops(limits, body: sp.Expr) -> tuple[tuple[Loop, ...], sp.Expr]:
    """Turn a Piecewise range guard around ``body`` into loop bounds where possible."""
    loops = {lim[0]: [lim[1], lim[2]] for lim in limits}
    if isinstance(body, sp.Piecewise) and len(body.args) == 2 and body.args[1] == (0, True):
        value, condition = body.args[0]
        kept = []
        for cond in sp.And.make_args(condition):
            found = None
            for index in loops:
                found = _linear_bound(cond, index)
                if found is not None:
                    kind, bound = found
                    slot = 0 if kind == "low" else 1
                    loops[index][slot] = (sp.Max(loops[index][0], bound) if kind == "low"
                                          else sp.Min(loops[index][1], bound))
                    del slot
                    break
            if found is None:
                kept.append(cond)
        body = sp.Piecewise((value, sp.And(*kept)), (0, True)) if kept else value
    return tuple(Loop(ix, lo, hi) for ix, (lo, hi) in loops.items()), body


def as_scatter(array, index, ranges, expr) -> Scatter | None:
    """Recognise Σ body·Π δ(free_k, e_k) whose deltas fix free indices of the target."""
    if not isinstance(expr, sp.Sum):
        return None
    factors = sp.Mul.make_args(expr.function)
    fixed = {}
    for f in factors:
        if isinstance(f, sp.KroneckerDelta):
            a, b = f.args
            free, other = (a, b) if a in index else (b, a) if b in index else (None, None)
            if free is None or free in fixed or any(i in other.free_symbols for i in index
                                                    if i != free and i in fixed):
                return None
            fixed[free] = other
    if not fixed:
        return None
    value = sp.Mul(*[f for f in factors if not isinstance(f, sp.KroneckerDelta)])
    outer = tuple(Loop(ix, lo, hi) for ix, (lo, hi) in zip(index, ranges, strict=True)
                  if ix not in fixed)
    inner = tuple(Loop(ix, lo, hi) for ix, lo, hi in expr.limits)
    target = tuple(fixed.get(ix, ix) for ix in index)
    return Scatter(array, target, outer + inner, value)


def lower_assignment(array, index, ranges, expr) -> tuple:
    """Lower ``array[index] = expr`` to a tuple of :class:`Gemm` / :class:`LoopNest`.

    Parameters
    ----------
    array : sympy.IndexedBase
        The array assigned.
    index : tuple of Symbol
        Its free indices.
    ranges : tuple of (low, high)
        Inclusive ranges of the free indices.
    expr : sympy.Expr
        The value, possibly with sums.
    """
    scatter = as_scatter(array, index, ranges, expr)
    if scatter is not None:
        return (scatter,)
    statements: list = []
    rest = []
    for term in sp.Add.make_args(expr):
        gemm = as_gemm(term, array, index) if not statements else None
        if gemm is not None:
            statements.append(gemm)
        else:
            rest.append(term)
    if rest or not statements:
        value = sp.Add(*rest)
        names = sp.numbered_symbols("acc", real=True)
        accumulators = []
        for total in sorted(value.atoms(sp.Sum, ArgMax), key=sp.default_sort_key):
            target = next(names)
            if isinstance(total, ArgMax):
                loops = tuple(Loop(ix, lo, hi) for ix, lo, hi in total.limits)
                accumulators.append(Accumulator(target, loops, total.body, "argmax"))
            else:
                loops, body = bounded_loops(total.limits, total.function)
                accumulators.append(Accumulator(target, loops, body))
            value = value.xreplace({total: target})
        free = tuple(Loop(ix, lo, hi) for ix, (lo, hi) in zip(index, ranges, strict=True))
        statements.append(LoopNest(array, tuple(index), free, tuple(accumulators), value,
                                   accumulate=bool(statements)))
    return tuple(statements)
