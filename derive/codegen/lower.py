"""Derivation → kernel IR: choose the forms to compute, share subexpressions."""

from __future__ import annotations

import dataclasses

import sympy as sp
from sympy.codegen.cfunctions import log1p

from derive.calculus.derivation import (
    ActivationDerivation,
    LayerDerivation,
    LossDerivation,
    VectorDerivation,
    gradient_array,
    output_upstream,
    upstream_of,
)
from derive.calculus.indexed import ArgMax, k, lse, n, p, q, unname_softmax
from derive.codegen.ir import (
    ActivationModule,
    Assign,
    Draw,
    ElementFunction,
    LayerKernel,
    LayerModule,
    LossKernels,
    LossModule,
    Reduction,
    RowKernel,
    Scalar,
    VectorModule,
)
from derive.codegen.loops import Contraction, LoopNest, lower_assignment, statement_exprs
from derive.spec import x, y

#: The upstream gradient ∂L/∂y of one element.
d_y = sp.Symbol("d_y", real=True)


def fold_constants(expr: sp.Expr) -> sp.Expr:
    """Replace exact non-integer constants (1/6, √2/√π) by full-precision floats."""

    def is_constant(e):
        return (
            isinstance(e, sp.Expr)
            and e.is_number
            and not e.is_Integer
            and not e.is_Float
            and e.is_real
        )

    return expr.replace(is_constant, lambda e: sp.Float(e.evalf(20), 17))


def element_function(name, inputs, outputs, output_names, sums=None) -> ElementFunction:
    """Build an :class:`ElementFunction`, hoisting common subexpressions into temporaries.

    Parameters
    ----------
    name : str
        Function name stem (``"forward"``, ``"backward"``).
    inputs : sequence of sympy.Symbol
        Scalar inputs, in call order.
    outputs : sequence of sympy.Expr
        What the function returns.
    output_names : sequence of str
        Names of the outputs in generated code.
    sums : sequence of bool, optional
        Which outputs are summed over elements (parameter gradients).

    """
    temps = sp.numbered_symbols("t", real=True)
    replacements, reduced = sp.cse([fold_constants(e) for e in outputs], symbols=temps)
    return ElementFunction(
        name=name,
        inputs=tuple(inputs),
        body=tuple(Assign(t, e) for t, e in replacements),
        outputs=tuple(reduced),
        output_names=tuple(output_names),
        sums=tuple(sums or [False] * len(outputs)),
    )


def lower_activation(derivation: ActivationDerivation, source: str) -> ActivationModule:
    """Lower an activation's derivation to the IR of its generated module.

    Backward uses the derivative written in terms of the output when one exists: the
    forward pass already paid for σ(x) or tanh(x), so backward costs one multiply.

    Parameters
    ----------
    derivation : ActivationDerivation
        The derived op.
    source : str
        What the generated file's header names as its source.

    """
    op = derivation.op
    params = tuple(p.symbol for p in op.params)
    noise = tuple(n.symbol for n in op.noise)
    grad = derivation.in_output if derivation.in_output is not None else derivation.derivative
    forward = element_function(
        "forward", (x, *params, *noise), [derivation.forward], ["y"]
    )
    learnable = derivation.param_grads
    backward = element_function(
        "backward",
        (x, y, d_y, *params, *noise),
        # Folding d_y into each branch gives `d_y if x > 0 else 0`: the dead branch
        # stays 0 even for a non-finite d_y, as PyTorch's own backward does.
        [sp.piecewise_fold(d_y * g) for g in (grad, *(g for _, g in learnable))],
        ["d_x"] + [f"d_{p.name}" for p, _ in learnable],
        [False] + [True] * len(learnable),
    )
    formulas = [("f(x)", sp.sstr(derivation.forward)), ("df/dx", sp.sstr(derivation.derivative))]
    if derivation.in_output is not None:
        formulas.append(("df/dx, with y = f(x)", sp.sstr(derivation.in_output)))
    formulas += [(f"df/d{p.name}", sp.sstr(g)) for p, g in learnable]
    return ActivationModule(
        name=op.name,
        title=op.title,
        source=source,
        params=tuple(Scalar(p.name, float(p.default), p.learnable) for p in op.params),
        draws=tuple(
            Draw(n.symbol, n.distribution, n.low, n.high, n.eval_value) for n in op.noise
        ),
        forward=forward,
        backward=backward,
        uses_output=derivation.in_output is not None,
        formulas=tuple(formulas),
        mode=op.per_call,
    )


