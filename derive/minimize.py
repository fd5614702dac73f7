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

from derive import registry, spec
from derive.calculus.functions import NAMED_FUNCTIONS
from derive.errors import DeriveError, FormulaError
from derive.files import atomic_write
from derive.formula import CONSTANTS, MAX_LENGTH, functions, parse_formula
from derive.spec import Optimizer

#: Newton's method needs the Hessian, which no catalogue optimizer uses: it is this lab's
#: own method, next to every optimizer declared in :mod:`derive.ops.optimizers`.
NEWTON = "newton"
#: The step size when none is given: the notes' 0.01 for every declared optimizer, 1 for
#: Newton's method (its natural step).
DEFAULT_LR = 0.01
NEWTON_LR = 1.0
MAX_VARIABLES = 20
MAX_STEPS = 100_000
#: Tree sizes beyond which a gradient, or the gradient a Hessian is derived from, is
#: refused (nested formulas grow with every derivative; these keep each run to seconds).
MAX_GRADIENT_SIZE = 50_000
MAX_HESSIAN_SOURCE = 1_000
#: Largest condition number of a Hessian that Newton's method will invert.
MAX_CONDITION = 1e12
#: Without --tol: stop when ‖∇f‖ falls to this fraction of its starting value (or to 0).
TOLERANCE = 1e-12
#: A gradient this many times larger than at the start (or than 1) means the run diverges;
#: stopping here says so long before the numbers overflow.
DIVERGED = 1e10
#: Hessian eigenvalues within this fraction of the largest one count as zero when a
#: stationary point is classified (rounding leaves ~1e-16 where the exact value is 0).
FLAT = 1e-8
#: Languages of the printed explanation (``derive minimize --lang``).
LANGUAGES = ("en", "pt")


def methods() -> tuple[str, ...]:
    """Every method ``derive minimize`` runs: the declared optimizers, then Newton's."""
    return (*(op.name for op in registry.all_ops("optimizer")), NEWTON)


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
class Stationary:
    """A point where the gradient vanished, classified by the Hessian's eigenvalues.

    Attributes
    ----------
    kind : str
        ``minimum`` (all eigenvalues positive), ``maximum`` (all negative), ``saddle``
        (both signs) or ``flat`` (some are zero: second derivatives cannot decide).
    eigenvalues : tuple of float
        The Hessian's eigenvalues there, ascending.

    """

    kind: str
    eigenvalues: tuple[float, ...]


@dataclass(frozen=True)
class Trajectory:
    """A minimisation run.

    Attributes
    ----------
    objective : Objective
    method : str
        A declared optimizer's name, or ``newton``.
    lr : float
        Step size (learning rate).
    params : tuple of (str, float)
        The method's other hyper-parameters, as used (β of momentum, Adam's β₁, …).
    steps : tuple of Step
        Start first. ``grad_norm`` is the exact gradient's norm, also when the steps
        followed a noisy one.
    stopped : str
        Why it ended before the requested number of steps, and what kind of point it
        reached ("" if it simply ran all of them).
    noise : float
        Standard deviation of the noise added to each gradient component (0: exact).
    seed : int
        Seed of that noise.
    tol : float or None
        The ‖∇f‖ at or below which it stops (None: 1e-12 times the starting ‖∇f‖).
    point : Stationary or None
        What the last point is, when the gradient vanished there.
    lang : str
        Language of ``stopped`` and of :func:`header`: ``en`` or ``pt``.

    """

    objective: Objective
    method: str
    lr: float
    params: tuple[tuple[str, float], ...]
    steps: tuple[Step, ...]
    stopped: str = ""
    noise: float = 0.0
    seed: int = 0
    tol: float | None = None
    point: Stationary | None = None
    lang: str = "en"


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
    return _Numeric(f, grad, _hessian_functions(objective) if newton else None)


def _hessian_functions(objective: Objective, *, required: bool = True):
    """The Hessian's entries as NumPy functions; None when too large and not ``required``."""
    # Each differentiation multiplies a nested formula's size; a Hessian of a large
    # gradient takes minutes to build, so it is refused up front, not attempted.
    if _size(objective.gradient, MAX_HESSIAN_SOURCE) > MAX_HESSIAN_SOURCE:
        if not required:
            return None
        raise FormulaError(
            "the formula is too large for a symbolic Hessian (its gradient has more "
            f"than {MAX_HESSIAN_SOURCE} terms).", where=f"formula {objective.text!r}",
            fix="Use --method gd or momentum for it.")
    vs = objective.variables
    return [[_numeric(_no_dirac(sp.diff(g, v)), vs) for v in vs] for g in objective.gradient]


