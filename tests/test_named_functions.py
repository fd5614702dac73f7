"""Named functions: each is declared once, and every part of derive reads it from there.

A named function (σ, softplus, Φ, ...) is a ``NamedFunction`` subclass in
derive/calculus/functions.py that carries all of its facts. The tables below run over
the registry, so a new named function is tested by being declared: a fact it forgets
fails ``test_declares_every_fact`` naming it, and a consumer that cannot handle it fails
the test named after that consumer. A throwaway function declared here, √(u² + 1), shows
that the declaration alone is enough for every consumer.
"""

import math

import mpmath
import numpy as np
import pytest
import sympy as sp

from derive.calculus.functions import (
    NAMED_FUNCTIONS,
    MissingFactError,
    NamedFunction,
    StableRewrite,
    explicit,
)
from derive.calculus.stability import rewrites, stabilise
from derive.codegen import runtime
from derive.codegen.printer import UnsupportedError, numba_code
from derive.errors import DeriveError
from derive.formula import SYMPY_FUNCTIONS, functions, parse_formula
from derive.latex.numeric import compile_numeric
from derive.latex.printer import WORDS, DerivePrinter
from derive.latex.render import language
from derive.minimize import minimize, parse_objective

#: Every fact a named function declares (None where it has none).
FACTS = ("formula_name", "arity", "numba_name", "numba_helpers", "numpy_value",
         "mpmath_value", "latex_name", "explicit_in", "stable_rewrites")
#: Arguments values are compared at: both tails, the middle, and where overflow lurks.
POINTS = (-30.0, -4.5, -0.7, 0.0, 0.35, 2.9, 30.0)
#: Beyond what a naive exp-based evaluation survives in float64.
EXTREMES = (-1000.0, 1000.0)

REGISTERED = list(NAMED_FUNCTIONS.values())
IDS = [f.__name__ for f in REGISTERED]
named = pytest.mark.parametrize("fn", REGISTERED, ids=IDS)


def where_to_add(fn, fact: str) -> str:
    return (f"{fn.__name__} declares no {fact}: add `{fact} = ...` to its class in "
            "derive/calculus/functions.py")


def arguments(fn):
    return sp.symbols(f"u0:{fn.arity}", real=True)


def latex_printer():
    words = language("en").words
    return DerivePrinter({"words": {w: words[w] for w in WORDS}})


def exact(fn, t: float) -> mpmath.mpf:
    """fn(t) from its explicit form in SymPy's own functions, to 60 digits.

    Worked in 400 digits: the explicit forms cancel in the tails (1 + erf(−21) is 1e−198).
    """
    u = sp.Symbol("u", real=True)
    spelled = sp.lambdify(u, explicit(fn(u)), "mpmath")
    with mpmath.workdps(400):
        value = spelled(mpmath.mpf(t))
    with mpmath.workdps(60):
        return +value


def close(value, expected, rel=1e-12) -> bool:
    return abs(value - expected) <= rel * abs(expected) + 1e-300


# --- the declaration ------------------------------------------------------------------------


@named
def test_declares_every_fact(fn):
    missing = [fact for fact in FACTS if not hasattr(fn, fact)]
    assert not missing, "; ".join(where_to_add(fn, fact) for fact in missing)
    assert isinstance(fn.numba_helpers, tuple), where_to_add(fn, "numba_helpers (a tuple)")
    assert all(isinstance(r, StableRewrite) for r in fn.stable_rewrites), \
        f"{fn.__name__}.stable_rewrites holds something that is not a StableRewrite"


def test_names_are_unique():
    formula_names = [f.formula_name for f in REGISTERED if f.formula_name is not None]
    assert len(formula_names) == len(set(formula_names))
    clash = set(formula_names) & set(SYMPY_FUNCTIONS)
    assert not clash, f"{sorted(clash)} would hide SymPy's function of that name in formulas"
    rules = [r.name for r in rewrites()]
    assert len(rules) == len(set(rules)), f"two stability rules share a name: {rules}"


