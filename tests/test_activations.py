"""Every activation in the registry, checked against diff, a reference, finite
differences and PyTorch. A new activation is tested by being declared."""

import numpy as np
import pytest
import sympy as sp
import torch
from conftest import generated
from oracles import GRAD_RTOL, ForwardOnly, oracle

from derive.calculus.derivation import derive_activation
from derive.calculus.functions import explicit
from derive.calculus.verify import evaluate, sample_points
from derive.checks import finite_difference_check
from derive.latex.numeric import compile_numeric
from derive.registry import all_ops
from derive.spec import x, y

OPS = all_ops("activation")
IDS = [op.name for op in OPS]
EXTREMES = [-1e300, -1e4, -1000.0, -30.0, -1e-300, 0.0, 1e-300, 30.0, 1000.0, 1e4, 1e300]


def module(op):
    return generated("activations", op.name)


def params_of(op):
    return {p.name: p.default for p in op.params}


def eval_values(op):
    values = dict(op.defaults)
    values |= {n.symbol: n.eval_value.subs(op.defaults) for n in op.noise}
    return values


def torch_inputs(op):
    kinks = list(derive_activation(op).kinks)
    ordinary = list(np.linspace(*op.domain, 41))
    return np.array(ordinary + kinks + [-1e4, -1000.0, 0.0, 1000.0, 1e4], dtype=np.float64)


@pytest.mark.parametrize("op", OPS, ids=IDS)
def test_declared_output_rule_equals_diff(op):
    derivation = derive_activation(op)
    if derivation.in_output is None:
        pytest.skip(f"{op.name} has no derivative in terms of its output")
    truth = sp.diff(explicit(op.expr), x)  # differentiated from the plain declaration
    values = eval_values(op)
    for point in sample_points(op, derivation.kinks, n=9, seed=3):
        at = values | {x: point}
        output = evaluate(explicit(op.expr), at)
        got = evaluate(explicit(derivation.in_output), at | {y: output})
        want = evaluate(truth, at)
        assert got == pytest.approx(want, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("op", OPS, ids=IDS)
def test_derivative_equals_diff_of_declaration(op):
    derivation = derive_activation(op)
    truth = sp.diff(explicit(op.expr), x)
    values = eval_values(op)
    for point in sample_points(op, derivation.kinks, n=9, seed=4):
        at = values | {x: point}
        assert evaluate(explicit(derivation.derivative), at) == pytest.approx(
            evaluate(truth, at), rel=1e-12, abs=1e-15
        )


@pytest.mark.parametrize("op", OPS, ids=IDS)
def test_forward_equals_plain_reference(op):
    """The kernel (stable form, vexp) against the declaration evaluated in 30 digits."""
    derivation = derive_activation(op)
    points = sample_points(op, derivation.kinks, n=25, seed=5)
    got = module(op).forward(np.array(points), **params_of(op))
    values = eval_values(op)
    want = [evaluate(op.expr, values | {x: p}) for p in points]
    np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-300)


@pytest.mark.parametrize("op", OPS, ids=IDS)
def test_backward_matches_finite_differences(op):
    results = finite_difference_check(op, module(op))
    assert results and all(r.passed for r in results), results


def _torch_params(op, t):
    out = []
    for p in op.params:
        if p.learnable:
            out.append(torch.tensor([p.default], dtype=t.dtype, requires_grad=True))
        else:
            out.append(p.default)
    return out


@pytest.mark.parametrize("op", OPS, ids=IDS)
def test_matches_pytorch_including_extremes_and_kinks(op):
    xs = torch_inputs(op)
    reference = oracle(op)
    t = torch.tensor(xs, dtype=torch.float64, requires_grad=True)
    if isinstance(reference, ForwardOnly):
        want = reference.forward(t).detach().numpy()
        np.testing.assert_array_equal(module(op).forward(xs, **params_of(op)), want)
        return
    tparams = _torch_params(op, t)
    out = reference(t, *tparams)
    d_y = np.random.default_rng(0).uniform(0.5, 2.0, xs.shape)
    out.backward(torch.tensor(d_y))
    y_ours = module(op).forward(xs, **params_of(op))
    np.testing.assert_allclose(y_ours, out.detach().numpy(), rtol=1e-10, atol=1e-300)
    grads = module(op).backward(xs, y_ours, d_y, **params_of(op))
    d_x = grads[0] if isinstance(grads, tuple) else grads
    rtol = GRAD_RTOL.get(op.name, 1e-10)
    np.testing.assert_allclose(d_x, t.grad.numpy(), rtol=rtol, atol=1e-300)
    for k, tp in enumerate(p for p in tparams if isinstance(p, torch.Tensor)):
        assert grads[k + 1] == pytest.approx(float(tp.grad[0]), rel=1e-10)