def _hessian(num: _Numeric, w: np.ndarray) -> np.ndarray:
    return np.array([[_call(h, w) for h in row] for row in num.hessian])


def _eigenvalues(objective: Objective, w: np.ndarray) -> np.ndarray | None:
    """The Hessian's eigenvalues at w, ascending (None if it cannot be evaluated there)."""
    entries = _hessian_functions(objective, required=False)
    if entries is None:
        return None
    h = np.array([[_call(e, w) for e in row] for row in entries])
    if not np.isfinite(h).all():
        return None
    return np.linalg.eigvalsh((h + h.T) / 2)


def classify(eigenvalues) -> str:
    """``minimum``, ``maximum``, ``saddle`` or ``flat`` from a Hessian's eigenvalues.

    Eigenvalues within :data:`FLAT` of the largest in size count as zero: a zero
    eigenvalue means the second derivatives cannot tell (x⁴ and −x⁴ at 0 both have one),
    unless the others already have both signs, which makes a saddle regardless.
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    cut = FLAT * max(1.0, float(np.max(np.abs(lam))))
    up, down = bool((lam > cut).any()), bool((lam < -cut).any())
    if up and down:
        return "saddle"
    if (np.abs(lam) <= cut).any():
        return "flat"
    return "minimum" if up else "maximum"


# --- the methods: the declared optimizers' update equations, and Newton's step -----------


class _Declared:
    """A declared optimizer's update equations as NumPy functions of whole vectors.

    The equations are per element, so applying them to the vector of all variables at
    once is the same as applying them to each variable: w, g and the state slots are
    arrays, the hyper-parameters and the step count t scalars.
    """

    def __init__(self, op: Optimizer, hyper: dict, n: int):
        self.values = {p.symbol: hyper[p.symbol.name] for p in op.params}
        self.values |= {s.symbol: np.full(n, s.init) for s in op.state}
        self.updates = []
        for target, rhs in op.updates:
            args = tuple(sorted(rhs.free_symbols, key=lambda x: x.name))
            self.updates.append((target, args, _numeric(rhs, args)))

    def step(self, w: np.ndarray, g: np.ndarray, k: int) -> np.ndarray:
        values = self.values
        values |= {spec.w: w, spec.g: g, spec.t: k}
        for target, args, fn in self.updates:
            values[target] = np.broadcast_to(fn(*(values[a] for a in args)), w.shape).copy()
        return values[spec.w]


class _Newton:
    """w ← w − η H⁻¹ g with the symbolic Hessian H."""

    def __init__(self, num: _Numeric, lr: float):
        self.num, self.lr = num, lr

    def step(self, w: np.ndarray, g: np.ndarray, k: int) -> np.ndarray:
        return w - self.lr * _newton_direction(self.num, w, g, k)


def method_params(method: str) -> tuple[tuple[str, float], ...]:
    """A method's hyper-parameters and their defaults, the learning rate first."""
    if method == NEWTON:
        return (("lr", NEWTON_LR),)
    op = registry.get(method, "optimizer")
    return (("lr", DEFAULT_LR), *((p.symbol.name, p.default) for p in op.params[1:]))


def _check_method(method: str) -> None:
    if method not in methods():
        raise DeriveError(f"unknown method {method!r}.", where="--method",
                          fix=f"Use one of: {', '.join(methods())}.")


def _check_hyper(method: str, given: dict) -> dict:
    """The method's hyper-parameters: its defaults, overridden by ``given``, checked."""
    defaults = dict(method_params(method))
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise DeriveError(f"{method} has no parameter {unknown[0]!r}.", where="--param",
                          fix=f"Its parameters are: {', '.join(defaults)}.")
    hyper = defaults | given
    symbols = {} if method == NEWTON else {
        p.symbol.name: p for p in registry.get(method, "optimizer").params}
    for name, value in hyper.items():
        if not (isinstance(value, int | float) and math.isfinite(value)):
            raise DeriveError(f"{name} = {value!r} is not a finite number.", where="--param")
        declared = symbols.get(name)
        if declared is None:
            continue
        if declared.symbol.is_positive and value <= 0:
            raise DeriveError(f"{name} = {value:g} must be positive.", where="--param")
        if declared.symbol.is_nonnegative and value < 0:
            raise DeriveError(f"{name} = {value:g} must not be negative.", where="--param")
    return hyper


