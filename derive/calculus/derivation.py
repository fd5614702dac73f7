"""Declaration → derivation: the stage every printer (Numba, LaTeX) reads from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import sympy as sp

from derive.calculus.indexed import (
    ArgMax,
    K,
    N,
    apply_identities,
    eliminate_deltas,
    k,
    n,
    name_softmax,
    name_softmax_steps,
    p,
    q,
)
from derive.calculus.kinks import find_kinks, normalise_kinks
from derive.calculus.stability import stabilise, tidy
from derive.spec import Activation, Layer, Loss, Param, VectorFunction, x, y

#: Integer class labels c[n] (the "index" target encoding).
LABELS = sp.IndexedBase("c", integer=True)
#: The upstream gradient d_y[n, k] of a vector function, and its output y[n, k].
UPSTREAM = sp.IndexedBase("d_y", real=True)
OUTPUT = sp.IndexedBase("y", real=True)


#: What typesets a declaration for Jupyter, once the LaTeX stage has registered it: this
#: stage comes before the LaTeX one and imports nothing of it.
_jupyter_renderers: list[Callable[[object], str]] = []


def register_jupyter_renderer(render: Callable[[object], str]) -> None:
    """Typeset derivations in Jupyter with ``render(op)`` (``derive.latex`` registers its own).

    Parameters
    ----------
    render : callable
        Takes a declaration and returns its derivation as LaTeX displays (``$$ … $$``).

    """
    _jupyter_renderers[:] = [render]


class JupyterDisplay:
    """Gives a derivation record of ``op`` its display in Jupyter."""

    def _repr_latex_(self) -> str | None:
        """The derivation step by step as LaTeX displays, or None before ``import derive.latex``.

        Jupyter shows the plain ``repr`` when this returns None.
        """
        return _jupyter_renderers[0](self.op) if _jupyter_renderers else None


@dataclass(frozen=True)
class ActivationDerivation(JupyterDisplay):
    """Everything derived from one activation declaration.

    Attributes
    ----------
    op : Activation
        The declaration.
    forward : sympy.Expr
        f in kink normal form with stable spellings.
    derivative : sympy.Expr
        df/dx from ``diff``, stable and tidied, in terms of x.
    in_output : sympy.Expr or None
        df/dx with y standing for f(x) (the declared rule, or one found by substitution).
    param_grads : tuple of (Param, sympy.Expr)
        df/dp for every learnable parameter.
    kinks : tuple of float
        Kink locations at the default parameters.

    """

    op: Activation
    forward: sp.Expr
    derivative: sp.Expr
    in_output: sp.Expr | None
    param_grads: tuple[tuple[Param, sp.Expr], ...]
    kinks: tuple[float, ...]


def differentiate(expr: sp.Expr, var: sp.Symbol) -> sp.Expr:
    """``diff`` followed by the stability rewrites and a cheap tidy-up."""
    return tidy(stabilise(sp.diff(expr, var)))


def output_form(derivative: sp.Expr, forward: sp.Expr) -> sp.Expr | None:
    """Write ``derivative`` in terms of y = ``forward`` when substitution removes x.

    This finds σ' = y(1 − y) and tanh' = 1 − y² without a rule per function: the rule
    lives in each function's own derivative (see :mod:`derive.calculus.functions`).
    """
    if forward == x:
        return None
    candidate = derivative.subs(forward, y)
    if x in candidate.free_symbols or y not in candidate.free_symbols:
        return None
    return candidate


@cache
def derive_activation(op: Activation) -> ActivationDerivation:
    """Derive an activation's gradient from its declaration.

    Parameters
    ----------
    op : Activation
        The declaration.

    Returns
    -------
    ActivationDerivation
        The stable forward form, the derivative (also in terms of the output where one
        exists), the learnable parameters' derivatives and the kinks.

    """
    forward = stabilise(normalise_kinks(op.expr, x))
    derivative = differentiate(forward, x)
    if op.grad_in_output is not None:
        in_output = stabilise(normalise_kinks(op.grad_in_output, x))
    else:
        in_output = output_form(derivative, forward)
    param_grads = tuple((p, differentiate(forward, p.symbol)) for p in op.learnable)
    kinks = find_kinks(forward, x, op.defaults)
    return ActivationDerivation(op, forward, derivative, in_output, param_grads, kinks)


@dataclass(frozen=True)
class LossVariant:
    """A loss for one target encoding.

    Attributes
    ----------
    encoding : str
        ``"dense"`` (targets like predictions) or ``"index"`` (integer labels c[n]).
    target : sympy.IndexedBase
        The target array in this encoding.
    row_value : sympy.Expr
        Σ_k term for row n, deltas eliminated (the loss is scale · Σ_n row_value).
    gradient : sympy.Expr
        ∂L/∂pred[p, q] in closed form.
    """

    encoding: str
    target: sp.IndexedBase
    row_value: sp.Expr
    gradient: sp.Expr


@dataclass(frozen=True)
class LossDerivation(JupyterDisplay):
    """Everything derived from one loss declaration."""

    op: Loss
    variants: tuple[LossVariant, ...]

    def variant(self, encoding: str) -> LossVariant:
        """The variant for a target encoding."""
        return next(v for v in self.variants if v.encoding == encoding)


def _reduce(expr: sp.Expr, identities) -> sp.Expr:
    return name_softmax(apply_identities(eliminate_deltas(expr), identities))


def loss_summand(op: Loss, encoding: str) -> sp.Expr:
    """The declared summand, kinks normalised and stabilised, for a target encoding.

    Integer labels c[n] enter as the one-hot delta δ(k, c[n]) in place of y[n, k].
    """
    term = stabilise(normalise_kinks(op.term, op.pred[n, k]))
    if encoding == "index":
        term = term.xreplace({op.target[n, k]: sp.KroneckerDelta(k, LABELS[n])})
    return term


@cache
def derive_loss(op: Loss) -> LossDerivation:
    """Derive a loss's gradient over indexed sums.

    ``diff`` of the declared sum with respect to pred[p, q], then the Kronecker-delta
    elimination, the declared target identities (Σ_k y[n, k] = 1 for one-hot rows) and
    the naming of exp(z − lse) as softmax. For integer labels the one-hot target is the
    delta δ(k, c[n]), substituted into the same declaration.

    Parameters
    ----------
    op : Loss
        The declaration.
    """
    variants = []
    for encoding in op.targets:
        target = op.target if encoding == "dense" else LABELS
        summand = loss_summand(op, encoding)
        row_value = _reduce(sp.Sum(summand, (k, 0, K - 1)), op.identities)
        whole = op.scale * sp.Sum(sp.Sum(summand, (k, 0, K - 1)), (n, 0, N - 1))
        gradient = tidy(stabilise(_reduce(sp.diff(whole, op.pred[p, q]), op.identities)))
        variants.append(LossVariant(encoding, target, row_value, gradient))
    return LossDerivation(op, tuple(variants))


@dataclass(frozen=True)
class VectorDerivation:
    """A row-wise vector function's vector-Jacobian product.

    Attributes
    ----------
    forward : sympy.Expr
        y[n, k].
    vjp : sympy.Expr
        d_x[p, q] = Σ_{n,k} d_y[n, k] ∂y[n, k]/∂x[p, q], in terms of x.
    vjp_in_output : sympy.Expr or None
        The same with y standing for the forward's value, where that removes x.
    """

    op: VectorFunction
    forward: sp.Expr
    vjp: sp.Expr
    vjp_in_output: sp.Expr | None


@cache
def derive_vector(op: VectorFunction) -> VectorDerivation:
    """Derive the vector-Jacobian product of a row-wise vector function."""
    forward = name_softmax(op.out)
    pairing = sp.Sum(sp.Sum(UPSTREAM[n, k] * op.out, (k, 0, K - 1)), (n, 0, N - 1))
    vjp = tidy(_reduce(sp.diff(pairing, op.arg[p, q]), ()))
    in_output = None
    if isinstance(forward, sp.Indexed):
        candidate = vjp.replace(
            lambda e: isinstance(e, sp.Indexed) and e.base == forward.base,
            lambda e: OUTPUT[e.indices],
        )
        if op.arg not in {a.base for a in candidate.atoms(sp.Indexed)}:
            in_output = candidate
    return VectorDerivation(op, forward, vjp, in_output)


#: Free indices of gradients, in order: d_A[p, q, r, u].
FREE = (p, q) + sp.symbols("r u", integer=True, nonnegative=True)


@dataclass(frozen=True)
class LayerGradient:
    """∂L/∂array[index] = expr, with the upstream gradient d_out in expr."""

    array: sp.IndexedBase
    index: tuple
    expr: sp.Expr


@dataclass(frozen=True)
class LayerDerivation(JupyterDisplay):
    """A layer's gradients by reverse mode over its steps, each in delta form.

    Attributes
    ----------
    gradients : tuple of LayerGradient
        ∂L/∂A for every input and weight.
    intermediates : tuple of LayerGradient
        ∂L/∂t for every differentiable intermediate step t, in the order backward
        computes them (last step first).
    """

    op: Layer
    upstream: sp.IndexedBase
    gradients: tuple[LayerGradient, ...]
    intermediates: tuple[LayerGradient, ...] = ()

    def gradient(self, array: sp.IndexedBase) -> LayerGradient:
        """The gradient with respect to one array."""
        return next(g for g in self.gradients + self.intermediates if g.array == array)


def upstream_of(op: Layer) -> sp.IndexedBase:
    """The upstream gradient array d_out of a layer."""
    return sp.IndexedBase(f"d_{op.out.base}", real=True)


def output_upstream(base: sp.IndexedBase) -> sp.IndexedBase:
    """The caller's gradient of a step a layer returns besides its output (d_c_out).

    Named apart from the step's own gradient d_c, which adds to it what flows back
    through the steps that read c.
    """
    return sp.IndexedBase(f"d_{base}_out", real=True)


def gradient_array(base: sp.IndexedBase) -> sp.IndexedBase:
    """The array holding ∂L/∂base."""
    return sp.IndexedBase(f"d_{base}", real=True)


def _limits(op: Layer, element: sp.Indexed) -> list:
    dims = op.shape(element.base)
    return [(i, 0, d - 1) for i, d in zip(element.indices, dims, strict=True)]


@cache
def derive_layer(op: Layer) -> LayerDerivation:
    """Derive every input and weight gradient of a layer by the chain rule in delta form.

    For each array A, ∂L/∂A[free] = Σ over the steps t that read A of
    Σ_t d_t[·] ∂t[·]/∂A[free]: ``diff`` of the pairing Σ d_t·expr_t makes SymPy emit
    Kronecker deltas, which the elimination pass solves for the summation variables
    (affine ones, as in convolution, leave range guards). Intermediate steps (a mean, a
    variance) get gradients of their own first, so each formula stays short. A step the
    layer returns as well (:attr:`~derive.spec.Layer.extra_outputs`) starts from the
    caller's gradient of it, :func:`output_upstream`.
    """
    steps = op.steps + ((op.out, op.expr),)
    upstream = {op.out.base: upstream_of(op)}

    def gradient_of(array):
        index = FREE[: len(op.shape(array))]
        ranges = {i: (0, d - 1) for i, d in zip(index, op.shape(array), strict=True)}
        # A step the layer returns too (an LSTM step's cell state) gets the caller's
        # gradient of it besides what flows back through the steps that read it.
        total = output_upstream(array)[index] if array in op.extra_outputs else sp.S.Zero
        for target, expr in steps:
            if array not in {a.base for a in expr.atoms(sp.Indexed)}:
                continue
            if target.base not in upstream:
                continue  # a step nothing differentiable depends on
            pairing = sp.Sum(upstream[target.base][target.indices] * expr, *_limits(op, target))
            # A softmax step's exponential, differentiated, comes back as that step.
            total += name_softmax_steps(eliminate_deltas(sp.diff(pairing, array[index]),
                                                         ranges), op.steps)
        return LayerGradient(array, index, total)

    differentiable = set(op.inputs + op.weights)
    for target, expr in op.steps:
        if {a.base for a in expr.atoms(sp.Indexed)} & differentiable and not expr.has(ArgMax):
            differentiable.add(target.base)
    intermediates = []
    for target, _ in reversed(op.steps):
        if target.base not in differentiable:
            continue  # an arg-max, a dropout mask: nothing flows back through them
        g = gradient_of(target.base)
        intermediates.append(g)
        upstream[target.base] = gradient_array(target.base)
    gradients = tuple(gradient_of(array) for array in op.inputs + op.weights)
    return LayerDerivation(op, upstream_of(op), gradients, tuple(intermediates))
