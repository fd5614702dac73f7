"""Derivation → kernel IR: choose the forms to compute, share subexpressions."""

from __future__ import annotations

import sympy as sp

from derive.calculus.derivation import ActivationDerivation
from derive.codegen.ir import ActivationModule, Assign, Draw, ElementFunction, Scalar
from derive.spec import x, y

#: The upstream gradient ∂L/∂y of one element.
d_y = sp.Symbol("d_y", real=True)


def fold_constants(expr: sp.Expr) -> sp.Expr:
    """Replace exact non-integer constants (1/6, √2/√π) by full-precision floats."""

    def is_constant(e):
        return (
            isinstance(e, sp.Expr)
            and e.is_number
            and not e.is_Integer
            and not e.is_Float
            and e.is_real
        )

    return expr.replace(is_constant, lambda e: sp.Float(e.evalf(20), 17))


def element_function(name, inputs, outputs, output_names, sums=None) -> ElementFunction:
    """Build an :class:`ElementFunction`, hoisting common subexpressions into temporaries.

    Parameters
    ----------
    name : str
        Function name stem (``"forward"``, ``"backward"``).
    inputs : sequence of sympy.Symbol
        Scalar inputs, in call order.
    outputs : sequence of sympy.Expr
        What the function returns.
    output_names : sequence of str
        Names of the outputs in generated code.
    sums : sequence of bool, optional
        Which outputs are summed over elements (parameter gradients).

    """
    temps = sp.numbered_symbols("t", real=True)
    replacements, reduced = sp.cse([fold_constants(e) for e in outputs], symbols=temps)
    return ElementFunction(
        name=name,
        inputs=tuple(inputs),
        body=tuple(Assign(t, e) for t, e in replacements),
        outputs=tuple(reduced),
        output_names=tuple(output_names),
        sums=tuple(sums or [False] * len(outputs)),
    )


def lower_activation(derivation: ActivationDerivation, source: str) -> ActivationModule:
    """Lower an activation's derivation to the IR of its generated module.

    Backward uses the derivative written in terms of the output when one exists: the
    forward pass already paid for σ(x) or tanh(x), so backward costs one multiply.

    Parameters
    ----------
    derivation : ActivationDerivation
        The derived op.
    source : str
        What the generated file's header names as its source.

    """
    op = derivation.op
    params = tuple(p.symbol for p in op.params)
    noise = tuple(n.symbol for n in op.noise)
    grad = derivation.in_output if derivation.in_output is not None else derivation.derivative
    forward = element_function(
        "forward", (x, *params, *noise), [derivation.forward], ["y"]
    )
    learnable = derivation.param_grads
    backward = element_function(
        "backward",
        (x, y, d_y, *params, *noise),
        # Folding d_y into each branch gives `d_y if x > 0 else 0`: the dead branch
        # stays 0 even for a non-finite d_y, as PyTorch's own backward does.
        [sp.piecewise_fold(d_y * g) for g in (grad, *(g for _, g in learnable))],
        ["d_x"] + [f"d_{p.name}" for p, _ in learnable],
        [False] + [True] * len(learnable),
    )
    formulas = [("f(x)", sp.sstr(derivation.forward)), ("df/dx", sp.sstr(derivation.derivative))]
    if derivation.in_output is not None:
        formulas.append(("df/dx, with y = f(x)", sp.sstr(derivation.in_output)))
    formulas += [(f"df/d{p.name}", sp.sstr(g)) for p, g in learnable]
    return ActivationModule(
        name=op.name,
        title=op.title,
        source=source,
        params=tuple(Scalar(p.name, float(p.default), p.learnable) for p in op.params),
        draws=tuple(
            Draw(n.symbol, n.distribution, n.low, n.high, n.eval_value) for n in op.noise
        ),
        forward=forward,
        backward=backward,
        uses_output=derivation.in_output is not None,
        formulas=tuple(formulas),
    )
