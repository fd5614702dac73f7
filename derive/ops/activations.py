"""Every activation of the course notes, and the modern ones users expect.

One declaration per op. Kinks are ``Piecewise`` whose boundary ownership is PyTorch's
subgradient convention; everything else (derivative, kernel, LaTeX, tests) follows.
"""

from __future__ import annotations

import sympy as sp
from sympy import Abs, Piecewise, Rational, cosh, erf, exp, sign, sinh, sqrt, tanh

from derive.calculus.functions import Factors, Terms, normal_cdf, sigmoid, softplus
from derive.registry import register
from derive.spec import Activation, Noise, Param, Rearrange, x, y

alpha = sp.Symbol("alpha", real=True)
beta = sp.Symbol("beta", positive=True)
lam = sp.Symbol("lambda_", positive=True)
a = sp.Symbol("a", positive=True)
theta = sp.Symbol("theta", real=True)
lower = sp.Symbol("lower", real=True)
upper = sp.Symbol("upper", real=True)
sigma_n = sp.Symbol("sigma", positive=True)
slope = sp.Symbol("r", real=True)  # RReLU's random slope
eps = sp.Symbol("epsilon", real=True)  # Noisy ReLU's standard normal draw

# SELU's constants (Klambauer et al., 2017), to the digits PyTorch uses.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946

IDENTITY = register(Activation(
    name="identity", title="Identity", latex=r"\operatorname{id}", expr=x))

HEAVISIDE = register(Activation(
    name="heaviside", title="Heaviside step", latex=r"H",
    expr=Piecewise((1, x >= 0), (0, True))))

SIGMOID = register(Activation(
    name="sigmoid", title="Logistic sigmoid", latex=r"\sigma",
    expr=1 / (1 + exp(-x)),
    grad_in_output=y * (1 - y),
    # e^{−x}/(1 + e^{−x})² is σ times 1 − σ: split the fraction, then recognise both.
    rearrange=(
        Rearrange("split_product", Factors(1 / (1 + exp(-x)), exp(-x) / (1 + exp(-x)))),
        Rearrange("use_identity", Factors(sigmoid(x), 1 - sigmoid(x)), identities=(
            (sigmoid(x), 1 / (1 + exp(-x))),
            (1 - sigmoid(x), 1 - 1 / (1 + exp(-x)),
             Terms(1, exp(-x), -1) / (1 + exp(-x)),
             exp(-x) / (1 + exp(-x))),
        )),
    )))

TANH = register(Activation(
    name="tanh", title="Hyperbolic tangent", latex=r"\tanh",
    expr=tanh(x),
    grad_in_output=1 - y**2,
    # The notes' definition (eq. 7.4) and their form of the derivative, sech² (eq. 7.5).
    shown_as=(sinh(x) / cosh(x), (exp(x) - exp(-x)) / (exp(x) + exp(-x))),
    # (cosh² − sinh²)/cosh² = 1 − sinh²/cosh² = 1 − tanh²: one pass, each fraction once;
    # the notes' sech² is the same function (1 − tanh² = 1/cosh²).
    rearrange=(
        Rearrange("divide_terms", Terms(1, -sinh(x) ** 2 / cosh(x) ** 2)),
        Rearrange("use_identity", 1 - tanh(x) ** 2, identities=(
            (sinh(x) / cosh(x), tanh(x)),
        )),
    ),
    remarks=("sech_squared",)))

SOFTSIGN = register(Activation(
    name="softsign", title="Softsign", latex=r"\operatorname{softsign}",
    expr=x / (1 + Abs(x)),
    # x·sgn(x) = |x| empties the numerator; and 1 − |y| = 1/(1 + |x|) writes the
    # derivative in terms of the output, which the notes (section 7.6) say cannot be done.
    rearrange=(
        Rearrange("use_identity",
                  Terms(1 + Abs(x), -Abs(x)) / (1 + Abs(x)) ** 2,
                  identities=((x * sign(x), Abs(x)),)),
        Rearrange("cancel", 1 / (1 + Abs(x)) ** 2),
    ),
    grad_in_output=(1 - Abs(y)) ** 2,
    output_identities=((1 - Abs(y), 1 - Abs(x) / (1 + Abs(x)), 1 / (1 + Abs(x))),),
    remarks=("notes_no_output_form",)))