# --- descent ------------------------------------------------------------------------------


def _floats(w: np.ndarray) -> tuple[float, ...]:
    return tuple(float(v) for v in w)


def _check_options(lr, steps, momentum, noise, tol) -> None:
    if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise DeriveError(f"the learning rate {lr!r} is not a positive number.", where="--lr")
    if not (isinstance(steps, int) and 0 <= steps <= MAX_STEPS):
        raise DeriveError(f"{steps!r} steps: give a whole number from 0 to {MAX_STEPS}.",
                          where="--steps")
    if momentum is not None and not (isinstance(momentum, int | float) and 0 <= momentum < 1):
        raise DeriveError(f"the momentum {momentum!r} is not in [0, 1).", where="--momentum")
    if not (isinstance(noise, int | float) and math.isfinite(noise) and noise >= 0):
        raise DeriveError(f"the noise {noise!r} is not a number ≥ 0.", where="--noise",
                          fix="Give the standard deviation of the noise added to each "
                              "gradient component, e.g. --noise 0.5.")
    if tol is not None and not (isinstance(tol, int | float) and math.isfinite(tol)
                                and tol >= 0):
        raise DeriveError(f"the tolerance {tol!r} is not a number ≥ 0.", where="--tol",
                          fix="Stop when |grad f| falls to this value, e.g. --tol 1e-6.")


def minimize(objective: Objective, start, *, method: str = "gd", lr: float | None = None,
             steps: int = 10, momentum: float | None = None, params: dict | None = None,
             noise: float = 0.0, seed: int = 0, tol: float | None = None,
             lang: str = "en") -> Trajectory:
    """Minimise from ``start`` with a declared optimizer or Newton's method.

    Parameters
    ----------
    objective : Objective
        From :func:`parse_objective`.
    start : sequence of float
        One value per variable.
    method : str
        A declared optimizer (``gd``: w ← w − η∇f; ``momentum``: v ← μv − η∇f,
        w ← w + v; ``adam``, …: its declared update equations, applied to every
        variable), or ``newton``: w ← w − η H⁻¹∇f with the symbolic Hessian H.
    lr : float, optional
        η; 0.01 for the declared optimizers, 1 for Newton.
    steps : int
        Number of steps (fewer if the gradient vanishes or the iterates diverge).
    momentum : float, optional
        μ, for the methods that declare it (``momentum``, ``nesterov``); 0.9 by default.
    params : dict, optional
        Any other hyper-parameter of the method by name (``beta1``, ``eps``, …).
    noise : float
        Standard deviation of Gaussian noise added to each gradient component before every
        step: a stand-in for the gradient of a random sample (stochastic gradient
        descent). 0 follows the exact gradient.
    seed : int
        Seed of the noise: the same seed gives the same path.
    tol : float, optional
        Stop when ‖∇f‖ ≤ tol (by default when it falls to 1e-12 of its starting value).
    lang : str
        Language of the explanation of how the run ended: ``en`` or ``pt``.

    Returns
    -------
    Trajectory

    Raises
    ------
    DeriveError
        For invalid options, a start outside the formula's domain, or (Newton) a
        singular Hessian.

    """
    _check_method(method)
    if lang not in LANGUAGES:
        raise DeriveError(f"lang = {lang!r} is not a language of the explanation.",
                          where="--lang", fix=f"Give one of: {', '.join(LANGUAGES)}.")
    given = dict(params or {})
    # --param lr=... is the learning rate too; an explicit lr (--lr) wins over it.
    given_lr = given.pop("lr", dict(method_params(method))["lr"])
    lr = given_lr if lr is None else lr
    _check_options(lr, steps, momentum, noise, tol)
    if momentum is not None:
        if "mu" not in dict(method_params(method)):
            raise DeriveError(f"{method} has no momentum.", where="--momentum",
                              fix="Use --method momentum or nesterov with it.")
        given["mu"] = momentum
    hyper = _check_hyper(method, given | {"lr": lr})
    w = np.array(start, dtype=np.float64)
    if w.shape != (len(objective.variables),):
        raise DeriveError(f"the start has {w.size} values, the formula "
                          f"{len(objective.variables)} variables.", where="--start")
    num = _numbers(objective, method == NEWTON)
    f, g = num.value(w), num.gradient(w)
    if not (math.isfinite(f) and np.isfinite(g).all()):
        raise DeriveError(f"f or its gradient is not finite at the start w = {_vector(w)}.",
                          where=f"formula {objective.text!r}",
                          fix="Start inside the formula's domain (e.g. log needs a positive "
                              "argument) and where its values do not overflow.")
    g0 = _norm(g)
    limit = TOLERANCE * g0 if tol is None else tol
    path = [Step(0, _floats(w), f, g0)]
    shown = tuple((k, v) for k, v in hyper.items() if k != "lr")
    record = {"objective": objective, "method": method, "lr": float(lr), "params": shown,
              "noise": float(noise), "seed": int(seed), "tol": tol, "lang": lang}
    words = _WORDS[lang]
    if g0 == 0 or g0 <= limit:
        point = _stationary(objective, w)
        return Trajectory(steps=tuple(path), point=point, **record,
                          stopped=words["at start"].format(
                              how=words["zero" if g0 == 0 else "within tol"],
                              says=_says(point, lang)))
    rule = (_Newton(num, lr) if method == NEWTON else
            _Declared(registry.get(method, "optimizer"), hyper, len(w)))
    rng = np.random.default_rng(seed)
    stopped, point = "", None
    for k in range(1, steps + 1):
        step_g = g + noise * rng.standard_normal(g.shape) if noise else g
        with np.errstate(all="ignore"):  # overflow shows as inf, reported below
            w = rule.step(w, step_g, k)
        f, g = num.value(w), num.gradient(w)
        norm = _norm(g)
        path.append(Step(k, _floats(w), f, norm))
        finite = math.isfinite(f) and math.isfinite(norm) and np.isfinite(w).all()
        if not finite or norm > DIVERGED * max(g0, 1.0):
            stopped = _diverged(objective, method, lr, path, finite, lang)
            break
        if norm <= limit:
            point = _stationary(objective, w)
            if k < steps or point is not None and point.kind != "minimum":
                stopped = _converged(k, norm, tol, point, lang)
            break
    return Trajectory(steps=tuple(path), stopped=stopped, point=point, **record)


