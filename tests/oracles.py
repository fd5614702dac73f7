"""PyTorch as the independent oracle: one entry per op, or the reason there is none.

Every table is keyed by the op's catalogue name. A declared op with no entry is not an
error here — tests look their oracle up lazily through :func:`reference`, skip with the
reason, and the single test ``test_every_op_has_an_oracle_or_says_none`` names what is
missing. So a new op never breaks collection; it fails one test that says what to add.

Activation oracles take a float64 tensor and the op's parameters (as floats) and return
PyTorch's result; gradients come from autograd.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F  # noqa: N812  (the name PyTorch documents)


@dataclass(frozen=True)
class NoReference:
    """Marks an op PyTorch has no reference for; ``reason`` says why (and what checks it)."""

    reason: str


@dataclass(frozen=True)
class ForwardOnly:
    """PyTorch has the op's value but no gradient for it (``reason`` says why)."""

    forward: Callable
    reason: str


@dataclass(frozen=True)
class LayerCases:
    """A layer's PyTorch oracle and the shapes it is compared on.

    Parameters
    ----------
    torch : callable
        (inputs..., weights..., buffers..., **hyper) tensors → PyTorch's output.
    cases : list of (input shapes, weight shapes, hyper-parameters)
        Odd on purpose; the last one is also the float32 case.
    positive : tuple of int
        Positions of arrays that must be positive (a running variance).
    linear : bool
        Whether the layer is linear in its input once its bias is zero (adjoint test).
    """

    torch: Callable
    cases: list
    positive: tuple[int, ...] = ()
    linear: bool = True


@dataclass(frozen=True)
class RecurrentCases:
    """A recurrent layer's PyTorch module, compared on both outputs and every gradient.

    Parameters
    ----------
    module : callable
        (input size, hidden size) → a float64 ``torch.nn`` module, batch-first, one layer.
    weights : tuple of str
        The module's parameters, in the order of the declaration's weights.
    lengths : tuple of int
        Sequence lengths compared: one step, two, and a long sequence.
    """

    module: Callable
    weights: tuple[str, ...]
    lengths: tuple[int, ...] = (1, 2, 50)


@dataclass(frozen=True)
class OptimizerOracle:
    """A torch.optim equivalent: ``make(h)`` → (class, keyword arguments) from our
    hyper-parameters by name, and ``state`` our slot → (torch's state key, factor)."""

    make: Callable
    state: dict = field(default_factory=dict)


#: The message of a missing entry, the same in every test that meets one.
MISSING = ("no PyTorch reference for {name!r}: add one to tests/oracles.py, "
           "or mark it as having none (NoReference(\"why\") in the kind's table: "
           "ACTIVATIONS, LOSSES, LAYERS, OPTIMIZERS or VECTORS)")


ACTIVATIONS = {
    "identity": lambda t: t * 1.0,
    "sigmoid": lambda t: torch.sigmoid(t),
    "tanh": lambda t: torch.tanh(t),
    "softsign": lambda t: F.softsign(t),
    "hard_sigmoid": lambda t: F.hardsigmoid(t),
    "hard_tanh": lambda t: F.hardtanh(t),
    "relu": lambda t: F.relu(t),
    "leaky_relu": lambda t, alpha: F.leaky_relu(t, alpha),
    "prelu": lambda t, alpha: F.prelu(t, alpha),
    "rrelu": lambda t, lower, upper: F.rrelu(t, lower, upper, training=False),
    "elu": lambda t, alpha: F.elu(t, alpha),
    "selu": lambda t, alpha, lambda_: F.selu(t),
    "noisy_relu": lambda t, sigma: F.relu(t),
    # Not a PyTorch op: composed from torch.sigmoid, an independent implementation.
    "wilson_cowan": lambda t, a, theta: torch.sigmoid(a * (t - theta)) - torch.sigmoid(
        torch.tensor(-a * theta, dtype=t.dtype)
    ),
    "silu": lambda t: F.silu(t),
    "gelu": lambda t: F.gelu(t),
    "softplus": lambda t, beta: F.softplus(t, beta),
    "mish": lambda t: F.mish(t),
    # Not a PyTorch op: the definition written with torch.sqrt (independent of our
    # overflow-free branches; the comparison stays within |x| ≤ 1e4, where x² is exact enough).
    "bent_identity": lambda t: (torch.sqrt(t * t + 1) - 1) / 2 + t,
    "heaviside": ForwardOnly(lambda t: torch.heaviside(t, torch.ones((), dtype=t.dtype)),
                             "the step function has no gradient in PyTorch"),
}

