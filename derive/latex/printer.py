r"""SymPy → LaTeX in the notes' notation.

A ``LatexPrinter`` subclass: parameters print as declared (``lambda_`` → ``\lambda``),
the function being derived prints under its own name (σ, ReLU, ...), ``Piecewise`` as
``cases`` with the words of the document's language, an unevaluated derivative as
d/dx[...] (∂ for parameters), stable spellings (expm1, log1p) the way a lecture writes
them, and numbers with the language's decimal separator. Every word it prints comes
from the language's ``words`` template; none is written here.
"""

from __future__ import annotations

import re

import sympy as sp
from sympy.core.function import AppliedUndef
from sympy.printing.latex import LatexPrinter
from sympy.printing.precedence import PRECEDENCE, precedence_traditional

from derive.calculus.functions import NamedFunction, Terms
from derive.calculus.indexed import lse
from derive.calculus.steps import INNER_NAMES, OpenSum

#: The words a printed formula needs; the language templates define each of them.
WORDS = ("piecewise_if", "piecewise_otherwise", "logical_or", "logical_and")

#: An array's name with its own subscript (W_{hh}, b_{ih}, h_0).
_SUBSCRIPTED = re.compile(r"^\\?[A-Za-z]+_(\{[^{}]*\}|\w)$")


def _named_element(name: str, braced: bool = False) -> str:
    """The array name an element's indices attach to: (W_{hh})_{j,k}, not W_{hhj,k}.

    A name with a subscript of its own is parenthesised, so that the element's indices do
    not run into it; any other name is returned as it is (braced when ``braced``).
    """
    inner = name[1:-1] if name.startswith("{") and name.endswith("}") else name
    if _SUBSCRIPTED.match(inner):
        return rf"\left({inner}\right)"
    return f"{{{name}}}" if braced else name


#: A block of conditions, one to a row (a convolution's bounds in a cases block).
ROWS = r"\begin{array}[t]{@{}l@{}}"

#: SymPy's functions printed as name(argument): a table and one method, as SymPy's
#: printers do. derive's named functions declare their own (``latex_name``).
FUNCTION_NAMES: dict[type, str] = {
    sp.tanh: r"\tanh",
    sp.sinh: r"\sinh",
    sp.cosh: r"\cosh",
    sp.sech: r"\operatorname{sech}",
    sp.sin: r"\sin",
    sp.cos: r"\cos",
    sp.atan: r"\arctan",
    sp.erf: r"\operatorname{erf}",
    sp.log: r"\ln",
    sp.sign: r"\operatorname{sgn}",
}


def function_name(expr) -> str | None:
    """The LaTeX name ``expr`` prints under as name(argument), or None."""
    if isinstance(expr, NamedFunction):
        return expr.latex_name
    return FUNCTION_NAMES.get(type(expr))


def format_number(value: float, separator: str = ".", digits: int | None = None) -> str:
    r"""A float as LaTeX math: shortest round-trip digits (or ``digits`` significant ones).

    Parameters
    ----------
    value : float
        The number (±inf prints as ±\infty).
    separator : str
        The decimal separator as LaTeX (``"."`` or ``"{,}"``).
    digits : int, optional
        Significant digits; by default as many as the float needs (``repr``).

    Returns
    -------
    str
        E.g. ``"0.25"``, ``"-6{,}9058"``, ``"1.5 \cdot 10^{-7}"``.

    """
    if value != value:
        raise ValueError("NaN has no place in a lecture")
    if value in (float("inf"), float("-inf")):
        return r"\infty" if value > 0 else r"-\infty"
    value = float(value) + 0.0  # no "-0"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    text = repr(value) if digits is None else f"{value:.{digits}g}"
    mantissa, _, exponent = text.partition("e")
    mantissa = mantissa.replace(".", separator)
    if not exponent:
        return mantissa
    power = rf"10^{{{int(exponent)}}}"
    return power if mantissa == "1" else rf"{mantissa} \cdot {power}"


def _negative_number(a) -> bool:
    """Whether ``a`` is a negative number (the only sign a matrix product carries here)."""
    return bool(a.is_Number and a.is_negative)


def _matrix_precedence(a) -> int:
    """Precedence of a matrix product's factor, without SymPy's minus-sign search."""
    if isinstance(a, sp.MatAdd):
        return PRECEDENCE["Add"]
    if isinstance(a, sp.MatMul | sp.HadamardProduct):
        return PRECEDENCE["Add"] if _negative_number(a.args[0]) else PRECEDENCE["Mul"]
    return precedence_traditional(a)


def _sign_out_of_sums(expr: sp.Expr) -> sp.Expr:
    """Σ(−a) as −Σ a, so that the sign is seen by the product or sum around it.

    Printed inside, a·Σ(−b) would read a − Σ b, and c + Σ(−b) would read c + −Σ b.
    """
    def body(e):
        return e.function if isinstance(e, sp.Sum) else e.body

    def negated(e):
        # An opened sum too: −(1/KN)((a₁ + b₁) + ⋯), as the line before, not (−(a₁ + b₁)) + ⋯.
        if isinstance(e, OpenSum):
            return OpenSum(-e.body, e.limits, e.picks)
        return sp.Sum(-e.function, *e.limits)

    return expr.replace(
        lambda e: isinstance(e, sp.Sum | OpenSum) and isinstance(body(e), sp.Mul)
        and body(e).could_extract_minus_sign()
        and not (-body(e)).could_extract_minus_sign(),
        lambda e: -negated(e))


