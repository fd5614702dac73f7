"""NumbaPrinter: SymPy expressions → Python source that compiles inside ``@njit`` loops.

SymPy's NumPyPrinter emits ``numpy.select`` and ``functools.reduce``, which Numba cannot
compile in a scalar loop. This printer emits scalar Python: conditional expressions,
``math.*``, nested ``max``/``min``, full-precision float literals, and calls to the
embedded helpers of :mod:`derive.codegen.runtime`. It is strict: anything it has no
rule for raises instead of printing something Numba would reject later.
"""

from __future__ import annotations

import math

import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p
from sympy.printing.pycode import PythonCodePrinter

from derive.calculus.functions import NamedFunction

#: SymPy's own functions → (name in generated code, embedded helper it needs or None).
#: derive's named functions declare their spelling themselves (``numba_name``).
FUNCTIONS: dict[type, tuple[str, str | None]] = {
    sp.exp: ("vexp", "vexp"),
    sp.log: ("math.log", None),
    log1p: ("math.log1p", None),
    expm1: ("math.expm1", None),
    sp.tanh: ("math.tanh", None),
    sp.sinh: ("math.sinh", None),
    sp.cosh: ("math.cosh", None),
    sp.atan: ("math.atan", None),
    sp.sin: ("math.sin", None),
    sp.cos: ("math.cos", None),
    sp.erf: ("math.erf", None),
    sp.erfc: ("math.erfc", None),
    sp.Abs: ("abs", None),
    sp.sign: ("sign", "sign"),
}


class UnsupportedError(TypeError):
    """An expression node the NumbaPrinter has no rule for."""


