"""Softmax and log-softmax: forward and vector-Jacobian product against PyTorch."""

import numpy as np
import pytest
import sympy as sp
import torch
from conftest import generated
from oracles import VECTORS

from derive.calculus.derivation import OUTPUT, UPSTREAM, derive_vector
from derive.calculus.indexed import K, k, p, q
from derive.checks import finite_difference_check
from derive.registry import all_ops, get

OPS = all_ops("vector")
IDS = [op.name for op in OPS]


def test_every_vector_function_has_an_oracle():
    assert {op.name for op in OPS} == set(VECTORS)


def test_softmax_vjp_in_terms_of_output():
    d = derive_vector(get("softmax"))
    want = OUTPUT[p, q] * (UPSTREAM[p, q] - sp.Sum(UPSTREAM[p, k] * OUTPUT[p, k], (k, 0, K - 1)))
    assert sp.expand(d.vjp_in_output - want) == 0


@pytest.mark.parametrize("op", OPS, ids=IDS)
def test_finite_differences(op):
    assert all(r.passed for r in finite_difference_check(op, generated("activations", op.name)))


@pytest.mark.parametrize("op", OPS, ids=IDS)
@pytest.mark.parametrize("scale", [1.0, 1e4], ids=["ordinary", "spread1e4"])
@pytest.mark.parametrize("shape", [(4, 6), (1, 1000), (2, 3, 5)], ids=["4x6", "K1000", "3d"])
def test_matches_pytorch(op, scale, shape):
    m = generated("activations", op.name)
    x = np.random.default_rng(0).normal(size=shape) * scale
    d_y = np.random.default_rng(1).normal(size=shape)
    t = torch.tensor(x, requires_grad=True)
    out = VECTORS[op.name](t)
    out.backward(torch.tensor(d_y))
    y = m.forward(x)
    np.testing.assert_allclose(y, out.detach().numpy(), rtol=1e-10, atol=1e-300)
    d_x = m.backward(x, y, d_y)
    assert np.all(np.isfinite(d_x))
    np.testing.assert_allclose(d_x, t.grad.numpy(), rtol=1e-9, atol=1e-12)
