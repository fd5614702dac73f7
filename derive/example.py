"""A worked example: one neuron ŷ = f(w·x + b), one case, one loss, one update.

Every number comes from the engine's derived expressions, evaluated with SymPy — exactly
(in rationals) where the inputs are decimals and the functions allow it, otherwise in
:data:`DIGITS` digits:

- the forward pass from the dense layer's declaration with one input and one output,
  and the activation's stable forward form;
- the loss from the loss's derived per-case value with N = K = 1;
- the local derivatives from the derived gradients: ∂L/∂ŷ (the loss's), ∂ŷ/∂s (the
  activation's derivative), ∂s/∂w and ∂s/∂b (the dense layer's weight gradients with
  an upstream gradient of 1);
- the update from the gradient-descent declaration w ← w − η g.

The notes' example (seed 000: x = 2.1, w = 1, b = 0, y = 4, η = 0.01, loss (ŷ − y)²)
is ``derive example mse --set x=2.1 w=1 b=0 y=4``; their PyTorch one is ``--set w=1
b=0.5 x=1.4 y=2.1``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import MAX_EMAX, MIN_EMIN, Decimal, localcontext

import sympy as sp

from derive import registry
from derive.calculus.derivation import derive_activation, derive_layer, derive_loss
from derive.calculus.indexed import K, N, k, n, p, q
from derive.errors import DeriveError
from derive.spec import Activation, Loss, g, w, x

#: Significant digits of values that are not exact.
DIGITS = 30
#: The names --set must give.
REQUIRED = ("x", "w", "b", "y")
#: What the example uses when only one of activation and loss is named.
DEFAULT_ACTIVATION = "identity"
DEFAULT_LOSS = "mse"
DEFAULT_LR = "0.01"
#: Bounds on a number typed with --set or --lr: significant digits and decimal exponent.
#: Exact arithmetic on 10**100000000 would take minutes and gigabytes; no neuron needs it.
MAX_DIGITS = 50
MAX_EXPONENT = 300
_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{1,9})?")
_FRACTION = re.compile(r"[+-]?[0-9]{1,50}/[0-9]{1,50}")


@dataclass(frozen=True)
class Example:
    """Every quantity of the worked example, as SymPy numbers (exact where possible).

    Attributes
    ----------
    activation, loss : declarations
        The neuron's activation and the loss.
    x, w, b, y, lr : sympy.Number
        The inputs, as given.
    params : dict
        The activation's parameters (defaults, or as given with --set).
    s, yhat, loss_value : sympy.Expr
        The forward pass: s = w·x + b, ŷ = f(s), L(ŷ, y).
    grad_yhat, act_slope, ds_dw, ds_db : sympy.Expr
        The local derivatives.
    grad_s, grad_w, grad_b : sympy.Expr
        The chain rule's products.
    w_new, b_new, s_new, yhat_new, loss_new : sympy.Expr
        After one gradient-descent step.
    loss_formula, loss_gradient, act_forward, act_derivative : sympy.Expr
        The derived formulas the numbers come from, in the symbols ŷ, y and s.
    """

    activation: Activation
    loss: Loss
    x: sp.Expr
    w: sp.Expr
    b: sp.Expr
    y: sp.Expr
    lr: sp.Expr
    params: dict
    s: sp.Expr
    yhat: sp.Expr
    loss_value: sp.Expr
    grad_yhat: sp.Expr
    act_slope: sp.Expr
    ds_dw: sp.Expr
    ds_db: sp.Expr
    grad_s: sp.Expr
    grad_w: sp.Expr
    grad_b: sp.Expr
    w_new: sp.Expr
    b_new: sp.Expr
    s_new: sp.Expr
    yhat_new: sp.Expr
    loss_new: sp.Expr
    loss_formula: sp.Expr
    loss_gradient: sp.Expr
    act_forward: sp.Expr
    act_derivative: sp.Expr

    @property
    def kind(self) -> str:
        """For the templates: this is a worked example."""
        return "example"

    @property
    def name(self) -> str:
        """``activation+loss``."""
        return f"{self.activation.name}+{self.loss.name}"


#: The symbols the example's formulas are written in.
S = sp.Symbol("s", real=True)
YHAT = sp.Symbol("yhat", real=True)
Y = sp.Symbol("y", real=True)


def exact(text: str, name: str, where: str = "derive example --set") -> sp.Expr:
    """A number typed by the user, as an exact rational (2.1 is 21/10, not a float).

    Decimals (``2.1``, ``-1e-3``) and fractions (``1/3``) are accepted, with at most
    :data:`MAX_DIGITS` significant digits and magnitudes within 10**±:data:`MAX_EXPONENT`
    (or exactly 0); the bounds are checked before any exact number is built.
    """
    shown = f"{name}={text[:40]!r}" + ("..." if len(text) > 40 else "")
    body = text.strip()
    if _FRACTION.fullmatch(body):
        numerator, denominator = (int(part) for part in body.split("/"))
        if denominator == 0:
            raise DeriveError(f"{shown} divides by zero.", where=where)
        return sp.Rational(numerator, denominator)
    if len(body) > 100 or not _DECIMAL.fullmatch(body):
        raise DeriveError(f"{shown} is not a number.", where=where,
                          fix=f"Write a decimal or a fraction, e.g. {name}=2.1 or {name}=1/3.")
    with localcontext() as context:
        context.Emax, context.Emin = MAX_EMAX, MIN_EMIN
        # Exact and cheap, even for 1e100000000: nothing is multiplied out yet.
        sign, digit_tuple, exponent = Decimal(body).as_tuple()
    significand = int("".join(map(str, digit_tuple)))
    if significand == 0:
        return sp.Integer(0)
    while significand % 10 == 0:
        significand //= 10
        exponent += 1
    digits = len(str(significand))
    if digits > MAX_DIGITS or not -MAX_EXPONENT <= exponent + digits - 1 <= MAX_EXPONENT:
        raise DeriveError(f"{shown} is out of range.", where=where,
                          fix=f"Use at most {MAX_DIGITS} significant digits and a magnitude "
                              f"from 1e-{MAX_EXPONENT} to 1e{MAX_EXPONENT} (or 0).")
    value = sp.Integer(-significand if sign else significand)
    return value * sp.Integer(10) ** exponent


def parse_settings(items: list[str]) -> dict[str, sp.Expr]:
    """``["x=2.1", "w=1", ...]`` → {name: exact value}; every name once."""
    values: dict[str, sp.Expr] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise DeriveError(f"{item!r} is not NAME=NUMBER.", where="derive example --set",
                              fix="Write e.g. --set x=2.1 w=1 b=0 y=4.")
        if name in values:
            raise DeriveError(f"{name} is set twice.", where="derive example --set")
        values[name] = exact(text, name)
    return values


def resolve(target: str, activation: str | None, loss: str | None) -> tuple[Activation, Loss]:
    """The activation and loss of the example from TARGET and the options."""
    op = registry.get(target)
    if op.kind == "activation":
        if activation is not None:
            raise DeriveError("TARGET is already the activation; drop --activation.",
                              where="derive example")
        return op, registry.get(loss or DEFAULT_LOSS, "loss")
    if op.kind == "loss":
        if loss is not None:
            raise DeriveError("TARGET is already the loss; drop --loss.", where="derive example")
        return registry.get(activation or DEFAULT_ACTIVATION, "activation"), op
    raise DeriveError(f"{target!r} is a {op.kind}; the example is one neuron with an "
                      "activation and a loss.", where="derive example",
                      fix="Give an activation (e.g. sigmoid) or a loss (e.g. mse).")


def _value(expr: sp.Expr) -> sp.Expr:
    """Exact when SymPy keeps it rational, otherwise a :data:`DIGITS`-digit float."""
    expr = sp.nsimplify(expr) if expr.is_Rational else expr
    if expr.is_Rational:
        return expr
    return sp.N(expr, DIGITS)


def _one_case(expr: sp.Expr) -> sp.Expr:
    """A loss expression over N cases of K outputs, for one case with one output."""
    return expr.xreplace({N: 1, K: 1}).doit().xreplace({n: 0, k: 0, p: 0, q: 0})


def _one_row(expr: sp.Expr) -> sp.Expr:
    """A one-case expression with K = 1 written out.

    The label c[0] is 0 (the only class) and a row's log-sum-exp over its one element is
    that element.
    """
    from derive.calculus.derivation import LABELS
    from derive.calculus.indexed import lse

    expr = expr.xreplace({LABELS[0]: 0})
    return expr.replace(lambda e: isinstance(e, lse), lambda e: e.rewrite(sp.log).doit())


def neuron_formulas(activation: Activation, loss: Loss):
    """The derived formulas of the neuron: s(w, x, b), f(s), f'(s), L(ŷ, y), ∂L/∂ŷ.

    Returns
    -------
    tuple
        (forward of the dense layer in w, x, b; ∂s/∂w; ∂s/∂b; f(s); f'(s); L; ∂L/∂ŷ),
        the loss formulas in :data:`YHAT` and :data:`Y`.
    """
    dense = registry.get("dense", "layer")
    layer = derive_layer(dense)
    one = {sp.Symbol("N", integer=True, positive=True): 1,
           sp.Symbol("I", integer=True, positive=True): 1,
           sp.Symbol("O", integer=True, positive=True): 1}
    x_arr, w_arr, b_arr = dense.inputs[0], dense.weights[0], dense.weights[1]
    upstream = layer.upstream
    wv, xv, bv = sp.symbols("w x b", real=True)
    names = {x_arr[0, 0]: xv, w_arr[0, 0]: wv, b_arr[0]: bv, upstream[0, 0]: sp.Integer(1)}
    i, o = sp.symbols("i o", integer=True, nonnegative=True)

    def concrete(expr, free):
        expr = expr.xreplace(one).doit().xreplace({**free, i: 0, o: 0})
        return expr.xreplace({a: names.get(a, a) for a in expr.atoms(sp.Indexed)})

    forward = concrete(dense.expr, {n: 0})
    ds_dw = concrete(layer.gradient(w_arr).expr, {p: 0, q: 0})
    ds_db = concrete(layer.gradient(b_arr).expr, {p: 0})
    act = derive_activation(activation)
    act_forward = act.forward.xreplace({x: S})
    act_derivative = act.derivative.xreplace({x: S})
    # Integer labels c[n]: one output has one class, 0, so the label is 0 (y must be 0).
    encoding = "dense" if "dense" in loss.targets else "index"
    derived = derive_loss(loss).variant(encoding)
    pred, target = loss.pred, loss.target
    to_scalars = {pred[0, 0]: YHAT, target[0, 0]: Y}
    value = _one_row(_one_case(loss.scale * sp.Sum(derived.row_value, (n, 0, N - 1))))
    value = value.xreplace(to_scalars)
    # 2(ŷ − y) rather than −2y + 2ŷ: the same derived expression, common factor out.
    gradient = sp.factor_terms(_one_row(_one_case(derived.gradient)).xreplace(to_scalars))
    if YHAT not in value.free_symbols:
        # Softmax over one logit is 1: the loss is a constant and nothing can be learnt.
        raise DeriveError(
            f"with the one output of a single neuron, the loss {loss.name} is the constant "
            f"{value} (it does not depend on the prediction), so there is no gradient to "
            "work out.", where="derive example",
            fix="It needs two or more classes. For one output use "
                "binary_cross_entropy_with_logits (softmax over two classes is the sigmoid of "
                "their difference) or categorical_cross_entropy.")
    return forward, ds_dw, ds_db, act_forward, act_derivative, value, gradient, (wv, xv, bv)


def _check_in_domain(param, value) -> None:
    """Refuse a parameter value its declaration rules out (huber's δ > 0, dropout's p < 1).

    The declared sign comes from the symbol's assumptions, the upper bound from the
    parameter's ``below``: a value outside them gives numbers the op does not define
    (a negative Huber loss).
    """
    symbol, bound = param.symbol, getattr(param, "below", None)
    wrong = ((symbol.is_positive and not value > 0)
             or (symbol.is_nonnegative and not value >= 0)
             or (bound is not None and not value < bound))
    if wrong:
        domain = ("> 0" if symbol.is_positive else ">= 0" if symbol.is_nonnegative else "")
        if bound is not None:
            domain = f"{domain} and < {bound:g}" if domain else f"< {bound:g}"
        raise DeriveError(f"{param.name} = {value} is outside its domain ({param.name} "
                          f"{domain}).", where="derive example --set",
                          fix=f"Give {param.name} {domain}, e.g. its default "
                              f"{param.name}={param.default:g}.")


def worked_example(target: str, settings: dict[str, sp.Expr], *, lr: str = DEFAULT_LR,
                   activation: str | None = None, loss: str | None = None) -> Example:
    """Compute the worked example (see the module's docstring).

    Parameters
    ----------
    target : str
        An activation or a loss of the catalogue.
    settings : dict
        x, w, b, y and, optionally, the activation's parameters, as exact numbers.
    lr : str
        The learning rate of the update (a decimal).
    activation, loss : str, optional
        The other half of the neuron (defaults: identity and MSE).

    Raises
    ------
    DeriveError
        For a missing or unknown name, or a value outside the functions' domain.
    """
    act_op, loss_op = resolve(target, activation, loss)
    missing = [name for name in REQUIRED if name not in settings]
    if missing:
        raise DeriveError(f"missing {', '.join(missing)}.", where="derive example --set",
                          fix="Give x, w, b and y, e.g. --set x=2.1 w=1 b=0 y=4.")
    known = set(REQUIRED) | {p_.name for p_ in act_op.params} | {
        p_.symbol.name for p_ in loss_op.params}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise DeriveError(f"unknown name(s) {', '.join(unknown)}.", where="derive example --set",
                          fix=f"Use x, w, b, y or a parameter of {act_op.name}/{loss_op.name}.")
    params = {p_.symbol: settings.get(p_.name, sp.Rational(repr(float(p_.default))))
              for p_ in act_op.params}
    params |= {n_.symbol: sp.sympify(n_.eval_value).xreplace(params) for n_ in act_op.noise}
    loss_params = {p_.symbol: settings.get(p_.symbol.name, sp.Rational(repr(float(p_.default))))
                   for p_ in loss_op.params}
    for param in (*act_op.params, *loss_op.params):
        _check_in_domain(param, {**params, **loss_params}[param.symbol])
    rate = exact(lr, "lr", where="derive example --lr")
    if rate <= 0:
        raise DeriveError(f"the learning rate {lr!r} is not positive: gradient descent steps "
                          "down the gradient by a positive amount.", where="derive example --lr",
                          fix="Give e.g. --lr 0.01.")
    if "dense" not in loss_op.targets and settings["y"] != 0:
        raise DeriveError(
            f"{loss_op.name} takes a class label as y; the neuron has one output, so its only "
            f"class is 0 and y={settings['y']} is no class of it.",
            where="derive example --set", fix="Write y=0.")
    (forward, ds_dw, ds_db, f_act, df_act, loss_formula, loss_gradient,
     (wv, xv, bv)) = neuron_formulas(act_op, loss_op)
    f_act, df_act = f_act.xreplace(params), df_act.xreplace(params)
    loss_formula = loss_formula.xreplace(loss_params)
    loss_gradient = loss_gradient.xreplace(loss_params)
    xs, ws, bs, ys = (settings[name] for name in REQUIRED)

    def neuron(weight, bias):
        s_ = _value(forward.xreplace({wv: weight, xv: xs, bv: bias}))
        yhat_ = _value(f_act.xreplace({S: s_}))
        return s_, yhat_, _value(loss_formula.xreplace({YHAT: yhat_, Y: ys}))

    s_val, yhat_val, loss_val = neuron(ws, bs)
    grad_yhat = _value(loss_gradient.xreplace({YHAT: yhat_val, Y: ys}))
    act_slope = _value(df_act.xreplace({S: s_val}))
    dsdw = _value(ds_dw.xreplace({xv: xs, wv: ws, bv: bs}))
    dsdb = _value(ds_db.xreplace({xv: xs, wv: ws, bv: bs}))
    grad_s = _value(grad_yhat * act_slope)
    grad_w = _value(grad_s * dsdw)
    grad_b = _value(grad_s * dsdb)
    gd = registry.get("gd", "optimizer")
    step = gd.expr.xreplace({gd.learning_rate.symbol: rate})
    w_new = _value(step.xreplace({w: ws, g: grad_w}))
    b_new = _value(step.xreplace({w: bs, g: grad_b}))
    s_new, yhat_new, loss_new = neuron(w_new, b_new)
    for name, v in (("s", s_val), ("ŷ", yhat_val), ("L", loss_val), ("∂L/∂ŷ", grad_yhat),
                    ("f'(s)", act_slope), ("L (new)", loss_new)):
        if not v.is_finite or not v.is_real:
            raise DeriveError(f"{name} is not a finite real number ({v}).",
                              where="derive example",
                              fix="Choose values inside the domain of the activation and loss.")
    return Example(act_op, loss_op, xs, ws, bs, ys, rate, params, s_val, yhat_val, loss_val,
                   grad_yhat, act_slope, dsdw, dsdb, grad_s, grad_w, grad_b, w_new, b_new, s_new,
                   yhat_new, loss_new, loss_formula, loss_gradient, f_act, df_act)


#: Longest terminating decimal written out in full; longer ones get ``digits`` digits.
MAX_SHOWN = 40


def decimal(value: sp.Expr, digits: int = 10) -> str:
    """A value for plain text: all digits of a short terminating decimal, else ``digits``.

    Values beyond a float's range (1e600 from --set x=1e300 w=1e300) keep their exponent
    instead of printing as inf.
    """
    value = sp.sympify(value)
    if value.is_Rational:
        q_ = value.q
        for factor in (2, 5):
            while q_ % factor == 0:
                q_ //= factor
        if q_ == 1 and len(str(value.p)) <= MAX_SHOWN:
            text = format(sp.N(value, 60), "f") if not value.is_Integer else str(value)
            if "." in text:
                text = text.rstrip("0").rstrip(".")
            if len(text) <= MAX_SHOWN:
                return text
    return rounded(value, digits)


def rounded(value: sp.Expr, digits: int = 10) -> str:
    """``digits`` significant digits, as ``format(float(value), "g")`` writes them.

    Values beyond a float's range keep their exponent (1.0e+600) instead of becoming inf.
    """
    value = sp.sympify(value)
    if value.is_zero or not value.is_finite or 1e-300 < abs(value) < 1e300:
        return f"{float(value):.{digits}g}"
    import mpmath

    return mpmath.nstr(mpmath.mpf(sp.Float(value, digits + 5)._mpf_), digits)
