"""Scaled dot-product attention, derived from its declaration (issue 15).

s = Q Kᵀ/√D + M (M = −∞ above the diagonal with the causal mask), P = softmax of each
row of s over the keys, O = P V. The gradients come from the calculus: the softmax step,
differentiated, gives its Jacobian P(δ − P) inside the score gradient, read from the
stored P. Checked against torch.nn.functional.scaled_dot_product_attention in float64 at
1e-9 (with and without is_causal, L = S = 1, 2, 50, and L ≠ S), loosely in float32,
against finite differences, and with logits a hundred times larger.
"""

import numpy as np
import pytest
import sympy as sp
import torch
import torch.nn.functional as F  # noqa: N812  (the name PyTorch documents)

from derive import pipeline, registry
from derive.calculus.derivation import derive_layer
from derive.checks import declaration_check, finite_difference_check, load_module
from derive.cli import main
from derive.ops.attention import ATTENTION


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """What `derive kernels attention -o DIR` writes."""
    out = tmp_path_factory.mktemp("attention")
    pipeline.write_targets(pipeline.catalogue_targets(["attention"], out))
    return out


@pytest.fixture(scope="module")
def module(folder):
    return load_module(folder / "layers" / "attention.py")


def torch_attention(Q, K, V, causal, d_O):
    """PyTorch's output and the gradients of Σ d_O ⊙ O for Q, K and V."""
    tensors = [torch.tensor(a, requires_grad=True) for a in (Q, K, V)]
    out = F.scaled_dot_product_attention(*tensors, is_causal=bool(causal))
    out.backward(torch.tensor(d_O))
    return out.detach().numpy(), [t.grad.numpy() for t in tensors]


def sample(batch, queries, keys, features, values, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    Q = scale * rng.normal(size=(batch, queries, features))
    K = scale * rng.normal(size=(batch, keys, features))
    V = rng.normal(size=(batch, keys, values))
    d_O = rng.normal(size=(batch, queries, values))
    return Q, K, V, d_O


def test_attention_is_in_the_catalogue():
    op = registry.get("attention")
    assert op is ATTENTION and op.kind == "layer" and registry.folder(op) == "layers"
    assert registry.declared_in(op) == "derive/ops/attention.py"
    assert [str(a) for a in op.inputs] == ["Q", "K", "V"]
    assert [p.name for p in op.hyper] == ["causal"]


def test_the_score_gradient_holds_the_softmax_jacobian_read_from_p():
    """d_s = P ⊙ d_P − P Σ_j P d_P: the calculus differentiates the softmax step."""
    derivation = derive_layer(ATTENTION)
    P = dict((str(a), a) for a, _ in ATTENTION.arrays)["P"]
    d_s = derivation.gradient(dict((str(a), a) for a, _ in ATTENTION.arrays)["s"])
    assert str(d_s.expr) == ("P[p, q, r]*d_P[p, q, r] - P[p, q, r]*Sum(P[p, q, j]*d_P[p, q, j], "
                             "(j, 0, S - 1))")
    # No exponential is left to evaluate: the gradient reads the stored softmax.
    assert not d_s.expr.has(sp.exp) and d_s.expr.has(P)
    gradients = {str(g.array): str(g.expr) for g in derivation.gradients}
    assert gradients == {
        "Q": "Sum(K[p, j, r]*d_s[p, q, j], (j, 0, S - 1))/sqrt(D)",
        "K": "Sum(Q[p, i, r]*d_s[p, i, q], (i, 0, L - 1))/sqrt(D)",
        "V": "Sum(P[p, i, q]*d_O[p, i, r], (i, 0, L - 1))",
    }
    # The mask reads neither Q nor K: nothing flows back through it.
    assert [str(g.array) for g in derivation.intermediates] == ["P", "s"]


def test_the_kernels_take_the_row_maximum_out_once_per_row(module):
    source = open(module.__file__).read()
    forward = source[source.index("def _forward"):source.index("def _backward")]
    assert "acc0_max = max(acc0_max, s[n, i, k])" in forward
    assert "acc0 += vexp(s[n, i, k] - acc0_max)" in forward
    # The log-sum-exp and Σ_j P d_P sit outside the loop over a row's elements.
    assert forward.index("acc0 = acc0_max + math.log(acc0)") < forward.index(
        "for j in range(S):\n                P[n, i, j]")
    backward = source[source.index("def _backward"):]
    assert ("                acc0 += P[p, q, j]*d_P[p, q, j]\n"
            "            for r in range(S):") in backward


CASES = [  # (batch, L, S, D, E, causal)
    (2, 1, 1, 3, 2, 0), (2, 1, 1, 3, 2, 1),
    (2, 2, 2, 4, 3, 0), (2, 2, 2, 4, 3, 1),
    (3, 50, 50, 8, 5, 0), (3, 50, 50, 8, 5, 1),
    (2, 3, 7, 4, 6, 0), (2, 9, 4, 5, 3, 0),
]


@pytest.mark.parametrize(("batch", "L", "S", "D", "E", "causal"), CASES)
def test_matches_torch_sdpa_in_float64(module, batch, L, S, D, E, causal):
    Q, K, V, d_O = sample(batch, L, S, D, E, seed=L + S + causal)
    want, grads = torch_attention(Q, K, V, causal, d_O)
    np.testing.assert_allclose(module.forward(Q, K, V, causal=causal), want,
                               rtol=1e-9, atol=1e-12)
    got = module.backward(Q, K, V, d_O, causal=causal)
    assert len(got) == 3
    for g, w in zip(got, grads, strict=True):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-12)


