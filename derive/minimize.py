"""The notes' gradient-descent demo on any formula: ``derive minimize "w1**2 + w2**2"``.

Seed 000 minimises f(w) = w₁² + w₂² from w = (10, 10) with learning rate 0.01 and prints
``f = 192.08; w: [9.8 9.8]`` after the first step. Here the formula is the user's: it is
parsed (never executed) by :func:`derive.formula.parse_formula`, its gradient (and, for
Newton's method, its Hessian) comes from ``sympy.diff``, and the numbers from lambdified
versions of those parsed expressions.

Stages, each a pure function between named records::

    text ──parse_objective──► Objective ──minimize──► Trajectory ──► lines / CSV / PNG
"""

from __future__ import annotations

import ast
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sympy as sp

from derive.calculus.functions import NAMED_FUNCTIONS
from derive.errors import DeriveError, FormulaError
from derive.files import atomic_write
from derive.formula import CONSTANTS, MAX_LENGTH, functions, parse_formula

METHODS = ("gd", "momentum", "newton")
#: The step size each method uses when none is given (Newton's natural step is 1).
DEFAULT_LR = {"gd": 0.01, "momentum": 0.01, "newton": 1.0}
MAX_VARIABLES = 20
MAX_STEPS = 100_000
#: Tree sizes beyond which a gradient, or the gradient a Hessian is derived from, is
#: refused (nested formulas grow with every derivative; these keep each run to seconds).
MAX_GRADIENT_SIZE = 50_000
MAX_HESSIAN_SOURCE = 1_000
#: Largest condition number of a Hessian that Newton's method will invert.
MAX_CONDITION = 1e12
#: Stop when ‖∇f‖ falls to this fraction of its starting value (or to exactly 0).
TOLERANCE = 1e-12


