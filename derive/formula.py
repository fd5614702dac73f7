"""Formulas typed by users: parsed into SymPy by walking Python's syntax tree.

Nothing a user types is ever evaluated. The text is parsed with :func:`ast.parse` and
each node is translated by hand; any node, name or function outside the whitelist is
refused with a message naming it. Sizes are bounded so that no input can hang the parser
or make SymPy build an enormous number.
"""

from __future__ import annotations

import ast
import difflib
import keyword
import math
import re

import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p

from derive.calculus.functions import normal_cdf, sigmoid, softplus
from derive.errors import FormulaError

#: Function name → (SymPy function, number of arguments; None means two or more).
FUNCTIONS: dict[str, tuple[object, int | None]] = {
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
    "sigmoid": (sigmoid, 1),
    "softplus": (softplus, 1),
    "heaviside": (sp.Heaviside, 1),
    "normal_cdf": (normal_cdf, 1),
    "max": (sp.Max, None),
    "min": (sp.Min, None),
}
CONSTANTS = {"pi": sp.pi, "e": sp.E}
MAX_LENGTH = 2000
MAX_DEPTH = 60
#: Largest magnitude of a numeric literal or constant power (beyond: not a real formula).
MAX_MAGNITUDE = 1e300

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
            f"and the functions {', '.join(sorted(FUNCTIONS))}."
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
        if node.id in FUNCTIONS:
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
        result = rule(left, right)
        if result.has(sp.zoo, sp.nan, sp.oo, -sp.oo):
            raise self.fail("the formula divides a constant by zero", node)
        return result

    def _power(self, base, exponent, node):
        if base.is_number and exponent.is_number:
            # Decide from floats first, so 2**10**10 is refused instead of computed.
            try:
                magnitude = abs(float(base)) ** float(exponent)
            except (OverflowError, ZeroDivisionError, TypeError):
                magnitude = math.inf
            if not magnitude <= MAX_MAGNITUDE:
                raise self.fail("a constant power is out of range", node)
        elif exponent.is_number and abs(float(exponent)) > 1000:
            raise self.fail("an exponent beyond ±1000 is not supported", node)
        return sp.Pow(base, exponent)

    def _Call(self, node, depth):
        if not isinstance(node.func, ast.Name):
            raise self.fail(
                f"only named functions can be called; this calls {_describe(node.func)}",
                node,
                self.allowed(),
            )
        if node.func.id not in FUNCTIONS:
            called = node.func.id
            close = difflib.get_close_matches(str(called), list(FUNCTIONS), 2)
            hint = f"Did you mean {' or '.join(close)}? " if close else ""
            raise self.fail(f"{called!r} is not an allowed function", node, hint + self.allowed())
        if node.keywords:
            raise self.fail(f"{node.func.id}() takes no keyword arguments", node)
        function, arity = FUNCTIONS[node.func.id]
        args = [self(a, depth) for a in node.args]
        if (arity is not None and len(args) != arity) or (arity is None and len(args) < 2):
            wanted = f"{arity} argument(s)" if arity else "two or more arguments"
            raise self.fail(f"{node.func.id}() takes {wanted}, got {len(args)}", node)
        return function(*args)


def _quote(text: str) -> str:
    """The formula as error messages show it: quoted, and cut when long."""
    return repr(text if len(text) <= 80 else text[:77] + "...")


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def check_identifier(name: str, where: str) -> str:
    """Refuse names that cannot be a Python identifier or module name."""
    if not _NAME.match(name) or keyword.iskeyword(name) or len(name) > 64:
        raise FormulaError(
            f"{name!r} is not a valid name.",
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
        return translator(tree)
    except RecursionError:
        raise translator.fail("the formula nests too deeply") from None
