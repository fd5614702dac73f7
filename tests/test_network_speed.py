"""Work a generated training step no longer does twice (issue 14, speed).

The loss and its gradient share each row's reductions in one kernel when the two
derived kernels reduce the same sums (softmax cross-entropy's log-sum-exp), and the
runtime's GEMM scales its target itself for an L2 penalty's β; both give the same
numbers as the two separate passes they replace. A float32 dense forward with few rows
multiplies W xᵀ, which the BLAS Numba calls runs faster, and gives the same layer.
"""

from pathlib import Path

import numpy as np
import pytest
from conftest import network_modules, spec_text
from numba import njit
from scipy.linalg import blas

from derive import registry
from derive.calculus.derivation import derive_layer
from derive.codegen import runtime
from derive.codegen.loops import Contraction
from derive.codegen.lower import lower_layer
from derive.codegen.network import loss_context, transposed_product
from derive.network import parse_spec

DENSE = 'type = "dense"\nunits = 3'


def _loss(loss: str, activation: str | None = None):
    layer = DENSE + (f'\nactivation = "{activation}"' if activation else "")
    return loss_context(parse_spec(spec_text("net", [layer], shape=(4,), loss=loss),
                                   "net.toml").plan)


def test_softmax_cross_entropy_computes_its_log_sum_exp_once():
    loss = _loss("categorical_cross_entropy", "softmax")
    fused = loss["fused"]
    assert fused is not None
    # The row's log-sum-exp: once in the fused kernel, as the gradient's prologue.
    assert fused["gradient"]["prologue"] == loss["backward"]["prologue"]
    assert any("math.log" in line for line in fused["gradient"]["prologue"])
    assert not any("math.log" in line for line in fused["loss"]["lines"])
    # The loss's row value read at the gradient's row index.
    assert fused["loss"]["value"] == loss["forward"]["value"].replace("[n", "[p")


def test_a_loss_whose_gradient_reduces_nothing_keeps_two_kernels():
    # The squared error sums over the row for the loss only: nothing to share.
    assert _loss("mse")["fused"] is None


gemm_into = runtime.jitted("gemm_into")


@njit(cache=False)
def _gemm(alpha, a, b, beta, c):
    gemm_into(alpha, a.T, b, beta, c)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("beta", [0.9999, 0.5, 1.0, 0.0])
def test_gemm_into_scales_as_blas_does(dtype, beta):
    rng = np.random.default_rng(0)
    a, b = (rng.normal(size=(32, n)).astype(dtype) for n in (16, 40))
    c = rng.normal(size=(16, 40)).astype(dtype)
    got = c.copy()
    _gemm(-0.01, a, b, beta, got)
    # One call of SciPy's BLAS with this β. In float64 the same bits; SciPy's wrapper
    # copies the operands into Fortran order, which in float32 moves a sum's last bit.
    gemm = blas.sgemm if dtype == np.float32 else blas.dgemm
    want = gemm(-0.01, a, b, beta=beta, c=np.asfortranarray(c), trans_a=True)
    if dtype == np.float64:
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_gemm_into_with_beta_zero_never_reads_the_target():
    c = np.full((2, 3), np.nan)
    _gemm(1.0, np.ones((4, 2)), np.ones((4, 3)), 0.0, c)
    np.testing.assert_array_equal(c, np.full((2, 3), 4.0))


def _forward_kernel(name):
    op = registry.get(name, "layer")
    return lower_layer(derive_layer(op), "network").forward, op


def test_a_dense_forward_computes_its_product_transposed():
    forward, op = _forward_kernel("dense")
    flipped = transposed_product(forward, op)
    product, copy = flipped.statements
    # s_t = W x^T, the operands swapped and each transposed back.
    assert isinstance(product, Contraction)
    assert product.gemm.out.array.name == "s_t" and not product.gemm.out.transposed
    assert (product.gemm.left.array.name, product.gemm.left.transposed) == ("W", False)
    assert (product.gemm.right.array.name, product.gemm.right.transposed) == ("x", True)
    # The bias loop writes s (it added into it) and reads the scratch at (o, n).
    n, o = copy.index
    assert not copy.accumulate and copy.value.has(product.gemm.out.array[o, n])
    assert [str(a) for a, _, _ in flipped.allocations] == ["s_t"]


def test_a_convolution_keeps_its_forward():
    # Its product is gathered window by window (im2col), not one whole GEMM.
    assert transposed_product(*_forward_kernel("conv2d")) is None


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    layers = ['type = "dense"\nunits = 80\nactivation = "tanh"', 'type = "dense"\nunits = 3']
    return network_modules(tmp_path_factory.mktemp("transposed"),
                           lambda name: spec_text(f"net_{name}", layers, shape=(20,),
                                                  loss="mse"))("wide")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_transposed_forward_computes_the_same_layer(wide, dtype):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 20)).astype(dtype)
    W, b = rng.normal(size=(80, 20)).astype(dtype), rng.normal(size=80).astype(dtype)
    want, got = np.empty((16, 80), dtype), np.full((16, 80), np.nan, dtype)
    wide._dense_forward(x, W, b, want)
    wide._dense_forward_transposed(x, W, b, got)
    np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == np.float32 else 1e-12,
                               atol=1e-5 if dtype == np.float32 else 1e-12)


def test_a_float32_step_with_few_rows_matches_float64(wide):
    # 16 rows in float32 take the transposed product in the first layer (80 units).
    assert "_dense_forward_transposed(x," in Path(wide.__file__).read_text()
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(16, 20)), rng.normal(size=(16, 3))
    params = wide.init_params(0, np.float64)
    loss64, grads64 = wide.loss_and_grad(params, x, y)
    loss32, grads32 = wide.loss_and_grad([p.astype(np.float32) for p in params],
                                         x.astype(np.float32), y.astype(np.float32))
    assert loss32 == pytest.approx(loss64, rel=1e-5)
    for g32, g64 in zip(grads32, grads64, strict=True):
        np.testing.assert_allclose(g32, g64, rtol=1e-4, atol=1e-5)