def _extract_reductions(expr: sp.Expr) -> tuple[sp.Expr, tuple[Reduction, ...]]:
    """Hoist log-sum-exps and column sums out of a row expression into reductions."""
    names = sp.numbered_symbols("r", real=True)
    reductions = []
    for term in sorted(expr.atoms(lse), key=sp.default_sort_key):
        target = next(names)
        row, index, _ = term.args
        reductions.append(Reduction(target, "logsumexp", index, row))
        expr = expr.xreplace({term: target})
    while True:
        innermost = [s for s in expr.atoms(sp.Sum) if not s.function.has(sp.Sum)]
        if not innermost:
            return expr, tuple(reductions)
        total = sorted(innermost, key=sp.default_sort_key)[0]
        (index, _, _), = total.limits
        target = next(names)
        reductions.append(Reduction(target, "sum", index, fold_constants(total.function)))
        expr = expr.xreplace({total: target})


def _deltas_to_piecewise(expr: sp.Expr) -> sp.Expr:
    """δ(a, b)·f → (f if a == b else 0): f is then never evaluated off the delta's support."""

    def convert(e):
        deltas = [f for f in e.args if isinstance(f, sp.KroneckerDelta)]
        if not deltas:
            return e
        rest = sp.Mul(*[f for f in e.args if f not in deltas])
        cond = sp.And(*[sp.Eq(*d.args) for d in deltas])
        return sp.Piecewise((rest, cond), (0, True))

    return expr.replace(lambda e: isinstance(e, sp.Mul), convert)


def _guard_zero_targets(expr: sp.Expr, target: sp.IndexedBase) -> sp.Expr:
    """y·log(ŷ) and y/ŷ are 0 where the target y is 0 (0·log 0 = 0, as xlogy)."""

    def risky(e):
        if not isinstance(e, sp.Mul):
            return False
        has_target = any(isinstance(f, sp.Indexed) and f.base == target for f in e.args)
        unbounded = any(isinstance(f, sp.log) or (isinstance(f, sp.Pow) and f.exp.is_negative)
                        for f in e.args)
        return has_target and unbounded

    def guard(e):
        (y_,) = [f for f in e.args if isinstance(f, sp.Indexed) and f.base == target][:1]
        return sp.Piecewise((0, sp.Eq(y_, 0)), (e, True))

    return expr.replace(risky, guard)


def _floor_logs(expr: sp.Expr, floor: float) -> sp.Expr:
    """Clamp logarithms below at ``floor`` (PyTorch's BCE clamps at −100)."""
    return expr.replace(
        lambda e: isinstance(e, sp.log | log1p),
        lambda e: sp.Max(e, floor),
    )


def _floor_denominators(expr: sp.Expr, floor: float) -> sp.Expr:
    """Clamp every denominator below at ``floor`` (PyTorch's BCE backward uses 1e-12)."""
    return expr.replace(
        lambda e: isinstance(e, sp.Pow) and e.exp == -1 and not e.base.is_number,
        lambda e: 1 / sp.Max(e.base, floor),
    )


def _row_kernel(expr, row, col, body_outputs=None) -> RowKernel:
    expr, reductions = _extract_reductions(unname_softmax(expr))
    temps = sp.numbered_symbols("t", real=True)
    replacements, (value,) = sp.cse([fold_constants(expr)], symbols=temps)
    return RowKernel(row, col, reductions, tuple(Assign(t, e) for t, e in replacements), value)


