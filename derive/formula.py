"""Formulas typed by users: parsed into SymPy by walking Python's syntax tree.

Nothing a user types is ever evaluated. The text is parsed with :func:`ast.parse` and
each node is translated by hand; any node, name or function outside the whitelist is
refused with a message naming it.

Work is bounded twice. Structurally, before anything is differentiated: the text's
length and nesting, the size of every number, every exponent, and how many terms the
formula would have once multiplied out (what SymPy's ``expand`` and ``together`` build
when the derivation tidies a gradient) — so ``(x+1)**999*(x-1)**999`` is refused at once
rather than expanded for minutes. And by the clock: :func:`time_limit` stops the
symbolic work on one formula after :data:`TIME_LIMIT` seconds with an error naming it,
for whatever the structural bounds do not foresee.
"""

from __future__ import annotations

import ast
import difflib
import keyword
import math
import re
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p

from derive.calculus.functions import NAMED_FUNCTIONS
from derive.errors import FormulaError

#: SymPy's functions a formula may call: name → (SymPy function, number of arguments;
#: None means two or more). derive's named functions declare their own name
#: (``formula_name``); :func:`functions` gives both.
SYMPY_FUNCTIONS: dict[str, tuple[object, int | None]] = {
    "exp": (sp.exp, 1),
    "log": (sp.log, 1),
    "ln": (sp.log, 1),
    "log1p": (log1p, 1),
    "expm1": (expm1, 1),
    "sqrt": (sp.sqrt, 1),
    "abs": (sp.Abs, 1),
    "sign": (sp.sign, 1),
    "tanh": (sp.tanh, 1),
    "sinh": (sp.sinh, 1),
    "cosh": (sp.cosh, 1),
    "atan": (sp.atan, 1),
    "sin": (sp.sin, 1),
    "cos": (sp.cos, 1),
    "erf": (sp.erf, 1),
    "heaviside": (sp.Heaviside, 1),
    "max": (sp.Max, None),
    "min": (sp.Min, None),
}
CONSTANTS = {"pi": sp.pi, "e": sp.E}
MAX_LENGTH = 2000
MAX_DEPTH = 60
#: Largest magnitude of a numeric literal or constant power (beyond: not a real formula).
MAX_MAGNITUDE = 1e300
#: Largest exponent of a power of the variables (x**1000), after SymPy merges powers.
MAX_EXPONENT = 1000
#: Most sums multiplied together, as in (x + 1)**64 or (x+1)**32*(x-1)**32: multiplied
#: out, the coefficients grow to ~64 bits each and SymPy's expansion slows quadratically.
MAX_SUM_POWER = 64
#: Most terms the formula may have once multiplied out and put over one denominator.
MAX_TERMS = 500
#: Seconds the symbolic work on one formula (parse, derive, print) may take.
TIME_LIMIT = 30.0


def functions() -> dict[str, tuple[object, int | None]]:
    """Every function a formula may call: name → (function, number of arguments).

    SymPy's (:data:`SYMPY_FUNCTIONS`) and every named function that declares a
    ``formula_name``.
    """
    named = {f.formula_name: (f, f.arity) for f in NAMED_FUNCTIONS.values()
             if f.formula_name is not None}
    return {**SYMPY_FUNCTIONS, **named}

_BINARY = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
}
_NODE_WORDS = {
    ast.Attribute: "attribute access (a.b)",
    ast.Subscript: "indexing (a[b])",
    ast.Lambda: "a lambda",
    ast.Compare: "a comparison",
    ast.BoolOp: "and/or",
    ast.IfExp: "a conditional expression",
    ast.Starred: "*arguments",
    ast.JoinedStr: "an f-string",
    ast.List: "a list",
    ast.Tuple: "a tuple",
    ast.Dict: "a dict",
    ast.Set: "a set",
    ast.NamedExpr: "an assignment (:=)",
}


def _describe(node: ast.AST) -> str:
    for cls, words in _NODE_WORDS.items():
        if isinstance(node, cls):
            return words
    return type(node).__name__


