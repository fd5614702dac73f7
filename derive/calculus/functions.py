"""Named functions SymPy does not have, each declared once with everything it needs.

Giving σ and softplus names (rather than leaving 1/(1+e^{-u}) spelled out) is what makes
derivatives come out in the notes' forms — σ' = σ(1−σ) — and what lets the printers
choose an overflow-free evaluation for each.

Each named function is one :class:`NamedFunction` subclass that carries all of its facts:
the name a typed formula calls it by, its spelling in generated kernels and the runtime
helpers that spelling needs, its NumPy/SciPy and mpmath values, its LaTeX, the SymPy
function its explicit form is written in, and the unsafe spellings it replaces. Defining
the class registers it in :data:`NAMED_FUNCTIONS`; the formula parser, the printers,
numeric evaluation, ``derive minimize`` and the stability rewrites read the facts from
there, so a new named function is added here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import mpmath
import sympy as sp

from derive.errors import DeclarationError


@dataclass(frozen=True)
class StableRewrite:
    """One stability rule: a matcher that returns the safe replacement or ``None``.

    Attributes
    ----------
    name : str
        Short name of the rule.
    why : str
        The numerical trouble of the spelling it replaces.
    apply : callable
        ``apply(node) -> replacement or None``, tried on every node bottom-up.
    unsafe : callable
        ``unsafe(v)``: an instance of the spelling it replaces, for tests to try it on.

    """

    name: str
    why: str
    apply: Callable[[sp.Basic], sp.Basic | None]
    unsafe: Callable[[sp.Symbol], sp.Expr]


class MissingFactError(DeclarationError, AttributeError):
    """A named function was read for a fact its class does not declare.

    A declaration error (the CLI says what to add, exit 2, not an internal error), and an
    ``AttributeError`` so that ``hasattr`` answers False for the fact.
    """


class _Fact:
    """A fact every named function declares; reading an undeclared one says what to add.

    A subclass declares the fact as an ordinary class attribute, which hides this
    descriptor. It is an ``AttributeError``, so ``hasattr`` answers False for it.
    """

    def __init__(self, what: str):
        self.what = what

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, instance, owner):
        raise MissingFactError(
            f"the named function {owner.__name__!r} does not declare {self.name} "
            f"({self.what}).",
            fix=f"Add `{self.name} = ...` to its class in derive/calculus/functions.py "
                "(None if it has none).")


#: Every named function, by class name, in the order the classes are defined.
NAMED_FUNCTIONS: dict[str, type[NamedFunction]] = {}


class NamedFunction(sp.Function):
    """A function derive names, with every fact the rest of derive needs about it.

    Subclasses register themselves in :data:`NAMED_FUNCTIONS` and declare each fact
    below as a class attribute (``None`` where the function has none); the values are
    static methods. Reading a fact a subclass forgot raises :class:`MissingFactError`
    naming it.

    Attributes
    ----------
    formula_name : str or None
        The name a typed formula (``--expr``, ``derive minimize``) calls it by.
    arity : int
        How many arguments a formula passes it.
    numba_name : str or None
        Its call in generated kernels.
    numba_helpers : tuple of str
        The runtime helpers that call needs (the emitter includes them).
    numpy_value : callable or None
        Overflow-free value of NumPy arrays (SciPy, NumPy), for ``derive minimize``.
    mpmath_value : callable or None
        High-precision value of mpmath numbers, for the lecture's graphs and tables.
    latex_name : str or None
        The LaTeX of its name; it prints as ``name(argument)``.
    explicit_in : sympy function or None
        The SymPy function its explicit form is written in (``rewrite`` target): σ in
        ``exp``, Φ in ``erf``. None for a function with no closed form.
    stable_rewrites : tuple of StableRewrite
        Unsafe spellings of it that the stability pass replaces by it.
    in_unit_interval : bool
        Whether its values lie in (0, 1). Applied to an array it makes a gate, a fraction
        that scales what it multiplies, and a lecturer names it first: f c, r v.
        False unless a subclass says so.

    """

    formula_name = _Fact("the name a typed formula calls it by")
    arity = 1
    numba_name = _Fact("its call in generated Numba kernels")
    numba_helpers = _Fact("the names of the runtime helpers that call needs")
    numpy_value = _Fact("its NumPy/SciPy value, a staticmethod of arrays")
    mpmath_value = _Fact("its mpmath value, a staticmethod of mpmath numbers")
    latex_name = _Fact("the LaTeX of its name")
    explicit_in = _Fact("the SymPy function its explicit form is written in")
    stable_rewrites = _Fact("the unsafe spellings it replaces, as StableRewrite rules")
    in_unit_interval = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__name__ in NAMED_FUNCTIONS:
            raise TypeError(f"a named function {cls.__name__!r} is already defined")
        NAMED_FUNCTIONS[cls.__name__] = cls

    def _eval_evalf(self, prec):
        if self.explicit_in is None:
            return super()._eval_evalf(prec)
        return self.rewrite(self.explicit_in)._eval_evalf(prec)

    def _latex(self, printer, exp=None):
        # For SymPy's own latex(); derive's LaTeX printer prints latex_name itself.
        if self.latex_name is None:
            return printer._print_Function(self, exp)
        args = ", ".join(printer._print(a) for a in self.args)
        body = rf"{self.latex_name}\left({args}\right)"
        return rf"{body}^{{{exp}}}" if exp else body


def _one_plus_exp(e: sp.Basic) -> sp.Expr | None:
    """Return v when ``e`` is 1 + exp(v)."""
    if isinstance(e, sp.Add) and len(e.args) == 2 and sp.S.One in e.args:
        (other,) = [a for a in e.args if a is not sp.S.One]
        if isinstance(other, sp.exp):
            return other.args[0]
    return None


def _sigmoid_from_reciprocal(e):
    if isinstance(e, sp.Pow) and e.exp == -1:
        v = _one_plus_exp(e.base)
        if v is not None:
            return sigmoid(-v)
    return None


def _sigmoid_from_ratio(e):
    # exp(v)·σ(−v) is σ(v), but the left side overflows to inf·0 for large v.
    if not isinstance(e, sp.Mul):
        return None
    for f in e.args:
        if isinstance(f, sp.exp) and sigmoid(-f.args[0]) in e.args:
            rest = [a for a in e.args if a not in (f, sigmoid(-f.args[0]))]
            return sp.Mul(*rest) * sigmoid(f.args[0])
    return None


def _softplus_from_log(e):
    if isinstance(e, sp.log):
        v = _one_plus_exp(e.args[0])
        if v is not None:
            return softplus(v)
    return None


def _normal_cdf_from_erf(e):
    # 1 + erf(u) → 0 as u → −∞ and loses every digit; 2Φ(√2 u), printed with erfc,
    # keeps them.
    if isinstance(e, sp.Add) and sp.S.One in e.args:
        for term in e.args:
            if isinstance(term, sp.erf):
                rest = [a for a in e.args if a not in (term, sp.S.One)]
                return sp.Add(*rest) + 2 * normal_cdf(sp.sqrt(2) * term.args[0])
    return None


class sigmoid(NamedFunction):  # noqa: N801  (SymPy functions are lower-case)
    r"""The logistic function :math:`\sigma(u) = 1/(1+e^{-u})`."""

    formula_name = "sigmoid"
    numba_name = "sigmoid"
    numba_helpers = ("sigmoid",)
    latex_name = r"\sigma"
    explicit_in = sp.exp
    in_unit_interval = True
    stable_rewrites = (
        StableRewrite("sigmoid", "1/(1+e^{-v}) overflows in e^{-v} for v → −∞",
                      _sigmoid_from_reciprocal, lambda v: 1 / (1 + sp.exp(-v))),
        StableRewrite("sigmoid-ratio", "e^{v}/(1+e^{v}) is inf/inf for v → +∞",
                      _sigmoid_from_ratio, lambda v: sp.exp(v) * sigmoid(-v)),
    )

    @staticmethod
    def numpy_value(u):
        """SciPy's expit, which never overflows."""
        from scipy.special import expit

        return expit(u)

    @staticmethod
    def mpmath_value(u):
        """1/(1 + e^{−u}) in mpmath (which has no overflow to avoid)."""
        return 1 / (1 + mpmath.exp(-u))

    @classmethod
    def eval(cls, arg):
        """Exact values at 0 and ±∞."""
        if arg.is_zero:
            return sp.S.Half
        if arg is sp.S.Infinity:
            return sp.S.One
        if arg is sp.S.NegativeInfinity:
            return sp.S.Zero
        return None

    def fdiff(self, argindex=1):
        """σ' = σ(1 − σ): the derivative reuses the function's own value."""
        s = sigmoid(self.args[0])
        return s * (1 - s)

    def _eval_is_real(self):
        return self.args[0].is_real

    def _eval_is_positive(self):
        return True if self.args[0].is_real else None

    def _eval_rewrite_as_exp(self, arg, **kwargs):
        return 1 / (1 + sp.exp(-arg))


