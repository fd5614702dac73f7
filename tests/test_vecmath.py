"""vexp: accuracy against np.exp, edge values, vectorisation, and the shipped runtime."""

import importlib.util
import os
import platform
import re
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from numba import njit

from derive.codegen.emit import runtime_text
from derive.codegen.runtime import jitted

vexp = jitted("vexp")

MAX_ULP = 2
DBL_MAX = float(np.finfo(np.float64).max)
TINY_SUBNORMAL = 5e-324
LN2 = 0.6931471805599453


# error_model="numpy": with Python's, the division's zero check blocks vectorisation.
@njit(error_model="numpy")
def vexp_array(x):
    y = np.empty_like(x)
    for i in range(x.size):
        y[i] = vexp(x[i])
    return y


@njit(error_model="numpy")
def sigmoid_kernel(x, y):
    for i in range(x.size):
        y[i] = 1.0 / (1.0 + vexp(-x[i]))


def ulp_distance(a, b):
    """Distance in representable doubles between non-negative arrays a and b.

    For non-negative doubles the bit pattern is monotone in the value, and +inf sits one
    step above DBL_MAX, so the integer difference counts ulps (subnormal spacing included).
    """
    a = np.ascontiguousarray(a, dtype=np.float64)
    b = np.ascontiguousarray(b, dtype=np.float64)
    assert not np.signbit(a).any() and not np.signbit(b).any()
    return np.abs(a.view(np.int64) - b.view(np.int64))