#: Where PyTorch itself is less precise than 1e-10, the tolerance and why.
GRAD_RTOL = {
    # ATen's hardsigmoid_backward multiplies by the float literal 1.0f/6.0f even in
    # float64, so its slope is 1/6 to float32 precision only.
    "hard_sigmoid": 1e-7,
}


def _xlogy_ce(p, y):
    return -(torch.special.xlogy(y, p)).sum(1).mean()


#: Loss oracles: (pred, target) tensors → PyTorch's value; rows × classes as 2-D.
LOSSES = {
    "mse": lambda p, y: F.mse_loss(p, y),
    "sse_half": lambda p, y: 0.5 * ((p - y) ** 2).sum(),
    "mae": lambda p, y: F.l1_loss(p, y),
    "huber": lambda p, y, delta: F.huber_loss(p, y, delta=delta),
    "binary_cross_entropy": lambda p, y: F.binary_cross_entropy(p, y),
    "binary_cross_entropy_with_logits": lambda z, y: F.binary_cross_entropy_with_logits(z, y),
    # Not a PyTorch loss: composed from relu, whose subgradient at 0 is 0 like ours.
    "hinge": lambda p, y: F.relu(1 - y * p).mean(),
    # Not a PyTorch loss: composed from xlogy, so that 0·log 0 = 0.
    "categorical_cross_entropy": _xlogy_ce,
    "sparse_categorical_cross_entropy": lambda p, c: F.nll_loss(torch.log(p), c),
    "softmax_cross_entropy": lambda z, y: F.cross_entropy(z, y),
    # Not a PyTorch loss: the stable form |d| + log1p(e^{−2|d|}) − log 2 of log cosh d in
    # torch operations (torch.cosh itself overflows at d = ±1e4), autograd for the gradient.
    "log_cosh": lambda p, y: ((p - y).abs() + torch.log1p(torch.exp(-2 * (p - y).abs()))
                              - math.log(2)).mean(),
}

VECTORS = {
    "softmax": lambda t: torch.softmax(t, -1),
    "log_softmax": lambda t: torch.log_softmax(t, -1),
}