class softplus(NamedFunction):  # noqa: N801
    r"""The soft rectifier :math:`\log(1 + e^{u})`."""

    formula_name = "softplus"
    numba_name = "softplus"
    numba_helpers = ("softplus",)
    latex_name = r"\operatorname{softplus}"
    explicit_in = sp.exp
    stable_rewrites = (
        StableRewrite("softplus", "log(1+e^{v}) overflows for v → +∞", _softplus_from_log,
                      lambda v: sp.log(1 + sp.exp(v))),
    )

    @staticmethod
    def numpy_value(u):
        """log(e⁰ + eᵘ) by NumPy's logaddexp, which never overflows."""
        import numpy as np

        return np.logaddexp(0.0, u)

    @staticmethod
    def mpmath_value(u):
        """log1p(e^{u}), written so that e^{u} is never large."""
        if u < 0:
            return mpmath.log1p(mpmath.exp(u))
        return u + mpmath.log1p(mpmath.exp(-u))

    @classmethod
    def eval(cls, arg):
        """Exact values at ±∞."""
        if arg is sp.S.NegativeInfinity:
            return sp.S.Zero
        if arg is sp.S.Infinity:
            return sp.S.Infinity
        return None

    def fdiff(self, argindex=1):
        """Softplus' = σ."""
        return sigmoid(self.args[0])

    def _eval_is_real(self):
        return self.args[0].is_real

    def _eval_rewrite_as_exp(self, arg, **kwargs):
        return sp.log(1 + sp.exp(arg))

    _eval_rewrite_as_log = _eval_rewrite_as_exp


