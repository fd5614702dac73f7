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