#: Layer oracles and their cases (input shapes, weight shapes, hyper-parameters).
LAYERS = {
    "dense": LayerCases(lambda x, W, b: F.linear(x, W, b),
                        [([(1, 3)], [(2, 3), (2,)], {}), ([(5, 7)], [(4, 7), (4,)], {})]),
    "conv2d": LayerCases(
        lambda x, K, b, stride, padding: F.conv2d(x, K, b, stride=stride, padding=padding),
        [([(1, 1, 5, 5)], [(1, 1, 1, 1), (1,)], {"stride": 1, "padding": 0}),
         ([(2, 3, 7, 6)], [(4, 3, 3, 2), (4,)], {"stride": 2, "padding": 1}),
         ([(2, 3, 8, 5)], [(2, 3, 3, 3), (2,)], {"stride": 1, "padding": 2}),
         ([(1, 2, 9, 9)], [(3, 2, 4, 4), (3,)], {"stride": 3, "padding": 0})]),
    "conv1d": LayerCases(
        lambda x, K, b, stride, padding: F.conv1d(x, K, b, stride=stride, padding=padding),
        [([(1, 1, 5)], [(1, 1, 1), (1,)], {"stride": 1, "padding": 0}),
         ([(2, 3, 11)], [(4, 3, 3), (4,)], {"stride": 2, "padding": 1}),
         ([(3, 2, 8)], [(2, 2, 5), (2,)], {"stride": 1, "padding": 3}),
         ([(1, 2, 9)], [(3, 2, 4), (3,)], {"stride": 3, "padding": 0})]),
    "avg_pool2d": LayerCases(
        lambda x, kernel_size, stride: F.avg_pool2d(x, kernel_size, stride),
        [([(2, 3, 6, 4)], [], {"kernel_size": 2, "stride": 2}),
         ([(1, 2, 7, 5)], [], {"kernel_size": 3, "stride": 1}),
         ([(1, 1, 7, 7)], [], {"kernel_size": 3, "stride": 2})]),
    "global_avg_pool2d": LayerCases(lambda x: F.adaptive_avg_pool2d(x, 1).flatten(1),
                                    [([(2, 3, 4, 5)], [], {}), ([(1, 1, 1, 1)], [], {})]),
    "flatten": LayerCases(lambda x: torch.flatten(x, 1),
                          [([(2, 3, 4, 5)], [], {}), ([(1, 1, 2, 1)], [], {})]),
    "max_pool2d": LayerCases(
        lambda x, kernel_size, stride: F.max_pool2d(x, kernel_size, stride),
        [([(2, 3, 6, 4)], [], {"kernel_size": 2, "stride": 2}),
         ([(1, 2, 7, 5)], [], {"kernel_size": 3, "stride": 1}),
         ([(1, 1, 7, 7)], [], {"kernel_size": 3, "stride": 2})]),
    "batch_norm": LayerCases(
        lambda x, g, b, eps: F.batch_norm(x, None, None, g, b, True, 0.1, eps),
        [([(4, 3, 2, 5)], [(3,), (3,)], {"eps": 1e-5}),
         ([(2, 1, 3, 3)], [(1,), (1,)], {"eps": 1e-3})],
        linear=False),
    "batch_norm_inference": LayerCases(
        lambda x, g, b, rm, rv, eps: F.batch_norm(x, rm, rv, g, b, False, 0.1, eps),
        [([(4, 3, 2, 5)], [(3,), (3,), (3,), (3,)], {"eps": 1e-5})],
        positive=(4,), linear=False),
    "layer_norm": LayerCases(
        lambda x, g, b, eps: F.layer_norm(x, x.shape[-1:], g, b, eps),
        [([(4, 7)], [(7,), (7,)], {"eps": 1e-5}), ([(1, 3)], [(3,), (3,)], {"eps": 1e-5})],
        linear=False),
    # Evaluation mode is the identity; training mode is tested on its own (random mask).
    "dropout": LayerCases(lambda x, p, training, seed: F.dropout(x, p, training=bool(training)),
                          [([(4, 7)], [], {"p": 0.3, "training": 0, "seed": 1})]),
    # Token ids first (drawn as integers by the tests), then the table; more tokens than
    # rows, so repeated tokens exercise the scatter-add.
    "embedding": LayerCases(lambda x, W: F.embedding(x, W),
                            [([(3, 7)], [(5, 4)], {}), ([(1, 1)], [(1, 2)], {}),
                             ([(2, 50)], [(9, 3)], {})],
                            linear=False),
    # Q (N, L, D), K (N, S, D), V (N, S, E); L ≠ S without the mask, L = S with it.
    "attention": LayerCases(
        lambda Q, K, V, causal: F.scaled_dot_product_attention(Q, K, V,
                                                               is_causal=bool(causal)),
        [([(2, 3, 4), (2, 5, 4), (2, 5, 3)], [], {"causal": 0}),
         ([(2, 4, 3), (2, 4, 3), (2, 4, 2)], [], {"causal": 1})],
        linear=False),
    # PyTorch's h_n is (layers, N, H): the last state, with one more axis in front.
    "rnn": RecurrentCases(
        lambda features, hidden: torch.nn.RNN(features, hidden, batch_first=True,
                                              nonlinearity="tanh", dtype=torch.float64),
        ("weight_ih_l0", "bias_ih_l0", "weight_hh_l0", "bias_hh_l0")),
    "rnn_relu": RecurrentCases(
        lambda features, hidden: torch.nn.RNN(features, hidden, batch_first=True,
                                              nonlinearity="relu", dtype=torch.float64),
        ("weight_ih_l0", "bias_ih_l0", "weight_hh_l0", "bias_hh_l0")),
    "lstm": RecurrentCases(
        lambda features, hidden: torch.nn.LSTM(features, hidden, batch_first=True,
                                               dtype=torch.float64),
        ("weight_ih_l0", "bias_ih_l0", "weight_hh_l0", "bias_hh_l0")),
    "gru": RecurrentCases(
        lambda features, hidden: torch.nn.GRU(features, hidden, batch_first=True,
                                              dtype=torch.float64),
        ("weight_ih_l0", "bias_ih_l0", "weight_hh_l0", "bias_hh_l0")),
}