def test_the_causal_mask_changes_the_result_and_keeps_the_first_row(module):
    Q, K, V, _ = sample(2, 5, 5, 3, 2, seed=3)
    plain, masked = module.forward(Q, K, V), module.forward(Q, K, V, causal=1)
    assert not np.allclose(plain, masked)
    np.testing.assert_allclose(masked[:, 0], V[:, 0], rtol=1e-12)  # query 0 sees key 0 only
    np.testing.assert_allclose(masked[:, -1], plain[:, -1], rtol=1e-12)  # the last sees all
    # A key a query may not see gets no gradient from that query: key 4 is seen by query 4.
    d_O = np.zeros((2, 5, 2))
    d_O[:, :4] = 1.0
    _, d_K, d_V = module.backward(Q, K, V, d_O, causal=1)
    assert np.all(d_K[:, 4] == 0) and np.all(d_V[:, 4] == 0)


@pytest.mark.parametrize("causal", [0, 1])
def test_float32_agrees_loosely(module, causal):
    Q, K, V, d_O = sample(2, 6, 6, 4, 3, seed=5)
    want, grads = torch_attention(Q, K, V, causal, d_O)
    single = [a.astype(np.float32) for a in (Q, K, V, d_O)]
    out = module.forward(*single[:3], causal=causal)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)
    for g, w in zip(module.backward(*single, causal=causal), grads, strict=True):
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("causal", [0, 1])
def test_large_logits_neither_overflow_nor_lose_torch(module, causal):
    """Q and K ×100: scores in the thousands; e^s alone would overflow float64."""
    Q, K, V, d_O = sample(2, 6, 6, 4, 3, seed=7, scale=100.0)
    assert np.abs(np.einsum("nid,njd->nij", Q, K)).max() / 2 > 710  # past exp's range
    want, grads = torch_attention(Q, K, V, causal, d_O)
    out = module.forward(Q, K, V, causal=causal)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, want, rtol=1e-9, atol=1e-12)
    for g, w in zip(module.backward(Q, K, V, d_O, causal=causal), grads, strict=True):
        assert np.all(np.isfinite(g))
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-9)
    single = [a.astype(np.float32) for a in (Q, K, V, d_O)]
    assert np.all(np.isfinite(module.forward(*single[:3], causal=causal)))
    assert all(np.all(np.isfinite(g)) for g in module.backward(*single, causal=causal))


def test_finite_differences_and_declaration(module):
    results = finite_difference_check(ATTENTION, module) + declaration_check(ATTENTION, module)
    assert results and all(r.passed for r in results), results
    assert [r.quantity for r in results][:3] == ["d_Q", "d_K", "d_V"]


def test_finite_differences_with_the_causal_mask(module):
    Q, K, V, d_O = sample(1, 4, 4, 3, 2, seed=11)
    _, d_K, _ = module.backward(Q, K, V, d_O, causal=1)
    numeric = np.empty_like(K)
    for index in np.ndindex(K.shape):
        up, down = K.copy(), K.copy()
        up[index] += 1e-6
        down[index] -= 1e-6
        numeric[index] = np.sum(d_O * (module.forward(Q, up, V, causal=1)
                                       - module.forward(Q, down, V, causal=1))) / 2e-6
    np.testing.assert_allclose(d_K, numeric, rtol=1e-6, atol=1e-8)


def test_causal_is_a_flag(module):
    Q, K, V, _ = sample(1, 3, 3, 2, 2)
    np.testing.assert_array_equal(module.forward(Q, K, V, causal=True),
                                  module.forward(Q, K, V, causal=1))
    with pytest.raises(ValueError, match="causal must be an integer >= 0"):
        module.forward(Q, K, V, causal=-1)


def test_derive_check_attention(folder, capsys):
    assert main(["check", "attention", "-o", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "4 passed, 0 failed" in out
    assert [line.split()[1] for line in out.splitlines()[1:4]] == ["forward", "d_Q", "d_K"]