class _Translator:
    def __init__(self, text: str, where: str, symbols: dict[str, sp.Symbol]):
        self.text, self.where, self.symbols = text, where, symbols

    def fail(self, what: str, node: ast.AST | None = None, fix: str = "") -> FormulaError:
        col = getattr(node, "col_offset", None)
        at = f" (at column {col + 1})" if col is not None else ""
        return FormulaError(f"{what}{at}.", where=f"{self.where} {_quote(self.text)}", fix=fix)

    def allowed(self) -> str:
        names = ", ".join(sorted(self.symbols) + sorted(CONSTANTS))
        return (
            f"Use numbers, + - * / **, the names {names}, "
            f"and the functions {', '.join(sorted(functions()))}."
        )

    def __call__(self, node: ast.AST, depth: int = 0) -> sp.Expr:
        if depth > MAX_DEPTH:
            raise self.fail(f"the formula nests deeper than {MAX_DEPTH} levels", node)
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            raise self.fail(f"{_describe(node)} is not allowed in a formula", node, self.allowed())
        return method(node, depth + 1)

    def _Expression(self, node, depth):
        return self(node.body, depth)

    def _Constant(self, node, depth):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(f"{value!r} is not a number", node, self.allowed())
        # Compare ints as ints: a 400-digit literal cannot even become a float.
        if (isinstance(value, float) and not math.isfinite(value)) or abs(value) > MAX_MAGNITUDE:
            shown = repr(value) if len(repr(value)) <= 20 else repr(value)[:17] + "..."
            raise self.fail(f"the number {shown} is out of range", node)
        if isinstance(value, int):
            return sp.Integer(value)
        return sp.Float(repr(value), 17)

    def _Name(self, node, depth):
        if node.id in self.symbols:
            return self.symbols[node.id]
        if node.id in CONSTANTS:
            return CONSTANTS[node.id]
        if node.id in functions():
            raise self.fail(f"{node.id} is a function; call it as {node.id}(...)", node)
        close = difflib.get_close_matches(node.id, list(self.symbols) + list(CONSTANTS), 2)
        hint = f"Did you mean {' or '.join(close)}? " if close else ""
        raise self.fail(
            f"unknown name {node.id!r}",
            node,
            f"{hint}Declare a parameter with --param {node.id}=VALUE, or use "
            f"{', '.join(sorted(self.symbols))}.",
        )

    def _UnaryOp(self, node, depth):
        operand = self(node.operand, depth)
        if isinstance(node.op, ast.USub):
            return -operand
        if isinstance(node.op, ast.UAdd):
            return operand
        raise self.fail(f"the operator {type(node.op).__name__} is not allowed", node)

    def _BinOp(self, node, depth):
        if isinstance(node.op, ast.BitXor):
            raise self.fail("^ is not a power in Python syntax", node, "Write x**2, not x^2.")
        left, right = self(node.left, depth), self(node.right, depth)
        if isinstance(node.op, ast.Pow):
            return self._power(left, right, node)
        rule = _BINARY.get(type(node.op))
        if rule is None:
            raise self.fail(f"the operator {type(node.op).__name__} is not allowed", node,
                            self.allowed())
        return self.checked(rule(left, right), node)

    def _power(self, base, exponent, node):
        if base.is_number and exponent.is_number:
            # Decide from floats first, so 2**10**10 is refused instead of computed.
            try:
                magnitude = abs(float(base)) ** float(exponent)
            except (OverflowError, ZeroDivisionError, TypeError):
                magnitude = math.inf
            if not magnitude <= MAX_MAGNITUDE:
                raise self.fail("a constant power is out of range", node)
        elif exponent.is_number and not _magnitude(exponent) <= MAX_EXPONENT:
            raise self.fail(f"an exponent beyond ±{MAX_EXPONENT} is not supported", node)
        elif exponent.is_Integer and base.is_Add and abs(int(exponent)) > MAX_SUM_POWER:
            raise self.fail(f"a sum raised to the power {exponent} is beyond what derive "
                            f"expands (at most {MAX_SUM_POWER})", node, "Use a smaller power.")
        return self.checked(sp.Pow(base, exponent), node)

    def checked(self, result: sp.Expr, node: ast.AST) -> sp.Expr:
        """Refuse a node whose value is a complex or out-of-range number.

        Checked at every node, so the column named is where the constant is made:
        ``sqrt(-1)`` is i, ``1e300*1e300`` overflows a float, and neither can be printed
        into a float64 kernel.
        """
        if result.has(sp.zoo, sp.nan, sp.oo, -sp.oo):
            raise self.fail("the formula divides a constant by zero", node)
        if result.is_number:
            if result.is_extended_real is False or result.has(sp.I):
                raise self.fail(f"the constant {_shown(result)} is not a real number", node,
                                "Formulas are real-valued: keep sqrt and log arguments "
                                "and fractional powers' bases of constants non-negative.")
            if not _magnitude(result) <= MAX_MAGNITUDE:
                raise self.fail("a constant is out of range (beyond ±1e300)", node)
        return result

    def _Call(self, node, depth):
        if not isinstance(node.func, ast.Name):
            raise self.fail(
                f"only named functions can be called; this calls {_describe(node.func)}",
                node,
                self.allowed(),
            )
        known = functions()
        if node.func.id not in known:
            called = node.func.id
            close = difflib.get_close_matches(str(called), list(known), 2)
            hint = f"Did you mean {' or '.join(close)}? " if close else ""
            raise self.fail(f"{called!r} is not an allowed function", node, hint + self.allowed())
        if node.keywords:
            raise self.fail(f"{node.func.id}() takes no keyword arguments", node)
        function, arity = known[node.func.id]
        args = [self(a, depth) for a in node.args]
        if (arity is not None and len(args) != arity) or (arity is None and len(args) < 2):
            wanted = f"{arity} argument(s)" if arity else "two or more arguments"
            raise self.fail(f"{node.func.id}() takes {wanted}, got {len(args)}", node)
        return self.checked(function(*args), node)