def lower_loss(derivation: LossDerivation, source: str) -> LossModule:
    """Lower a loss's derivation to the IR of its generated module.

    The forward kernel sums scale · row_value over rows; the backward kernel writes
    ∂L/∂pred[p, q]. PyTorch's clamps, where declared, are applied here, and terms that
    multiply a target are defined as 0 where the target is 0.
    """
    op = derivation.op
    variants = []
    for v in derivation.variants:
        row_value = op.scale * v.row_value
        gradient = v.gradient
        if op.log_floor is not None:
            row_value = _floor_logs(row_value, op.log_floor)
        if op.grad_floor is not None:
            gradient = _floor_denominators(gradient, op.grad_floor)
        row_value = _deltas_to_piecewise(_guard_zero_targets(row_value, op.target))
        gradient = _deltas_to_piecewise(_guard_zero_targets(gradient, op.target))
        variants.append(LossKernels(
            v.encoding, _row_kernel(row_value, n, None), _row_kernel(gradient, p, q)
        ))
    formulas = [("L", sp.sstr(op.expr))] + [
        (f"dL/d{op.pred}[p, q] ({v.encoding} targets)", sp.sstr(v.gradient))
        for v in derivation.variants
    ]
    return LossModule(
        name=op.name, title=op.title, source=source,
        params=tuple(Scalar(p_.name, float(p_.default), p_.learnable) for p_ in op.params),
        variants=tuple(variants), formulas=tuple(formulas),
    )


def lower_vector(derivation: VectorDerivation, source: str) -> VectorModule:
    """Lower a vector function: forward per element, backward as its VJP."""
    op = derivation.op
    vjp = derivation.vjp_in_output if derivation.vjp_in_output is not None else derivation.vjp
    formulas = [("y[n, k]", sp.sstr(derivation.forward)), ("d_x[p, q]", sp.sstr(derivation.vjp))]
    if derivation.vjp_in_output is not None:
        formulas.append(("d_x[p, q], in terms of y", sp.sstr(derivation.vjp_in_output)))
    return VectorModule(
        name=op.name, title=op.title, source=source,
        forward=_row_kernel(op.out.xreplace({k: q}).xreplace({n: p}), p, q),
        backward=_row_kernel(vjp, p, q),
        uses_output=derivation.vjp_in_output is not None,
        formulas=tuple(formulas),
    )


def _statements(op, target, index, expr) -> tuple:
    ranges = [(0, d - 1) for d in op.shape(declared_array(op, target))]
    return lower_assignment(target, index, ranges, fold_constants(expr),
                            lambda a: op.shape(declared_array(op, a)), _window_sizes(op))


def _window_sizes(op) -> frozenset:
    """Sizes only weights have (a convolution's KH, KW): windows, short by nature."""
    weights = {a for a in op.weights}
    of_weights = {d for a, dims in op.arrays if a in weights for d in dims}
    of_others = {d for a, dims in op.arrays if a not in weights for d in dims}
    return frozenset(of_weights - of_others)


def _kernel(name, op, arrays, assignments, allocations) -> LayerKernel:
    """One jitted function: ``assignments`` (target, index, expr) lowered in order.

    A contraction looped over a batch makes the kernel parallel: its iterations write
    disjoint slices and each calls a small single-threaded GEMM. The buffers it keeps
    across iterations are allocated once, with the kernel's other arrays.
    """
    statements = tuple(st for a in assignments for st in _statements(op, *a))
    symbols = set().union(*(_symbols_of(s) for s in statements))
    hyper = tuple(p_.symbol for p_ in op.hyper if p_.symbol in symbols)
    heavy = any(isinstance(s, LoopNest) and len(s.loops) >= 2 and s.accumulators
                for s in statements)
    heavy = heavy or any(isinstance(s, Contraction) and s.loops for s in statements)
    shared = tuple((b, d, False) for s in statements if isinstance(s, Contraction)
                   for b, d in s.shared)
    return LayerKernel(name, tuple(arrays), hyper, statements, heavy,
                       tuple(allocations) + shared)


def _symbols_of(statement) -> set:
    return set().union(*(sp.sympify(e).free_symbols for e in statement_exprs(statement)))


def declared_array(op, array: sp.IndexedBase) -> sp.IndexedBase:
    """The declared array whose shape ``array`` has (d_x has x's shape, d_y has y's)."""
    shapes = dict(op.arrays)
    if array in shapes:
        return array
    if str(array) == str(upstream_of(op)):
        return op.out.base
    for a in op.extra_outputs:
        if str(array) == str(output_upstream(a)):
            return a
    return next(a for a in shapes if str(gradient_array(a)) == str(array))