def _betas(h):
    return (h["beta1"], h["beta2"])


#: torch.optim oracles, from our hyper-parameters by name.
OPTIMIZERS = {
    "gd": OptimizerOracle(lambda h: (torch.optim.SGD, {"lr": h["lr"]})),
    # Polyak's velocity v is −lr·b of PyTorch's buffer b: the same steps at a fixed lr.
    "momentum": OptimizerOracle(lambda h: (torch.optim.SGD, {"lr": h["lr"], "momentum": h["mu"]})),
    "momentum_rumelhart": OptimizerOracle(
        lambda h: (torch.optim.SGD, {"lr": h["lr"], "momentum": h["alpha"]})),
    "nesterov": OptimizerOracle(
        lambda h: (torch.optim.SGD, {"lr": h["lr"], "momentum": h["mu"], "nesterov": True}),
        {"buf": ("momentum_buffer", 1.0)}),
    "adagrad": OptimizerOracle(lambda h: (torch.optim.Adagrad, {"lr": h["lr"], "eps": h["eps"]}),
                               {"s": ("sum", 1.0)}),
    "rmsprop": OptimizerOracle(
        lambda h: (torch.optim.RMSprop, {"lr": h["lr"], "alpha": h["rho"], "eps": h["eps"]}),
        {"s": ("square_avg", 1.0)}),
    "adam": OptimizerOracle(
        lambda h: (torch.optim.Adam, {"lr": h["lr"], "betas": _betas(h), "eps": h["eps"]}),
        {"m": ("exp_avg", 1.0), "s": ("exp_avg_sq", 1.0)}),
    "nadam": OptimizerOracle(
        lambda h: (torch.optim.NAdam, {"lr": h["lr"], "betas": _betas(h), "eps": h["eps"],
                                       "momentum_decay": h["momentum_decay"]}),
        {"m": ("exp_avg", 1.0), "s": ("exp_avg_sq", 1.0)}),
    "adamw": OptimizerOracle(
        lambda h: (torch.optim.AdamW, {"lr": h["lr"], "betas": _betas(h), "eps": h["eps"],
                                       "weight_decay": h["weight_decay"]}),
        {"m": ("exp_avg", 1.0), "s": ("exp_avg_sq", 1.0)}),
}

#: Penalties summed over a weight tensor, from the strengths by name; autograd gives the
#: gradient a training step adds (PyTorch's weight_decay is the l2 one's, λw).
REGULARISERS = {
    "l2": lambda w, h: h["l2"] / 2 * (w**2).sum(),
    "l1": lambda w, h: h["l1"] * w.abs().sum(),
    "elastic_net": lambda w, h: h["l1"] * w.abs().sum() + h["l2"] / 2 * (w**2).sum(),
}

#: Every table, by the declaration's kind.
TABLES = {"activation": ACTIVATIONS, "loss": LOSSES, "vector": VECTORS, "layer": LAYERS,
          "optimizer": OPTIMIZERS, "regulariser": REGULARISERS}


def reference(op):
    """The op's entry in its kind's table, or ``None`` when it has none yet.

    An entry may be a :class:`NoReference` (PyTorch has none, on purpose).
    """
    return TABLES[op.kind].get(op.name)


def missing(ops) -> list[str]:
    """The named message for every op in ``ops`` with no entry in its table."""
    return [MISSING.format(name=op.name) for op in ops if reference(op) is None]


def oracle(op):
    """The op's entry, or skip the calling test with the reason there is none.

    Tests that need PyTorch call this inside their body (never at collection), so an op
    without an entry skips here and fails only ``test_every_op_has_an_oracle_or_says_none``.
    """
    import pytest

    entry = reference(op)
    if entry is None:
        pytest.skip(MISSING.format(name=op.name))
    if isinstance(entry, NoReference):
        pytest.skip(f"{op.name}: no PyTorch reference ({entry.reason})")
    return entry

