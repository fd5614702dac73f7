"""Frozen records for the catalogue's declarations.

A declaration says what an op *is*; everything else — its derivative, its kernel, its
LaTeX, its tests — is computed from it by later stages.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

#: The input of an elementwise activation.
x = sp.Symbol("x", real=True)
#: The output of an elementwise activation, used by derivatives written in terms of it.
y = sp.Symbol("y", real=True)


@dataclass(frozen=True)
class Param:
    """A named scalar parameter of an op.

    Parameters
    ----------
    symbol : sympy.Symbol
        The symbol used in the declaration's expression.
    default : float
        Its value unless the caller overrides it.
    learnable : bool
        Whether backward also returns the gradient with respect to it.
    latex : str
        How LaTeX writes it (defaults to the symbol's name).

    """

    symbol: sp.Symbol
    default: float
    learnable: bool = False
    latex: str = ""

    @property
    def name(self) -> str:
        """The Python name of the parameter in generated code."""
        return self.symbol.name


@dataclass(frozen=True)
class Noise:
    """A random variable drawn once per element in training mode.

    The draw is a pure function of (seed, element index), so backward regenerates
    exactly the values forward used, in parallel and without storing them.

    Parameters
    ----------
    symbol : sympy.Symbol
        The symbol standing for the draw in the declaration.
    distribution : str
        ``"uniform"`` on [low, high] or ``"normal"`` with mean 0 and deviation 1.
    low, high : sympy.Expr
        The bounds of a uniform draw (expressions in the op's parameters).
    eval_value : sympy.Expr
        The value used in evaluation mode (e.g. the mean slope).

    """

    symbol: sp.Symbol
    distribution: str
    eval_value: sp.Expr
    low: sp.Expr = sp.Integer(0)
    high: sp.Expr = sp.Integer(1)


@dataclass(frozen=True)
class Activation:
    """An elementwise activation y = f(x; params).

    Parameters
    ----------
    name : str
        Catalogue name, also the generated module's name.
    expr : sympy.Expr
        f as a SymPy expression in :data:`x`, the parameters and any noise symbols.
        Kinked functions are ``Piecewise``; the branch that owns a boundary decides the
        derivative there (PyTorch's subgradient convention).
    title : str
        Human name, e.g. ``"Logistic sigmoid"``.
    latex : str
        The LaTeX symbol of f.
    params : tuple of Param
        Named parameters with defaults.
    grad_in_output : sympy.Expr, optional
        f' written with :data:`y` standing for f(x); checked against ``diff`` when
        registered. When absent, the engine looks for such a form itself.
    noise : tuple of Noise
        Random draws used in training mode.
    domain : tuple of float
        Where tests sample ordinary inputs.

    """

    name: str
    expr: sp.Expr
    title: str
    latex: str
    params: tuple[Param, ...] = ()
    grad_in_output: sp.Expr | None = None
    noise: tuple[Noise, ...] = ()
    domain: tuple[float, float] = (-5.0, 5.0)
    kind: str = field(default="activation", init=False)

    @property
    def defaults(self) -> dict[sp.Symbol, float]:
        """Parameter symbols mapped to their default values."""
        return {p.symbol: p.default for p in self.params}

    @property
    def learnable(self) -> tuple[Param, ...]:
        """The parameters backward returns gradients for."""
        return tuple(p for p in self.params if p.learnable)

    @property
    def stochastic(self) -> bool:
        """Whether training mode draws random numbers."""
        return bool(self.noise)


@dataclass(frozen=True)
class Loss:
    """A loss L = scale · Σ_n Σ_k term(pred[n, k], target[n, k]).

    Parameters
    ----------
    name, title, latex : str
        As for :class:`Activation`.
    term : sympy.Expr
        The summand, in ``pred[n, k]`` and ``target[n, k]`` (indices from
        :mod:`derive.calculus.indexed`).
    scale : sympy.Expr
        The reduction: ``1/(N*K)`` for a mean over all elements, ``1/N`` for a mean over
        the batch, ``1/2`` for Rumelhart's ½Σ.
    pred, target : sympy.IndexedBase
        The prediction (probabilities, values or logits) and the target.
    targets : tuple of str
        Target encodings the kernels accept: ``"dense"`` (an array like pred) and/or
        ``"index"`` (integer class labels; derived by substituting the one-hot delta).
    identities : tuple of (pattern, value)
        Facts about targets the derivation may use, e.g. one-hot rows sum to 1.
    params : tuple of Param
        Named parameters (e.g. Huber's delta).
    log_floor : float, optional
        Forward logs are clamped below at this value (PyTorch's BCE uses −100).
    grad_floor : float, optional
        Denominators of the gradient are clamped below at this value (PyTorch: 1e-12).
    samples : str
        How tests draw (pred, target): ``"values"``, ``"probabilities"``,
        ``"binary"``, ``"signs"``, ``"classes"``, ``"logits"``.
    """

    name: str
    title: str
    latex: str
    term: sp.Expr
    scale: sp.Expr
    pred: sp.IndexedBase
    target: sp.IndexedBase
    targets: tuple[str, ...] = ("dense",)
    identities: tuple = ()
    params: tuple[Param, ...] = ()
    log_floor: float | None = None
    grad_floor: float | None = None
    samples: str = "values"
    kind: str = field(default="loss", init=False)

    @property
    def defaults(self) -> dict[sp.Symbol, float]:
        """Parameter symbols mapped to their default values."""
        return {p.symbol: p.default for p in self.params}

    @property
    def expr(self) -> sp.Expr:
        """The whole loss as a SymPy expression with symbolic N and K."""
        from derive.calculus.indexed import K, N, k, n

        return self.scale * sp.Sum(sp.Sum(self.term, (k, 0, K - 1)), (n, 0, N - 1))


@dataclass(frozen=True)
class VectorFunction:
    """A row-wise vector function y[n, k] = f(x[n, :])_k, such as softmax.

    Parameters
    ----------
    name, title, latex : str
        As for :class:`Activation`.
    out : sympy.Expr
        y[n, k] in terms of ``arg[n, ...]`` (indices from :mod:`derive.calculus.indexed`).
    arg : sympy.IndexedBase
        The input array.
    """

    name: str
    title: str
    latex: str
    out: sp.Expr
    arg: sp.IndexedBase
    domain: tuple[float, float] = (-5.0, 5.0)
    kind: str = field(default="vector", init=False)
    params: tuple[Param, ...] = ()