def _allocation(op, array, integer=False):
    return (array, tuple(op.shape(declared_array(op, array))), integer)


def lower_running(op) -> LayerKernel:
    """A training forward kernel that also updates the layer's running buffers.

    The layer's steps and output as :func:`lower_layer`'s forward computes them, then each
    of ``op.running`` (buffer element ← its new value, from the steps just computed), in
    place. ``op`` declares the buffers among its arrays, and the running expressions hold
    numbers for their parameters (the momentum).
    """
    buffers = [t.base for t, _ in op.running]
    steps = [(t.base, t.indices, e) for t, e in op.steps]
    return _kernel("_forward", op, list(op.inputs) + list(op.weights) + buffers + [op.out.base],
                   steps + [(op.out.base, op.out.indices, op.expr)]
                   + [(t.base, t.indices, e) for t, e in op.running],
                   [_allocation(op, t.base, e.has(ArgMax)) for t, e in op.steps])


def lower_layer(derivation: LayerDerivation, source: str,
                input_gradients: bool = True) -> LayerModule:
    """Lower a layer's steps and derived gradients to a forward and a backward kernel.

    Backward recomputes the forward's intermediate steps (a mean, an arg-max) rather
    than storing them, then computes the intermediate gradients last step first, then
    every input and weight gradient. A network's first layer needs no input gradient:
    with ``input_gradients=False`` backward computes the weights' only.
    """
    if not input_gradients:
        weights = set(derivation.op.weights)
        derivation = dataclasses.replace(
            derivation, intermediates=(),
            gradients=tuple(g for g in derivation.gradients if g.array in weights))
    op = derivation.op
    inputs = list(op.indices) + list(op.inputs) + list(op.weights) + list(op.buffers)
    forward_steps = [(t.base, t.indices, e) for t, e in op.steps]
    step_allocs = [_allocation(op, t.base, e.has(ArgMax)) for t, e in op.steps]
    # The steps the layer returns besides its output are written into the caller's arrays.
    returned = list(op.extra_outputs)
    forward = _kernel("_forward", op, inputs + [op.out.base] + returned,
                      forward_steps + [(op.out.base, op.out.indices, op.expr)],
                      [a for a in step_allocs if a[0] not in returned])
    upstream = [derivation.upstream] + [output_upstream(a) for a in returned]
    targets = [gradient_array(g.array) for g in derivation.gradients]
    middle = [(gradient_array(g.array), g.index, g.expr) for g in derivation.intermediates]
    backward = _kernel(
        "_backward", op, inputs + upstream + targets,
        forward_steps + middle + [
            (gradient_array(g.array), g.index, g.expr) for g in derivation.gradients
        ],
        step_allocs + [_allocation(op, gradient_array(g.array))
                       for g in derivation.intermediates],
    )
    formulas = [(sp.sstr(t), sp.sstr(e)) for t, e in op.steps]
    formulas += [(sp.sstr(op.out), sp.sstr(op.expr))] + [
        (f"dL/d{g.array}[{', '.join(map(str, g.index))}]", sp.sstr(g.expr))
        for g in derivation.intermediates + derivation.gradients
    ]
    gradients = tuple((g.array, gradient_array(g.array)) for g in derivation.gradients)
    return LayerModule(op.name, op.title, source, op, forward, backward, gradients,
                       tuple(formulas))


