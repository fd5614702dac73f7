"""Every layer in the registry: derived sums, finite differences, adjoint tests, and
PyTorch for forward and all gradients over odd shapes."""

import numpy as np
import pytest
import sympy as sp
import torch
from conftest import generated
from oracles import oracle, reference

from derive.calculus.derivation import derive_layer
from derive.checks import finite_difference_check
from derive.registry import all_ops, get

OPS = all_ops("layer")
#: Layers with one output. A recurrence returns (states, last state): tests/test_rnn.py
#: compares both, and every gradient, with PyTorch's recurrent modules.
ONE_OUTPUT = [op for op in OPS if op.recurrence is None]

#: Per layer: (op, case) for every case its table entry lists; an op without an entry
#: has none here and is named by test_oracles.
PARAMS = [(op, case) for op in ONE_OUTPUT for case in getattr(reference(op), "cases", [])]
IDS = [f"{op.name}-{k}" for op in ONE_OUTPUT
       for k in range(len(getattr(reference(op), "cases", [])))]


def module(op):
    return generated("layers", op.name)


def arrays_for(op, case, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    inputs, weights, hyper = case
    arrays = [rng.normal(size=s).astype(dtype) for s in inputs + weights]
    for k in oracle(op).positive:  # a running variance, say
        arrays[k] = np.abs(arrays[k]) + 0.5
    # Integer inputs (token ids) come first: drawn inside the axis they index.
    padded, original, _ = op.padding or (None, None, None)
    public = [*op.indices, *(original if a == padded else a for a in op.inputs), *op.weights,
              *op.buffers]
    sizes = {d: size for a, arr in zip(public, arrays, strict=False)
             for d, size in zip(op.shape(a), arr.shape, strict=True)}
    for k, base in enumerate(op.indices):
        bound = int(sp.sympify(op.index_range(base)).xreplace(sizes))
        arrays[k] = rng.integers(0, bound, size=arrays[k].shape)
    return arrays, hyper


def differentiated(op):
    return len(op.inputs) + len(op.weights)


def test_dense_gradients_are_the_reduced_sums():
    op = get("dense")
    d = derive_layer(op)
    n, o = sp.symbols("n o", integer=True, nonnegative=True)
    p, q = sp.symbols("p q", integer=True, nonnegative=True)
    N, O = sp.symbols("N O", integer=True, positive=True)
    d_s, x, W = d.upstream, *[dict((str(a), a) for a, _ in op.arrays)[k] for k in ("x", "W")]
    assert d.gradient(W).expr == sp.Sum(d_s[n, p] * x[n, q], (n, 0, N - 1))
    assert d.gradient(x).expr == sp.Sum(W[o, q] * d_s[p, o], (o, 0, O - 1))
    assert str(d.gradient(W).expr) == "Sum(d_s[n, p]*x[n, q], (n, 0, N - 1))"


def test_dense_weight_gradient_goes_to_blas():
    text = (generated("layers", "dense").__file__)
    source = open(text).read()
    assert "np.dot(d_s.T, x, d_W)" in source and "np.dot(x, W.T, s)" in source


@pytest.mark.parametrize(("op", "case"), PARAMS, ids=IDS)
def test_matches_pytorch_forward_and_all_gradients(op, case):
    arrays, hyper = arrays_for(op, case)
    m = module(op)
    first = len(op.indices)  # token ids: no gradient
    tensors = [torch.tensor(a, requires_grad=first <= k < first + differentiated(op))
               for k, a in enumerate(arrays)]
    want = oracle(op).torch(*tensors, **hyper)
    d_out = np.random.default_rng(9).normal(size=tuple(want.shape))
    want.backward(torch.tensor(d_out))
    got = m.forward(*arrays, **hyper)
    np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-10, atol=1e-12)
    grads = m.backward(*arrays, d_out, **hyper)
    assert len(grads) == differentiated(op)
    for g, t in zip(grads, tensors[first: first + differentiated(op)], strict=True):
        assert g.shape == t.shape
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("op", "case"), PARAMS, ids=IDS)
def test_adjoint_identity_for_the_input(op, case):
    """<L x, v> = <x, L^T v> for the layer as a linear map of its input (bias zeroed)."""
    if not oracle(op).linear:
        pytest.skip(f"{op.name} is not linear in its input")
    arrays, hyper = arrays_for(op, case, seed=4)
    m = module(op)
    if op.weights:
        bias = len(op.inputs) + len(op.weights) - 1  # the bias makes the layer affine
        arrays[bias] = np.zeros_like(arrays[bias])
    rng = np.random.default_rng(5)
    y = m.forward(*arrays, **hyper)
    v = rng.normal(size=y.shape)
    d_x = m.backward(*arrays, v, **hyper)[0]
    assert np.vdot(y, v) == pytest.approx(np.vdot(arrays[0], d_x), rel=1e-12)


