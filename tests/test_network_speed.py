"""Work a generated training step no longer does twice (issue 14, speed).

The loss and its gradient share each row's reductions in one kernel when the two
derived kernels reduce the same sums (softmax cross-entropy's log-sum-exp), and the
runtime's GEMM scales its target itself for an L2 penalty's β; both give the same
numbers as the two separate passes they replace.
"""

import numpy as np
import pytest
from conftest import spec_text
from numba import njit
from scipy.linalg import blas

from derive.codegen import runtime
from derive.codegen.network import loss_context
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
