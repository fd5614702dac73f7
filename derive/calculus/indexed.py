"""Calculus over indexed sums: Kronecker-delta elimination, identities, named rows.

Differentiating ``Sum(f(z[n, k]), ...)`` with respect to ``z[p, q]`` makes SymPy return
sums of ``KroneckerDelta(n, p)·KroneckerDelta(k, q)·…``. The pass here does what a
lecturer does on the board: split the sum, let each delta pick out the one term it
keeps (solving it for the summation variable), and pull out of a sum every factor that
does not depend on its index. It is a few dozen lines and runs in milliseconds; SymPy's
``simplify`` is slow on such sums and crashes on softmax.
"""

from __future__ import annotations

import sympy as sp

#: Batch size, number of classes/outputs and the summation indices of declarations,
#: defined with the records the declarations are written in.
from derive.spec import K, N, j, k, n  # noqa: F401

#: Free indices of a gradient: ∂L/∂z[p, q].
p, q = sp.symbols("p q", integer=True, nonnegative=True)


class floordiv(sp.Function):  # noqa: N801
    """Integer floor division a // b (printed as such; SymPy's floor(a/b) is a float op).

    A subscript may use it (where in its window max pooling found the maximum), so it is
    part of the index algebra: declarations write it, codegen turns loop guards into it
    and both printers spell it.
    """


class lse(sp.Function):  # noqa: N801
    r"""Row log-sum-exp :math:`\log\sum_{j=0}^{K-1} e^{r_j}`, args ``(r_j, j, K)``.

    Its derivative is the softmax — ``exp(r − lse)`` — which is also the form that never
    overflows; the kernels evaluate ``lse`` itself with the row maximum subtracted.
    """

    def _eval_derivative(self, s):
        row, index, size = self.args
        return sp.Sum(sp.exp(row - self) * sp.diff(row, s), (index, 0, size - 1))

    def _eval_subs(self, old, new):
        # The summation index is bound: substituting it would change the function.
        if old == self.args[1]:
            return self
        return None

    def _eval_is_real(self):
        return self.args[0].is_real

    def _eval_rewrite_as_log(self, row, index, size, **kwargs):
        return sp.log(sp.Sum(sp.exp(row), (index, 0, size - 1)))

    def _latex(self, printer, exp=None):
        row, index, size = self.args
        body = (rf"\log\sum_{{{printer._print(index)}=0}}^{{{printer._print(size - 1)}}}"
                rf" e^{{{printer._print(row)}}}")
        return rf"\left({body}\right)^{{{exp}}}" if exp else body


class ArgMax(sp.Expr):
    """The flat position (row-major over the limits) of the first maximum of ``body``.

    Integer-valued and piecewise constant, so its derivative is zero: gradients route
    through the indexing it selects, never through it.
    """

    def __new__(cls, body, *limits):
        """Hold ``body`` and its ``(index, low, high)`` limits, like ``Sum``."""
        return sp.Expr.__new__(cls, body, *[sp.Tuple(*lim) for lim in limits])

    @property
    def body(self):
        """The maximised expression."""
        return self.args[0]

    @property
    def limits(self):
        """(index, low, high) for each window axis."""
        return self.args[1:]

    def _eval_derivative(self, s):
        return sp.S.Zero

    def _latex(self, printer):
        indices = ", ".join(printer._print(lim[0]) for lim in self.limits)
        return rf"\operatorname{{arg\,max}}_{{{indices}}} {printer._print(self.body)}"


#: Each named softmax array and the array it is the softmax of (see :func:`softmax_of`).
_SOFTMAX_ARGS: dict[sp.IndexedBase, sp.IndexedBase] = {}


def softmax_of(base: sp.IndexedBase) -> sp.IndexedBase:
    """The array softmax(base), as an indexed object whose name prints as such."""
    named = sp.IndexedBase(f"softmax({base})", real=True)
    # Recorded, so that unname_softmax recognises it by what it is, not by its spelling.
    _SOFTMAX_ARGS[named] = base
    return named