def sample_points(n=1_000_000, seed=20240611):
    rng = np.random.default_rng(seed)
    k = rng.integers(-1075, 1025, n // 10)
    return np.concatenate(
        [
            rng.uniform(-745.0, 709.78, n // 2),  # whole range, subnormal results included
            rng.uniform(-1.0, 1.0, n // 10),
            rng.standard_normal(n // 10) * 1e-3,  # dense near 0
            np.copysign(10.0 ** rng.uniform(-300, -1, n // 10), rng.uniform(-1, 1, n // 10)),
            # Just either side of the ties of n = rint(x / ln2), where |r| is largest.
            (k + 0.5) * LN2 * (1.0 + rng.uniform(-1e-12, 1e-12, k.size)),
            rng.uniform(-745.2, -708.0, n // 10),  # gradual underflow
        ]
    )


def test_max_ulp_error_against_numpy():
    x = sample_points()
    with np.errstate(over="ignore", under="ignore"):
        ref = np.exp(x)
    ulps = ulp_distance(vexp_array(x), ref)
    worst = int(np.argmax(ulps))
    assert ulps[worst] <= MAX_ULP, f"{ulps[worst]} ulp at x={x[worst]!r}"
    # Most results are correctly rounded; a drop here means a regression well before 2 ulp.
    assert np.mean(ulps == 0) > 0.85


SPECIAL = [
    (0.0, 1.0),
    (-0.0, 1.0),
    (np.inf, np.inf),
    (-np.inf, 0.0),
    (709.7827128933841, np.inf),  # the first double above log(DBL_MAX)
    (709.79, np.inf),
    (710.0, np.inf),
    (1e308, np.inf),
    (DBL_MAX, np.inf),
    (-745.1332191019411, TINY_SUBNORMAL),  # smallest x whose exp rounds up to 2**-1074
    (-745.1332191019412, 0.0),
    (-746.0, 0.0),
    (-1e308, 0.0),
    (-DBL_MAX, 0.0),
    (TINY_SUBNORMAL, 1.0),
    (-TINY_SUBNORMAL, 1.0),
]


@pytest.mark.parametrize(("x", "expected"), SPECIAL)
def test_special_values_scalar(x, expected):
    assert vexp(x) == expected


def test_special_values_in_vector_loop():
    # Scalar calls and loop remainders run scalar code; a long array puts the special
    # values through the vectorised loop body too.
    xs = np.array([x for x, _ in SPECIAL] + [np.nan])
    expected = np.array([e for _, e in SPECIAL] + [np.nan])
    got = vexp_array(np.tile(xs, 16))
    np.testing.assert_array_equal(got, np.tile(expected, 16))


def test_nan_propagates():
    assert np.isnan(vexp(np.nan))
    assert np.isnan(vexp_array(np.full(64, np.nan))).all()


def test_exp_zero_is_exactly_one():
    assert vexp(0.0) == 1.0


@pytest.mark.parametrize("x", [1.0, -1.0, 709.782712893384, 709.0, -708.4, -744.0])
def test_edge_of_range_results_within_max_ulp(x):
    # 709.782712893384 is the largest double whose exp is finite.
    got = vexp(x)
    assert np.isfinite(got) and got > 0.0
    assert ulp_distance(got, np.exp(x)) <= MAX_ULP


def test_sigmoid_kernel_matches_numpy():
    x = np.random.default_rng(0).standard_normal(10_001) * 20.0
    y = np.empty_like(x)
    sigmoid_kernel(x, y)
    with np.errstate(over="ignore"):
        expected = 1.0 / (1.0 + np.exp(-x))
    # vexp's ulps plus the rounding of 1 + e and of the division, on either side.
    assert ulp_distance(y, expected).max() <= MAX_ULP + 2


#: Compiled, never run, in a fresh interpreter: the IR for a CPU need not run on this one.
VECTORISE_PROBE = """
import re, sys
from numba import njit, types
from derive.codegen.runtime import jitted
vexp = jitted("vexp")

@njit(error_model="numpy")
def sigmoid_kernel(x, y):
    for i in range(x.size):
        y[i] = 1.0 / (1.0 + vexp(-x[i]))

signature = (types.float64[::1], types.float64[::1])
sigmoid_kernel.compile(signature)
sys.stdout.write(sigmoid_kernel.inspect_llvm(signature))
"""
AVX512_FEATURES = ("+sse,+sse2,+sse3,+ssse3,+sse4.1,+sse4.2,+popcnt,+avx,+avx2,+fma,+f16c,"
                   "+bmi,+bmi2,+lzcnt,+movbe,+avx512f,+avx512dq,+avx512bw,+avx512vl,"
                   "-prefer-256-bit")
#: The instruction sets a user's CPU may have: this machine's, the x86-64 baseline (SSE2
#: only, what a generic build targets) and AVX-512 with 512-bit vectors preferred.
TARGETS = {
    "host": {},
    "generic": {"NUMBA_CPU_NAME": "generic"},
    "avx512": {"NUMBA_CPU_NAME": "skylake-avx512", "NUMBA_CPU_FEATURES": AVX512_FEATURES},
}


def vector_widths(pattern, llvm):
    return {int(width) for width in re.findall(pattern, llvm)}


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86-64 targets")
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_sigmoid_loop_vectorises(target):
    # The property, not one vector width: LLVM picks 2, 4 or 8 doubles by the target.
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CPU")}
    env["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="derive-vec-")
    done = subprocess.run([sys.executable, "-c", VECTORISE_PROBE], capture_output=True,
                          text=True, env=env | TARGETS[target], timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    llvm = done.stdout
    assert max(vector_widths(r"<(\d+) x double>", llvm), default=1) >= 2
    # The polynomial itself is vector code, not only the loads and stores around it.
    assert max(vector_widths(r"@llvm\.fmuladd\.v(\d+)f64", llvm), default=1) >= 2
    assert not re.search(r"call\s+(fast\s+)?double\s+@(llvm\.exp\.f64|exp)\(", llvm)


def test_vexp_of_the_shipped_runtime_is_this_one(tmp_path):
    """The runtime file generated modules load by path gives vexp's exact bits, and a
    kernel in a real file calling it caches, as generated modules do."""
    runtime_path = tmp_path / "derive_runtime.py"
    runtime_path.write_text(runtime_text(), encoding="utf-8")
    spec = importlib.util.spec_from_file_location("derive_runtime_vecmath_test", runtime_path)
    shipped = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = shipped
    spec.loader.exec_module(shipped)
    kernel = (
        "from numba import njit\n\n"
        "@njit(error_model='numpy', cache=True)\n"
        "def sigmoid(x, y):\n"
        "    for i in range(x.size):\n"
        "        y[i] = 1.0 / (1.0 + vexp(-x[i]))\n"
    )
    path = tmp_path / "kernel_module.py"
    path.write_text(kernel, encoding="utf-8")
    namespace = {"__name__": "kernel_module", "vexp": shipped.jitted("vexp")}
    exec(compile(kernel, str(path), "exec"), namespace)

    x = np.random.default_rng(1).uniform(-745.0, 709.0, 4099)
    np.testing.assert_array_equal(
        np.array([namespace["vexp"](v) for v in x[:64]]), vexp_array(x[:64])
    )
    y = np.empty_like(x)
    namespace["sigmoid"](x, y)
    expected = np.empty_like(x)
    sigmoid_kernel(x, expected)
    np.testing.assert_array_equal(y, expected)
