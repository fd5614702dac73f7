"""Every loss of the course notes, and softmax / log-softmax as vector functions.

Each loss is a summand over (n, k) and a reduction scale; the gradient, its closed form
and the kernels follow from the declaration by the indexed-sum calculus.
"""

from __future__ import annotations

import sympy as sp
from sympy import Abs, Max, Piecewise, Rational, Wild, exp, log

from derive.calculus.functions import Factors, Terms, sigmoid
from derive.calculus.indexed import K, N, j, k, lse, n
from derive.registry import register
from derive.spec import Loss, Param, Rearrange, VectorFunction

yhat = sp.IndexedBase("yhat", real=True)  # predictions (values or probabilities)
z = sp.IndexedBase("z", real=True)  # logits
y = sp.IndexedBase("y", real=True)  # targets
delta = sp.Symbol("delta", positive=True)
_a = sp.Symbol("a", real=True)  # the argument an identity is quoted at

_row = Wild("row")
#: One-hot (or probability) target rows sum to one.
ONE_HOT_ROWS = ((sp.Sum(y[_row, k], (k, 0, K - 1)), sp.Integer(1)),)

MSE = register(Loss(
    name="mse", title="Mean squared error", latex=r"\operatorname{MSE}",
    term=(yhat[n, k] - y[n, k]) ** 2, scale=1 / (N * K), pred=yhat, target=y))

SSE_HALF = register(Loss(
    name="sse_half", title="Half sum of squared errors (Rumelhart et al., 1986)",
    latex=r"E", term=(yhat[n, k] - y[n, k]) ** 2, scale=Rational(1, 2), pred=yhat, target=y))

MAE = register(Loss(
    name="mae", title="Mean absolute error", latex=r"\operatorname{MAE}",
    term=Abs(yhat[n, k] - y[n, k]), scale=1 / (N * K), pred=yhat, target=y,
    # The error u = ŷ − y named first: sgn(u) reads in ŷ − y, as the declaration.
    recipe="named_difference"))

HUBER = register(Loss(
    name="huber", title="Huber loss", latex=r"\operatorname{Huber}",
    params=(Param(delta, 1.0, latex=r"\delta"),),
    term=Piecewise(
        ((yhat[n, k] - y[n, k]) ** 2 / 2, Abs(yhat[n, k] - y[n, k]) < delta),
        (delta * (Abs(yhat[n, k] - y[n, k]) - delta / 2), True),
    ),
    # One inner function u = ŷ − y for both branches (not ŷ − y and y − ŷ).
    scale=1 / (N * K), pred=yhat, target=y, recipe="named_difference"))

BINARY_CROSS_ENTROPY = register(Loss(
    name="binary_cross_entropy", title="Binary cross-entropy (on probabilities)",
    latex=r"\operatorname{BCE}",
    term=-(y[n, k] * log(yhat[n, k]) + (1 - y[n, k]) * log(1 - yhat[n, k])),
    scale=1 / (N * K), pred=yhat, target=y,
    # PyTorch clamps each log at −100 and the gradient's denominator p(1−p) at its
    # EPSILON = 1e-12, a float32 constant (9.99999996e-13 exactly).
    log_floor=-100.0, grad_floor=9.999999960041972e-13, samples="probabilities",
    # After a sigmoid, log σ(z) and log(1 − σ(z)) are taken on the logits, stably.
    fused=(("sigmoid", "binary_cross_entropy_with_logits"),),
    # −(y/ŷ − (1 − y)/(1 − ŷ)) over one denominator, the terms and the minus sign in
    # front kept as the rules left them: the y·ŷ terms cancel, and −(y − ŷ) is ŷ − y.
    rearrange=(
        Rearrange("common_denominator",
                  -Terms(Factors(y[n, k], 1 - yhat[n, k]), -Factors(1 - y[n, k], yhat[n, k]))
                  / (yhat[n, k] * (1 - yhat[n, k]))),
        Rearrange("expand",
                  -Terms(y[n, k], -y[n, k] * yhat[n, k], -yhat[n, k], y[n, k] * yhat[n, k])
                  / (yhat[n, k] * (1 - yhat[n, k]))),
        Rearrange("cancel", (yhat[n, k] - y[n, k]) / (yhat[n, k] * (1 - yhat[n, k])),
                  identities=((-Terms(y[n, k], -yhat[n, k]), yhat[n, k] - y[n, k]),)),
    )))

BINARY_CROSS_ENTROPY_WITH_LOGITS = register(Loss(
    name="binary_cross_entropy_with_logits", title="Binary cross-entropy on logits",
    latex=r"\operatorname{BCE}_\sigma",
    # −[y log σ(z) + (1−y) log(1−σ(z))] written out; the stability rewrites turn
    # log(1 + e^z) into softplus, i.e. max(z,0) − z·y + log1p(e^−|z|).
    term=log(1 + exp(z[n, k])) - z[n, k] * y[n, k],
    scale=1 / (N * K), pred=z, target=y, samples="logits", recipe="sigmoid_of_logits",
    # e^z/(1 + e^z), numerator and denominator divided by e^z, is σ(z).
    rearrange=(
        Rearrange("use_identity", sigmoid(z[n, k]) - y[n, k],
                  identities=((exp(z[n, k]) / (1 + exp(z[n, k])), 1 / (1 + exp(-z[n, k])),
                               sigmoid(z[n, k])),)),
    )))