class DerivePrinter(LatexPrinter):
    r"""LaTeX for derive's derivations.

    Parameters
    ----------
    symbols : dict of str to str
        Symbol name → LaTeX (parameters' declared spellings).
    functions : dict of str to str
        Undefined-function name → LaTeX of its name (``f`` → ``\sigma``).
    words : dict of str to str
        The LaTeX of :data:`WORDS` in the document's language.
    partial : bool
        Print derivatives with ∂ (for derivatives with respect to a parameter).
    separator : str
        Decimal separator.

    """

    printmethod = "_latex"
    _default_settings = {
        **LatexPrinter._default_settings,
        "ln_notation": True,
        "symbols": {},
        "functions": {},
        "words": {},
        "partial": False,
        "separator": ".",
        "gradients": {},
        "loss": "E",
        "lead": (),
        "kronecker": "bracket",
        # Count indices from 1, as the course notes do (ŷ₁ … ŷ_K, Σ_{j=1}^{K}); the
        # declarations and kernels count from 0, as Python does. Only for formulas whose
        # indices are plain names: an offset such as S h + i would change with the origin.
        "one_based": False,
        # The chain's inner-function names, outermost derivative first (a chain's
        # ``outer_first``): d/dv ln(v) · d/du cosh(u) when v = cosh(u), as the notes
        # write f′(g(x)) · g′(x). Without it, names print in the order they are issued.
        "outer_first": (),
    }

    def __init__(self, settings=None):
        super().__init__(settings)
        missing = [w for w in WORDS if w not in self._settings["words"]]
        if missing:
            raise ValueError(f"the printer needs the words {missing}")

    def ordered(self, names) -> DerivePrinter:
        """A copy of the printer that sets a product's derivatives in the order of ``names``.

        Parameters
        ----------
        names : tuple of sympy.Symbol
            A chain's inner-function names, outermost derivative first
            (``StepChain.outer_first()``).

        Returns
        -------
        DerivePrinter
            A printer with the same settings and this order.
        """
        settings = {k: v for k, v in self._settings.items() if k in self._default_settings}
        return type(self)({**settings, "outer_first": tuple(names)})

    def _print(self, expr, **kwargs):
        # derive's named functions carry a ``_latex`` of their own, which SymPy would
        # prefer; their latex_name prints them like every other function (σ(x), not σ (x)).
        if function_name(expr) is not None:
            return self._print_Function(expr, kwargs.get("exp"))
        if isinstance(expr, lse):
            return self._print_lse(expr, kwargs.get("exp"))
        return super()._print(expr, **kwargs)

    # --- names -------------------------------------------------------------------

    def _print_Symbol(self, expr, style="plain"):
        known = self._settings["symbols"].get(expr.name)
        if known is not None:
            return known
        wrt = self._settings["gradients"].get(expr.name)
        if wrt is not None:
            # A gradient array's element without indices (one case: ∂E/∂μ, not d_mu).
            return rf"\frac{{\partial {self._settings['loss']}}}{{\partial {wrt}}}"
        if expr.name.endswith("_"):
            return super()._print_Symbol(sp.Symbol(expr.name.rstrip("_")), style)
        return super()._print_Symbol(expr, style)

    def _print_Function(self, expr, exp=None):
        if (isinstance(expr, sp.log) and exp is None and isinstance(expr.args[0], sp.Function)
                and not isinstance(expr.args[0], sp.Piecewise)):
            # ln cosh(u), ln σ(z): the function's own parentheses are enough.
            return rf"\ln {self._print(expr.args[0])}"
        name = function_name(expr)
        if isinstance(expr, AppliedUndef):
            name = self._settings["functions"].get(expr.func.__name__)
        if name is None or (not isinstance(expr, AppliedUndef) and len(expr.args) != 1):
            return super()._print_Function(expr, exp)
        power = f"^{{{exp}}}" if exp else ""
        if isinstance(expr, sp.erf):
            # erf's argument sits inside Φ's and GELU's fractions, where a fraction of its
            # own would be set two sizes down: erf(√2 x/2) keeps the numerator's size.
            return rf"{name}{power}\left({self._folded(expr.args[0])}\right)"
        return f"{name}{power}{self._arguments(expr.args)}"

    def _print_log(self, expr, exp=None):
        return self._print_Function(expr, exp)

    def _arguments(self, args) -> str:
        """(a, b): plain parentheses, or growing ones around tall arguments (fractions)."""
        inner = ", ".join(self._print(a) for a in args)
        tall = any(a.has(sp.Piecewise, sp.Sum, OpenSum) or any(
            isinstance(p, sp.Pow) and p.exp.is_negative or isinstance(p, sp.Rational)
            and not p.is_Integer for p in sp.preorder_traversal(a)) for a in args)
        return rf"\left({inner}\right)" if tall else f"({inner})"

    # --- derivatives ---------------------------------------------------------------

    def _print_Derivative(self, expr):
        if len(expr.variable_count) != 1 or expr.variable_count[0][1] != 1:
            return super()._print_Derivative(expr)
        indexed = isinstance(expr.variables[0], sp.Indexed)
        d = r"\partial" if self._settings["partial"] or indexed else "d"
        var = self._print(expr.variables[0])
        if indexed and isinstance(expr.expr, sp.Symbol | sp.Indexed):
            # ∂E/∂W_{j,i}, ∂s_{n,j}/∂W_{j,i}: names of arrays and of the loss as fractions.
            return rf"\frac{{\partial {self._print(expr.expr)}}}{{\partial {var}}}"
        operator = rf"\frac{{{d}}}{{{d} {var}}}" if d != "d" else rf"\frac{{d}}{{d{var}}}"
        arg = expr.expr
        if isinstance(arg, sp.Symbol) or (
            isinstance(arg, sp.Function) and not isinstance(arg, sp.Piecewise)
        ):
            return rf"{operator} {self._print(arg)}"
        return rf"{operator}\left[{self._print(arg)}\right]"

    def _print_Mul(self, expr):
        if expr.could_extract_minus_sign() and isinstance(-expr, Terms):
            # −(a + b) written term by term: SymPy would drop the parentheses.
            return rf"-\left({self._print(-expr)}\right)"
        signed = _sign_out_of_sums(expr)
        expr = signed if isinstance(signed, sp.Mul) else expr
        factors = sp.Mul.make_args(expr)
        derivatives = [f for f in factors if isinstance(f, sp.Derivative)]
        if not derivatives and any(isinstance(f, sp.Sum | OpenSum) for f in factors):
            return self._print_sum_product(factors)
        if not derivatives:
            unrationalised = self._print_over_root(expr)
            if unrationalised is not None:
                return unrationalised
            factored = self._print_over_fractions(expr)
            return factored if factored is not None else self._print_plain_Mul(expr)
        # Outer derivative first (d/du before d/dx, u before v), joined by ·, so that
        # "d/du e^u · d/dx[-x]" cannot be misread as d/du applied to everything after it.
        derivatives.sort(key=self._derivative_order)
        rest = sp.Mul(*[f for f in factors if not isinstance(f, sp.Derivative)])
        numer, denom = sp.fraction(rest, exact=True)
        sign = ""
        # (1 − y) · ∂/∂ŷ stays a difference, not −(y − 1) · ∂/∂ŷ.
        if _leads_with_minus(numer):
            sign, numer = "-", -numer
        pieces = [] if numer == 1 else [self.parenthesize(numer, PRECEDENCE["Mul"], strict=True)]
        if _over_function(numer, denom, self._settings["gradients"]):
            # The quotient rule's −h′/h² as one fraction, like the line after it (σ, S).
            top = r" \cdot ".join(pieces + [self._print(d) for d in derivatives])
            return rf"{sign}\frac{{\displaystyle {top}}}{{{self._print(denom)}}}"
        if denom != 1:
            # ½ · d/du[u²], not a derivative inside a fraction.
            pieces = [self._coefficient(numer, denom)]
        pieces += [self._print(d) for d in derivatives]
        return sign + r" \cdot ".join(pieces)

    def _derivative_order(self, d: sp.Derivative) -> tuple:
        """Where a derivative stands in a product: by an inner function before the rest.

        Names in the printer's ``outer_first`` order come first, in that order; other
        inner-function names in the order they are issued (u, v, …, u_1); then the
        derivatives by the variable itself.
        """
        var = d.variables[0]
        order = self._settings["outer_first"]
        if var in order:
            return (0, order.index(var), 0)
        name = var.name if isinstance(var, sp.Symbol) else ""
        base, _, suffix = name.partition("_")
        if base in INNER_NAMES:
            return (1, int(suffix or 0), INNER_NAMES.index(base))
        return (2, 0, 0)

    def _print_over_root(self, expr) -> str | None:
        r"""x/√2, not SymPy's rationalised √2 x/2 (the erf of GELU and Φ, as papers write it).

        Only where the coefficient's denominator q meets a √q among the factors; None
        otherwise.
        """
        coeff, rest = expr.as_coeff_Mul()
        if not coeff.is_Rational or coeff.q == 1:
            return None
        root = sp.sqrt(coeff.q)
        if root not in sp.Mul.make_args(rest):
            return None
        sign = "-" if coeff < 0 else ""
        numer, denom = sp.fraction(abs(coeff.p) * rest / root, exact=True)
        below = self._print(root)
        if denom != 1:
            below += " " + self.parenthesize(denom, PRECEDENCE["Mul"], strict=True)
        above = self._print(numer)
        if self._settings["fold_short_frac"]:
            return rf"{sign}{self.parenthesize(numer, PRECEDENCE['Mul'])} / {below}"
        return rf"{sign}\frac{{{above}}}{{{below}}}"

    def _print_over_fractions(self, expr) -> str | None:
        r"""\frac{1}{K N}\left(\frac{a}{u} - \frac{b}{v}\right), not a fraction of fractions.

        A numerator that holds fractions (or derivatives, which print as fractions) would
        print them inside another fraction, in script size: the denominator goes in
        front instead, as a coefficient. None when the numerator holds no fraction.
        """
        numer, denom = sp.fraction(expr, exact=True)
        if denom == 1 or numer == 1:
            return None
        if not _holds_fraction(numer, self._settings["gradients"]):
            return None
        sign = ""
        if _leads_with_minus(numer):
            sign, numer = "-", -numer
        if _over_function(numer, denom, self._settings["gradients"]):
            # Only derivatives over a function (not a size such as K N): the quotient rule's
            # (g′h − g h′)/h² as the rule is stated, one fraction like the line after it
            # (not 1/h² (…) and then a fraction); in display style, so that d/dx keeps its
            # size inside the numerator.
            return (rf"{sign}\frac{{\displaystyle {self._print(numer)}}}"
                    rf"{{{self._print(denom)}}}")
        # A number joins the coefficient: 2/m u, not 1/m 2u.
        coeff, numer = _number_out(numer)
        tex = self._print(numer)
        if isinstance(numer, sp.Add | Terms) or tex.startswith("-"):
            tex = rf"\left({tex}\right)"
        return rf"{sign}\frac{{{self._print(coeff)}}}{{{self._print(denom)}}} {tex}"

    def _coefficient(self, numer, denom) -> str:
        r"""numer/denom as a coefficient, never a fraction of fractions.

        \frac{1}{m} \frac{\partial E}{\partial A} when numer prints a fraction, else
        \frac{numer}{denom}.
        """
        if not _holds_fraction(numer, self._settings["gradients"]):
            return rf"\frac{{{self._print(numer)}}}{{{self._print(denom)}}}"
        coeff, numer = _number_out(numer)
        tex = self.parenthesize(numer, PRECEDENCE["Mul"], strict=True)
        return rf"\frac{{{self._print(coeff)}}}{{{self._print(denom)}}} {tex}"

    def _print_plain_Mul(self, expr) -> str:
        r"""SymPy's product, except that functions follow array elements: y_j \ln ŷ_j."""
        factors = sp.Mul.make_args(expr)
        lead = self._settings["lead"]
        if lead and any(s_.name in lead for s_ in expr.free_symbols) and not any(
                isinstance(f, sp.Pow) and f.exp.is_negative for f in factors):
            return self._print_led_Mul(expr, lead)
        functions = [f for f in factors if isinstance(f, sp.Function)
                     and not isinstance(f, sp.Piecewise)]
        elements = [f for f in factors if isinstance(f, sp.Indexed)]
        fraction = any(isinstance(f, sp.Pow) and f.exp.is_negative
                       or f.is_Rational and not f.is_Integer for f in factors)
        if fraction and elements and functions:
            # y_k ln ŷ_k / N, not ln(ŷ_k) y_k / N: the numerator in the order of a product.
            numer, denom = sp.fraction(expr, exact=True)
            if denom != 1 and numer.is_Mul and not _holds_fraction(numer):
                sign = ""
                if numer.could_extract_minus_sign():
                    sign, numer = "-", -numer
                return rf"{sign}\frac{{{self._print_plain_Mul(numer)}}}{{{self._print(denom)}}}"
        if not fraction and not elements and any(
                isinstance(f, sp.Add) and f.has(*functions) for f in factors):
            return self._print_sums_last(expr, functions)
        if fraction or not elements:
            return super()._print_Mul(expr)
        if not functions and not any(self._is_word(f) for f in factors):
            return super()._print_Mul(expr)
        sign = ""
        if expr.could_extract_minus_sign():
            sign, expr = "-", -expr
        # SymPy's order of the factors, functions last (as before the spacing came in).
        factors = sp.Mul.make_args(expr) if functions else expr.as_ordered_factors()
        ordered = ([f for f in factors if f not in functions]
                   + [f for f in factors if f in functions])
        tex = ""
        for i, f in enumerate(ordered):
            piece = self.parenthesize(f, PRECEDENCE["Mul"], strict=True)
            tex += (self._separator(ordered[i - 1], f) if i else "") + piece
        return sign + tex

    def _print_sums_last(self, expr, functions) -> str:
        r"""σ(x) (1 − σ(x)), as the notes write it: a function before the sum that holds it.

        SymPy sorts the sum first, (1 − σ(x)) σ(x); the other factors keep its order.
        """
        sign = ""
        if expr.could_extract_minus_sign():
            sign, expr = "-", -expr
        factors = expr.as_ordered_factors()

        def holding(f):
            return isinstance(f, sp.Add) and f.has(*functions)

        ordered = ([f for f in factors if not holding(f)] + [f for f in factors if holding(f)])
        return sign + " ".join(self.parenthesize(f, PRECEDENCE["Mul"], strict=True)
                               for f in ordered)

    def _print_led_Mul(self, expr, lead) -> str:
        r"""Hyper-parameters first (\eta g, not g \eta), then sums in parentheses, then the rest."""
        sign = ""
        if expr.could_extract_minus_sign():
            sign, expr = "-", -expr
        factors = sp.Mul.make_args(expr)
        rank = {name: i for i, name in enumerate(lead)}

        def key(f):
            if f.is_Number:
                return (0, 0)
            if isinstance(f, sp.Symbol) and f.name in rank:
                return (1, rank[f.name])
            if isinstance(f, sp.Add):
                return (2, 0)
            return (3, 0)

        ordered = sorted(factors, key=key)
        return sign + " ".join(self.parenthesize(f, PRECEDENCE["Mul"], strict=True)
                               for f in ordered)

    def _print_sum_product(self, factors) -> str:
        r"""A product with sums: the coefficient first (\frac{1}{2}\sum, not \frac{\sum}{2}).

        The sums come last, every sum but the last in parentheses, so that nothing reads
        as inside a sum that is not.
        """
        sums = [f for f in factors if isinstance(f, sp.Sum | OpenSum)]
        rest = sp.Mul(*[f for f in factors if not isinstance(f, sp.Sum | OpenSum)])
        numer, denom = sp.fraction(rest, exact=True)
        sign = ""
        if numer.could_extract_minus_sign():
            sign, numer = "-", -numer
        pieces = []
        if denom != 1:
            pieces.append(self._coefficient(numer, denom))
        elif numer != 1:
            pieces.append(self.parenthesize(numer, PRECEDENCE["Mul"], strict=True))
        for i, f in enumerate(sums):
            tex = self._print(f)
            last = i == len(sums) - 1
            pieces.append(tex if last and not isinstance(f, OpenSum) else rf"\left({tex}\right)")
        return sign + " ".join(pieces)

    def _print_Sum(self, expr):
        body = expr.function
        if isinstance(body, sp.Mul) and body.could_extract_minus_sign():
            return "-" + self._print_Sum(sp.Sum(-body, *expr.limits))
        tex = self._print(body)
        if isinstance(body, sp.Add | Terms):
            tex = rf"\left({tex}\right)"
        # Limits in the order declared (Σ_n Σ_j): the sums are finite, so any order is right.
        for index, low, high in reversed(expr.limits):
            low, high = self._origin(low), self._origin(high)
            tex = (rf"\sum_{{{self._print(index)}={self._print(low)}}}^{{{self._print(high)}}} "
                   + tex)
        return tex

    def _origin(self, value):
        """A fixed index value (a bound, a picked term) as the document counts.

        From 1 when ``one_based`` (0 → 1, K − 1 → K); running indices are left alone.
        """
        if not self._settings["one_based"]:
            return value
        value = sp.sympify(value)
        if value.is_Integer or (value.is_Add and any(a.is_Integer for a in value.args)):
            return value + 1
        return value

    def _print_OpenSum(self, expr):
        lows = [lim[1] for lim in expr.limits]
        highs = [lim[2] for lim in expr.limits]
        terms = []
        for values in (lows, list(expr.picks), highs):
            term = expr.term(values)
            tex = self._print(term)
            if isinstance(term, sp.Add | Terms) or tex.startswith("-"):
                tex = rf"\left({tex}\right)"
            terms.append(tex)
        return r" + \cdots + ".join(terms)

    def _print_Factors(self, expr):
        # A split fraction stays split: each factor as written, sums in parentheses,
        # and a dot between two fractions (side by side they would read as one).
        # A derivative is set off by a dot too (d/dz e^z · Σ, not an operator that seems to
        # apply to everything after it), and a named element by a thin space.
        # Once two fractions are set off by a dot, so is a factor beside them: x · 1/h · g/h,
        # not x 1/h · g/h (one product, one way of writing it).
        texts = [self.parenthesize(f, PRECEDENCE["Mul"], strict=True) for f in expr.args]
        fraction = [t.startswith(r"\frac") for t in texts]
        split = any(a and b for a, b in zip(fraction, fraction[1:], strict=False))
        tex = texts[0]
        pairs = zip(expr.args, expr.args[1:], fraction, fraction[1:], texts[1:], strict=False)
        for a, b, left, right_fraction, right in pairs:
            fractions = (left and right_fraction) or (split and (left or right_fraction))
            dot = fractions or isinstance(a, sp.Derivative) or isinstance(b, sp.Derivative)
            tex += (r" \cdot " if dot else self._separator(a, b)) + right
        return tex

    def _is_word(self, factor) -> bool:
        r"""Whether ``factor`` is an element of an array named by a word (softmax_k).

        Two such names side by side, or a letter beside one, run together in TeX
        (softmax_jsoftmax_k, g_ksoftmax_k): a product of them is set off by \,.
        """
        return isinstance(factor, sp.Indexed) and r"\operatorname" in self._print(factor.base)

    def _separator(self, a, b) -> str:
        """The space between the factors ``a`` and ``b`` of a product.

        A thin space beside a named element, unless the other factor brings its own
        space: a parenthesis, a sum sign.
        """
        def spaced(f):
            return isinstance(f, sp.Add | sp.Sum | OpenSum | Terms) or (
                precedence_traditional(f) < PRECEDENCE["Mul"])

        word = (self._is_word(a) and not spaced(b)) or (self._is_word(b) and not spaced(a))
        return r" \, " if word else " "

    def _print_Terms(self, expr):
        # Written as given, terms not reordered, so that what cancels is seen to cancel.
        tex = ""
        for i, term in enumerate(expr.args):
            sign = ""
            if i > 0:
                sign = " + "
                if term.could_extract_minus_sign():
                    sign, term = " - ", -term
            elif term.could_extract_minus_sign():
                sign, term = "-", -term
            tex += sign + self.parenthesize(term, PRECEDENCE["Add"], strict=False)
        return tex

    def _print_MatMul(self, expr):
        # SymPy's own asks the product whether it could extract a minus sign, which negates
        # it and rebuilds every nested product below (doit): cubic in a network's depth,
        # minutes for thirty layers. In these products only a leading number carries a sign.
        args = list(expr.args)
        sign = ""
        if _negative_number(args[0]):
            sign = "- "
            args = args[1:] if args[0] == -1 else [-args[0], *args[1:]]

        def parens(a):
            if isinstance(a, sp.Mul) and not isinstance(a, sp.MatMul):
                return self._print(a)
            # Nested products are bracketed, as SymPy does (non-strict at Mul's level).
            if _matrix_precedence(a) <= PRECEDENCE["Mul"]:
                return self._add_parens(self._print(a))
            return self._print(a)

        return sign + " ".join(map(parens, args))

    def _print_HadamardProduct(self, expr):
        # ((W)ᵀδ) ⊙ f'(s), as the notes write it: the matrix product in parentheses.
        def factor(a):
            tex = self._print(a)
            return rf"\left({tex}\right)" if isinstance(a, sp.MatMul | sp.MatAdd) else tex

        return r" \odot ".join(factor(a) for a in expr.args)

    def _print_KroneckerDelta(self, expr, exp=None):
        a, b = expr.args
        if self._settings["kronecker"] == "delta":
            # δ_kj, as a Jacobian ∂y_k/∂z_j is written (SymPy keeps the indices sorted,
            # j before k; δ is symmetric); the bracket [k = j] reads better in sums.
            return rf"\delta_{{{self._print(b)}{self._print(a)}}}"
        return rf"\left[{self._print(a)} = {self._print(b)}\right]"

    def _print_lse(self, expr, exp=None):
        row, index, size = expr.args
        body = (rf"\ln \sum_{{{self._print(index)}={self._print(self._origin(0))}}}"
                rf"^{{{self._print(self._origin(size - 1))}}} e^{{{self._print(row)}}}")
        return rf"\left({body}\right)^{{{exp}}}" if exp else body

    def _print_floordiv(self, expr, exp=None):
        a, b = expr.args
        return rf"\left\lfloor {self._print(a)} / {self._print(b)} \right\rfloor"

    def _index(self, index) -> str:
        """An element's index, a block's offset before the position in it: H + j, 2 H + j.

        The offset is the terms made of sizes alone (positive symbols), as a declaration
        and a lecturer write a block of rows; SymPy's order would print j + H.
        """
        index = sp.sympify(index)
        if not isinstance(index, sp.Add):
            return self._print(index)
        offsets = [a for a in index.args if a.free_symbols and not a.could_extract_minus_sign()
                   and all(s_.is_positive for s_ in a.free_symbols)]
        rest = sp.Add(*(a for a in index.args if a not in offsets))
        if not offsets or not rest.free_symbols:
            return self._print(index)
        tail = self._print(rest)
        joint = f" - {tail[1:].lstrip()}" if tail.startswith("-") else f" + {tail}"
        return self._print(sp.Add(*offsets)) + joint

    def _print_Indexed(self, expr):
        name = expr.base.label.name
        wrt = self._settings["gradients"].get(name)
        indices = ",".join(self._index(self._origin(i)) for i in expr.indices)
        base = self._print(expr.base)
        if wrt is not None:
            return (rf"\frac{{\partial {self._settings['loss']}}}"
                    rf"{{\partial {_named_element(wrt)}_{{{indices}}}}}")
        if "^" in base and not base.startswith("{"):
            # s^{(1)}_{n,j}: superscript and subscript stacked, not s^{(1)} followed by n,j.
            return rf"{base}_{{{indices}}}"
        return rf"{_named_element(base, braced=True)}_{{{indices}}}"

    # --- sums, cases, logic ----------------------------------------------------------

    def _print_Add(self, expr, order=None):
        signed = _sign_out_of_sums(expr)
        expr = signed if isinstance(signed, sp.Add) else expr
        terms = self._lead_positive(list(self._as_ordered_terms(expr, order="none")))
        tex = ""
        for i, term in enumerate(terms):
            if i > 0:
                if term.could_extract_minus_sign():
                    tex += " - "
                    term = -term
                else:
                    tex += " + "
            term_tex = self._print(term)
            if self._needs_add_brackets(term):
                term_tex = rf"\left({term_tex}\right)"
            tex += term_tex
        return tex

    def _lead_positive(self, terms: list) -> list:
        """Lead with a positive term where there is one: 1 − tanh², not −tanh² + 1."""
        if terms[0].could_extract_minus_sign():
            positive = [t for t in terms if not t.could_extract_minus_sign()]
            if positive:
                terms.remove(positive[0])
                terms.insert(0, positive[0])
        return terms

    def _print_Piecewise(self, expr):
        words = self._settings["words"]
        rows = []
        for e, c in expr.args:
            cond = words["piecewise_otherwise"] if c == sp.true else self._print(c)
            if c != sp.true:
                # Conditions one to a row: "if" opens the first row, so that "and" starts
                # the next one under it.
                head, array, rest = cond.partition(ROWS)
                cond = (f"{ROWS}{words['piecewise_if']}{rest}" if array and not head
                        else f"{words['piecewise_if']}{cond}")
            value = self._print(e)
            # cases sets its values in text style: a fraction there prints at script size
            # (δ_{n,c,h,w}/k² unreadable); in display style it prints at full size.
            if r"\frac" in value:
                value = rf"\displaystyle {value}"
            rows.append(rf"{value} & {cond}")
        return r"\begin{cases} " + r" \\ ".join(rows) + r" \end{cases}"

    def _print_StrictGreaterThan(self, expr):
        # Piecewise makes |u| < δ canonical as δ > |u|; the notes write the error first.
        if isinstance(expr.rhs, sp.Abs) and isinstance(expr.lhs, sp.Symbol):
            return rf"{self._print(expr.rhs)} < {self._print(expr.lhs)}"
        return super()._print_Relational(expr)

    def _print_Or(self, expr):
        args = sorted(expr.args, key=_bound_order)
        return self._settings["words"]["logical_or"].join(self._print(a) for a in args)

    def _print_And(self, expr):
        # Two bounds on one variable read as one range: S h ≤ r ≤ S h + k_h − 1, not
        # k_h ≥ 1 + r − S h and S h − r ≤ 0 apart.
        parts = []
        for part in _ranges(expr.args):
            if isinstance(part, tuple):
                low, low_op, var, high_op, high = part
                start, base = _window_start(low)
                if start and not base.is_number:
                    # Counted from 1, the offset inside the window: 1 ≤ r − S (h − 1) ≤ k_h
                    # (the index the kernel is read at), shorter than the window's rows.
                    offset = self._print(sp.Add(var, -base, evaluate=False))
                    parts.append(rf"{self._print(start)} {low_op} {offset} "
                                 rf"{high_op} {self._print(sp.expand(high - base))}")
                    continue
                parts.append(rf"{self._print(low)} {low_op} {self._print(var)} "
                             rf"{high_op} {self._print_upper(low, high)}")
            else:
                parts.append(self._print(part))
        word = self._settings["words"]["logical_and"]
        if len(parts) < 2 or len(parts) == 2 and len(expr.args) == 2:
            return word.join(parts)
        # Two ranges or more (a convolution's bounds) one to a row, so that the cases
        # block stays within the line, on a slide too.
        # A row opens with the word, its leading space dropped: "and" under "if".
        row = word.strip().replace(r"\text{ ", r"\text{", 1) + " "
        return ROWS + (r" \\ " + row).join(parts) + r"\end{array}"

    def _print_upper(self, low, high) -> str:
        """A range's upper bound, from its lower one when that reads as a window.

        S h + k_h − 1 (the start, then the width), not k_h − 1 + S h as SymPy orders it.
        """
        width = sp.expand(high - low)
        if low.is_number or width.free_symbols & low.free_symbols:
            return self._print(high)
        if width.could_extract_minus_sign():
            return rf"{self._print(low)} - {self.parenthesize(-width, PRECEDENCE['Add'])}"
        return rf"{self._print(low)} + {self._print(width)}"

    # --- functions as a lecture writes them ------------------------------------------

    def _print_expm1(self, expr, exp=None):
        body = rf"\left(e^{{{self._print(expr.args[0])}}} - 1\right)"
        return rf"{body}^{{{exp}}}" if exp else body

    def _folded(self, expr) -> str:
        """``expr`` with its short fractions written with a slash (√2 x/2, -x²/2)."""
        fold = self._settings["fold_short_frac"]
        self._settings["fold_short_frac"] = True
        try:
            return self._print(expr)
        finally:
            self._settings["fold_short_frac"] = fold

    def inline(self, expr) -> str:
        r"""``expr`` as a sentence quotes it: x/\sqrt{2}, not a stacked fraction.

        In a line of text, \frac sets both parts at script size (GELU's inner function
        read as a small x over a smaller √2): a fraction whose denominator is one factor
        is written with a slash. A denominator of several factors stays stacked, since
        a / K N would read as (a/K)·N.

        Parameters
        ----------
        expr : sympy.Expr
            The formula a sentence quotes.

        Returns
        -------
        str
            Its LaTeX for inline math.
        """
        expr = sp.sympify(expr)
        if any(isinstance(sp.fraction(m, exact=True)[1], sp.Mul)
               for m in sp.preorder_traversal(expr) if isinstance(m, sp.Mul)):
            return self._print(expr)
        return self._folded(expr)

    def _print_ExpBase(self, expr, exp=None):
        # A fraction in an exponent sets its parts at half size (the x² of e^{-x²/2}
        # unreadable): the exponent folds short fractions to a slash, e^{-x^{2}/2}.
        return self._do_exponent(rf"e^{{{self._folded(expr.args[0])}}}", exp)

    def _print_log1p(self, expr, exp=None):
        return self._print_Function(sp.log(1 + expr.args[0], evaluate=False), exp)

    def _print_DiracDelta(self, expr, exp=None):
        raise ValueError("DiracDelta must never be printed; kinks are Piecewise.")

    def _print_Float(self, expr):
        return format_number(float(expr), self._settings["separator"])


