"""PyTorch as the independent oracle: one line per op, or the reason there is none.

Each oracle takes a float64 tensor and the op's parameters (as floats) and returns
PyTorch's result; gradients come from autograd.
"""

import torch
import torch.nn.functional as F

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
}

#: Ops PyTorch has no gradient for, with the reason; forward is still compared.
FORWARD_ONLY = {
    "heaviside": lambda t: torch.heaviside(t, torch.ones((), dtype=t.dtype)),
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
}

VECTORS = {
    "softmax": lambda t: torch.softmax(t, -1),
    "log_softmax": lambda t: torch.log_softmax(t, -1),
}


#: Layer oracles: (inputs..., weights..., **hyper) tensors → PyTorch's output.
LAYERS = {
    "dense": lambda x, W, b: F.linear(x, W, b),
    "conv2d": lambda x, K, b, stride, padding: F.conv2d(x, K, b, stride=stride, padding=padding),
    "avg_pool2d": lambda x, kernel_size, stride: F.avg_pool2d(x, kernel_size, stride),
    "global_avg_pool2d": lambda x: F.adaptive_avg_pool2d(x, 1).flatten(1),
    "flatten": lambda x: torch.flatten(x, 1),
    "max_pool2d": lambda x, kernel_size, stride: F.max_pool2d(x, kernel_size, stride),
    "batch_norm": lambda x, g, b, eps: F.batch_norm(x, None, None, g, b, True, 0.1, eps),
    "batch_norm_inference": lambda x, g, b, rm, rv, eps: F.batch_norm(
        x, rm, rv, g, b, False, 0.1, eps),
    "layer_norm": lambda x, g, b, eps: F.layer_norm(x, x.shape[-1:], g, b, eps),
    # Evaluation mode is the identity; training mode is tested on its own (random mask).
    "dropout": lambda x, p, training, seed: F.dropout(x, p, training=bool(training)),
}