HARD_SIGMOID = register(Activation(
    name="hard_sigmoid", title="Hard sigmoid", latex=r"\operatorname{hard\,\sigma}",
    expr=Piecewise((0, x <= -3), (1, x >= 3), (x / 6 + Rational(1, 2), True))))

HARD_TANH = register(Activation(
    name="hard_tanh", title="Hard tanh", latex=r"\operatorname{hard\,tanh}",
    expr=Piecewise((-1, x <= -1), (1, x >= 1), (x, True))))

RELU = register(Activation(
    name="relu", title="Rectified linear unit (ReLU)", latex=r"\operatorname{ReLU}",
    expr=Piecewise((x, x > 0), (0, True))))

LEAKY_RELU = register(Activation(
    name="leaky_relu", title="Leaky ReLU (LReLU)", latex=r"\operatorname{LReLU}",
    params=(Param(alpha, 0.01, latex=r"\alpha"),),
    expr=Piecewise((x, x > 0), (alpha * x, True))))

PRELU = register(Activation(
    name="prelu", title="Parametric ReLU (PReLU)", latex=r"\operatorname{PReLU}",
    params=(Param(alpha, 0.25, learnable=True, latex=r"\alpha"),),
    expr=Piecewise((x, x > 0), (alpha * x, True))))

RRELU = register(Activation(
    name="rrelu", title="Randomized leaky ReLU (RReLU)", latex=r"\operatorname{RReLU}",
    params=(Param(lower, 1 / 8, latex="l"), Param(upper, 1 / 3, latex="u")),
    noise=(Noise(slope, "uniform", eval_value=(lower + upper) / 2, low=lower, high=upper),),
    expr=Piecewise((x, x > 0), (slope * x, True))))

ELU = register(Activation(
    name="elu", title="Exponential linear unit (ELU)", latex=r"\operatorname{ELU}",
    params=(Param(alpha, 1.0, latex=r"\alpha"),),
    expr=Piecewise((x, x > 0), (alpha * (exp(x) - 1), True)),
    grad_in_output=Piecewise((1, x > 0), (y + alpha, True)),
    # On x ≤ 0 the derivative αeˣ is α plus the output, written in the order the
    # output form α + y prints in.
    output_identities=((alpha * exp(x), Terms(alpha, alpha * (exp(x) - 1))),)))

SELU = register(Activation(
    name="selu", title="Scaled exponential linear unit (SELU)", latex=r"\operatorname{SELU}",
    params=(Param(alpha, SELU_ALPHA, latex=r"\alpha"), Param(lam, SELU_SCALE, latex=r"\lambda")),
    expr=lam * Piecewise((x, x > 0), (alpha * (exp(x) - 1), True)),
    grad_in_output=Piecewise((lam, x > 0), (y + lam * alpha, True)),
    # On x ≤ 0 the derivative λαeˣ is the output plus λα.
    output_identities=((lam * alpha * exp(x),
                        Terms(lam * alpha * (exp(x) - 1), lam * alpha)),)))

NOISY_RELU = register(Activation(
    name="noisy_relu", title="Noisy ReLU", latex=r"\operatorname{NReLU}",
    params=(Param(sigma_n, 1.0, latex=r"\sigma_{\mathcal{N}}"),),
    noise=(Noise(eps, "normal", eval_value=sp.Integer(0)),),
    expr=Piecewise((x + sigma_n * eps, x > 0), (0, True))))

WILSON_COWAN = register(Activation(
    name="wilson_cowan", title="Wilson–Cowan sigmoid", latex=r"S",
    params=(Param(a, 1.2, latex="a"), Param(theta, 2.8, latex=r"\theta")),
    expr=1 / (1 + exp(-a * (x - theta))) - 1 / (1 + exp(a * theta)),
    # σ(a(x−θ)) = y + σ(−aθ), so S' = a·σ(1−σ) reuses the output.
    grad_in_output=a * (y + sigmoid(-a * theta)) * (1 - y - sigmoid(-a * theta)),
    output_identities=(
        (1 / (1 + exp(a * theta)), sigmoid(-a * theta)),
        (sigmoid(a * (x - theta)), y + sigmoid(-a * theta)),
    ),
    # As for σ: the fraction split in two, then σ(u) and 1 − σ(u) recognised, u = a(x − θ).
    rearrange=(
        Rearrange("split_product", Factors(
            a, 1 / (1 + exp(-a * (x - theta))),
            exp(-a * (x - theta)) / (1 + exp(-a * (x - theta))))),
        Rearrange("use_identity", Factors(
            a, sigmoid(a * (x - theta)), 1 - sigmoid(a * (x - theta))), identities=(
            (sigmoid(a * (x - theta)), 1 / (1 + exp(-a * (x - theta)))),
            (1 - sigmoid(a * (x - theta)),
             exp(-a * (x - theta)) / (1 + exp(-a * (x - theta)))),
        )),
    ),
    domain=(-2.0, 8.0)))