HINGE = register(Loss(
    name="hinge", title="Hinge loss (targets ±1)", latex=r"\operatorname{hinge}",
    term=Max(0, 1 - y[n, k] * yhat[n, k]), scale=1 / (N * K), pred=yhat, target=y,
    samples="signs"))

CATEGORICAL_CROSS_ENTROPY = register(Loss(
    name="categorical_cross_entropy", title="Categorical cross-entropy (on probabilities)",
    latex=r"\operatorname{CE}",
    term=-y[n, k] * log(yhat[n, k]), scale=1 / N, pred=yhat, target=y,
    identities=ONE_HOT_ROWS, samples="probabilities", classes=True,
    # After a softmax, the log of the quotient is taken apart: log-sum-exp on the logits.
    fused=(("softmax", "softmax_cross_entropy"),)))

SPARSE_CATEGORICAL_CROSS_ENTROPY = register(Loss(
    name="sparse_categorical_cross_entropy",
    title="Categorical cross-entropy with integer labels (on probabilities)",
    latex=r"\operatorname{CE}",
    term=-y[n, k] * log(yhat[n, k]), scale=1 / N, pred=yhat, target=y,
    targets=("index",), samples="probabilities", classes=True,
    fused=(("softmax", "softmax_cross_entropy"),)))

SOFTMAX_CROSS_ENTROPY = register(Loss(
    name="softmax_cross_entropy", title="Softmax cross-entropy (on logits)",
    latex=r"\operatorname{CE}\circ\operatorname{softmax}",
    # log softmax(z)[n, k] = z[n, k] − log Σ_j e^{z[n, j]}
    term=-y[n, k] * (z[n, k] - lse(z[n, j], j, K)), scale=1 / N, pred=z, target=y,
    targets=("dense", "index"), identities=ONE_HOT_ROWS, samples="logits", classes=True,
    # Written after a softmax layer, it means the same: the softmax is already inside it.
    fused=(("softmax", "softmax_cross_entropy"),),
    recipe="softmax_of_logits"))

i = sp.Symbol("i", integer=True, nonnegative=True)  # a softmax row's summation index
softmax_ = sp.IndexedBase("softmax", real=True)
upstream = sp.IndexedBase("g", real=True)  # ∂E/∂softmax
_row_sum = sp.Sum(exp(z[n, i]), (i, 0, K - 1))
_delta = sp.KroneckerDelta(k, j)
_sk = exp(z[n, k]) / _row_sum
_sj = exp(z[n, j]) / _row_sum

SOFTMAX = register(VectorFunction(
    name="softmax", title="Softmax", latex=r"\operatorname{softmax}",
    out=exp(z[n, k] - lse(z[n, j], j, K)), arg=z,
    output=softmax_, shown_as=_sk, upstream=upstream,
    # ∂softmax_k/∂z_j by the quotient rule, e^{z_k} giving δ_kj and the row sum e^{z_j}.
    # Products are written factor by factor (Factors, Terms), in the order the quotient
    # rule states them: SymPy would sort the terms and pull a minus sign out in front.
    jacobian=(
        Rearrange("definition", sp.Derivative(_sk, z[n, j]), inner=((softmax_[n, k], _sk),)),
        Rearrange("quotient", Factors(1 / _row_sum**2, Terms(
            Factors(sp.Derivative(exp(z[n, k]), z[n, j]), _row_sum),
            -Factors(exp(z[n, k]), sp.Derivative(_row_sum, z[n, j])))),
                  quote=(exp(z[n, k]), _row_sum)),
        Rearrange("delta", Factors(1 / _row_sum**2, Terms(
            Factors(exp(z[n, k]), _delta, _row_sum),
            -Factors(exp(z[n, k]), sp.Derivative(_row_sum, z[n, j])))),
                  identities=((sp.Derivative(exp(z[n, k]), z[n, j]), exp(z[n, k]) * _delta),),
                  quote=(_delta, sp.Eq(k, j, evaluate=False))),
        Rearrange("constant_terms", Terms(Factors(exp(z[n, k]), _delta, _row_sum),
                                          -Factors(exp(z[n, k]), exp(z[n, j]))) / _row_sum**2,
                  quote=(exp(z[n, j]), sp.Eq(i, j, evaluate=False))),
        Rearrange("split_terms", Terms(Factors(_sk, _delta),
                                       -Factors(_sk, exp(z[n, j]) / _row_sum))),
        Rearrange("name_output", Terms(Factors(softmax_[n, k], _delta),
                                       -Factors(softmax_[n, k], softmax_[n, j])),
                  inner=((softmax_[n, k], _sk), (softmax_[n, j], _sj))),
        Rearrange("common_factor", Factors(softmax_[n, k], _delta - softmax_[n, j])),
    ),
    # ∂E/∂z_j: every output k of the case depends on z_j (those of other cases do not);
    # the δ_kj keeps one term.
    vjp=(
        Rearrange("chain_layer", sp.Sum(upstream[n, k] * sp.Derivative(softmax_[n, k], z[n, j]),
                                        (k, 0, K - 1)),
                  quote=(upstream[n, k],)),
        # The Jacobian is quoted where it is used: on the slides it is on another frame.
        Rearrange("jacobian", sp.Sum(Factors(upstream[n, k], softmax_[n, k],
                                             _delta - softmax_[n, j]), (k, 0, K - 1)),
                  identities=((sp.Derivative(softmax_[n, k], z[n, j]),
                               Factors(softmax_[n, k], _delta - softmax_[n, j])),)),
        Rearrange("distribute", sp.Sum(upstream[n, k] * softmax_[n, k] * _delta, (k, 0, K - 1))
                  - softmax_[n, j] * sp.Sum(upstream[n, k] * softmax_[n, k], (k, 0, K - 1))),
        Rearrange("delta_sum", Terms(Factors(softmax_[n, j], upstream[n, j]), -Factors(
            softmax_[n, j], sp.Sum(upstream[n, k] * softmax_[n, k], (k, 0, K - 1)))),
                  quote=(_delta, sp.Eq(k, j, evaluate=False))),
        Rearrange("common_factor", Factors(softmax_[n, j], upstream[n, j] - sp.Sum(
            upstream[n, k] * softmax_[n, k], (k, 0, K - 1)))),
    )))