def _magnitude(number: sp.Expr) -> float:
    """|number| as a float: inf when it overflows a float or cannot be evaluated."""
    try:
        value = complex(sp.N(number, 15))
    except (TypeError, ValueError, OverflowError, ArithmeticError):
        return math.inf
    return abs(value) if math.isfinite(value.real) and math.isfinite(value.imag) else math.inf


def _shown(value: sp.Expr) -> str:
    text = str(value)
    return text if len(text) <= 30 else text[:27] + "..."


def _log_multinomial_terms(power: int, log_terms: float) -> float:
    """The log of how many terms (a₁ + … + a_t)**power has multiplied out (t = e**log_terms).

    That is C(power + t - 1, t - 1), computed through lgamma so that nothing overflows.
    """
    if log_terms <= 0 or power == 0:
        return 0.0
    if log_terms > 700:
        return math.inf
    terms = math.exp(log_terms)
    return math.lgamma(power + terms) - math.lgamma(power + 1) - math.lgamma(terms)


@dataclass(frozen=True)
class _Poly:
    """A numerator or denominator multiplied out, measured without multiplying it out.

    Attributes
    ----------
    log_terms : float
        log of (an upper bound on) its number of terms.
    degree : float
        Total degree in the generators (symbols, function calls, fractional powers).
    sum_power : float
        How many sums are multiplied together in it, (x+1)**3*(x-1)**2 counting 5: the
        coefficients, and SymPy's time to expand, grow with it.
    """

    log_terms: float = 0.0
    degree: float = 0.0
    sum_power: float = 0.0

    def times(self, other: _Poly) -> _Poly:
        return _Poly(self.log_terms + other.log_terms, self.degree + other.degree,
                     self.sum_power + other.sum_power)

    def power(self, k: int) -> _Poly:
        if self.log_terms <= 0:  # a monomial stays one term
            return _Poly(0.0, k * self.degree, k * self.sum_power)
        return _Poly(_log_multinomial_terms(k, self.log_terms), k * self.degree,
                     k * max(1.0, self.sum_power))


_ONE = _Poly()


class _Expansion:
    """How big a formula gets when multiplied out over one denominator.

    An upper bound, cheap to compute, on what SymPy's ``expand`` and ``together`` (which
    the derivation runs on every gradient) would build; see :class:`_Poly`.
    """

    def __init__(self, where: str, text: str):
        self.where, self.text = where, text
        self.generators: set = set()

    def fail(self, what: str, fix: str) -> FormulaError:
        return FormulaError(what, where=f"{self.where} {_quote(self.text)}", fix=fix)

    def check(self, expr: sp.Expr) -> None:
        """Raise a FormulaError when ``expr`` multiplied out is beyond the bounds."""
        for part in self(expr):
            if part.sum_power > MAX_SUM_POWER:
                raise self.fail(
                    f"multiplied out, it is a product of {part.sum_power:.0f} sums (such as "
                    f"a power of a sum), beyond the {MAX_SUM_POWER} derive expands.",
                    "Use lower powers of sums, or fewer of them.")
            # Terms in g generators of total degree d are at most C(d + g, g).
            g, d = max(len(self.generators), 1), part.degree
            bound = math.lgamma(d + g + 1) - math.lgamma(d + 1) - math.lgamma(g + 1)
            if min(part.log_terms, bound) > math.log(MAX_TERMS):
                raise self.fail(
                    f"multiplied out, it has more than {MAX_TERMS} terms, beyond what "
                    "derive differentiates in reasonable time.",
                    "Use lower powers of sums, or fewer factors.")

    def __call__(self, e: sp.Expr) -> tuple[_Poly, _Poly]:
        """The numerator and the denominator of ``e`` over one denominator."""
        if e.is_number:
            return _ONE, _ONE
        if isinstance(e, sp.Mul):
            num, den = _ONE, _ONE
            for a in e.args:
                n, d = self(a)
                num, den = num.times(n), den.times(d)
            return num, den
        if isinstance(e, sp.Add):
            parts = [self(a) for a in e.args]
            den = _ONE
            for _, d in parts:
                den = den.times(d)
            # Over the common denominator, each numerator meets the other denominators:
            # Σᵢ nᵢ Πⱼ≠ᵢ dⱼ. (Dividing out dᵢ again is exact in logs and degrees.)
            nums = [_Poly(n.log_terms + den.log_terms - d.log_terms,
                          n.degree + den.degree - d.degree,
                          n.sum_power + den.sum_power - d.sum_power) for n, d in parts]
            top = max(n.log_terms for n in nums)
            log_terms = top + math.log(sum(math.exp(n.log_terms - top) for n in nums))
            return _Poly(log_terms, max(n.degree for n in nums),
                         max(n.sum_power for n in nums)), den
        if isinstance(e, sp.Pow) and e.exp.is_number:
            if not _magnitude(e.exp) <= MAX_EXPONENT:
                raise self.fail(f"the power {_shown(e)} has an exponent beyond "
                                f"±{MAX_EXPONENT}.", "Write a smaller power.")
            if e.exp.is_Integer:
                k = int(e.exp)
                num, den = self(e.base)
                num, den = (num, den) if k > 0 else (den, num)
                return num.power(abs(k)), den.power(abs(k))
        # Anything else (a symbol, a function call, a fractional power) is one
        # generator of the polynomial; what it holds is multiplied out on its own.
        for arg in e.args:
            self.check(arg)
        self.generators.add(e)
        return _Poly(0.0, 1.0, 0.0), _ONE


