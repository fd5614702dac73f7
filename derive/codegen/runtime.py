"""Scalar helpers that generated kernels call, embedded into each module that needs them.

Generated modules depend on NumPy and Numba only, so the helpers they use are copied
into them as source text. Each helper lives here between ``# --- begin embed: NAME`` and
``# --- end embed: NAME`` markers, where it is an ordinary function the tests can import;
``(needs: A, B)`` after the name lists the helpers it calls.
"""

import math

import numpy as np
from numba import njit

from derive.codegen.vecmath import vexp


# --- begin embed: sigmoid (needs: vexp) ---
@njit(inline="always", cache=True)
def sigmoid(u):
    """Logistic sigmoid; exp(−u) overflowing to inf gives exactly 0, never NaN."""
    return 1.0 / (1.0 + vexp(-u))
# --- end embed: sigmoid ---


# --- begin embed: softplus (needs: vexp) ---
@njit(inline="always", cache=True)
def softplus(u):
    """log(1 + e^u) as max(u, 0) + log1p(e^−|u|): no overflow, full precision."""
    return max(u, 0.0) + math.log1p(vexp(-abs(u)))
# --- end embed: softplus ---


# --- begin embed: normal_cdf ---
@njit(inline="always", cache=True)
def normal_cdf(u):
    """Φ(u) via erfc, which keeps full relative precision in the lower tail."""
    return 0.5 * math.erfc(-0.7071067811865476 * u)
# --- end embed: normal_cdf ---


# --- begin embed: sign ---
@njit(inline="always", cache=True)
def sign(u):
    """Return -1, 0 or 1; zero maps to 0, the subgradient PyTorch uses for abs at 0."""
    return 1.0 if u > 0.0 else (-1.0 if u < 0.0 else 0.0)
# --- end embed: sign ---


# --- begin embed: uniform01 ---
@njit(inline="always", cache=True)
def uniform01(seed, i):
    """A uniform draw in [0, 1) that is a pure function of (seed, i).

    SplitMix64's finaliser of a per-element counter: forward and backward regenerate
    the same draw, and parallel loops need no shared generator state.
    """
    z = np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(i) + np.uint64(1)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return float(z >> np.uint64(11)) * 1.1102230246251565e-16
# --- end embed: uniform01 ---


# --- begin embed: normal01 (needs: uniform01) ---
@njit(inline="always", cache=True)
def normal01(seed, i):
    """A standard normal draw that is a pure function of (seed, i) (Box–Muller)."""
    u1 = 1.0 - uniform01(seed, 2 * i)  # in (0, 1], so the log is finite
    u2 = uniform01(seed, 2 * i + 1)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(6.283185307179586 * u2)
# --- end embed: normal01 ---