@named
def test_explicit_form_is_free_of_named_functions_and_has_the_same_derivative(fn):
    if fn.explicit_in is None:
        pytest.skip(f"{fn.__name__} has no explicit form")
    args = arguments(fn)
    spelled = explicit(fn(*args))
    assert not spelled.atoms(NamedFunction), \
        f"{fn.__name__}(...).rewrite({fn.explicit_in.__name__}) still holds a named function"
    for a in args:
        # fdiff (the derivative derive uses) against diff of the explicit form.
        ours, theirs = explicit(sp.diff(fn(*args), a)), sp.diff(spelled, a)
        for t in POINTS[1:-1]:
            at = {b: sp.Float(t + i / 3, 30) for i, b in enumerate(args)}
            assert close(float(ours.subs(at).evalf(30)), float(theirs.subs(at).evalf(30)),
                         rel=1e-12), f"{fn.__name__}'s fdiff disagrees with its explicit form"


@pytest.mark.parametrize("rule", rewrites(), ids=[r.name for r in rewrites()])
def test_each_stable_rewrite_replaces_its_unsafe_spelling_by_an_equal_one(rule):
    v = sp.Symbol("v", real=True)
    unsafe = rule.unsafe(v)
    safe = rule.apply(unsafe)
    assert safe is not None and safe != unsafe, f"the rule {rule.name!r} misses {unsafe}"
    assert stabilise(unsafe) == stabilise(safe)
    for t in (0.35, 2.9):
        before, after = (explicit(e).subs(v, t).evalf(30) for e in (unsafe, safe))
        assert close(float(after), float(before)), f"{rule.name}: {unsafe} ≠ {safe}"


@named
def test_its_stable_rewrites_introduce_it(fn):
    v = sp.Symbol("v", real=True)
    for rule in fn.stable_rewrites:
        assert rule.apply(rule.unsafe(v)).has(fn), \
            f"{fn.__name__}'s rule {rule.name!r} does not introduce {fn.__name__}"


# --- every consumer ---------------------------------------------------------------------------


@named
def test_formula_parser_calls_it_by_its_name(fn):
    if fn.formula_name is None:
        assert fn not in [f for f, _ in functions().values()]
        pytest.skip(f"formulas do not call {fn.__name__}")
    args = arguments(fn)
    text = f"{fn.formula_name}({', '.join(a.name for a in args)})"
    assert parse_formula(text, {a.name: a for a in args}) == fn(*args)


@named
def test_numba_printer_spells_it_and_the_runtime_defines_its_helpers(fn):
    args = arguments(fn)
    if fn.numba_name is None:
        with pytest.raises(UnsupportedError, match=fn.__name__):
            numba_code(fn(*args))
        pytest.skip(f"kernels do not compute {fn.__name__}")
    code, helpers = numba_code(fn(*args))
    assert code == f"{fn.numba_name}({', '.join(a.name for a in args)})"
    assert set(fn.numba_helpers) <= helpers
    for helper in fn.numba_helpers:
        assert callable(getattr(runtime, helper, None)), \
            f"{fn.__name__} needs the runtime helper {helper!r}, which derive/codegen/runtime.py " \
            "does not define"


@named
def test_latex_printer_writes_its_name(fn):
    u = sp.Symbol("u", real=True)
    if fn.latex_name is None or fn.arity != 1:
        pytest.skip(f"{fn.__name__} is not printed as name(argument)")
    assert latex_printer().doprint(fn(u)) == f"{fn.latex_name}(u)"
    assert latex_printer().doprint(fn(u) ** 2) == f"{fn.latex_name}^{{2}}(u)"
    assert sp.latex(fn(u)) == rf"{fn.latex_name}\left(u\right)"


@named
def test_lecture_numbers_use_its_mpmath_value(fn):
    if fn.mpmath_value is None or fn.arity != 1:
        pytest.skip(f"{fn.__name__} has no high-precision value")
    u = sp.Symbol("u", real=True)
    fast = compile_numeric(fn(u), u)
    for t in POINTS:
        assert close(fast(t), exact(fn, t), rel=mpmath.mpf(10) ** -40), \
            f"{fn.__name__}.mpmath_value({t}) disagrees with its explicit form"


@named
def test_minimize_uses_its_numpy_value(fn):
    if fn.numpy_value is None:
        pytest.skip(f"{fn.__name__} has no NumPy value")
    grid = np.array(POINTS + EXTREMES)
    with np.errstate(over="raise", invalid="raise"):
        values = fn.numpy_value(grid)
    assert np.isfinite(values).all(), f"{fn.__name__}.numpy_value overflows"
    for t, value in zip(POINTS, values, strict=False):
        assert close(value, exact(fn, t)), f"{fn.__name__}.numpy_value({t}) = {value}"
    if fn.formula_name is None or fn.arity != 1:
        return
    run = minimize(parse_objective(f"{fn.formula_name}(w1)"), [1000.0], steps=0)
    assert run.steps[0].f == pytest.approx(float(fn.numpy_value(1000.0)), rel=1e-15)


