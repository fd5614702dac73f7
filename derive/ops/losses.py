"""Every loss of the course notes, and softmax / log-softmax as vector functions.

Each loss is a summand over (n, k) and a reduction scale; the gradient, its closed form
and the kernels follow from the declaration by the indexed-sum calculus.
"""

from __future__ import annotations

import sympy as sp
from sympy import Abs, Max, Piecewise, Rational, Wild, exp, log

from derive.calculus.functions import Terms
from derive.calculus.indexed import K, N, j, k, lse, n
from derive.registry import register
from derive.spec import Loss, Param, Rearrange, VectorFunction

yhat = sp.IndexedBase("yhat", real=True)  # predictions (values or probabilities)
z = sp.IndexedBase("z", real=True)  # logits
y = sp.IndexedBase("y", real=True)  # targets
delta = sp.Symbol("delta", positive=True)

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
    term=Abs(yhat[n, k] - y[n, k]), scale=1 / (N * K), pred=yhat, target=y))

HUBER = register(Loss(
    name="huber", title="Huber loss", latex=r"\operatorname{Huber}",
    params=(Param(delta, 1.0, latex=r"\delta"),),
    term=Piecewise(
        ((yhat[n, k] - y[n, k]) ** 2 / 2, Abs(yhat[n, k] - y[n, k]) < delta),
        (delta * (Abs(yhat[n, k] - y[n, k]) - delta / 2), True),
    ),
    scale=1 / (N * K), pred=yhat, target=y))

BINARY_CROSS_ENTROPY = register(Loss(
    name="binary_cross_entropy", title="Binary cross-entropy (on probabilities)",
    latex=r"\operatorname{BCE}",
    term=-(y[n, k] * log(yhat[n, k]) + (1 - y[n, k]) * log(1 - yhat[n, k])),
    scale=1 / (N * K), pred=yhat, target=y,
    # PyTorch clamps each log at −100 and the gradient's denominator p(1−p) at its
    # EPSILON = 1e-12, a float32 constant (9.99999996e-13 exactly).
    log_floor=-100.0, grad_floor=9.999999960041972e-13, samples="probabilities",
    # −y/ŷ + (1 − y)/(1 − ŷ) over one denominator: the y·ŷ terms cancel, leaving ŷ − y.
    rearrange=(
        Rearrange("common_denominator",
                  ((1 - y[n, k]) * yhat[n, k] - y[n, k] * (1 - yhat[n, k]))
                  / (yhat[n, k] * (1 - yhat[n, k]))),
        Rearrange("expand",
                  Terms(yhat[n, k], -y[n, k] * yhat[n, k], -y[n, k], y[n, k] * yhat[n, k])
                  / (yhat[n, k] * (1 - yhat[n, k]))),
        Rearrange("cancel", (yhat[n, k] - y[n, k]) / (yhat[n, k] * (1 - yhat[n, k]))),
    )))

BINARY_CROSS_ENTROPY_WITH_LOGITS = register(Loss(
    name="binary_cross_entropy_with_logits", title="Binary cross-entropy on logits",
    latex=r"\operatorname{BCE}_\sigma",
    # −[y log σ(z) + (1−y) log(1−σ(z))] written out; the stability rewrites turn
    # log(1 + e^z) into softplus, i.e. max(z,0) − z·y + log1p(e^−|z|).
    term=log(1 + exp(z[n, k])) - z[n, k] * y[n, k],
    scale=1 / (N * K), pred=z, target=y, samples="logits"))

HINGE = register(Loss(
    name="hinge", title="Hinge loss (targets ±1)", latex=r"\operatorname{hinge}",
    term=Max(0, 1 - y[n, k] * yhat[n, k]), scale=1 / (N * K), pred=yhat, target=y,
    samples="signs"))

CATEGORICAL_CROSS_ENTROPY = register(Loss(
    name="categorical_cross_entropy", title="Categorical cross-entropy (on probabilities)",
    latex=r"\operatorname{CE}",
    term=-y[n, k] * log(yhat[n, k]), scale=1 / N, pred=yhat, target=y,
    identities=ONE_HOT_ROWS, samples="probabilities"))

SPARSE_CATEGORICAL_CROSS_ENTROPY = register(Loss(
    name="sparse_categorical_cross_entropy",
    title="Categorical cross-entropy with integer labels (on probabilities)",
    latex=r"\operatorname{CE}",
    term=-y[n, k] * log(yhat[n, k]), scale=1 / N, pred=yhat, target=y,
    targets=("index",), samples="probabilities"))

SOFTMAX_CROSS_ENTROPY = register(Loss(
    name="softmax_cross_entropy", title="Softmax cross-entropy (on logits)",
    latex=r"\operatorname{CE}\circ\operatorname{softmax}",
    # log softmax(z)[n, k] = z[n, k] − log Σ_j e^{z[n, j]}
    term=-y[n, k] * (z[n, k] - lse(z[n, j], j, K)), scale=1 / N, pred=z, target=y,
    targets=("dense", "index"), identities=ONE_HOT_ROWS, samples="logits"))

SOFTMAX = register(VectorFunction(
    name="softmax", title="Softmax", latex=r"\operatorname{softmax}",
    out=exp(z[n, k] - lse(z[n, j], j, K)), arg=z))

LOG_SOFTMAX = register(VectorFunction(
    name="log_softmax", title="Log-softmax", latex=r"\log\operatorname{softmax}",
    out=z[n, k] - lse(z[n, j], j, K), arg=z))
