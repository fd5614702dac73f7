"""Every loss in the registry: closed forms, explicit sizes, finite differences, and
PyTorch at ordinary and extreme inputs. A new loss is tested by being declared."""

import numpy as np
import pytest
import sympy as sp
import torch
from conftest import generated
from oracles import oracle

from derive.calculus.derivation import LABELS, derive_loss, loss_summand
from derive.calculus.functions import explicit
from derive.calculus.indexed import K, N, explicit_sizes, k, n, p, q, softmax_of, unname_softmax
from derive.checks import finite_difference_check, loss_samples
from derive.registry import all_ops, get

OPS = all_ops("loss")
CASES = [(op, e) for op in OPS for e in op.targets]
CASE_IDS = [f"{op.name}-{e}" for op, e in CASES]


def module(op):
    return generated("losses", op.name)


def params_of(op):
    return {p_.name: p_.default for p_ in op.params}


# -- the derivation reaches the known closed forms ---------------------------------------

def test_softmax_cross_entropy_gradient_is_softmax_minus_target_over_n():
    op = get("softmax_cross_entropy")
    z, y = op.pred, op.target
    dense = derive_loss(op).variant("dense").gradient
    assert sp.expand(dense - (softmax_of(z)[p, q] - y[p, q]) / N) == 0
    assert str(dense) == "(softmax(z)[p, q] - y[p, q])/N"
    index = derive_loss(op).variant("index").gradient
    assert sp.expand(index - (softmax_of(z)[p, q] - sp.KroneckerDelta(q, LABELS[p])) / N) == 0


def test_sse_half_gradient_is_prediction_minus_target():
    op = get("sse_half")
    gradient = derive_loss(op).variant("dense").gradient
    assert gradient == op.pred[p, q] - op.target[p, q]


def test_mse_and_bce_with_logits_closed_forms():
    mse = get("mse")
    g = derive_loss(mse).variant("dense").gradient
    assert sp.expand(g - 2 * (mse.pred[p, q] - mse.target[p, q]) / (N * K)) == 0
    bce = get("binary_cross_entropy_with_logits")
    from derive.calculus.functions import sigmoid
    g = derive_loss(bce).variant("dense").gradient
    assert sp.expand(g - (sigmoid(bce.pred[p, q]) - bce.target[p, q]) / (N * K)) == 0


def _numeric(expr, values, labels):
    # Unroll first, then labels: SymPy's unrolling may index pred by a label, yhat[0, c[0]].
    expr = explicit_sizes(explicit(unname_softmax(expr)), {})
    return float(sp.N(expr.xreplace(labels).xreplace(values), 30))


@pytest.mark.parametrize("sizes", [(2, 3), (1, 10)], ids=["N2K3", "N1K10"])
@pytest.mark.parametrize(("op", "encoding"), CASES, ids=CASE_IDS)
def test_gradient_equals_diff_at_explicit_sizes(op, encoding, sizes):
    """Unroll the sums for concrete N, K, differentiate with plain diff, compare."""
    rows, classes = sizes
    variant = derive_loss(op).variant(encoding)
    target_base = variant.target
    summand = loss_summand(op, encoding)
    whole = op.scale * sp.Sum(sp.Sum(summand, (k, 0, K - 1)), (n, 0, N - 1))
    unrolled = explicit_sizes(whole, {N: rows, K: classes})
    pred, target = loss_samples(op, encoding, shape=(rows, classes), seed=5)
    values = {op.pred[i, c]: sp.Float(pred[i, c], 30)
              for i in range(rows) for c in range(classes)}
    if encoding == "dense":
        values |= {target_base[i, c]: sp.Float(target[i, c], 30)
                   for i in range(rows) for c in range(classes)}
    else:
        values |= {target_base[i]: int(target[i]) for i in range(rows)}
    values |= {p_.symbol: sp.Float(p_.default, 30) for p_ in op.params}
    labels = {key: v for key, v in values.items() if getattr(key, "base", None) == LABELS}
    for i in range(rows):
        for c in range(classes):
            want = _numeric(sp.diff(unrolled, op.pred[i, c]), values, labels)
            at = {p: i, q: c, N: rows, K: classes}
            got = _numeric(unname_softmax(variant.gradient).xreplace(at), values, labels)
            assert got == pytest.approx(want, rel=1e-12, abs=1e-14), (i, c)


# -- kernels ---------------------------------------------------------------------------

@pytest.mark.parametrize("op", OPS, ids=[op.name for op in OPS])
def test_backward_matches_finite_differences(op):
    results = finite_difference_check(op, module(op))
    assert results and all(r.passed for r in results), results


def _torch_case(op, pred, target):
    tp = torch.tensor(pred, dtype=torch.float64, requires_grad=True)
    if target.dtype.kind in "iu":
        tt = torch.tensor(target, dtype=torch.long)
    else:
        tt = torch.tensor(target, dtype=torch.float64)
    value = oracle(op)(tp, tt, *params_of(op).values())
    value.backward()
    return value.item(), tp.grad.numpy()