def _holds_fraction(expr, gradients=(), derivatives=True) -> bool:
    """Whether ``expr`` prints a fraction at its own level (not in an exponent).

    Elements of the arrays named in ``gradients`` print as ∂E/∂A: fractions too. With
    ``derivatives`` False, d/dx does not count (only the fractions beside it do).
    """
    if isinstance(expr, sp.Derivative):
        return derivatives
    if isinstance(expr, sp.Indexed):
        return expr.base.label.name in gradients
    if isinstance(expr, sp.Symbol):
        return expr.name in gradients
    if isinstance(expr, sp.Rational):
        return not expr.is_Integer
    if isinstance(expr, sp.Pow):
        return bool(expr.exp.is_negative) or _holds_fraction(expr.base, gradients, derivatives)
    if isinstance(expr, sp.Add | sp.Mul | Terms):
        return any(_holds_fraction(a, gradients, derivatives) for a in expr.args)
    if isinstance(expr, sp.Piecewise):
        # A cases block over a denominator reads badly whatever it holds: 1/(KN)·{cases}.
        return True
    return False


def _over_function(numer, denom, gradients) -> bool:
    """Whether numer/denom is a quotient rule's line: derivatives over the square h².

    A denominator that is a size (K N) keeps the coefficient form, 1/(K N) (…), and so
    does ln's 1/u · u′; the rule's h², a function squared such as (1 + e^{−x})², makes
    the line one fraction.
    """
    return bool(isinstance(denom, sp.Pow) and denom.exp == 2 and denom.base.atoms(sp.Function)
                and not _holds_fraction(numer, gradients, derivatives=False))