@contextmanager
def time_limit(text: str, where: str, seconds: float | None = None) -> Iterator[None]:
    """Stop the symbolic work on a user's formula after ``seconds`` with a FormulaError.

    The structural bounds of :func:`parse_formula` keep known blow-ups out; this is the
    guard for the rest. It uses SIGALRM, so it only acts in the main thread of a POSIX
    process (elsewhere the work runs unbounded, as before).

    Parameters
    ----------
    text : str
        The formula (or other input) the work is on, named in the error.
    where : str
        Where it came from (``--expr``, ``derive minimize``).
    seconds : float, optional
        The budget; :data:`TIME_LIMIT` by default.

    Raises
    ------
    FormulaError
        When the budget runs out.

    """
    seconds = TIME_LIMIT if seconds is None else seconds
    if not hasattr(signal, "setitimer") or threading.current_thread() is not \
            threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise _OutOfTime

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except _OutOfTime:
        raise FormulaError(
            f"the symbolic work on it took longer than {seconds:g} s, so derive stopped.",
            where=f"{where} {_quote(text)}",
            fix="Write a smaller formula (fewer nested functions, lower powers).") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class _OutOfTime(BaseException):
    # A BaseException, so that no ``except Exception`` inside SymPy swallows it.
    pass


def _quote(text: str) -> str:
    """The formula as error messages show it: quoted, and cut when long."""
    return repr(text if len(text) <= 80 else text[:77] + "...")


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def check_identifier(name: str, where: str) -> str:
    """Refuse names that cannot be a Python identifier or module name."""
    if not _NAME.match(name) or keyword.iskeyword(name) or len(name) > 64:
        shown = name if len(name) <= 80 else f"{name[:60]}... ({len(name)} characters)"
        raise FormulaError(
            f"{shown!r} is not a valid name.",
            where=where,
            fix="Use letters, digits and underscores, starting with a letter (at most 64).",
        )
    return name


def parse_formula(text: str, symbols: dict[str, sp.Symbol], where: str = "formula") -> sp.Expr:
    """Parse a user's formula into a SymPy expression without evaluating anything.

    Parameters
    ----------
    text : str
        The formula, in Python syntax (``x/(1+abs(x))``).
    symbols : dict
        The names the formula may use (the variable and declared parameters).
    where : str
        How error messages name the formula's origin (``--expr``, a file and field).

    Returns
    -------
    sympy.Expr

    Raises
    ------
    FormulaError
        For anything outside the whitelist, with what, where and how to fix it.

    """
    if not isinstance(text, str) or not text.strip():
        raise FormulaError("the formula is empty.", where=where, fix="Give a formula in x.")
    if len(text) > MAX_LENGTH:
        raise FormulaError(
            f"the formula is {len(text)} characters long; the limit is {MAX_LENGTH}.",
            where=where,
        )
    translator = _Translator(text, where, symbols)
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        col = f" at column {exc.offset}" if exc.offset else ""
        raise FormulaError(
            f"this is not a formula: {exc.msg}{col}.", where=f"{where} {_quote(text)}",
            fix="Write it in Python syntax, e.g. x/(1+abs(x)) or alpha*x**2.",
        ) from None
    except (ValueError, RecursionError, MemoryError):
        raise FormulaError(
            "this is not a formula (it has a NUL byte or nests too deeply).",
            where=where,
        ) from None
    try:
        expr = translator(tree)
    except RecursionError:
        raise translator.fail("the formula nests too deeply") from None
    _Expansion(where, text).check(expr)
    return expr
