"""What folding the SGD update into the weight gradient's GEMM would save (issue 14, speed).

The notes' MLP spends its step in five GEMMs. Both derive's step and the hand-written one
in ``bench_network.py`` write each weight gradient with ``np.dot(d_s.T, x, d_W)`` and then
pass over it again, ``W -= lr * d_W``. BLAS can do both at once: GEMM computes
``C ← α A B + β C``, so with ``C = W``, ``α = −lr`` and ``β = 1`` (``β = 1 − lr λ`` with an L2
penalty λ‖w‖²/2 folded in) the gradient is never written and never read back. Numba's
``np.dot`` always passes α = 1, β = 0, so the fold needs a call to the same BLAS routine
Numba uses (``numba_xxgemm`` in Numba's helper library, which reaches SciPy's OpenBLAS)
with α and β of our choosing: ``gemm_into``, a Numba intrinsic in derive's runtime.

This script times the first layer's weight gradient and update (784 → 128, the largest),
both ways, interleaved, float32 and float64, batch 32 and 256, after checking that they
agree. A generated train step folds the update this way whenever the optimizer's update
is w ← β w + α g (gradient descent, with or without L2); the others keep the two passes.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from numba import njit

from derive.codegen.runtime import jitted

LR = 0.01
L2 = 1e-4


#: derive's own: the intrinsic generated train steps call (derive/codegen/runtime.py).
gemm_into = jitted("gemm_into")


@njit(cache=True, error_model="numpy")
def folded(d_s, x, W, lr, l2):
    """W ← (1 − lr l2) W − lr d_sᵀ x: one GEMM, no gradient array."""
    gemm_into(-lr, d_s.T, x, 1 - lr * l2, W)


@njit(cache=True, error_model="numpy")
def separate(d_s, x, W, d_W, lr, l2):
    """d_W ← d_sᵀ x, then W ← W − lr (d_W + l2 W): the unfolded step."""
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