def _compare_with_torch(op, pred, target, rtol=1e-10):
    want_value, want_grad = _torch_case(op, pred, target)
    got_value = module(op).forward(pred, target, **params_of(op))
    got_grad = module(op).backward(pred, target, **params_of(op))
    if np.isfinite(want_value):
        assert got_value == pytest.approx(want_value, rel=rtol, abs=1e-300)
    finite = np.isfinite(want_grad)
    np.testing.assert_allclose(got_grad[finite], want_grad[finite], rtol=rtol, atol=1e-300)
    # Where PyTorch is finite, so are we.
    assert np.all(np.isfinite(got_grad[finite]))
    return got_value, got_grad


@pytest.mark.parametrize(("op", "encoding"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("shape", [(5, 4), (1, 7), (3, 1000)], ids=["5x4", "batch1", "K1000"])
def test_matches_pytorch_on_ordinary_inputs(op, encoding, shape):
    pred, target = loss_samples(op, encoding, shape=shape, seed=11)
    _compare_with_torch(op, pred, target)


def _extreme_inputs(op, encoding):
    rng = np.random.default_rng(2)
    if op.samples == "logits":
        pred = np.array([[1e4, -1e4, 0.0], [-1e4, 0.0, 1e4], [5e3, 5e3, -5e3]])
    elif op.samples == "probabilities":
        pred = np.array([[0.0, 1.0, 0.5], [1.0, 0.0, 1e-300], [0.0, 0.0, 1.0]])
    else:
        pred = np.array([[1e4, -1e4, 0.0], [1e150, -1e150, 1.0], [0.0, 1.0, -1.0]])
    if encoding == "index":
        return pred, np.array([0, 1, 2])
    if op.samples == "signs":
        return pred, rng.choice([-1.0, 1.0], pred.shape)
    if op.samples in ("logits", "probabilities"):
        return pred, np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    return pred, rng.uniform(-1, 1, pred.shape)


@pytest.mark.parametrize(("op", "encoding"), CASES, ids=CASE_IDS)
def test_matches_pytorch_and_stays_finite_on_extreme_inputs(op, encoding):
    pred, target = _extreme_inputs(op, encoding)
    _compare_with_torch(op, pred, target)


@pytest.mark.parametrize(("op", "encoding"), CASES, ids=CASE_IDS)
def test_float32_agrees_with_float64(op, encoding):
    pred, target = loss_samples(op, encoding, shape=(8, 5), seed=3)
    m = module(op)
    v64 = m.forward(pred, target, **params_of(op))
    v32 = m.forward(pred.astype(np.float32), target, **params_of(op))
    assert v32 == pytest.approx(v64, rel=1e-5, abs=1e-6)
    g32 = m.backward(pred.astype(np.float32), target, **params_of(op))
    assert g32.dtype == np.float32
    np.testing.assert_allclose(g32, m.backward(pred, target, **params_of(op)),
                               rtol=1e-5, atol=1e-6)


def test_big_batch_takes_the_parallel_path_and_agrees():
    m = module(get("softmax_cross_entropy"))
    rng = np.random.default_rng(0)
    z = rng.normal(size=(8000, 10))
    c = rng.integers(0, 10, 8000)
    whole = m.backward(z, c)
    chunks = [m.backward(z[i:i + 1000], c[i:i + 1000]) / 8 for i in range(0, 8000, 1000)]
    parts = np.concatenate(chunks)
    np.testing.assert_allclose(whole, parts, rtol=1e-12)


def test_bad_targets_are_refused():
    m = module(get("softmax_cross_entropy"))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        m.forward(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match="shape"):
        m.forward(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(TypeError, match="integer class labels"):
        module(get("sparse_categorical_cross_entropy")).forward(np.zeros((2, 3)), np.zeros((2, 3)))


def test_a_root_of_a_square_is_not_expanded_into_cancelling_terms(tmp_path):
    # √(1 + (ŷ − y)²) used to reach the kernel as √(1 + ŷ² − 2ŷy + y²): at ŷ ≈ y ≈ 1e8 the
    # radicand cancelled to garbage and the gradient came out inf (pseudo-Huber).
    import importlib.util

    from derive.cli import main

    assert main(["kernels", "--expr", "sqrt(1 + (pred - target)**2) - 1", "--kind", "loss",
                 "--name", "root_of_square", "-o", str(tmp_path)]) == 0
    spec = importlib.util.spec_from_file_location("root_of_square",
                                                  tmp_path / "root_of_square.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    pred = np.array([[1e8 + 0.5, 1e8 - 2, 1e8 + 1e-3]])
    target = np.full_like(pred, 1e8)
    d = pred - target
    np.testing.assert_allclose(module.backward(pred, target), d / np.sqrt(1 + d * d) / d.size,
                               rtol=1e-12)
