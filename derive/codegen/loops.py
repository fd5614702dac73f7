"""Indexed assignments → loop nests and BLAS calls.

An assignment ``A[free] = expr`` whose expr holds ``Sum``s is lowered term by term:

- a sum of a product of two arrays over indices both share is a *contraction*: it
  becomes one ``np.dot`` (BLAS) per iteration of the loops over the indices no GEMM can
  absorb. An operand that is not already a matrix view (an affine subscript such as a
  convolution's ``x_pad[n, c, S·h + i, S·w + j]``, or axes in the wrong order) is first
  gathered into a buffer by a loop nest printed from its subscripts — im2col, derived
  rather than written; a target with affine subscripts receives the product through the
  adjoint loop nest, a scatter-add (col2im);
- a guarded gather left by the Kronecker-delta pass (Σ_h K[r − S·h]·d_y[h] where
  0 ≤ r − S·h < KH) is recognised as the adjoint of a gather: naming i = r − S·h turns
  it back into a scatter-add over (h, i), which is a contraction again;
- every other sum becomes an accumulator loop nest inside loops over the free indices.
  Range guards are turned into loop bounds where they are linear in one summation
  index, so a convolution's input gradient visits only the windows touching each pixel.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import sympy as sp

from derive.calculus.indexed import ArgMax, floordiv, lse


@dataclass(frozen=True)
class Loop:
    """``for index in range(low, high + 1)``."""

    index: sp.Symbol
    low: sp.Expr
    high: sp.Expr


@dataclass(frozen=True)
class Accumulator:
    """``target = Σ body`` over ``loops``.

    For ``kind="argmax"``: the flat position of the first maximum of body, as PyTorch
    breaks ties. For ``kind="logsumexp"``: log Σ e^body, with the maximum subtracted
    first (a softmax step's row).
    """

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
    zero: bool = True  # zero ``array`` first (False: the caller already did)


@dataclass(frozen=True)
class Matrix:
    """``array[fixed]`` seen as a matrix for BLAS.

    ``shape`` is ``(rows, cols)`` when the remaining axes must be reshaped into two
    (each the product of the sizes of a run of axes), None when ``array[fixed]`` is
    already that matrix.
    """

    array: sp.IndexedBase
    fixed: tuple = ()
    shape: tuple | None = None
    transposed: bool = False


@dataclass(frozen=True)
class Gemm:
    """``out = left @ right`` through BLAS (``np.dot`` with an output argument)."""

    out: Matrix
    left: Matrix
    right: Matrix


@dataclass(frozen=True)
class Contraction:
    """A sum of products as GEMMs, one per iteration of ``loops``.

    Each iteration gathers the operands that are not matrix views into its own buffers
    (``packs`` into ``local``), multiplies, and scatters the product into the target
    when its subscripts are affine (``unpack``). Iterations touch disjoint parts of the
    target, so the loops may run in parallel. When one of them runs over a summed index,
    each iteration writes its product to its own slice of a ``shared`` buffer instead,
    and ``reduce`` sums the slices after the loops.

    ``local`` and ``shared`` are (IndexedBase, dims): allocated in each iteration, and
    once before the loops.
    """

    loops: tuple[Loop, ...]
    packs: tuple[LoopNest, ...]
    gemm: Gemm
    unpack: LoopNest | Scatter | None
    local: tuple
    shared: tuple = ()
    reduce: LoopNest | None = None
    zero: bool = False  # zero the target first: the unpack adds into it
    epilogue: tuple = ()  # elementwise terms added to the slice just written (a bias)


@dataclass(frozen=True)
class GemmUpdate:
    """``out ← alpha · left @ right + beta · out`` in place, through one BLAS GEMM.

    A weight gradient's :class:`Contraction` with the optimizer's update folded in: when
    the update is ``w ← β w + α g``, the product lands in the weights and the gradient is
    never written (see :func:`derive.codegen.network.fold_weight_updates`).
    """

    out: Matrix
    left: Matrix
    right: Matrix
    alpha: sp.Expr
    beta: sp.Expr
    loops: tuple = ()  # none: a statement other passes can ask for its loops


def arrays_used(statement) -> set:
    """Every array a statement reads or writes."""
    if isinstance(statement, GemmUpdate | Contraction):
        g = statement.gemm if isinstance(statement, Contraction) else statement
        found = {m.array for m in (g.out, g.left, g.right)}
        if isinstance(statement, Contraction):
            found |= {b for b, _ in statement.local + statement.shared}
            for inner in _inner_statements(statement):
                found |= arrays_used(inner)
        return found
    found = {statement.array}
    for e in statement_exprs(statement):
        found |= {i.base for i in sp.sympify(e).atoms(sp.Indexed)}
    return found


def _subscript_symbols(element: sp.Indexed, among) -> set:
    return set().union(*(sp.sympify(e).free_symbols for e in element.indices)) & set(among)


def _runs(element: sp.Indexed, fixed: tuple, role: dict, ranges: dict, dims: tuple):
    """The two runs of axes (group, indices) by which ``element`` is a matrix, or None.

    ``element`` is a view when its leading subscripts are the batch indices it holds,
    in order, and the rest are plain full-range indices forming exactly two runs of
    one role each (rows and columns of the matrix).
    """
    subscripts = element.indices
    if tuple(subscripts[: len(fixed)]) != fixed:
        return None
    rest = subscripts[len(fixed):]
    if len(set(rest)) != len(rest):
        return None
    for axis, e in enumerate(rest, start=len(fixed)):
        if not isinstance(e, sp.Symbol) or e not in role or role[e] == "batch":
            return None
        if ranges[e] != (0, dims[axis] - 1):
            return None
    runs: list = []
    for e in rest:
        if runs and runs[-1][0] == role[e]:
            runs[-1][1].append(e)
        else:
            runs.append((role[e], [e]))
    if len(runs) != 2:
        return None
    return tuple((g, tuple(ix)) for g, ix in runs)


@dataclass
class _Product:
    """``array[subscripts] = Σ a·b`` while :func:`as_contraction` lowers it.

    ``role`` maps every loop index to its part in the product: "A" or "B" (the rows or
    the columns, in the target and one operand), "K" (summed, in both operands) or
    "batch" (looped over outside the GEMMs). ``peeled`` are the batch indices in loop
    order; ``order`` holds one axis order per group and ``views`` the two runs of axes by
    which the target ("T") and each operand are matrices as they are (None: gathered).
    ``local`` and ``packs`` collect the buffers each iteration fills and their gathers;
    ``free`` are the indices of the loops around the assignment.
    """

    array: sp.IndexedBase
    subscripts: tuple
    a: sp.Indexed
    b: sp.Indexed
    loops: dict
    free: frozenset
    role: dict
    shape_of: object
    short: frozenset
    peeled: tuple = ()
    order: dict = field(default_factory=dict)
    views: dict = field(default_factory=dict)
    local: list = field(default_factory=list)
    packs: list = field(default_factory=list)

    @property
    def target(self) -> sp.Indexed:
        return self.array[self.subscripts]

    @property
    def plain_target(self) -> bool:
        """Whether the target's subscripts are plain indices (else it is scattered into)."""
        return all(isinstance(e, sp.Symbol) for e in self.subscripts)

    def size(self, ix) -> sp.Expr:
        return self.loops[ix].high + 1

    def count(self, group) -> sp.Expr:
        return sp.Mul(*[self.size(ix) for ix in self.order[group]])

    def fixed_of(self, element, peeled) -> tuple:
        held = _subscript_symbols(element, self.loops)
        return tuple(ix for ix in peeled if ix in held)

    def runs_of(self, element, peeled):
        if not all(isinstance(e, sp.Symbol) for e in element.indices):
            return None
        ranges = {ix: (lp.low, lp.high) for ix, lp in self.loops.items()}
        return _runs(element, self.fixed_of(element, peeled), self.role, ranges,
                     self.shape_of(element.base))


def _read_product(array, subscripts, outer, term, shape_of, short) -> _Product | None:
    """The product and its indices' roles, or None when ``term`` is no product of matrices."""
    if not isinstance(term, sp.Sum):
        return None
    factors = sp.Mul.make_args(term.function)
    if len(factors) != 2 or not all(isinstance(f, sp.Indexed) for f in factors):
        return None
    a, b = factors
    summed = tuple(Loop(*lim) for lim in term.limits)
    loops = {lp.index: lp for lp in outer + summed}
    if len(loops) != len(outer) + len(summed) or any(lp.low != 0 for lp in loops.values()):
        return None
    in_a, in_b = _subscript_symbols(a, loops), _subscript_symbols(b, loops)
    free = {lp.index for lp in outer}
    if _subscript_symbols(array[tuple(subscripts)], loops) != free:
        return None
    role = {}
    for ix in loops:
        if ix in free:
            role[ix] = ("batch" if ix in in_a and ix in in_b
                        else "A" if ix in in_a else "B" if ix in in_b else None)
        else:
            role[ix] = "K" if ix in in_a and ix in in_b else None
        if role[ix] is None:
            return None  # a broadcast or a one-sided sum: not a product of matrices
    if {"A", "B", "K"} - set(role.values()):
        return None
    return _Product(array, tuple(subscripts), a, b, loops, frozenset(free), role, shape_of,
                    short)


def _peel_target(p: _Product) -> list:
    """Peel the target's leading indices while it is not a matrix view.

    An index is peeled (made a batch index) as long as every operand holding it has it
    leading too, or is gathered anyway.
    """
    subscripts = p.subscripts
    peeled = [ix for ix in subscripts if isinstance(ix, sp.Symbol) and p.role[ix] == "batch"]
    while not p.plain_target or p.runs_of(p.target, peeled) is None:
        position = len(peeled)
        if position >= len(subscripts):
            break
        candidate = subscripts[position]
        if (not isinstance(candidate, sp.Symbol) or candidate not in p.free
                or tuple(subscripts[:position]) != tuple(peeled)):
            break
        operands_agree = all(
            candidate not in _subscript_symbols(f, p.loops)
            or not all(isinstance(e, sp.Symbol) for e in f.indices)
            or tuple(f.indices[: len(p.fixed_of(f, peeled)) + 1])
            == p.fixed_of(f, peeled) + (candidate,)
            for f in (p.a, p.b))
        if not operands_agree:
            break
        p.role[candidate] = "batch"
        peeled.append(candidate)
    return peeled


def _loop_over_summed(p: _Product, peeled: list):
    """The summed index to loop over as a batch index too, or None.

    A summed index leading both operands is looped over when an operand would otherwise
    be gathered whole: each iteration then gathers one slice (a buffer the caches hold,
    not a copy of the batch) and keeps its product for a final sum.
    """
    if not (p.plain_target and p.runs_of(p.target, peeled) is not None
            and any(p.runs_of(f, peeled) is None for f in (p.a, p.b))):
        return None
    leading = {f.indices[len(p.fixed_of(f, peeled))] for f in (p.a, p.b)
               if len(f.indices) > len(p.fixed_of(f, peeled))}
    if len(leading) != 1:
        return None
    (candidate,) = leading
    others = [ix for ix in p.role if p.role[ix] == "K" and ix != candidate]
    if not (isinstance(candidate, sp.Symbol) and p.role.get(candidate) == "K" and others):
        return None
    p.role[candidate] = "batch"
    peeled.append(candidate)
    return candidate


def _order_axes(p: _Product) -> None:
    """One axis order per group, from the first array that is a view holding it."""
    target, a, b = p.target, p.a, p.b
    p.views = {name: p.runs_of(f, p.peeled) for name, f in (("T", target), ("A", a), ("B", b))}
    for name in ("T", "A", "B"):
        for g, indices in p.views[name] or ():
            p.order.setdefault(g, indices)
    for f in (target, a, b):
        for e in f.indices:
            for ix in sorted(sp.sympify(e).free_symbols & set(p.loops), key=sp.default_sort_key):
                if p.role[ix] != "batch" and ix not in p.order.get(p.role[ix], ()):
                    p.order[p.role[ix]] = p.order.get(p.role[ix], ()) + (ix,)
    for name in p.views:
        if p.views[name] is not None and any(p.order[g] != ix for g, ix in p.views[name]):
            p.views[name] = None  # a view, but its axes are ordered unlike the others


def _gather(p: _Product, f, name, groups):
    """Gather f into a buffer whose innermost axis runs over a long index."""
    innermost = sp.sympify(f.indices[-1]).free_symbols & set(p.loops)
    longest = [ix for ix in sorted(innermost, key=sp.default_sort_key)
               if p.role[ix] in groups and p.size(ix) not in p.short]
    first, second = groups
    if longest and p.role[longest[0]] == first:
        first, second = second, first
    axes = p.order[first] + p.order[second]
    buffer = sp.IndexedBase(f"{f.base}_{name}", real=True)
    p.local.append((buffer, tuple(p.size(ix) for ix in axes)))
    p.packs.append(LoopNest(buffer, axes, tuple(p.loops[ix] for ix in axes), (), f))
    return buffer, first, second


def _operand(p: _Product, name, groups) -> Matrix:
    """Operand ``name`` ("A" or "B") as a matrix whose rows are groups[0], columns groups[1]."""
    f = {"A": p.a, "B": p.b}[name]
    if p.views[name] is not None:
        (first, _), _ = p.views[name]
        fixed = p.fixed_of(f, p.peeled)
        whole = len(f.indices) - len(fixed) == 2
        shape = None if whole else tuple(p.count(g) for g, _ in p.views[name])
        return Matrix(f.base, fixed, shape, first != groups[0])
    buffer, first, second = _gather(p, f, "cols", groups)
    return Matrix(buffer, (), (p.count(first), p.count(second)), first != groups[0])


def _reduced_output(p: _Product, reduced):
    """A shared buffer as the GEMM's output, one slice per value of ``reduced``.

    Each iteration of the summed index ``reduced`` writes its product to its own slice;
    a loop nest sums the slices into the target afterwards. Returns the GEMM's output,
    the rows' and columns' groups, the shared buffer and the summing loop nest.
    """
    (rows, _), (cols, _) = p.views["T"]
    axes = p.order[rows] + p.order[cols]
    buffer = sp.IndexedBase(f"{p.array}_part", real=True)
    shared = (buffer, (p.size(reduced),) + tuple(p.size(ix) for ix in axes))
    out = Matrix(buffer, (reduced,), (p.count(rows), p.count(cols)))
    acc = sp.Symbol("acc0", real=True)
    total = Accumulator(acc, (p.loops[reduced],), buffer[(reduced, *axes)])
    reduce = LoopNest(p.array, p.subscripts, tuple(p.loops[ix] for ix in p.subscripts),
                      (total,), acc)
    return out, rows, cols, shared, reduce


def _direct_output(p: _Product):
    """The target itself as the GEMM's output (it is a matrix view): out, rows, cols."""
    (rows, _), (cols, _) = p.views["T"]
    fixed = p.fixed_of(p.target, p.peeled)
    whole = len(p.subscripts) - len(fixed) == 2
    return Matrix(p.array, fixed, None if whole else (p.count(rows), p.count(cols))), rows, cols


def _buffered_output(p: _Product):
    """A buffer as the GEMM's output, copied or scattered into the target afterwards.

    Needed when the target is indexed affinely or ordered unlike the product. Returns
    the output, the rows' and columns' groups and the unpacking loop nest.
    """
    rows, cols = "A", "B"
    axes = p.order[rows] + p.order[cols]
    buffer = sp.IndexedBase(f"{p.array}_cols", real=True)
    p.local.append((buffer, tuple(p.size(ix) for ix in axes)))
    out = Matrix(buffer, (), (p.count(rows), p.count(cols)))
    inner = tuple(p.loops[ix] for ix in axes)
    if p.plain_target:
        unpack = LoopNest(p.array, p.subscripts, inner, (), buffer[axes])
    else:
        unpack = Scatter(p.array, p.subscripts, inner, buffer[axes], zero=False)
    return out, rows, cols, unpack


def as_contraction(array, subscripts, outer, term, shape_of, short=frozenset()):
    """Lower ``array[subscripts] = Σ A·B`` (two arrays) to GEMMs, or return None.

    Parameters
    ----------
    array : sympy.IndexedBase
        The target.
    subscripts : tuple of sympy.Expr
        Its subscripts: the free indices, or affine expressions of loop indices (a
        scatter-add into the target, zeroed by the caller).
    outer : tuple of Loop
        The loops over the indices the subscripts use.
    term : sympy.Sum
        Σ over its limits of a product of two ``Indexed``.
    shape_of : callable
        IndexedBase → its declared dims.
    short : set of Symbol
        Sizes known to be small (a weight's window): a gathered buffer keeps the axes
        they bound outside, so its innermost loop runs over a long axis.

    Every index plays one role: in the target and one operand only (the rows or the
    columns of the product, "A" or "B"), in both operands only (summed over: "K"),
    or a *batch* index looped over outside the GEMMs. Batch indices are those in the
    target and both operands, plus the target's leading indices peeled while the
    target is not yet a matrix view (y[n, f, h, w] becomes the matrix y[n] of f × (h, w)).
    """
    p = _read_product(array, subscripts, outer, term, shape_of, short)
    if p is None:
        return None
    peeled = _peel_target(p)
    reduced = _loop_over_summed(p, peeled)
    p.peeled = tuple(peeled)
    _order_axes(p)
    unpack = reduce = None
    shared = ()
    if reduced is not None:
        out, rows, cols, buffer, reduce = _reduced_output(p, reduced)
        shared = (buffer,)
    elif p.views["T"] is not None:
        out, rows, cols = _direct_output(p)
    else:
        out, rows, cols, unpack = _buffered_output(p)
    left_name, right_name = ("A", "B") if rows == "A" else ("B", "A")
    left = _operand(p, left_name, (rows, "K"))
    right = _operand(p, right_name, ("K", cols))
    batch = tuple(p.loops[ix] for ix in p.peeled)
    return Contraction(batch, tuple(p.packs), Gemm(out, left, right), unpack, tuple(p.local),
                       shared, reduce, zero=not p.plain_target)


def as_adjoint_gather(array, index, ranges, term, shape_of, short=frozenset()):
    """Recognise a guarded gather as the adjoint of a gather and lower it as such.

    The delta pass leaves a convolution's input gradient as
    Σ_{f,h,w} [0 ≤ r − S·h < KH]·K[f, q, r − S·h, ·]·d_y[p, f, h, ·]. Naming each
    subscript that reads a free index shifted by summation indices (i = r − S·h, over
    the axis it indexes, whose bounds are exactly the guard) turns it into
    Σ_{f,h,w,i,j} K[f, q, i, j]·d_y[p, f, h, w] scattered into array[p, q, S·h + i, S·w + j]:
    the same sum, visited from the other side, and a contraction. Returns None unless
    every guard is implied by the new indices' ranges and the result is a contraction.
    """
    if not isinstance(term, sp.Sum):
        return None
    body = term.function
    if not (isinstance(body, sp.Piecewise) and len(body.args) == 2
            and body.args[1] == (0, True)):
        return None
    value, condition = body.args[0]
    taken = {str(s) for s in term.free_symbols | value.free_symbols | set(index)}
    taken |= {str(lim[0]) for lim in term.limits}
    names = (sp.Symbol(nm, integer=True, nonnegative=True) for nm in "ijklmabcdeg"
             if nm not in taken)
    shift, new = {}, []
    for f in sp.Mul.make_args(value):
        if not isinstance(f, sp.Indexed):
            continue
        for axis, e in enumerate(f.indices):
            held = [t for t in index if t in sp.sympify(e).free_symbols]
            if isinstance(e, sp.Symbol) or len(held) != 1:
                continue
            t = held[0]
            rest, part = sp.expand(e).as_independent(t, as_Add=True)
            if part != t:
                return None
            if t in shift:
                if shift[t][1] != rest:
                    return None
                continue
            v = next(names, None)
            if v is None:
                return None
            shift[t] = (v, rest)
            new.append(Loop(v, sp.S.Zero, shape_of(f.base)[axis] - 1))
    if not shift:
        return None
    solved = {t: v - rest for t, (v, rest) in shift.items()}
    value = value.subs(solved)
    indices = set(index) | {lim[0] for lim in term.limits} | {lp.index for lp in new}
    for cond in sp.And.make_args(condition.subs(solved)):
        if cond is sp.true:
            continue
        held = cond.free_symbols & indices
        lp = next((lp for lp in new if {lp.index} == held), None)
        if lp is None or not all(cond.subs(lp.index, end) is sp.true
                                 for end in (lp.low, lp.high)):
            return None  # a guard the new index's range does not imply
    subscripts = tuple(solved.get(t, t) for t in index)
    every = [Loop(ix, lo, hi) for ix, (lo, hi) in zip(index, ranges, strict=True)
             if ix not in solved] + [Loop(*lim) for lim in term.limits] + new
    used = set().union(*(sp.sympify(e).free_symbols for e in subscripts))
    outer = tuple(lp for lp in every if lp.index in used)
    limits = [(lp.index, lp.low, lp.high) for lp in every if lp.index not in used]
    if not limits:
        return None
    return as_contraction(array, subscripts, outer, sp.Sum(value, *limits), shape_of, short)


def statement_exprs(statement) -> list:
    """Every expression a statement prints: what a kernel must bind before it."""
    if isinstance(statement, GemmUpdate):
        return [statement.alpha, statement.beta] + [
            e for m in (statement.out, statement.left, statement.right)
            for e in (*m.fixed, *(m.shape or ()))]
    if isinstance(statement, Contraction):
        exprs = [e for lp in statement.loops for e in (lp.low, lp.high)]
        for inner in _inner_statements(statement):
            exprs += statement_exprs(inner)
        gemm = statement.gemm
        for m in (gemm.out, gemm.left, gemm.right):
            exprs += list(m.fixed) + list(m.shape or ())
        return exprs + [d for _, dims in statement.local + statement.shared for d in dims]
    exprs = [statement.value] + [e for lp in statement.loops for e in (lp.low, lp.high)]
    if isinstance(statement, Scatter):
        return exprs + list(statement.target_index)
    for acc in statement.accumulators:
        exprs += [acc.body] + [e for lp in acc.loops for e in (lp.low, lp.high)]
    return exprs


def _inner_statements(c: Contraction) -> tuple:
    return c.packs + tuple(st for st in (c.unpack, c.reduce) if st is not None) + c.epilogue


def loop_indices(statement) -> set:
    """The indices a statement loops over (bound by its loops, not by the kernel)."""
    found = {lp.index for lp in statement.loops}
    if isinstance(statement, Contraction):
        for inner in _inner_statements(statement):
            found |= loop_indices(inner)
    for acc in getattr(statement, "accumulators", ()):
        found |= {lp.index for lp in acc.loops}
    return found


def local_names(statement) -> set:
    """The scalars a statement assigns itself (its accumulators), which a kernel never binds."""
    found = {acc.target for acc in getattr(statement, "accumulators", ())}
    if isinstance(statement, Contraction):
        for inner in _inner_statements(statement):
            found |= local_names(inner)
    return found


def substitute(statement, mapping: dict):
    """A loop nest or scatter with ``mapping`` (e.g. a stride of 1) substituted."""

    def sub(e):
        return sp.sympify(e).subs(mapping)

    loops = tuple(Loop(lp.index, sub(lp.low), sub(lp.high)) for lp in statement.loops)
    if isinstance(statement, Scatter):
        return Scatter(statement.array, tuple(sub(e) for e in statement.target_index), loops,
                       sub(statement.value), statement.zero)
    return LoopNest(statement.array, statement.index, loops, statement.accumulators,
                    sub(statement.value), statement.accumulate)


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


def as_row_accumulation(array, index, ranges, expr) -> Scatter | None:
    """Σ_n body whose arrays' innermost axes are free indices: add whole rows instead.

    d_b[p] = Σ_n d_s[n, p] in dot-product order walks d_s down its columns; zeroing d_b
    and adding row after row (n outside, p inside) reads memory in order and the
    innermost loop vectorises.
    """
    if not isinstance(expr, sp.Sum) or expr.function.has(sp.Sum, sp.Piecewise, ArgMax):
        return None
    reads = expr.function.atoms(sp.Indexed)
    if not reads or any(r.indices[-1] not in index for r in reads):
        return None
    free = tuple(Loop(ix, lo, hi) for ix, (lo, hi) in zip(index, ranges, strict=True))
    return Scatter(array, tuple(index), tuple(Loop(*lim) for lim in expr.limits) + free,
                   expr.function)


def lower_assignment(array, index, ranges, expr, shape_of, short=frozenset()) -> tuple:
    """Lower ``array[index] = expr`` to a tuple of statements.

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
    shape_of : callable
        IndexedBase → its declared dims (a matrix view must span whole axes).
    short : set of Symbol
        Sizes known to be small, for the layout of gathered buffers.

    Returns
    -------
    tuple
        :class:`Contraction`, :class:`Scatter` and :class:`LoopNest` statements; the
        first writes the target, later ones add into it.
    """
    scatter = as_scatter(array, index, ranges, expr)
    if scatter is not None:
        return (scatter,)
    statements: list = []
    rest = []
    outer = tuple(Loop(ix, lo, hi) for ix, (lo, hi) in zip(index, ranges, strict=True))
    for term in sp.Add.make_args(expr):
        found = None
        if not statements:
            found = (as_contraction(array, tuple(index), outer, term, shape_of, short)
                     or as_adjoint_gather(array, tuple(index), ranges, term, shape_of, short))
        if found is not None:
            statements.append(found)
        else:
            rest.append(term)
    rows = as_row_accumulation(array, index, ranges, expr) if not statements else None
    if rows is not None:
        return (rows,)
    if rest or not statements:
        value = sp.Add(*rest)
        names = sp.numbered_symbols("acc", real=True)
        accumulators = []
        for total in sorted(value.atoms(sp.Sum, ArgMax, lse), key=sp.default_sort_key):
            target = next(names)
            if isinstance(total, lse):
                row, ix, size = total.args
                loops = (Loop(ix, sp.S.Zero, size - 1),)
                accumulators.append(Accumulator(target, loops, row, "logsumexp"))
            elif isinstance(total, ArgMax):
                loops = tuple(Loop(ix, lo, hi) for ix, lo, hi in total.limits)
                accumulators.append(Accumulator(target, loops, total.body, "argmax"))
            else:
                loops, body = bounded_loops(total.limits, total.function)
                accumulators.append(Accumulator(target, loops, body))
            value = value.xreplace({total: target})
        first = statements[0] if statements else None
        peeled = tuple(lp.index for lp in first.loops) if first else ()
        if (isinstance(first, Contraction) and peeled and first.unpack is None
                and first.reduce is None and not accumulators
                and tuple(index[: len(peeled)]) == peeled):
            # Elementwise terms (a bias) are added to each slice the GEMM has just
            # written, while it is still in the cache, instead of in a second pass.
            tail = LoopNest(array, tuple(index), outer[len(peeled):], (), value, True)
            return (replace(first, epilogue=(tail,)),)
        statements.append(LoopNest(array, tuple(index), outer, tuple(accumulators), value,
                                   accumulate=bool(statements)))
    return tuple(statements)