class normal_cdf(NamedFunction):  # noqa: N801
    r"""The standard normal CDF :math:`\Phi(u) = (1 + \operatorname{erf}(u/\sqrt{2}))/2`."""

    formula_name = "normal_cdf"
    numba_name = "normal_cdf"
    numba_helpers = ("normal_cdf",)
    latex_name = r"\Phi"
    explicit_in = sp.erf
    stable_rewrites = (
        StableRewrite("normal-cdf", "1+erf(u) cancels for u → −∞", _normal_cdf_from_erf,
                      lambda v: 1 + sp.erf(v)),
    )

    @staticmethod
    def numpy_value(u):
        """SciPy's ndtr, accurate in the lower tail."""
        from scipy.special import ndtr

        return ndtr(u)

    mpmath_value = staticmethod(mpmath.ncdf)

    @classmethod
    def eval(cls, arg):
        """Exact values at 0 and ±∞."""
        if arg.is_zero:
            return sp.S.Half
        if arg is sp.S.Infinity:
            return sp.S.One
        if arg is sp.S.NegativeInfinity:
            return sp.S.Zero
        return None

    def fdiff(self, argindex=1):
        """Φ' is the standard normal density."""
        u = self.args[0]
        return sp.exp(-(u**2) / 2) / sp.sqrt(2 * sp.pi)

    def _eval_is_real(self):
        return self.args[0].is_real

    def _eval_rewrite_as_erf(self, arg, **kwargs):
        return (1 + sp.erf(arg / sp.sqrt(2))) / 2


class uniform01(NamedFunction):  # noqa: N801
    """A uniform draw in [0, 1) that is a pure function of (seed, position).

    Kernels regenerate the same draw in forward and backward; nothing is
    differentiable through it. Only kernels compute it: formulas cannot call it and it
    has no value outside a kernel.
    """

    formula_name = None
    arity = 2
    numba_name = "uniform01"
    numba_helpers = ("uniform01",)
    numpy_value = None
    mpmath_value = None
    latex_name = None
    explicit_in = None
    stable_rewrites = ()

    def fdiff(self, argindex=1):
        """A draw does not depend smoothly on its seed or position."""
        return sp.S.Zero

    def _eval_is_real(self):
        return True


class Factors(sp.Expr):
    r"""A product written factor by factor, as a lecture splits a fraction.

    ``Factors(1/(1 + e^{-x}), e^{-x}/(1 + e^{-x}))`` prints as the two fractions side by
    side, where SymPy's ``Mul`` would merge them back into e^{−x}/(1 + e^{−x})². It
    evaluates (``doit``) as the product it stands for.
    """

    def __new__(cls, *factors):
        """The factors, in the order they are written."""
        return sp.Expr.__new__(cls, *[sp.sympify(f) for f in factors])

    #: Printed with the precedence of a product.
    precedence = 50

    def doit(self, **hints):
        """The product of the factors."""
        return sp.Mul(*[f.doit(**hints) for f in self.args])

    def _eval_is_real(self):
        return all(f.is_real for f in self.args) or None


class Terms(sp.Expr):
    r"""A sum written term by term, before its terms cancel (1 + e^{-x} - 1).

    SymPy's ``Add`` would cancel them on sight; a lecture shows them first. Evaluates
    (``doit``) as the sum it stands for.
    """

    #: Printed with the precedence of a sum (parenthesised inside a product).
    precedence = 40

    def __new__(cls, *terms):
        """The terms, in the order they are written."""
        return sp.Expr.__new__(cls, *[sp.sympify(t) for t in terms])

    def doit(self, **hints):
        """The sum of the terms."""
        return sp.Add(*[t.doit(**hints) for t in self.args])

    def _eval_is_real(self):
        return all(t.is_real for t in self.args) or None


#: The named functions that have an explicit form (their definitions are stated in steps).
NAMED = tuple(f for f in NAMED_FUNCTIONS.values() if f.explicit_in is not None)


def explicit(expr: sp.Expr) -> sp.Expr:
    """Spell out derive's named functions in SymPy's own (for ``diff``-based checks)."""
    return expr.replace(
        lambda e: isinstance(e, NamedFunction) and e.explicit_in is not None,
        lambda e: e.rewrite(e.explicit_in),
    )
