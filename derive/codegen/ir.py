"""The kernel IR: what a generated module computes, before any text is printed."""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp


@dataclass(frozen=True)
class Assign:
    """``target = expr`` inside a kernel."""

    target: sp.Symbol
    expr: sp.Expr


@dataclass(frozen=True)
class Draw:
    """A per-element random draw: ``target`` in training mode, ``eval_value`` otherwise."""

    target: sp.Symbol
    distribution: str  # "uniform" or "normal"
    low: sp.Expr
    high: sp.Expr
    eval_value: sp.Expr


@dataclass(frozen=True)
class ElementFunction:
    """A scalar function applied to every element: inputs → outputs via statements.

    ``outputs`` are expressions after the ``body`` temporaries (common subexpressions)
    have been assigned; ``sums`` name the outputs that are reduced over all elements
    (parameter gradients) rather than written elementwise.
    """

    name: str
    inputs: tuple[sp.Symbol, ...]
    body: tuple[Assign, ...]
    outputs: tuple[sp.Expr, ...]
    output_names: tuple[str, ...]
    sums: tuple[bool, ...]


@dataclass(frozen=True)
class Scalar:
    """A scalar argument of the public functions (an op parameter)."""

    name: str
    default: float
    learnable: bool


@dataclass(frozen=True)
class ActivationModule:
    """Everything the activation template needs to write one generated module."""

    name: str
    title: str
    source: str
    params: tuple[Scalar, ...]
    draws: tuple[Draw, ...]
    forward: ElementFunction
    backward: ElementFunction
    uses_output: bool
    formulas: tuple[tuple[str, str], ...]
    #: The per-call parameters (:attr:`derive.spec.Activation.per_call`): the draw mode.
    mode: tuple = ()


@dataclass(frozen=True)
class Reduction:
    """A per-row reduction over the column index, computed before the row's elements."""

    target: sp.Symbol
    kind: str  # "sum" or "logsumexp" (evaluated with the row maximum subtracted)
    index: sp.Symbol
    body: sp.Expr


@dataclass(frozen=True)
class RowKernel:
    """A loop over rows: reductions first, then one value per row or per element.

    ``col`` is None for a kernel that sums one value per row (a loss's forward pass)
    and the column index for one that writes an output element per (row, col).
    """

    row: sp.Symbol
    col: sp.Symbol | None
    reductions: tuple[Reduction, ...]
    body: tuple[Assign, ...]
    value: sp.Expr


@dataclass(frozen=True)
class LossKernels:
    """Forward and backward kernels of a loss for one target encoding."""

    encoding: str
    forward: RowKernel
    backward: RowKernel


@dataclass(frozen=True)
class LossModule:
    """Everything the loss template needs to write one generated module."""

    name: str
    title: str
    source: str
    params: tuple[Scalar, ...]
    variants: tuple[LossKernels, ...]
    formulas: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class VectorModule:
    """Everything the vector-function template needs (softmax and friends)."""

    name: str
    title: str
    source: str
    forward: RowKernel
    backward: RowKernel
    uses_output: bool
    formulas: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class LayerKernel:
    """One jitted function of a layer module: statements over its argument arrays."""

    name: str
    arrays: tuple  # IndexedBase arguments, in call order
    hyper: tuple  # hyper-parameter symbols, after the arrays
    statements: tuple  # Gemm / LoopNest / Scatter
    parallel: bool
    allocations: tuple = ()  # (IndexedBase, dims, is_integer): arrays made inside


@dataclass(frozen=True)
class LayerModule:
    """Everything the layer template needs to write one generated module."""

    name: str
    title: str
    source: str
    op: object  # the Layer declaration (shapes, hyper-parameters, padding, view)
    forward: LayerKernel
    backward: LayerKernel
    gradients: tuple  # (IndexedBase differentiated, its gradient array)
    formulas: tuple[tuple[str, str], ...]