def _expand(e: sp.Expr) -> sp.Expr:
    # Distribute products over sums, but keep exp(a − b) whole: it is the softmax. A
    # function's argument and a root's radicand stay as written too: expanding
    # √(1 + (ŷ − y)²) into √(1 + ŷ² − 2ŷy + y²) cancels catastrophically (inf at ŷ ≈ y ≈ 1e8).
    kept = {}

    def keep(node):
        kept.setdefault(node, sp.Dummy())
        return kept[node]

    opaque = e.replace(
        lambda a: (isinstance(a, sp.Function) and not isinstance(a, sp.KroneckerDelta))
        or (isinstance(a, sp.Pow) and not a.exp.is_Integer),
        keep)
    expanded = sp.expand(opaque, power_exp=False, power_base=False, log=False)
    back = {d: node for node, d in kept.items()}
    # Kept nodes may hold kept nodes (replace works from the leaves up): undo level by level.
    while expanded.has(*back):
        expanded = expanded.xreplace(back)
    return expanded


def _deltas_out_of_piecewise(e: sp.Expr) -> sp.Expr:
    """δ·a if c else δ·b → δ·(a if c else b), so the sum can absorb δ (0 = δ·0 too)."""
    if not isinstance(e, sp.Piecewise):
        return e
    branches = [(sp.factor_terms(v), c) for v, c in e.args]
    shared = None
    for value, _ in branches:
        if value == 0:
            continue
        deltas = {f for f in sp.Mul.make_args(value) if isinstance(f, sp.KroneckerDelta)}
        shared = deltas if shared is None else shared & deltas
    if not shared:
        return e
    common = sp.Mul(*shared)
    return common * sp.Piecewise(*[(v / common, c) for v, c in branches])


def _solve_delta(delta: sp.KroneckerDelta, index: sp.Symbol) -> sp.Expr | None:
    """The value of ``index`` that the delta selects, when it is affine with slope ±1."""
    a, b = delta.args
    difference = sp.expand(a - b)
    if index not in difference.free_symbols:
        return None
    rest, slope_term = difference.as_independent(index, as_Add=True)
    slope = sp.simplify(slope_term / index)
    if slope not in (1, -1) or index in rest.free_symbols:
        return None
    return sp.expand(-rest / slope)


def _split_sum(s: sp.Sum, ranges: dict | None = None) -> sp.Expr:
    """Reduce one Sum whose body has already been reduced (ranges: see eliminate_deltas)."""
    body = s.function.replace(lambda e: isinstance(e, sp.Piecewise), _deltas_out_of_piecewise)
    # Expanding is what exposes each delta as a factor; a body without deltas is left
    # as written, so (ŷ − y)² is not turned into a cancelling ŷ² − 2ŷy + y².
    body = _expand(body) if body.has(sp.KroneckerDelta) else body
    limits = list(s.limits)
    if isinstance(body, sp.Add):
        return sp.Add(*[_split_sum(sp.Sum(t, *limits), ranges) for t in body.args])
    guards: list = []
    changed = True
    while changed:
        changed = False
        for limit in reversed(limits):
            index = limit[0]
            for factor in sp.Mul.make_args(body):
                if not isinstance(factor, sp.KroneckerDelta) or index not in factor.free_symbols:
                    continue
                solution = _solve_delta(factor, index)
                if solution is None:
                    continue  # e.g. δ(k, c[n]) summed over n: not solvable for n
                body = (body / factor).subs(index, solution)
                guards = [g.subs(index, solution) for g in guards]
                if not isinstance(solution, sp.Symbol | sp.Indexed):
                    # An affine solution (i = r − S·h) may fall outside the index's
                    # range: the guard keeps the term only where it lies inside.
                    _, low, high = limit
                    guards += [solution >= low, solution <= high]
                elif solution in (ranges or {}):
                    # A free index of the gradient lies in the summation's range unless
                    # it runs over more: an LSTM's gate i reads s[n, j] for j < H only,
                    # of the 4H pre-activations d_s[p, q] runs over.
                    _, low, high = limit
                    free_low, free_high = ranges[solution]
                    guards += [solution >= low] if sp.expand(free_low - low) != 0 else []
                    guards += [solution <= high] if sp.expand(free_high - high) != 0 else []
                # Otherwise a plain solution (n = p, k = c[n]) lies in range by
                # construction: a free index over the same range, or a label.
                limits.remove(limit)
                changed = True
                break
            if changed:
                break
    if guards:
        body = sp.Piecewise((body, sp.And(*guards)), (0, True))
    # A body free of a summation index is that many equal terms.
    for limit in list(limits):
        index, low, high = limit
        if index not in body.free_symbols:
            body = body * (high - low + 1)
            limits.remove(limit)
    if not limits:
        return body
    bound = {lim[0] for lim in limits}
    outside = [f for f in sp.Mul.make_args(body) if not (f.free_symbols & bound)]
    inside = [f for f in sp.Mul.make_args(body) if f.free_symbols & bound]
    return sp.Mul(*outside) * sp.Sum(sp.Mul(*inside), *limits)