def _stationary(objective: Objective, w: np.ndarray) -> Stationary | None:
    lam = _eigenvalues(objective, w)
    return None if lam is None else Stationary(classify(lam), _floats(lam))


#: Everything the run says of how it ended, per language: what each kind of stationary
#: point means ({lam} is replaced by the eigenvalues), why it stopped, why it diverged.
_WORDS = {
    "en": {
        "minimum": "It is a minimum: the Hessian's eigenvalues ({lam}) are all positive, so "
                   "f curves upward in every direction.",
        "maximum": "It is a maximum, not a minimum: the Hessian's eigenvalues ({lam}) are "
                   "all negative, so f curves downward in every direction; descent only "
                   "stopped because it started exactly where the gradient points nowhere "
                   "else.",
        "saddle": "It is a saddle point, not a minimum: the Hessian's eigenvalues ({lam}) "
                  "have both signs, so f curves upward along some directions and downward "
                  "along others. Newton's method heads for any point where the gradient is "
                  "zero; gradient descent started off the saddle's ridge moves away from it.",
        "flat": "The second derivatives cannot tell what it is: the Hessian has a zero "
                "eigenvalue ({lam}), as x**4 and -x**4 both do at 0; look at f's higher "
                "derivatives or at its plot.",
        "unclassified": "(its Hessian could not be evaluated there, so it is not "
                        "classified.)",
        "at start": "the gradient is {how} at the start: it is a stationary point. {says}",
        "zero": "zero",
        "within tol": "within --tol",
        "vanished": "the gradient vanished",
        "tol": "|grad f| = {norm:.3g} is within --tol {tol:g}",
        "stopped": "stopped at step {k}: {why}, at a stationary point. {says}",
        "converged": "converged at step {k}: {why}. {says}",
        "not finite": "f(w) is no longer finite",
        "grew": "|grad f| grew from {first:.3g} to {last:.3g}",
        "unbounded": "diverged at step {k}: {what}, and f kept decreasing: f has no minimum "
                     "in that direction (it decreases without bound), so no learning rate "
                     "finds one. Start elsewhere, or minimise a function that is bounded "
                     "below.",
        "bound": " At the start the Hessian's largest eigenvalue is L = {big:.4g}; on a "
                 "quadratic with that curvature gradient descent converges only when "
                 "η < 2/L = {eta:.4g}.",
        "diverged": "diverged at step {k}: {what}. The step is too large, so each step lands "
                    "farther from the minimum than the last: lower --lr (now {lr:g}).{bound}",
        "header": "minimise {f} by {how}",
        "noise": "with gradient noise of standard deviation {noise:g} (seed {seed})",
        "until": "until |grad f| <= {tol:g}",
        "start": "start",
        "step": "step {k}",
    },
    "pt": {
        "minimum": "É um mínimo: os autovalores da hessiana ({lam}) são todos positivos, "
                   "então f se curva para cima em todas as direções.",
        "maximum": "É um máximo, não um mínimo: os autovalores da hessiana ({lam}) são todos "
                   "negativos, então f se curva para baixo em todas as direções; a descida "
                   "só parou porque partiu exatamente de um ponto onde o gradiente não "
                   "aponta para lugar nenhum.",
        "saddle": "É um ponto de sela, não um mínimo: os autovalores da hessiana ({lam}) têm "
                  "os dois sinais, então f se curva para cima em algumas direções e para "
                  "baixo em outras. O método de Newton vai para qualquer ponto onde o "
                  "gradiente é zero; a descida do gradiente que parte fora da crista da sela "
                  "se afasta dela.",
        "flat": "As derivadas segundas não dizem que ponto é esse: a hessiana tem um "
                "autovalor nulo ({lam}), como x**4 e -x**4 em 0; olhe as derivadas de ordem "
                "mais alta de f ou o seu gráfico.",
        "unclassified": "(não foi possível calcular a hessiana nesse ponto, então ele não "
                        "foi classificado.)",
        "at start": "o gradiente {how} no ponto inicial: é um ponto estacionário. {says}",
        "zero": "é zero",
        "within tol": "já está dentro de --tol",
        "vanished": "o gradiente se anulou",
        "tol": "|grad f| = {norm:.3g} está dentro de --tol {tol:g}",
        "stopped": "parou no passo {k}: {why}, num ponto estacionário. {says}",
        "converged": "convergiu no passo {k}: {why}. {says}",
        "not finite": "f(w) deixou de ser finito",
        "grew": "|grad f| cresceu de {first:.3g} para {last:.3g}",
        "unbounded": "divergiu no passo {k}: {what}, e f continuou diminuindo: f não tem "
                     "mínimo nessa direção (decresce sem limite), então nenhuma taxa de "
                     "aprendizado encontra um. Comece de outro ponto, ou minimize uma função "
                     "limitada inferiormente.",
        "bound": " No ponto inicial, o maior autovalor da hessiana é L = {big:.4g}; numa "
                 "quadrática com essa curvatura, a descida do gradiente só converge quando "
                 "η < 2/L = {eta:.4g}.",
        "diverged": "divergiu no passo {k}: {what}. O passo é grande demais, e cada passo "
                    "cai mais longe do mínimo que o anterior: reduza --lr (agora "
                    "{lr:g}).{bound}",
        "header": "minimizar {f} com {how}",
        "noise": "com ruído gaussiano de desvio padrão {noise:g} no gradiente (semente "
                 "{seed})",
        "until": "até |grad f| <= {tol:g}",
        "start": "início",
        "step": "passo {k}",
    },
}