# --- a new named function is one declaration ---------------------------------------------------


def _example_hypot_from_sqrt(e):
    # √(u² + 1) squares u first and overflows for |u| > 1e154; hypot does not.
    if isinstance(e, sp.Pow) and e.exp == sp.S.Half and isinstance(e.base, sp.Add) \
            and len(e.base.args) == 2 and sp.S.One in e.base.args:
        (square,) = [a for a in e.base.args if a is not sp.S.One]
        if isinstance(square, sp.Pow) and square.exp == 2:
            return NAMED_FUNCTIONS["example_hypot"](square.base)
    return None


@pytest.fixture
def example_hypot():
    """√(u² + 1), declared as a new named function would be; unregistered afterwards.

    Named example_hypot, not hypot1: a real catalogue function may take that name.
    """

    class example_hypot(NamedFunction):  # noqa: N801
        formula_name = "example_hypot"
        numba_name = "example_hypot"
        numba_helpers = ("example_hypot",)
        latex_name = r"\operatorname{hyp}"
        explicit_in = sp.Pow
        stable_rewrites = (StableRewrite("example_hypot", "u² overflows", _example_hypot_from_sqrt,
                                         lambda v: sp.sqrt(v**2 + 1)),)
        numpy_value = staticmethod(lambda u: np.hypot(u, 1.0))
        mpmath_value = staticmethod(lambda u: mpmath.hypot(u, 1))

        def fdiff(self, argindex=1):
            return self.args[0] / self

        def _eval_rewrite_as_Pow(self, arg, **kwargs):
            return sp.sqrt(arg**2 + 1)

    try:
        yield example_hypot
    finally:
        del NAMED_FUNCTIONS["example_hypot"]


def test_a_new_named_function_needs_only_its_declaration(example_hypot):
    x = sp.Symbol("x", real=True)
    assert parse_formula("example_hypot(x)", {"x": x}) == example_hypot(x)
    assert numba_code(example_hypot(x)) == ("example_hypot(x)", {"example_hypot"})
    assert latex_printer().doprint(example_hypot(x)) == r"\operatorname{hyp}(x)"
    assert stabilise(sp.sqrt(x**2 + 1) * sp.exp(x)) == example_hypot(x) * sp.exp(x)
    assert "example_hypot" in [rule.name for rule in rewrites()]
    assert explicit(example_hypot(x)) == sp.sqrt(x**2 + 1)
    value = float(compile_numeric(example_hypot(x), x)(3.0))
    assert value == pytest.approx(math.sqrt(10), rel=1e-15)
    run = minimize(parse_objective("example_hypot(w1)"), [3.0], steps=1, lr=0.5)
    assert run.steps[0].f == pytest.approx(math.sqrt(10), rel=1e-15)
    assert run.steps[1].w[0] == pytest.approx(3.0 - 0.5 * 3.0 / math.sqrt(10), rel=1e-15)


def test_a_forgotten_fact_is_named_with_where_to_add_it():
    class half_declared(NamedFunction):  # noqa: N801
        formula_name = "half_declared"

    try:
        x = sp.Symbol("x", real=True)
        missing = [fact for fact in FACTS if not hasattr(half_declared, fact)]
        assert missing == ["numba_name", "numba_helpers", "numpy_value", "mpmath_value",
                           "latex_name", "explicit_in", "stable_rewrites"]
        with pytest.raises(MissingFactError, match=r"half_declared.*numba_name.*"
                                                   r"derive/calculus/functions\.py"):
            numba_code(half_declared(x))
        with pytest.raises(MissingFactError, match="latex_name"):
            latex_printer().doprint(half_declared(x))
        # A user's declaration error: the CLI says what to add (exit 2), not "internal error".
        assert issubclass(MissingFactError, DeriveError)
    finally:
        del NAMED_FUNCTIONS["half_declared"]


def test_a_name_is_declared_once():
    with pytest.raises(TypeError, match="sigmoid"):
        class sigmoid(NamedFunction):  # noqa: N801
            pass
    assert NAMED_FUNCTIONS["sigmoid"].formula_name == "sigmoid"
