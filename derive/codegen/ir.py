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