log_softmax_ = sp.IndexedBase("log_softmax", real=True)
_log_row = sp.log(_row_sum)

LOG_SOFTMAX = register(VectorFunction(
    name="log_softmax", title="Log-softmax", latex=r"\log\operatorname{softmax}",
    out=z[n, k] - lse(z[n, j], j, K), arg=z,
    output=log_softmax_, shown_as=z[n, k] - _log_row, upstream=upstream,
    # ∂/∂z_j (z_k − ln Σ_i e^{z_i}): δ_kj from the first term, the softmax from the second
    # (the sum rule needs no line of its own: the δ_kj step takes the terms one by one).
    jacobian=(
        Rearrange("definition", sp.Derivative(z[n, k] - _log_row, z[n, j]),
                  inner=((log_softmax_[n, k], z[n, k] - _log_row),)),
        Rearrange("delta", _delta - sp.Derivative(_log_row, z[n, j]),
                  identities=((sp.Derivative(z[n, k], z[n, j]), _delta),),
                  quote=(_delta, sp.Eq(k, j, evaluate=False))),
        Rearrange("chain", _delta - sp.Derivative(_row_sum, z[n, j]) / _row_sum,
                  inner=((sp.Symbol("u", positive=True), _row_sum),)),
        Rearrange("constant_terms", _delta - _sj,
                  quote=(exp(z[n, j]), sp.Eq(i, j, evaluate=False))),
        Rearrange("name_softmax", _delta - softmax_[n, j], inner=((softmax_[n, j], _sj),),
                  identities=((softmax_[n, j], _sj, exp(log_softmax_[n, j])),)),
    ),
    # ∂E/∂z_j: every output k of the case depends on z_j (those of other cases do not);
    # the δ_kj keeps one term.
    vjp=(
        Rearrange("chain_layer", sp.Sum(upstream[n, k]
                                        * sp.Derivative(log_softmax_[n, k], z[n, j]),
                                        (k, 0, K - 1)),
                  quote=(upstream[n, k],)),
        Rearrange("jacobian", sp.Sum(Factors(upstream[n, k], _delta - softmax_[n, j]),
                                     (k, 0, K - 1)),
                  identities=((sp.Derivative(log_softmax_[n, k], z[n, j]),
                               _delta - softmax_[n, j]),)),
        Rearrange("distribute", sp.Sum(upstream[n, k] * _delta, (k, 0, K - 1))
                  - softmax_[n, j] * sp.Sum(upstream[n, k], (k, 0, K - 1))),
        Rearrange("delta_sum", upstream[n, j]
                  - softmax_[n, j] * sp.Sum(upstream[n, k], (k, 0, K - 1)),
                  quote=(_delta, sp.Eq(k, j, evaluate=False))),
    )))

LOG_COSH = register(Loss(
    name="log_cosh", title="Log-cosh loss", latex=r"\operatorname{log\,cosh}",
    # ln cosh(ŷ − y): like the squared error near 0, like the absolute one far away. The
    # stability pass evaluates it as |d| + ln(1 + e^{−2|d|}) − ln 2 (cosh overflows).
    term=log(sp.cosh(yhat[n, k] - y[n, k])),
    scale=1 / (N * K), pred=yhat, target=y, recipe="named_difference",
    # The chain rule leaves sinh u / cosh u: that is tanh u.
    rearrange=(
        Rearrange("use_identity", sp.tanh(sp.UnevaluatedExpr(yhat[n, k] - y[n, k])),
                  identities=((sp.sinh(_a) / sp.cosh(_a), sp.tanh(_a)),)),
    )))