def lower_step(derivation: LayerDerivation, source: str, keep: bool = False) -> LayerModule:
    """Lower one time step of a recurrent layer: :func:`lower_layer` with serial kernels.

    The step runs T times in a row inside one sequential loop, on a batch of states
    (N × H: a few thousand numbers for the usual sizes). Split between threads, each of
    its loops would start and join a parallel region for microseconds of work, and
    Numba's threads, spinning between the regions, took the cores from BLAS's threads
    in the step's matrix products: a training step of the digits LSTM (N = 32, T = 8,
    H = 64) took 400 ms instead of 6 ms on two cores. The batch runs in parallel elsewhere;
    here the step's BLAS products keep their own threads.

    Parameters
    ----------
    derivation : LayerDerivation
        The derivation of the layer's step (``RecurrenceDerivation.derivation``).
    source : str
        What the generated module names as its source.
    keep : bool
        Forward writes every intermediate step (a gate, a pre-activation) into an array
        of the caller's, and backward reads them there instead of computing them again:
        a loop over time that keeps them for every t runs the step's matrix product
        once per step instead of twice.
    """
    module = lower_layer(derivation, source)
    declared = derivation.op.steps
    if keep:
        op = derivation.op
        inputs = list(op.indices) + list(op.inputs) + list(op.weights) + list(op.buffers)
        returned = list(op.extra_outputs)
        kept = [t.base for t, _ in op.steps if t.base not in returned]
        steps = [(t.base, t.indices, e) for t, e in op.steps]
        upstream = [derivation.upstream] + [output_upstream(a) for a in returned]
        forward = _kernel("_forward", op, inputs + [op.out.base] + returned + kept,
                          steps + [(op.out.base, op.out.indices, op.expr)], [])
        backward = _kernel(
            "_backward", op,
            inputs + returned + kept + upstream + [gradient_array(g.array)
                                                   for g in derivation.gradients],
            [(gradient_array(g.array), g.index, g.expr)
             for g in derivation.intermediates + derivation.gradients],
            [_allocation(op, gradient_array(g.array)) for g in derivation.intermediates])
        module = dataclasses.replace(module, forward=forward, backward=backward)

    def serial(kernel):
        statements = tuple(reuse_steps(piece, declared, derivation.op.shape)
                           for st in kernel.statements for piece in split_guards(st))
        return dataclasses.replace(kernel, statements=statements, parallel=False)

    return dataclasses.replace(module, forward=serial(module.forward),
                               backward=serial(module.backward))


def split_guards(statement) -> tuple:
    """A loop whose terms each hold on a range of one index, as one loop per range.

    A gradient through blocks of an array (an LSTM's four gates share s, each its H
    columns) is a sum of guarded terms, ``(σ(s[p, q]) d_f[p, q − H] if H ≤ q < 2H
    else 0) + …``: every element tests every guard and the branches keep the loop from
    being vectorised. Cut the index's range where a guard starts or stops, and each piece
    sums only the terms that hold on all of it, without a test. Statements of any other
    form, or whose pieces cannot be ordered, come back unchanged.

    Parameters
    ----------
    statement
        A kernel statement.

    Returns
    -------
    tuple
        The statements that replace it, in order.
    """
    if not isinstance(statement, LoopNest) or statement.accumulators or statement.accumulate:
        return (statement,)
    terms = sp.Add.make_args(statement.value)
    guarded = [t for t in terms if _guard(t) is not None]
    for depth, loop in enumerate(statement.loops):
        ranges = [_index_range(_guard(t)[1], loop) for t in guarded]
        if not guarded or any(r is None for r in ranges):
            continue
        cuts = _ordered([loop.low, loop.high + 1]
                        + [b for lo, hi in ranges for b in (lo, hi + 1)
                           if _at_most(loop.low, b) and _at_most(b, loop.high + 1)])
        if cuts is None:
            continue
        pieces = []
        for start, stop in zip(cuts, cuts[1:], strict=False):
            value = sp.Add(*(t for t in terms if t not in guarded), *(
                _guard(t)[0] for t, (lo, hi) in zip(guarded, ranges, strict=True)
                if _at_most(lo, start) and _at_most(stop - 1, hi)))
            loops = list(statement.loops)
            loops[depth] = dataclasses.replace(loop, low=start, high=stop - 1)
            pieces.append(dataclasses.replace(statement, loops=tuple(loops), value=value))
        return tuple(pieces)
    return (statement,)


def _guard(term):
    """(value, condition) of ``value if condition else 0``; None for another term."""
    if isinstance(term, sp.Piecewise) and len(term.args) == 2 and term.args[1] == (0, True):
        return term.args[0]
    return None