class NumbaPrinter(PythonCodePrinter):
    """Print scalar SymPy expressions as Numba-compilable Python.

    Parameters
    ----------
    names : dict, optional
        Symbol → name in the generated code (e.g. ``x`` → ``x_i``).

    Attributes
    ----------
    helpers : set of str
        The embedded helpers the printed code calls, for the emitter to include.

    """

    printmethod = "_numbacode"

    def __init__(self, names: dict | None = None):
        super().__init__({"fully_qualified_modules": True, "standard": "python3"})
        self.names = {k: v for k, v in (names or {}).items()}
        self.helpers: set[str] = set()

    # -- atoms -------------------------------------------------------------------
    def _print_Symbol(self, expr):
        return self.names.get(expr, expr.name)

    def _print_Float(self, expr):
        value = float(expr)
        if not math.isfinite(value):
            # repr would print `inf` or `nan`: names the generated module does not define.
            raise UnsupportedError(f"the constant {sp.sstr(expr, full_prec=False)[:20]} "
                                   "does not fit a 64-bit float")
        return repr(value)

    _print_Rational = _print_Float

    def _print_Integer(self, expr):
        if abs(int(expr)) >= 2**63:  # beyond int64, where Numba types integers
            return self._print_Float(expr)
        return str(int(expr))

    _print_NumberSymbol = _print_Float

    def _print_ImaginaryUnit(self, expr):
        raise UnsupportedError("a complex constant (the kernels compute in real floats)")

    _print_Pi = _print_Exp1 = _print_NumberSymbol

    def _print_BooleanTrue(self, expr):
        return "True"

    def _print_BooleanFalse(self, expr):
        return "False"

    def _print_Indexed(self, expr):
        base = self.names.get(expr.base, str(expr.base))
        return f"{base}[{', '.join(self._print(i) for i in expr.indices)}]"

    def _print_floor(self, expr):
        # floor(a/b) of integers is a // b; printing math.floor(a/b) would go through
        # floating point.
        numerator, denominator = sp.fraction(sp.together(expr.args[0]))
        return f"(({self._print(numerator)}) // ({self._print(denominator)}))"

    def _print_Mod(self, expr):
        a, b = (self._print(arg) for arg in expr.args)
        return f"(({a}) % ({b}))"

    def _print_floordiv(self, expr):
        a, b = (self._print(arg) for arg in expr.args)
        return f"(({a}) // ({b}))"

    def _print_KroneckerDelta(self, expr):
        a, b = (self._print(arg) for arg in expr.args)
        return f"(1.0 if {a} == {b} else 0.0)"

    # -- arithmetic --------------------------------------------------------------
    def _print_Pow(self, expr, rational=False):
        base, exponent = expr.as_base_exp()
        if exponent == sp.S.Half:
            return f"math.sqrt({self._print(base)})"
        # The forms below are wrapped in parentheses because their text binds less
        # tightly than the ** the caller's precedence rules assume.
        if exponent == -sp.S.Half:
            return f"(1.0 / math.sqrt({self._print(base)}))"
        if exponent.is_Integer and exponent < 0:
            # 1/b**k keeps the loop in floats; Numba unrolls a constant integer power.
            inner = self._print(sp.Pow(base, -exponent, evaluate=False))
            return f"(1.0 / {inner})"
        return super()._print_Pow(expr, rational=rational)

    def _print_Max(self, expr):
        args = [self._print(a) for a in expr.args]
        out = args[0]
        for a in args[1:]:
            out = f"max({out}, {a})"
        return out

    def _print_Min(self, expr):
        args = [self._print(a) for a in expr.args]
        out = args[0]
        for a in args[1:]:
            out = f"min({out}, {a})"
        return out

    # -- functions ---------------------------------------------------------------
    def _print_Function(self, expr):
        if isinstance(expr, NamedFunction):
            return self._print_named_function(expr)
        rule = FUNCTIONS.get(type(expr))
        if rule is None:
            raise UnsupportedError(
                f"no Numba printing rule for {type(expr).__name__} in {expr} — "
                "add one to derive.codegen.printer.FUNCTIONS"
            )
        name, helper = rule
        if helper:
            self.helpers.add(helper)
        return f"{name}({', '.join(self._print(a) for a in expr.args)})"

    def _print_named_function(self, expr):
        # One method for every named function: its class declares how it is spelled.
        # (SymPy's printers look up _print_<Base> only for bases named ...Base.)
        name = expr.numba_name
        if name is None:
            raise UnsupportedError(
                f"{type(expr).__name__} has no Numba spelling (numba_name is None in "
                "derive.calculus.functions)")
        self.helpers.update(expr.numba_helpers)
        return f"{name}({', '.join(self._print(a) for a in expr.args)})"

    _print_exp = _print_log = _print_tanh = _print_erf = _print_Abs = _print_Function
    _print_sign = _print_sinh = _print_cosh = _print_atan = _print_Function
    _print_sin = _print_cos = _print_erfc = _print_Function

    def _print_log1p(self, expr):
        return self._print_Function(expr)

    _print_expm1 = _print_log1p

    def _print_Piecewise(self, expr):
        # Nested conditional expressions: Numba compiles them to selects, not branches.
        *pieces, (last, last_cond) = expr.args
        out = self._print(last)
        if last_cond is not sp.true:
            raise UnsupportedError(f"Piecewise without an otherwise branch: {expr}")
        for value, cond in reversed(pieces):
            out = f"({self._print(value)} if {self._print(cond)} else {out})"
        return out

    def emptyPrinter(self, expr):
        """Refuse anything without a rule (strict printing)."""
        raise UnsupportedError(f"no Numba printing rule for {type(expr).__name__}: {expr}")

    def _print_not_supported(self, expr):
        raise UnsupportedError(f"no Numba printing rule for {type(expr).__name__}: {expr}")


def numba_code(expr: sp.Expr, names: dict | None = None) -> tuple[str, set[str]]:
    """Print ``expr`` for a Numba kernel.

    Returns
    -------
    code : str
        The Python expression.
    helpers : set of str
        Embedded helpers the code calls.

    """
    printer = NumbaPrinter(names)
    return printer.doprint(expr), printer.helpers