SILU = register(Activation(
    name="silu", title="Sigmoid linear unit (SiLU, swish)", latex=r"\operatorname{SiLU}",
    expr=x / (1 + exp(-x)),
    # (1 + e^{−x} + x e^{−x})/(1 + e^{−x})²: one fraction per term, σ and 1 − σ in each,
    # then σ taken out — σ(x)(1 + x(1 − σ(x))).
    rearrange=(
        Rearrange("split_terms", Terms(
            1 / (1 + exp(-x)), Factors(x, 1 / (1 + exp(-x)), exp(-x) / (1 + exp(-x))))),
        Rearrange("use_identity", Terms(sigmoid(x), Factors(x, sigmoid(x), 1 - sigmoid(x))),
                  identities=((sigmoid(x), 1 / (1 + exp(-x))),
                              (1 - sigmoid(x), exp(-x) / (1 + exp(-x))))),
        Rearrange("common_factor", Factors(sigmoid(x), 1 + x * (1 - sigmoid(x)))),
    )))

#: The normal density e^{−x²/2}/√(2π) as written (SymPy would print √2·√π).
_SQRT_2PI = sp.Pow(sp.Mul(2, sp.pi, evaluate=False), Rational(1, 2), evaluate=False)
_DENSITY = sp.Mul(exp(-x**2 / 2), sp.Pow(_SQRT_2PI, -1, evaluate=False), evaluate=False)

GELU = register(Activation(
    name="gelu", title="Gaussian error linear unit (GELU)", latex=r"\operatorname{GELU}",
    expr=x * (1 + erf(x / sqrt(2))) / 2,
    # GELU(x) = x Φ(x): the rules give the normal density and the normal CDF back.
    rearrange=(
        Rearrange("use_identity", Terms(Factors(x, _DENSITY), normal_cdf(x)),
                  identities=((normal_cdf(x), (1 + erf(x / sqrt(2))) / 2),
                              (sqrt(2) / (2 * sqrt(sp.pi)),
                               sp.Pow(_SQRT_2PI, -1, evaluate=False)))),
    )))

SOFTPLUS = register(Activation(
    name="softplus", title="Softplus", latex=r"\operatorname{softplus}",
    params=(Param(beta, 1.0, latex=r"\beta"),),
    expr=sp.log(1 + exp(beta * x)) / beta,
    grad_in_output=1 - exp(-beta * y),
    # e^{βy} = 1 + e^{βx} puts the output into σ(βx).
    output_identities=(
        (exp(beta * y), 1 + exp(beta * x)),
        (sigmoid(beta * x), exp(beta * x) / (1 + exp(beta * x)),
         sp.Mul(exp(beta * y) - 1, sp.Pow(exp(beta * y), -1, evaluate=False),
                evaluate=False),
         1 - exp(-beta * y)),
    ),
    # e^{βx}/(1 + e^{βx}): numerator and denominator divided by e^{βx} give σ(βx).
    rearrange=(
        Rearrange("use_identity", sigmoid(beta * x), identities=(
            (exp(beta * x) / (1 + exp(beta * x)), 1 / (exp(-beta * x) + 1), sigmoid(beta * x)),
        )),
    )))

MISH = register(Activation(
    name="mish", title="Mish", latex=r"\operatorname{mish}",
    expr=x * tanh(softplus(x))))

BENT_IDENTITY = register(Activation(
    name="bent_identity", title="Bent identity", latex=r"\operatorname{bent}",
    # √(x² + 1) is |x|·√(1 + x⁻²) outside [−1, 1], so that x² never overflows; the
    # branches are equal (and so are their derivatives) where they meet.
    expr=Piecewise(((-x * sqrt(1 + x**-2) - 1) / 2 + x, x < -1),
                   ((sqrt(x**2 + 1) - 1) / 2 + x, x <= 1),
                   ((x * sqrt(1 + x**-2) - 1) / 2 + x, True)),
    shown_as=((sqrt(x**2 + 1) - 1) / 2 + x,)))