def eliminate_deltas(expr: sp.Expr, ranges: dict | None = None) -> sp.Expr:
    """Remove every Kronecker delta that a summation can absorb, innermost sums first.

    Parameters
    ----------
    expr : sympy.Expr
        Typically ``diff(Sum(...), z[p, q])``.
    ranges : dict, optional
        Free index → (low, high), the range it runs over (p, q over z's shape). A delta
        that sets a summation index to a free index keeps its term only where the free
        index lies in the summation's range, when that range is narrower; without
        ``ranges`` every free index is taken to run over the summation's range.

    Returns
    -------
    sympy.Expr
        An equal expression with the deltas solved for their summation variables and
        index-free factors pulled out of the remaining sums.
    """
    if isinstance(expr, sp.Sum):
        inner = eliminate_deltas(expr.function, ranges)
        return _split_sum(sp.Sum(inner, *expr.limits), ranges)
    if not expr.args or isinstance(expr, sp.Indexed | sp.Symbol):
        return expr
    args = [eliminate_deltas(a, ranges) if isinstance(a, sp.Expr) else a for a in expr.args]
    return expr.func(*args)


def apply_identities(expr: sp.Expr, identities) -> sp.Expr:
    """Replace each declared identity's left side (with Wild row indices) by its right."""
    for lhs, rhs in identities:
        expr = expr.replace(lhs, rhs)
    return expr


def name_softmax(expr: sp.Expr) -> sp.Expr:
    """Write exp(z[p, q] − lse(z[p, j], j, K)) as softmax(z)[p, q]."""

    def is_softmax(e):
        if not isinstance(e, sp.exp):
            return False
        return _softmax_parts(e.args[0]) is not None

    def to_named(e):
        base, indices = _softmax_parts(e.args[0])
        return softmax_of(base)[indices]

    return expr.replace(is_softmax, to_named)


def _softmax_parts(u: sp.Expr):
    for term in sp.Add.make_args(u):
        if isinstance(-term, lse):
            row, index, _ = (-term).args
            rest = _expand(u - term)
            if (isinstance(row, sp.Indexed) and isinstance(rest, sp.Indexed)
                    and rest.base == row.base and row.indices[-1] == index
                    and rest.indices[:-1] == row.indices[:-1]):
                return row.base, rest.indices
    return None


def name_softmax_steps(expr: sp.Expr, steps) -> sp.Expr:
    """Read a softmax a layer declares as a step from that step's array.

    A step ``P[n, i, j] = exp(s[n, i, j] − lse(s[n, i, k], k, S))`` differentiates into
    the same exponential again (the softmax's Jacobian is P(δ − P)); written as
    ``P[p, q, r]`` the gradient reads the values the forward pass stored, as the vector
    function's VJP reads its output, and never evaluates an exponential of its own.

    Parameters
    ----------
    expr : sympy.Expr
        A gradient of the layer.
    steps : iterable of (Indexed, Expr)
        The layer's steps; those whose value holds a :class:`lse` are named.
    """
    for target, value in steps:
        if not value.has(lse):
            continue
        wilds = {ix: sp.Wild(f"w_{ix}") for ix in target.indices}
        pattern = value.xreplace(wilds)
        expr = expr.replace(pattern, target.base[tuple(wilds[ix] for ix in target.indices)])
    return expr


def unname_softmax(expr: sp.Expr) -> sp.Expr:
    """Inverse of :func:`name_softmax`, for lowering: softmax(z)[p, q] → exp(z − lse)."""

    def is_named(e):
        return isinstance(e, sp.Indexed) and e.base in _SOFTMAX_ARGS

    def to_exp(e):
        base = _SOFTMAX_ARGS[e.base]
        *row, col = e.indices
        return sp.exp(base[(*row, col)] - lse(base[(*row, j)], j, K))

    return expr.replace(is_named, to_exp)


def explicit_sizes(expr: sp.Expr, sizes: dict) -> sp.Expr:
    """Unroll every Sum and lse for concrete sizes (for checks against plain ``diff``)."""
    expr = expr.subs(sizes)
    expr = expr.replace(lambda e: isinstance(e, lse), lambda e: e.rewrite(sp.log))
    return expr.doit()