def _leads_with_minus(expr) -> bool:
    """Whether ``expr`` is printed best with its minus sign in front.

    A difference keeps its sign inside, whatever SymPy's order of its terms: −(a − b)
    and (b − a) are the same difference, and a chain of steps printed one way on one
    line and the other way on the next would read as a sign lost. Only a sum of
    negative terms, −a − b, is written −(a + b).
    """
    if isinstance(expr, sp.Add):
        return all(t.could_extract_minus_sign() for t in expr.args)
    return expr.could_extract_minus_sign()




def _number_out(numer):
    """(a positive whole number, the rest) of a product: 2 u ∂E/∂σ² → (2, u ∂E/∂σ²)."""
    coeff, rest = sp.sympify(numer).as_coeff_Mul()
    if coeff.is_Integer and coeff > 1:
        return coeff, rest
    return sp.S.One, numer


def _window_start(low):
    """``low`` as (a positive whole number, the rest factored): 1 − S + S h → (1, S (h − 1))."""
    start, rest = sp.expand(low).as_coeff_Add()
    if not start.is_Integer or start <= 0 or rest == 0:
        return sp.S.Zero, low
    return start, sp.factor_terms(rest)


def _bound_order(rel):
    """Sort ``x ≤ −3 ∨ x ≥ 3`` by the bound so it reads left to right."""
    if isinstance(rel, sp.core.relational.Relational) and rel.rhs.is_number:
        return (0, float(rel.rhs))
    return (1, 0.0)


