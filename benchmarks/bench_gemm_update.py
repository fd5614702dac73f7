"""What folding the SGD update into the weight gradient's GEMM would save (issue 14, speed).

The notes' MLP spends its step in five GEMMs. Both derive's step and the hand-written one
in ``bench_network.py`` write each weight gradient with ``np.dot(d_s.T, x, d_W)`` and then
pass over it again, ``W -= lr * d_W``. BLAS can do both at once: GEMM computes
``C ← α A B + β C``, so with ``C = W``, ``α = −lr`` and ``β = 1`` (``β = 1 − lr λ`` with an L2
penalty λ‖w‖²/2 folded in) the gradient is never written and never read back. Numba's
``np.dot`` always passes α = 1, β = 0, so the fold needs a call to the same BLAS routine
Numba uses (``numba_xxgemm`` in Numba's helper library, which reaches SciPy's OpenBLAS)
with α and β of our choosing: :func:`gemm_into`, a Numba intrinsic.

This script times the first layer's weight gradient and update (784 → 128, the largest),
both ways, interleaved, float32 and float64, batch 32 and 256, after checking that they
agree. Nothing in derive uses the fold yet; this measures whether a generated step should.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

LR = 0.01
L2 = 1e-4


@intrinsic
def gemm_into(typingctx, alpha, a, b, beta, c):
    """``c ← alpha · a @ b + beta · c`` through BLAS; a, b 2-D C or F order, c C order."""

    def codegen(context, builder, signature, args):
        alpha_v, a_v, b_v, beta_v, c_v = args
        a_t, b_t, c_t = signature.args[1], signature.args[2], signature.args[4]
        dtype = c_t.dtype
        a_arr = context.make_array(a_t)(context, builder, a_v)
        b_arr = context.make_array(b_t)(context, builder, b_v)
        c_arr = context.make_array(c_t)(context, builder, c_v)
        a_shape = cgutils.unpack_tuple(builder, a_arr.shape, 2)
        b_shape = cgutils.unpack_tuple(builder, b_arr.shape, 2)
        m, k = a_shape
        n = b_shape[1]
        char, void_p = ir.IntType(8), ir.IntType(8).as_pointer()
        intp = context.get_value_type(types.intp)
        fnty = ir.FunctionType(ir.IntType(32), [char, char, char, intp, intp, intp, void_p,
                                                void_p, intp, void_p, intp, void_p, void_p,
                                                intp])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "numba_xxgemm")
        alpha_p = cgutils.alloca_once_value(
            builder, context.cast(builder, alpha_v, signature.args[0], dtype))
        beta_p = cgutils.alloca_once_value(
            builder, context.cast(builder, beta_v, signature.args[3], dtype))

        def operand(ty, shape, data):
            # BLAS is column-major: a row-major C = A B is the column-major Cᵀ = Bᵀ Aᵀ,
            # and an F-ordered operand (a transposed view) is a transposed one.
            trans = ord("n") if ty.layout == "C" else ord("t")
            return (ir.Constant(char, trans), shape[1] if ty.layout == "C" else shape[0],
                    builder.bitcast(data, void_p))

        trans_b, ld_b, data_b = operand(b_t, b_shape, b_arr.data)
        trans_a, ld_a, data_a = operand(a_t, a_shape, a_arr.data)
        kind = ir.Constant(char, ord("s" if dtype == types.float32 else "d"))
        builder.call(fn, (kind, trans_b, trans_a, n, m, k, builder.bitcast(alpha_p, void_p),
                          data_b, ld_b, data_a, ld_a, builder.bitcast(beta_p, void_p),
                          builder.bitcast(c_arr.data, void_p), n))
        return context.get_dummy_value()

    return types.none(alpha, a, b, beta, c), codegen


@njit(cache=True, error_model="numpy")
def folded(d_s, x, W, lr, l2):
    """W ← (1 − lr l2) W − lr d_sᵀ x: one GEMM, no gradient array."""
    gemm_into(-lr, d_s.T, x, 1 - lr * l2, W)


@njit(cache=True, error_model="numpy")
def separate(d_s, x, W, d_W, lr, l2):
    """d_W ← d_sᵀ x, then W ← W − lr (d_W + l2 W): what the steps do today."""
    np.dot(d_s.T, x, d_W)
    w, g = W.reshape(W.size), d_W.reshape(d_W.size)
    for i in range(w.size):
        w[i] = w[i] - lr * (g[i] + l2 * w[i])


def time_cell(dtype, batch, l2, rounds):
    """Best and median µs of both ways for one cell, after checking that they agree."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, 784)).astype(dtype)
    d_s = rng.normal(size=(batch, 128)).astype(dtype)
    W0 = rng.normal(size=(128, 784)).astype(dtype)
    W1, d_W = W0.copy(), np.empty_like(W0)
    lr, lam = dtype(LR), dtype(l2)
    folded(d_s, x, W0, lr, lam)
    separate(d_s, x, W1, d_W, lr, lam)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert np.allclose(W0, W1, rtol=tol, atol=tol), np.abs(W0 - W1).max()
    calls = {"separate": lambda: separate(d_s, x, W1, d_W, lr, lam),
             "folded": lambda: folded(d_s, x, W0, lr, lam)}
    samples = {name: [] for name in calls}
    for r in range(rounds):
        for name in (list(calls) if r % 2 else list(calls)[::-1]):
            start = time.perf_counter()
            calls[name]()
            samples[name].append(time.perf_counter() - start)
    return ({k: min(v) * 1e6 for k, v in samples.items()},
            {k: statistics.median(v) * 1e6 for k, v in samples.items()})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=400, help="timed calls of each (400)")
    args = parser.parse_args(argv)
    print("first layer's weight gradient and SGD update, µs (best / median of "
          f"{args.rounds}, interleaved)")
    for dtype in (np.float32, np.float64):
        for batch in (32, 256):
            for l2 in (0.0, L2):
                best, med = time_cell(dtype, batch, l2, args.rounds)
                print(f"  {np.dtype(dtype).name} B{batch:<3} l2={l2:<6}: "
                      + "  ".join(f"{k} {best[k]:6.1f} / {med[k]:6.1f}" for k in best)
                      + f"   folded/separate {best['folded'] / best['separate']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