def _says(point: Stationary | None, lang: str = "en") -> str:
    words = _WORDS[lang]
    if point is None:
        return words["unclassified"]
    return words[point.kind].format(lam=", ".join(f"{v:.4g}" for v in point.eigenvalues))


def _converged(k: int, norm: float, tol, point: Stationary | None, lang: str = "en") -> str:
    words = _WORDS[lang]
    why = words["vanished"] if tol is None else words["tol"].format(norm=norm, tol=tol)
    kind = "stopped" if point is not None and point.kind != "minimum" else "converged"
    return words[kind].format(k=k, why=why, says=_says(point, lang))


def _diverged(objective: Objective, method: str, lr: float, path: list[Step],
              finite: bool, lang: str = "en") -> str:
    words = _WORDS[lang]
    k, last = path[-1].k, path[-1]
    what = words["not finite"] if not finite else words["grew"].format(
        first=path[0].grad_norm, last=last.grad_norm)
    if last.f < path[0].f or last.f == -math.inf:
        return words["unbounded"].format(k=k, what=what)
    lam = _eigenvalues(objective, np.array(path[0].w))
    bound = ""
    if lam is not None and lam[-1] > 0 and method != NEWTON:
        big = float(lam[-1])
        bound = words["bound"].format(big=big, eta=2 / big)
    return words["diverged"].format(k=k, what=what, lr=lr, bound=bound)


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
    """The line before the steps: what is minimised, how, from where (in ``run.lang``)."""
    words = _WORDS[run.lang]
    how = ", ".join([run.method, f"lr = {run.lr:g}",
                     *(f"{name} = {value:g}" for name, value in run.params)])
    if run.noise:
        how += ", " + words["noise"].format(noise=run.noise, seed=run.seed)
    if run.tol is not None:
        how += ", " + words["until"].format(tol=run.tol)
    f = f"f({', '.join(run.objective.names)}) = {run.objective.expr}"
    return words["header"].format(f=f, how=how)