#: A relation's sign as printed in a range: strict or not.
_RANGE_OPS = {False: r"\leq", True: "<"}


def _as_nonnegative(rel):
    """``rel`` as (d, strict) meaning d ≥ 0 (or d > 0), or None if it is no inequality."""
    if isinstance(rel, sp.LessThan | sp.StrictLessThan):
        return rel.rhs - rel.lhs, isinstance(rel, sp.StrictLessThan)
    if isinstance(rel, sp.GreaterThan | sp.StrictGreaterThan):
        return rel.lhs - rel.rhs, isinstance(rel, sp.StrictGreaterThan)
    return None


def _bound(rel, var):
    """(+1, lower bound) or (−1, upper bound) that ``rel`` puts on ``var``, or None.

    Only where ``var`` appears alone, with coefficient ±1 (r in r − S h ≥ 0).
    """
    form = _as_nonnegative(rel)
    if form is None:
        return None
    d, _ = form
    slope = sp.diff(d, var)
    if slope not in (1, -1) or d.has(sp.Piecewise):
        return None
    # d = slope·var + rest ≥ 0: var ≥ −rest when slope is 1, var ≤ rest when it is −1.
    rest = sp.expand(d - slope * var)
    return int(slope), -rest if slope == 1 else rest


def _range(low_rel, high_rel):
    """``low_rel`` ∧ ``high_rel`` as (low, op, var, op, high) when they bound one variable."""
    a, b = _as_nonnegative(low_rel), _as_nonnegative(high_rel)
    if a is None or b is None:
        return None
    shared = sorted(a[0].free_symbols & b[0].free_symbols, key=sp.default_sort_key)
    for var in shared:
        lower, upper = _bound(low_rel, var), _bound(high_rel, var)
        if lower and upper and lower[0] == 1 and upper[0] == -1:
            return lower[1], _RANGE_OPS[a[1]], var, _RANGE_OPS[b[1]], upper[1]
    return None


def _ranges(relations):
    r"""The conditions of a conjunction, pairs that bound one variable as ranges.

    ``-3 < x`` ∧ ``x \leq 3`` gives (−3, "<", x, "\leq", 3); what has no partner stays as
    it is, in its place.
    """
    relations = list(relations)
    used: set[int] = set()
    parts = []
    for i, rel in enumerate(relations):
        if i in used:
            continue
        for j in range(len(relations)):
            if j == i or j in used:
                continue
            found = _range(rel, relations[j]) or _range(relations[j], rel)
            if found is not None:
                used.update((i, j))
                parts.append(found)
                break
        else:
            used.add(i)
            parts.append(rel)
    return parts
