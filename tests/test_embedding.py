"""The embedding layer: a table lookup whose weight gradient is a scatter-add.

Derived from its declaration y[n, t, k] = W[x[n, t], k]: the delta pass leaves
Σ_{n,t} δ(p, x[n, t]) d_y[n, t, q], which lowers to d_W[x[n, t], q] += d_y[n, t, q].
Checked against torch.nn.Embedding in float64 with repeated tokens (so several rows
of d_y land in one row of d_W), and against finite differences.
"""

import numpy as np
import pytest
import torch
from conftest import generated

from derive.calculus.derivation import derive_layer
from derive.checks import declaration_check, finite_difference_check
from derive.pipeline import document_for
from derive.registry import get

OP = get("embedding")


def module():
    return generated("layers", "embedding")


def test_the_weight_gradient_is_a_sum_over_the_positions_holding_each_token():
    (grad,) = derive_layer(OP).gradients
    assert grad.array == OP.weights[0]
    assert str(grad.expr) == ("Sum(KroneckerDelta(p, x[n, t])*d_y[n, t, q], "
                              "(n, 0, N - 1), (t, 0, T - 1))")


def test_backward_scatters_rows_into_the_table():
    source = open(module().__file__).read()
    assert "d_W[x[n, t], q] += d_y[n, t, q]" in source
    assert "d_W.fill(0.0)" in source


@pytest.mark.parametrize(("batch", "length", "vocabulary", "dim"),
                         [(1, 1, 1, 2), (2, 2, 3, 4), (3, 50, 7, 5)])
def test_matches_torch_embedding_with_repeated_tokens(batch, length, vocabulary, dim):
    rng = np.random.default_rng(batch + length)
    x = rng.integers(0, vocabulary, size=(batch, length))
    if x.size > 1:
        x.flat[-1] = x.flat[0]  # at least one token read twice
    layer = torch.nn.Embedding(vocabulary, dim, dtype=torch.float64)
    W = layer.weight.detach().numpy().copy()
    want = layer(torch.tensor(x))
    d_y = rng.normal(size=tuple(want.shape))
    want.backward(torch.tensor(d_y))
    m = module()
    y = m.forward(x, W)
    np.testing.assert_allclose(y, want.detach().numpy(), rtol=1e-9, atol=1e-12)
    (d_W,) = m.backward(x, W, d_y)
    np.testing.assert_allclose(d_W, layer.weight.grad.numpy(), rtol=1e-9, atol=1e-12)
    counts = np.bincount(x.ravel(), minlength=vocabulary)
    assert np.all(d_W[counts == 0] == 0)  # rows no token reads get no gradient


def test_a_token_read_twice_gets_both_upstream_rows():
    x = np.array([[2, 0, 2]])
    W = np.arange(12.0).reshape(4, 3)
    d_y = np.array([[[1.0, 2.0, 3.0], [10.0, 20.0, 30.0], [100.0, 200.0, 300.0]]])
    (d_W,) = module().backward(x, W, d_y)
    np.testing.assert_array_equal(d_W[2], [101.0, 202.0, 303.0])
    np.testing.assert_array_equal(d_W[0], [10.0, 20.0, 30.0])
    np.testing.assert_array_equal(d_W[[1, 3]], 0.0)


def test_finite_differences_and_declaration():
    results = finite_difference_check(OP, module()) + declaration_check(OP, module())
    assert results and all(r.passed for r in results), results


def test_float32_table_keeps_its_dtype():
    x = np.array([[0, 1, 1]], dtype=np.int32)
    W = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)
    y = module().forward(x, W)
    assert y.dtype == np.float32
    (d_W,) = module().backward(x, W, np.ones_like(y))
    assert d_W.dtype == np.float32
    np.testing.assert_array_equal(d_W, [[1, 1, 1], [2, 2, 2]])


def test_tokens_must_be_integers_inside_the_table():
    W = np.zeros((3, 2))
    with pytest.raises(TypeError, match="integer indices"):
        module().forward(np.zeros((1, 2)), W)
    with pytest.raises(ValueError, match=r"x must hold indices in \[0, 3\)"):
        module().forward(np.array([[0, 3]]), W)
    with pytest.raises(ValueError, match=r"x must hold indices in \[0, 3\)"):
        module().backward(np.array([[-1, 0]]), W, np.zeros((1, 2, 2)))


@pytest.mark.parametrize("lang", ["pt", "en"])
def test_document_counts_tokens_from_one_and_explains_the_scatter_add(lang):
    text = document_for("embedding", lang=lang, fmt="article").text
    # The token is a row number, counted from 1 like the rows: W_{x_{n,t},k}, not W_{1+x,k}.
    assert "{W}_{{x}_{n,t},k}" in text
    assert "1 + {x}_{n,t}" not in text and "{x}_{n,t} + 1" not in text
    assert r"\left[p = {x}_{n,t}\right]" in text  # the bracket of the result
    words = {"pt": ("guarda inteiros", "soma o seu gradiente à linha", "devolve apenas"),
             "en": ("holds integers", "adds its gradient to row", "returns only")}[lang]
    for phrase in words:
        assert phrase in text, phrase
    assert "The inputs are ;" not in text and "As entradas são ;" not in text