def step_line(step: Step, lang: str = "en") -> str:
    """One step as the notes print it: ``f = 192.08; w = [9.8 9.8]`` plus ‖∇f‖."""
    words = _WORDS[lang]
    label = words["start"] if step.k == 0 else words["step"].format(k=step.k)
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


def _label(run: Trajectory, runs: int) -> str:
    if run.noise:
        return f"{run.method}, noisy gradient (σ = {run.noise:g})"
    return f"{run.method}, exact gradient" if runs > 1 else f"{run.method} path"


def trajectory_png(run: Trajectory, compare: Trajectory | None = None) -> bytes | None:
    """The path over a contour plot of f (2 variables) or over f's graph (1 variable).

    ``compare``, another run on the same formula (e.g. the same method with the exact
    gradient beside a noisy one: the notes' GD-versus-SGD figure), is drawn too.
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
    runs = [run] if compare is None else [compare, run]
    paths = [np.array([s.w for s in r.steps if np.isfinite(s.w).all()]) for r in runs]
    pts = np.concatenate(paths)
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
        for r, path, colour in zip(runs, paths, ("dimgray", "tab:red")[-len(runs):],
                                   strict=True):
            ax.plot(path[:, 0], path[:, 1], "o-", color=colour, markersize=3,
                    linewidth=1.2, label=_label(r, len(runs)))
        ax.plot(pts[0, 0], pts[0, 1], "s", color="black", label="start")
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1])
        ax.set_aspect("equal", adjustable="datalim")
    else:
        x0, x1 = _window(pts[:, 0])
        grid = np.linspace(x0, x1, 401)
        ax.plot(grid, _grid_values(f, grid), color="tab:blue", label="f")
        for r, path, colour in zip(runs, paths, ("dimgray", "tab:red")[-len(runs):],
                                   strict=True):
            ax.plot(path[:, 0], [s.f for s in r.steps[:len(path)]], "o-", color=colour,
                    markersize=3, label=_label(r, len(runs)))
        ax.set_xlabel(names[0])
        ax.set_ylabel("f")
    ax.set_title(f"f = {run.objective.text}\n{run.method}, lr = {run.lr:g}, "
                 f"{len(run.steps) - 1} steps", fontsize=10)
    ax.legend(loc="best")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def write_trajectory(run: Trajectory, out_dir: Path,
                     compare: Trajectory | None = None) -> list[Path]:
    """Write ``path.csv`` and (1 or 2 variables) ``path.png`` atomically into ``out_dir``.

    ``compare`` is drawn in the plot beside ``run`` (see :func:`trajectory_png`); the CSV
    holds ``run`` only.
    """
    out_dir = Path(out_dir)
    written = [out_dir / "path.csv"]
    atomic_write(written[0], trajectory_csv(run))
    png = trajectory_png(run, compare)
    if png is not None:
        written.append(out_dir / "path.png")
        atomic_write(written[1], png)
    return written
