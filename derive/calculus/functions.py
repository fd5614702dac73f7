"""Named functions SymPy does not have, each carrying its own derivative.

Giving σ and softplus names (rather than leaving 1/(1+e^{-u}) spelled out) is what makes
derivatives come out in the notes' forms — σ' = σ(1−σ) — and what lets the printers
choose an overflow-free evaluation for each.
"""

from __future__ import annotations

import sympy as sp


class sigmoid(sp.Function):  # noqa: N801  (SymPy functions are lower-case)
    r"""The logistic function :math:`\sigma(u) = 1/(1+e^{-u})`."""

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

    def _eval_evalf(self, prec):
        return self.rewrite(sp.exp)._eval_evalf(prec)

    def _latex(self, printer, exp=None):
        body = rf"\sigma\left({printer._print(self.args[0])}\right)"
        return rf"{body}^{{{exp}}}" if exp else body


class softplus(sp.Function):  # noqa: N801
    r"""The soft rectifier :math:`\log(1 + e^{u})`."""

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

    def _eval_evalf(self, prec):
        return self.rewrite(sp.exp)._eval_evalf(prec)

    def _latex(self, printer, exp=None):
        body = rf"\operatorname{{softplus}}\left({printer._print(self.args[0])}\right)"
        return rf"{body}^{{{exp}}}" if exp else body


class normal_cdf(sp.Function):  # noqa: N801
    r"""The standard normal CDF :math:`\Phi(u) = (1 + \operatorname{erf}(u/\sqrt{2}))/2`."""

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

    def _eval_evalf(self, prec):
        return self.rewrite(sp.erf)._eval_evalf(prec)

    def _latex(self, printer, exp=None):
        body = rf"\Phi\left({printer._print(self.args[0])}\right)"
        return rf"{body}^{{{exp}}}" if exp else body


class uniform01(sp.Function):  # noqa: N801
    """A uniform draw in [0, 1) that is a pure function of (seed, position).

    Kernels regenerate the same draw in forward and backward; nothing is
    differentiable through it.
    """

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


NAMED = (sigmoid, softplus, normal_cdf)


def explicit(expr: sp.Expr) -> sp.Expr:
    """Spell out derive's named functions in SymPy's own (for ``diff``-based checks)."""
    return expr.replace(
        lambda e: isinstance(e, NAMED),
        lambda e: e.rewrite(sp.erf) if isinstance(e, normal_cdf) else e.rewrite(sp.exp),
    )