@pytest.mark.parametrize("op", OPS, ids=IDS)
def test_finite_for_every_finite_input(op):
    xs = np.array(EXTREMES + list(derive_activation(op).kinks))
    for mode in ([{"training": False}, {"training": True, "seed": 7}] if op.stochastic else [{}]):
        y_ = module(op).forward(xs, **params_of(op), **mode)
        grads = module(op).backward(xs, y_, np.ones_like(xs), **params_of(op), **mode)
        d_x = grads[0] if isinstance(grads, tuple) else grads
        assert np.all(np.isfinite(y_)), dict(zip(xs, y_, strict=True))
        assert np.all(np.isfinite(d_x)), dict(zip(xs, d_x, strict=True))


@pytest.mark.parametrize("op", [op for op in OPS if not op.stochastic],
                         ids=[op.name for op in OPS if not op.stochastic])
def test_extreme_inputs_equal_the_exact_values(op):
    # Finite is not enough: a naive x/sqrt(1 + x**2) is finite at 1e200 but returns 0,
    # not 1. Far from every kink, the kernels must equal the declaration evaluated in
    # 50 digits (mpmath, whose exponents do not overflow), at the largest and smallest
    # magnitudes a float64 holds. The absolute tolerance admits σ'(30) = σ(1 − σ)
    # computed from the output (9.348e-14 for 9.358e-14, as PyTorch computes it too)
    # and nothing that loses a whole value.
    kinks = derive_activation(op).kinks
    xs = np.array([v for v in EXTREMES if all(abs(v - k) > 1e-3 for k in kinks)])
    defaults = dict(op.defaults)
    forward = op.expr.subs(defaults)
    derivative = sp.diff(op.expr, x).subs(defaults)
    want_y = np.array([float(compile_numeric(forward, x)(v)) for v in xs])
    want_d = np.array([float(compile_numeric(derivative, x)(v)) for v in xs])
    y_ = module(op).forward(xs, **params_of(op))
    grads = module(op).backward(xs, y_, np.ones_like(xs), **params_of(op))
    d_x = grads[0] if isinstance(grads, tuple) else grads
    np.testing.assert_allclose(y_, want_y, rtol=1e-9, atol=1e-12, err_msg="forward")
    np.testing.assert_allclose(d_x, want_d, rtol=1e-9, atol=1e-12, err_msg="derivative")


@pytest.mark.parametrize("op", OPS, ids=IDS)
def test_float32_agrees_with_float64(op):
    xs64 = np.linspace(*op.domain, 257)
    xs32 = xs64.astype(np.float32)
    m = module(op)
    y64 = m.forward(xs32.astype(np.float64), **params_of(op))
    y32 = m.forward(xs32, **params_of(op))
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, y64, rtol=1e-6, atol=1e-6)
    d32 = m.backward(xs32, y32, np.ones_like(xs32), **params_of(op))
    d64 = m.backward(xs32.astype(np.float64), y64, np.ones_like(y64), **params_of(op))
    d32, d64 = (d[0] if isinstance(d, tuple) else d for d in (d32, d64))
    assert d32.dtype == np.float32
    np.testing.assert_allclose(d32, d64, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", OPS, ids=IDS)
def test_any_shape_out_argument_and_parallel_path(op):
    m = module(op)
    rng = np.random.default_rng(1)
    big = rng.uniform(*op.domain, size=(2, m.PARALLEL_MIN_SIZE // 2 + 3, 3))
    out = np.empty_like(big)
    returned = m.forward(big, **params_of(op), out=out)
    assert returned is out and out.shape == big.shape
    # The same elements through the serial path (small chunks) give the same numbers.
    flat = big.reshape(-1)
    serial = np.concatenate([m.forward(c, **params_of(op)) for c in np.array_split(flat, 64)])
    np.testing.assert_array_equal(out.reshape(-1), serial)
    d_out = np.empty_like(big)
    grads = m.backward(big, out, np.ones_like(big), **params_of(op), out=d_out)
    assert (grads[0] if isinstance(grads, tuple) else grads) is d_out


def test_wrong_dtype_and_out_are_refused():
    m = generated("activations", "relu")
    with pytest.raises(TypeError, match="float32 or float64"):
        m.forward(np.arange(4))
    with pytest.raises(ValueError, match="out must be"):
        m.forward(np.zeros(4), out=np.zeros(5))
    with pytest.raises(ValueError, match="one shape"):
        m.backward(np.zeros(4), np.zeros(4), np.zeros(3))