@pytest.mark.parametrize("op", OPS, ids=[op.name for op in OPS])
def test_finite_differences(op):
    results = finite_difference_check(op, module(op))
    assert results and all(r.passed for r in results), results


@pytest.mark.parametrize("op", ONE_OUTPUT, ids=[op.name for op in ONE_OUTPUT])
def test_float32_agrees_with_float64(op):
    case = oracle(op).cases[-1]
    a64, hyper = arrays_for(op, case, seed=2)
    a32 = [a.astype(np.float32) if a.dtype.kind == "f" else a for a in a64]
    m = module(op)
    y32 = m.forward(*a32, **hyper)
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, m.forward(*a64, **hyper), rtol=1e-5, atol=1e-5)
    d = np.ones_like(y32)
    for g32, g64 in zip(m.backward(*a32, d, **hyper), m.backward(*a64, d.astype(np.float64),
                                                                  **hyper), strict=True):
        assert g32.dtype == np.float32
        np.testing.assert_allclose(g32, g64, rtol=1e-4, atol=1e-4)


def test_shape_errors_name_the_array_and_axis():
    m = module(get("dense"))
    with pytest.raises(ValueError, match=r"W: axis 1 should have size I = 3, got 4"):
        m.forward(np.zeros((2, 3)), np.zeros((5, 4)), np.zeros(5))
    with pytest.raises(ValueError, match="too small"):
        module(get("conv2d")).forward(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 3, 3)), np.zeros(1))


def test_max_pool_ties_route_to_the_first_maximum_as_pytorch():
    m = module(get("max_pool2d"))
    x = np.round(np.random.default_rng(3).normal(size=(2, 2, 6, 6)))  # many ties
    x[0, 0] = 1.0  # every window tied
    t = torch.tensor(x, requires_grad=True)
    want = torch.nn.functional.max_pool2d(t, 2, 2)
    d = np.random.default_rng(4).normal(size=tuple(want.shape))
    want.backward(torch.tensor(d))
    (d_x,) = m.backward(x, d, kernel_size=2, stride=2)
    np.testing.assert_array_equal(d_x, t.grad.numpy())


def test_dropout_training_mask_is_seeded_scaled_and_reused_by_backward():
    m = module(get("dropout"))
    x = np.ones((200, 500))
    y = m.forward(x, p=0.3, training=1, seed=5)
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.01
    np.testing.assert_allclose(y[kept], 1 / 0.7)
    np.testing.assert_array_equal(y, m.forward(x, p=0.3, training=1, seed=5))
    assert not np.array_equal(y, m.forward(x, p=0.3, training=1, seed=6))
    d = np.random.default_rng(0).normal(size=x.shape)
    (d_x,) = m.backward(x, d, p=0.3, training=1, seed=5)
    np.testing.assert_allclose(d_x, d * y, rtol=1e-15)
    np.testing.assert_array_equal(m.forward(x, p=0.3, training=0), x)
