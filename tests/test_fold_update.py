"""The SGD update folded into the weight gradient's GEMM (issue 14, speed).

When the optimizer's update is ``w ← β w + α g`` with β and α fixed for a step (plain
gradient descent, also with an L2 penalty), a generated train step has the GEMM that
would write a dense layer's weight gradient add its product into the weights instead
(BLAS ``C ← α A B + β C``). These tests hold which updates fold, which kernels fold, and
that a folded step moves the parameters as the unfolded one does: momentum with μ = 0 is
the same update as gradient descent but keeps state, so it never folds.
"""

import dataclasses

import numpy as np
import pytest
import sympy as sp
from conftest import network_modules, tanh_mlp_spec

from derive import registry
from derive.calculus.derivation import derive_layer, gradient_array
from derive.calculus.regularise import regularised
from derive.codegen.loops import Contraction, GemmUpdate
from derive.codegen.lower import lower_layer
from derive.codegen.network import fold_weight_updates
from derive.codegen.optimizer import affine_update
from derive.ops.regularisers import CLIP_NORM, CLIP_VALUE
from derive.spec import g, w

STEPS = 5
LR, L2 = 0.03, 0.01

#: name → [train] body. Each "gd" case has an unfolded twin with momentum μ = 0.
CASES = {
    "gd": f'optimizer = "gd"\nlr = {LR}',
    "gd_l2": f'optimizer = "gd"\nlr = {LR}\nl2 = {L2}',
    "still": f'optimizer = "momentum"\nmu = 0.0\nlr = {LR}',
    "still_l2": f'optimizer = "momentum"\nmu = 0.0\nlr = {LR}\nl2 = {L2}',
    "gd_l1": f'optimizer = "gd"\nlr = {LR}\nl1 = {L2}',
}


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    return network_modules(tmp_path_factory.mktemp("fold_update"),
                           lambda name: tanh_mlp_spec(f"net_{name}", CASES[name]))


def _gd():
    return registry.get("gd", "optimizer")


def test_gradient_descent_is_affine_in_the_gradient():
    lr = _gd().learning_rate.symbol
    assert affine_update(_gd()) == (1, -lr)


def test_an_l2_penalty_folds_into_beta():
    l2 = registry.get("l2", "regulariser")
    beta, alpha = affine_update(regularised(_gd(), l2))
    lr, lam = _gd().learning_rate.symbol, l2.strengths[0].symbol
    assert sp.expand(beta - (1 - lr * lam)) == 0 and alpha == -lr


@pytest.mark.parametrize("op", [o for o in registry.all_ops("optimizer") if o.state],
                         ids=lambda o: o.name)
def test_an_optimizer_with_state_does_not_fold(op):
    assert affine_update(op) is None


@pytest.mark.parametrize(("reg", "clip"), [("l1", None), ("elastic_net", None),
                                         (None, CLIP_VALUE), (None, CLIP_NORM)],
                         ids=["l1", "elastic_net", "clip_value", "clip_norm"])
def test_a_penalty_or_clip_that_is_not_affine_does_not_fold(reg, clip):
    reg = registry.get(reg, "regulariser") if reg else None
    assert affine_update(regularised(_gd(), reg, clip)) is None


def test_the_coefficients_reproduce_the_update():
    op = regularised(_gd(), registry.get("l2", "regulariser"))
    beta, alpha = affine_update(op)
    rng = np.random.default_rng(0)
    for _ in range(5):
        values = {p.symbol: rng.uniform(0.01, 1) for p in op.params}
        values |= {w: rng.normal(), g: rng.normal()}
        want = float(op.expr.xreplace(values))
        got = float((beta * w + alpha * g).xreplace(values))
        assert got == pytest.approx(want, rel=1e-14)


def _dense_backward(input_gradients=True):
    dense = registry.get("dense", "layer")
    return dense, lower_layer(derive_layer(dense), "test", input_gradients).backward


def test_a_dense_backward_folds_its_weight_not_its_bias():
    dense, kernel = _dense_backward()
    W, b = dense.weights
    folded, done = fold_weight_updates(kernel, (W, b))
    assert [weight for weight, _, _ in done] == [W]
    assert gradient_array(W) not in folded.arrays and gradient_array(b) in folded.arrays
    kinds = [type(st) for st in folded.statements]
    # The input gradient d_s W is computed first, from the weights before their step.
    assert kinds[:2] == [Contraction, GemmUpdate]
    assert folded.hyper[-2:] == done[0][1:]


def test_a_weight_read_after_its_gradient_is_not_folded():
    dense, kernel = _dense_backward()
    W = dense.weights[0]
    reordered = dataclasses.replace(kernel, statements=kernel.statements[::-1])
    folded, done = fold_weight_updates(reordered, (W,))
    assert done == () and folded is reordered


def test_the_folded_step_is_generated_only_when_the_update_is_affine(network):
    for name, folds in (("gd", True), ("gd_l2", True), ("still", False), ("gd_l1", False)):
        text = open(network(name).__file__, encoding="utf-8").read()
        assert ("gemm_into(" in text) is folds, name


def _run(module, dtype):
    params = module.init_params(seed=3, dtype=dtype)
    state = module.init_state(params)
    rng = np.random.default_rng(4)
    losses = []
    for _ in range(STEPS):
        x = rng.normal(size=(8,) + module.INPUT_SHAPE).astype(dtype)
        y = rng.normal(size=(8, 3)).astype(dtype)
        losses.append(module.train_step(params, state, x, y, LR))
    return params, losses


@pytest.mark.parametrize(("folded", "unfolded"), [("gd", "still"), ("gd_l2", "still_l2")])
def test_a_folded_step_moves_the_parameters_as_the_unfolded_one(network, folded, unfolded):
    got, got_losses = _run(network(folded), np.float64)
    want, want_losses = _run(network(unfolded), np.float64)
    np.testing.assert_allclose(got_losses, want_losses, rtol=1e-9)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    # float32 too: the same BLAS routine in single precision.
    got, _ = _run(network(folded), np.float32)
    want, _ = _run(network(unfolded), np.float32)
    for a, b in zip(got, want, strict=True):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