def _index_range(condition, loop):
    """(low, high) of the loop's index where ``condition``, bounds on it, holds in the loop."""
    index, low, high = loop.index, loop.low, loop.high
    for c in sp.And.make_args(condition):
        if isinstance(c, sp.GreaterThan | sp.StrictGreaterThan):
            e = sp.expand(c.lhs - c.rhs)
        elif isinstance(c, sp.LessThan | sp.StrictLessThan):
            e = sp.expand(c.rhs - c.lhs)
        else:
            return None
        if isinstance(c, sp.StrictGreaterThan | sp.StrictLessThan):
            e -= 1  # integers: e > 0 is e − 1 ≥ 0
        coeff = e.coeff(index)
        rest = sp.expand(e - coeff * index)
        if rest.has(index) or coeff not in (1, -1):
            return None
        if coeff == 1:  # index ≥ −rest
            low = _larger(low, -rest)
        else:  # index ≤ rest
            high = _smaller(high, rest)
        if low is False or high is False:
            return None
    return low, high


def _at_most(a, b) -> bool:
    """Whether a ≤ b is known from the sizes' assumptions (positive integers)."""
    return bool(sp.expand(b - a).is_nonnegative)


def _larger(a, b):
    return b if _at_most(a, b) else a if _at_most(b, a) else False


def _smaller(a, b):
    return a if _at_most(a, b) else b if _at_most(b, a) else False


def _ordered(bounds):
    """The distinct bounds in increasing order, or None when two cannot be compared."""
    distinct = []
    for b in bounds:
        if not any(sp.expand(b - d) == 0 for d in distinct):
            distinct.append(b)
    for a in distinct:
        for b in distinct:
            if not (_at_most(a, b) or _at_most(b, a)):
                return None
    return sorted(distinct, key=lambda a: sum(_at_most(b, a) for b in distinct))



def reuse_steps(statement, steps, shape_of):
    """A gradient that evaluates a step's formula again reads the step's array instead.

    After :func:`split_guards` each piece of an LSTM's ∂E/∂s covers one gate's rows, where
    σ(s[p, q]) is the forget gate f[p, q − H] that forward computed: the piece reads it
    instead of a second exponential (and tanh(s[p, q]) is g[p, q − 2H]). A step's own
    statement, or a read outside the step's range, is left alone.

    Parameters
    ----------
    statement
        A kernel statement.
    steps : tuple
        The layer's steps, (target element, formula).
    shape_of : callable
        IndexedBase → its dims.
    """
    if not isinstance(statement, LoopNest) or statement.accumulators:
        return statement
    written = {t.base for t, _ in steps}
    if statement.array in written:
        return statement
    bounds = {lp.index: (lp.low, lp.high) for lp in statement.loops}
    value = statement.value
    for target, formula in steps:
        for e in value.atoms(sp.Function):
            element = _step_element(e, target, formula)
            if element is not None and _inside(element, bounds, shape_of(target.base)):
                value = value.xreplace({e: element})
    return dataclasses.replace(statement, value=value)


def _step_element(e, target, formula):
    """target[...] when e is formula at some index (f(s[p, q]) against f(s[n, H + j]))."""
    if e.func != formula.func or len(e.args) != 1 or len(formula.args) != 1:
        return None
    a, b = e.args[0], formula.args[0]
    if not (isinstance(a, sp.Indexed) and isinstance(b, sp.Indexed) and a.base == b.base):
        return None
    solved = {}
    for ai, bi in zip(a.indices, b.indices, strict=True):
        free = [ix for ix in target.indices if bi.has(ix)]
        if len(free) != 1 or sp.expand(bi - free[0]).has(*target.indices):
            return None
        value = sp.expand(ai - (bi - free[0]))
        if solved.setdefault(free[0], value) != value:
            return None
    if set(solved) != set(target.indices):
        return None
    return target.base[tuple(solved[ix] for ix in target.indices)]


def _inside(element, bounds, dims) -> bool:
    """Whether every index of element stays in its axis over the loops' ranges."""
    for index, dim in zip(element.indices, dims, strict=True):
        loops = [ix for ix in index.free_symbols if ix in bounds]
        if len(loops) > 1 or (loops and sp.expand(index - loops[0]).has(loops[0])):
            return False
        ends = [index.subs(loops[0], end) for end in bounds[loops[0]]] if loops else [index]
        if not all(_at_most(0, end) and _at_most(end, dim - 1) for end in ends):
            return False
    return True