@dataclass(frozen=True)
class Objective:
    """A function to minimise, with its symbolic derivatives.

    Attributes
    ----------
    text : str
        The formula as typed.
    expr : sympy.Expr
        f, parsed.
    variables : tuple of sympy.Symbol
        Its free names in natural order (w1, w2, …, w10; x, y).
    gradient : tuple of sympy.Expr
        ∂f/∂vᵢ for each variable.

    """

    text: str
    expr: sp.Expr
    variables: tuple[sp.Symbol, ...]
    gradient: tuple[sp.Expr, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """The variables' names."""
        return tuple(v.name for v in self.variables)


@dataclass(frozen=True)
class Step:
    """The point after step ``k`` (k = 0 is the start) and f and ‖∇f‖ there."""

    k: int
    w: tuple[float, ...]
    f: float
    grad_norm: float


@dataclass(frozen=True)
class Trajectory:
    """A minimisation run.

    Attributes
    ----------
    objective : Objective
    method : str
        ``gd``, ``momentum`` or ``newton``.
    lr : float
        Step size (learning rate).
    momentum : float
        β of the momentum method (unused by the others).
    steps : tuple of Step
        Start first.
    stopped : str
        Why it ended before the requested number of steps ("" if it did not).

    """

    objective: Objective
    method: str
    lr: float
    momentum: float
    steps: tuple[Step, ...]
    stopped: str = ""


# --- parsing ----------------------------------------------------------------------------


def _natural(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def variable_names(text: str) -> list[str]:
    """The free names of a formula: names that are neither functions nor constants.

    Only the syntax tree is looked at (nothing is evaluated). A formula that does not
    parse has no names here; :func:`parse_formula` then reports what is wrong with it.
    """
    if not isinstance(text, str) or len(text) > MAX_LENGTH:
        return []
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    known = functions()
    names = {node.id for node in ast.walk(tree)
             if isinstance(node, ast.Name) and id(node) not in called
             and node.id not in known and node.id not in CONSTANTS}
    return sorted(names, key=_natural)


def _no_dirac(expr: sp.Expr) -> sp.Expr:
    # d/dx heaviside and sign are DiracDelta: zero wherever they are defined, which is
    # everywhere a descent step can land except a set of measure zero.
    return expr.replace(lambda e: isinstance(e, sp.DiracDelta), lambda e: sp.S.Zero)


def parse_objective(text: str, where: str = "formula") -> Objective:
    """Parse a formula to minimise and derive its gradient.

    Parameters
    ----------
    text : str
        The formula, in Python syntax, e.g. ``w1**2 + w2**2``.
    where : str
        How error messages name the formula.

    Returns
    -------
    Objective

    Raises
    ------
    FormulaError
        When the formula is refused by the parser, has no variables or too many, or its
        gradient is zero everywhere.

    """
    names = variable_names(text)
    if len(names) > MAX_VARIABLES:
        raise FormulaError(f"the formula has {len(names)} variables; the limit is "
                           f"{MAX_VARIABLES}.", where=where)
    variables = tuple(sp.Symbol(n, real=True) for n in names)
    expr = parse_formula(text, {v.name: v for v in variables}, where=where)
    if not variables:
        raise FormulaError("the formula has no variables: there is nothing to minimise.",
                           where=f"{where} {text!r}",
                           fix="Write a function of w1, w2, ... (or x, y), e.g. w1**2 + w2**2.")
    gradient = tuple(_no_dirac(sp.diff(expr, v)) for v in variables)
    if _size(gradient, MAX_GRADIENT_SIZE) > MAX_GRADIENT_SIZE:
        raise FormulaError(f"the gradient of this formula has more than {MAX_GRADIENT_SIZE} "
                           "terms; that is beyond what derive minimises.",
                           where=f"{where} {text!r}", fix="Use a smaller formula.")
    if any(g.has(sp.Derivative, sp.Subs) for g in gradient):
        raise FormulaError("derive cannot differentiate this formula symbolically.",
                           where=f"{where} {text!r}")
    if all(g == 0 for g in gradient):
        raise FormulaError(
            "the gradient is zero everywhere (the formula is constant, or flat wherever it "
            "is differentiable): gradient descent cannot move.", where=f"{where} {text!r}",
            fix="Minimise a formula that depends smoothly on its variables.")
    return Objective(text, expr, variables, gradient)


def parse_start(text: str, objective: Objective, where: str = "--start") -> np.ndarray:
    """The start point: comma-separated numbers, one per variable, in their order."""
    names = ", ".join(objective.names)
    cells = [c.strip() for c in str(text).split(",")]
    try:
        values = [float(c) for c in cells]
    except ValueError:
        raise DeriveError(f"{text!r} is not a list of numbers.", where=where,
                          fix=f"Give one number per variable ({names}), e.g. "
                              f"--start {','.join(['1'] * len(objective.names))}.") from None
    if not all(map(math.isfinite, values)):
        raise DeriveError(f"{text!r} has a value that is not finite.", where=where)
    if len(values) != len(objective.names):
        raise DeriveError(
            f"{len(values)} number(s) given but the formula has {len(objective.names)} "
            f"variable(s): {names}.", where=where,
            fix=f"Give one number per variable, in the order {names}.")
    return np.array(values, dtype=np.float64)


# --- numbers ------------------------------------------------------------------------------


def _norm(g: np.ndarray) -> float:
    with np.errstate(all="ignore"):
        return float(np.linalg.norm(g)) if np.isfinite(g).all() else math.nan


def _named_functions() -> dict:
    """The named functions of derive, evaluated overflow-free by SciPy/NumPy."""
    values = {f.__name__: f.numpy_value for f in NAMED_FUNCTIONS.values()
              if f.numpy_value is not None}
    return {**values, _STEP.__name__: _heaviside}


def _heaviside(u):
    return np.heaviside(u, 0.5)  # SymPy's Heaviside(0) = 1/2


#: Heaviside as an opaque function: SymPy's printer turns Heaviside(x - Max(...)) (the
#: derivative of max) into nested Piecewise selects that are slow to build and fail on
#: scalars, so it is printed as a plain call instead.
_STEP = sp.Function("heaviside_step_")


def _numeric(expr: sp.Expr, variables):
    """A NumPy function of the variables.

    The variables are renamed ``arg_0_, arg_1_, ...`` first, so that no user's name
    (``numpy``, ``builtins``) can shadow what the printed code uses. This does what
    lambdify's ``dummify`` does, but keeps the variables real: dummify's assumption-free
    symbols make SymPy re-derive realness through every nested ``tanh``, which takes
    exponential time. ``cse`` prints shared subexpressions once, so derivatives of
    nested formulas stay small to print and fast to evaluate.
    """
    safe = [sp.Symbol(f"arg_{i}_", real=True) for i in range(len(variables))]
    renaming = dict(zip(variables, safe, strict=True))
    expr = expr.xreplace(renaming).replace(lambda e: isinstance(e, sp.Heaviside),
                                           lambda e: _STEP(e.args[0]))
    return sp.lambdify(safe, expr,
                       modules=[_named_functions(), "scipy", "numpy"], cse=True)


def _size(exprs, limit: int) -> int:
    """Number of nodes in the expressions' trees, counting stops past ``limit``."""
    n = 0
    for e in exprs:
        for _ in sp.preorder_traversal(e):
            n += 1
            if n > limit:
                return n
    return n


@dataclass(frozen=True)
class _Numeric:
    f: object
    grad: object
    hessian: object | None

    def value(self, w: np.ndarray) -> float:
        return _call(self.f, w)

    def gradient(self, w: np.ndarray) -> np.ndarray:
        return np.array([_call(g, w) for g in self.grad])


def _call(fn, w: np.ndarray) -> float:
    with np.errstate(all="ignore"):
        try:
            value = fn(*(np.float64(v) for v in w))
            value = complex(value)
        except (OverflowError, ZeroDivisionError, ValueError, TypeError, FloatingPointError):
            return math.nan
    return value.real if value.imag == 0 else math.nan


def _numbers(objective: Objective, newton: bool) -> _Numeric:
    vs = objective.variables
    f = _numeric(objective.expr, vs)
    grad = [_numeric(g, vs) for g in objective.gradient]
    hessian = None
    if newton:
        # Each differentiation multiplies a nested formula's size; a Hessian of a large
        # gradient takes minutes to build, so it is refused up front, not attempted.
        if _size(objective.gradient, MAX_HESSIAN_SOURCE) > MAX_HESSIAN_SOURCE:
            raise FormulaError(
                "the formula is too large for a symbolic Hessian (its gradient has more "
                f"than {MAX_HESSIAN_SOURCE} terms).", where=f"formula {objective.text!r}",
                fix="Use --method gd or momentum for it.")
        hessian = [[_numeric(_no_dirac(sp.diff(g, v)), vs) for v in vs]
                   for g in objective.gradient]
    return _Numeric(f, grad, hessian)


def _hessian(num: _Numeric, w: np.ndarray) -> np.ndarray:
    return np.array([[_call(h, w) for h in row] for row in num.hessian])


# --- descent ------------------------------------------------------------------------------


def _floats(w: np.ndarray) -> tuple[float, ...]:
    return tuple(float(v) for v in w)


def _check_options(method: str, lr: float, steps: int, momentum: float) -> None:
    if method not in METHODS:
        raise DeriveError(f"unknown method {method!r}.", where="--method",
                          fix=f"Use one of: {', '.join(METHODS)}.")
    if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise DeriveError(f"the learning rate {lr!r} is not a positive number.", where="--lr")
    if not (isinstance(steps, int) and 0 <= steps <= MAX_STEPS):
        raise DeriveError(f"{steps!r} steps: give a whole number from 0 to {MAX_STEPS}.",
                          where="--steps")
    if not (isinstance(momentum, int | float) and 0 <= momentum < 1):
        raise DeriveError(f"the momentum {momentum!r} is not in [0, 1).", where="--momentum")


def minimize(objective: Objective, start, *, method: str = "gd", lr: float | None = None,
             steps: int = 10, momentum: float = 0.9) -> Trajectory:
    """Minimise from ``start`` with gradient descent, momentum, or Newton's method.

    Parameters
    ----------
    objective : Objective
        From :func:`parse_objective`.
    start : sequence of float
        One value per variable.
    method : str
        ``gd``: w ← w − η∇f. ``momentum`` (Polyak): v ← βv − η∇f, w ← w + v.
        ``newton``: w ← w − η H⁻¹∇f with the symbolic Hessian H.
    lr : float, optional
        η; 0.01 for gd and momentum, 1 for Newton.
    steps : int
        Number of steps (fewer if the gradient vanishes or the iterates diverge).
    momentum : float
        β, for ``momentum``.

    Returns
    -------
    Trajectory

    Raises
    ------
    DeriveError
        For invalid options, a start outside the formula's domain, or (Newton) a
        singular Hessian.

    """
    lr = DEFAULT_LR.get(method, 0.01) if lr is None else lr
    _check_options(method, lr, steps, momentum)
    w = np.array(start, dtype=np.float64)
    if w.shape != (len(objective.variables),):
        raise DeriveError(f"the start has {w.size} values, the formula "
                          f"{len(objective.variables)} variables.", where="--start")
    num = _numbers(objective, method == "newton")
    f, g = num.value(w), num.gradient(w)
    if not (math.isfinite(f) and np.isfinite(g).all()):
        raise DeriveError(f"f or its gradient is not finite at the start w = {_vector(w)}.",
                          where=f"formula {objective.text!r}",
                          fix="Start inside the formula's domain (e.g. log needs a positive "
                              "argument) and where its values do not overflow.")
    g0 = _norm(g)
    path = [Step(0, _floats(w), f, g0)]
    if g0 == 0:
        return Trajectory(objective, method, float(lr), float(momentum), tuple(path),
                          "the gradient is zero at the start: it is a stationary point.")
    velocity = np.zeros_like(w)
    stopped = ""
    for k in range(1, steps + 1):
        with np.errstate(all="ignore"):  # overflow shows as inf, reported below
            if method == "gd":
                w = w + -lr * g  # the notes' delta_w = -lr * grad(w); w = w + delta_w
            elif method == "momentum":
                velocity = momentum * velocity - lr * g
                w = w + velocity
            else:
                w = w - lr * _newton_direction(num, w, g, k)
        f, g = num.value(w), num.gradient(w)
        norm = _norm(g)
        path.append(Step(k, _floats(w), f, norm))
        if not (math.isfinite(f) and math.isfinite(norm) and np.isfinite(w).all()):
            stopped = (f"diverged at step {k}: f(w) is no longer finite. The step is too "
                       f"large: lower --lr (now {lr:g}).")
            break
        if norm == 0 or norm <= TOLERANCE * g0:
            if k < steps:
                stopped = f"converged at step {k}: the gradient vanished."
            break
    return Trajectory(objective, method, float(lr), float(momentum), tuple(path), stopped)


def _newton_direction(num: _Numeric, w: np.ndarray, g: np.ndarray, k: int) -> np.ndarray:
    h = _hessian(num, w)
    singular = not np.isfinite(h).all()
    if not singular:
        try:
            singular = np.linalg.cond(h) > MAX_CONDITION
            direction = np.linalg.solve(h, g)
        except np.linalg.LinAlgError:
            singular = True
    if singular:
        raise DeriveError(
            f"the Hessian is singular at w = {_vector(w)} (step {k}): Newton's method "
            "cannot invert it.", where="derive minimize --method newton",
            fix="Use --method gd or momentum, or start where the formula curves in every "
                "direction.")
    return direction


# --- reporting ----------------------------------------------------------------------------


def _vector(w) -> str:
    return np.array2string(np.asarray(w, dtype=np.float64), separator=" ")


def header(run: Trajectory) -> str:
    """The line before the steps: what is minimised, how, from where."""
    how = f"{run.method}, lr = {run.lr:g}"
    if run.method == "momentum":
        how += f", momentum = {run.momentum:g}"
    f = f"f({', '.join(run.objective.names)}) = {run.objective.expr}"
    return f"minimise {f} by {how}"


def step_line(step: Step) -> str:
    """One step as the notes print it: ``f = 192.08; w = [9.8 9.8]`` plus ‖∇f‖."""
    label = "start" if step.k == 0 else f"step {step.k}"
    return (f"{label:>10}: f = {step.f:.12g}; w = {_vector(step.w)}; "
            f"|grad f| = {step.grad_norm:.6g}")


def trajectory_csv(run: Trajectory) -> str:
    """The path as CSV: step, the variables, f, ‖∇f‖ (full precision)."""
    lines = [",".join(["k", *run.objective.names, "f", "grad_norm"])]
    for s in run.steps:
        lines.append(",".join([str(s.k), *(repr(float(v)) for v in s.w), repr(s.f),
                               repr(s.grad_norm)]))
    return "\n".join(lines) + "\n"


def _window(values: np.ndarray) -> tuple[float, float]:
    lo, hi = float(values.min()), float(values.max())
    half = max(0.75 * (hi - lo), 0.5, 0.05 * max(abs(lo), abs(hi)))
    mid = (lo + hi) / 2
    return mid - half, mid + half


def _grid_values(f, *axes) -> np.ndarray:
    with np.errstate(all="ignore"):
        try:
            z = np.asarray(f(*axes), dtype=float)
        except (TypeError, ValueError, OverflowError, ZeroDivisionError):
            # Some printed functions do not broadcast; evaluate point by point instead.
            z = np.vectorize(lambda *a: _call(f, a))(*axes)
    return np.broadcast_to(z, np.broadcast(*axes).shape)


def trajectory_png(run: Trajectory) -> bytes | None:
    """The path over a contour plot of f (2 variables) or over f's graph (1 variable).

    Returns None for three or more variables.
    """
    n = len(run.objective.variables)
    if n not in (1, 2):
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 5.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    pts = np.array([s.w for s in run.steps if np.isfinite(s.w).all()])
    f = _numeric(run.objective.expr, run.objective.variables)
    names = run.objective.names
    if n == 2:
        (x0, x1), (y0, y1) = _window(pts[:, 0]), _window(pts[:, 1])
        gx, gy = np.meshgrid(np.linspace(x0, x1, 241), np.linspace(y0, y1, 241))
        z = _grid_values(f, gx, gy)
        finite = z[np.isfinite(z)]
        if finite.size:
            levels = np.unique(np.quantile(finite, np.linspace(0, 1, 25)))
            if len(levels) > 1:
                cs = ax.contour(gx, gy, np.where(np.isfinite(z), z, np.nan), levels=levels,
                                cmap="viridis", linewidths=0.8)
                ax.clabel(cs, inline=True, fontsize=7, fmt="%.3g")
        ax.plot(pts[:, 0], pts[:, 1], "o-", color="tab:red", markersize=3, linewidth=1.2,
                label=f"{run.method} path")
        ax.plot(pts[0, 0], pts[0, 1], "s", color="black", label="start")
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1])
        ax.set_aspect("equal", adjustable="datalim")
    else:
        x0, x1 = _window(pts[:, 0])
        grid = np.linspace(x0, x1, 401)
        ax.plot(grid, _grid_values(f, grid), color="tab:blue", label="f")
        ax.plot(pts[:, 0], [s.f for s in run.steps[:len(pts)]], "o-", color="tab:red",
                markersize=3, label=f"{run.method} path")
        ax.set_xlabel(names[0])
        ax.set_ylabel("f")
    ax.set_title(f"f = {run.objective.text}\n{run.method}, lr = {run.lr:g}, "
                 f"{len(run.steps) - 1} steps", fontsize=10)
    ax.legend(loc="best")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def write_trajectory(run: Trajectory, out_dir: Path) -> list[Path]:
    """Write ``path.csv`` and (1 or 2 variables) ``path.png`` atomically into ``out_dir``."""
    out_dir = Path(out_dir)
    written = [out_dir / "path.csv"]
    atomic_write(written[0], trajectory_csv(run))
    png = trajectory_png(run)
    if png is not None:
        written.append(out_dir / "path.png")
        atomic_write(written[1], png)
    return written
