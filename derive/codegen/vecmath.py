"""Vectorisable elementary functions for Numba kernels.

``math.exp`` inside an ``@njit`` loop lowers to a scalar libm call that LLVM cannot
vectorise (the pip llvmlite ships without SVML), so an elementwise sigmoid runs at
libm speed instead of memory speed. :func:`vexp` is written with arithmetic, integer
bit operations and selects only, so once it is inlined into a loop body LLVM's loop
vectoriser turns it into ``<4 x double>`` code on AVX2.

The block between the ``begin embed`` / ``end embed`` markers is copied verbatim into
generated kernel modules, which must stay standalone. It may rely only on the imports
listed in :data:`EMBED_IMPORTS`; those same lines are imported at the top of this file
so the module is usable directly. Names inside the block carry a ``vexp`` prefix so the
copy does not collide with the names of the module it is pasted into.
"""

from pathlib import Path

from llvmlite import ir
from numba import njit
from numba.core import types
from numba.extending import intrinsic

#: Exact import lines the embedded block needs, in the order they should be emitted.
EMBED_IMPORTS = (
    "from llvmlite import ir",
    "from numba import njit",
    "from numba.core import types",
    "from numba.extending import intrinsic",
)

EMBED_BEGIN = "# --- begin embed: vecmath ---"
EMBED_END = "# --- end embed: vecmath ---"


def embedded_source():
    """Return the source text between the embed markers, markers excluded.

    Returns
    -------
    str
        The embeddable block, ending with a newline, ready to be pasted after
        :data:`EMBED_IMPORTS` in a generated module.

    """
    text = Path(__file__).read_text(encoding="utf-8")
    start = text.index(EMBED_BEGIN + "\n") + len(EMBED_BEGIN) + 1
    return text[start : text.index(EMBED_END, start)].rstrip() + "\n"


# --- begin embed: vecmath ---
# Round-to-nearest by adding 1.5 * 2**52: the integer lands in the low mantissa bits, so
# the float's bit pattern minus this constant's bit pattern is n as an int64. That avoids
# a float -> int64 conversion, which AVX2 has no vector instruction for.
_VEXP_SHIFT = 6755399441055744.0
_VEXP_SHIFT_BITS = 0x4338000000000000
_VEXP_LOG2E = 1.4426950408889634
# Cody-Waite split of ln 2: the high part has 32 significant bits, so n * _VEXP_LN2_HI
# is exact for every |n| <= 1076 and x - n * ln2_hi cancels without rounding error.
_VEXP_LN2_HI = 0.6931471803691238
_VEXP_LN2_LO = 1.9082149292705877e-10
# Outside these bounds the result is inf or 0 and is selected at the end, off the
# critical path; inside them n stays in [-1076, 1024], where both halves of the split
# scale 2**n are normal doubles, and overflow/underflow happen on their own.
_VEXP_X_MAX = 710.0
_VEXP_X_MIN = -746.0
_VEXP_INF = float("inf")
# exp(r) = 1 + r + r**2 * q(r) on |r| <= 0.34658 (ln2/2 plus the slack of rounding n).
# q is the degree-9 minimax fit of the relative error (Remez, 50-digit mpmath);
# with the coefficients rounded to double its error is 1.1e-17 (2**-56.3), well under
# the evaluation rounding. Keeping 1 + r outside q makes exp(0) == 1 exactly.
_VEXP_C2 = 0.5000000000000011
_VEXP_C3 = 0.16666666666666413
_VEXP_C4 = 0.041666666666530246
_VEXP_C5 = 0.00833333333349436
_VEXP_C6 = 0.0013888888943603777
_VEXP_C7 = 0.00019841269506733737
_VEXP_C8 = 2.4801493129201748e-05
_VEXP_C9 = 2.755758629453288e-06
_VEXP_C10 = 2.763023662599232e-07
_VEXP_C11 = 2.5000067588948047e-08


@intrinsic
def _vexp_fmuladd(typingctx, a, b, c):
    # llvm.fmuladd becomes one FMA where the target has it and mul + add elsewhere,
    # independently of the caller's fastmath flags; both keep the 2-ulp bound.
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):
        f64 = ir.DoubleType()
        fnty = ir.FunctionType(f64, [f64, f64, f64])
        fn = builder.module.declare_intrinsic("llvm.fmuladd", [f64], fnty)
        return builder.call(fn, args)

    return sig, codegen


@intrinsic
def _vexp_f64_as_i64(typingctx, x):
    sig = types.int64(types.float64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return sig, codegen


@intrinsic
def _vexp_i64_as_f64(typingctx, n):
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


@njit(inline="always", cache=True)
def vexp(x):
    """Exponential of a float64, written so LLVM can vectorise loops that call it.

    Branch-free: the only conditionals are the two range tests at the end, which LLVM
    turns into selects, so a loop such as
    ``for i in range(n): y[i] = 1.0 / (1.0 + vexp(-x[i]))`` compiles to AVX2 vector
    code instead of a scalar libm call per element. Compile that loop with
    ``error_model="numpy"``: under the default Python error model the division's
    ZeroDivisionError check alone stops the loop from vectorising.

    Parameters
    ----------
    x : float
        Argument (float64; integers are promoted).

    Returns
    -------
    float
        ``exp(x)`` within 2 ulp of ``np.exp`` (measured: at most 1) over the whole
        float64 range. ``+inf`` for ``x`` above about 709.78, ``0.0`` below about
        -745.13 and for ``-inf``, ``nan`` for ``nan``; ``exp(0) == 1`` exactly.
        Subnormal results are kept, not flushed: they are correctly rounded scalings
        of the polynomial, so their error is at most about 1 unit of the subnormal
        spacing.

    Notes
    -----
    ``x = n ln2 + r`` with ``n = rint(x log2 e)`` and a two-constant Cody-Waite
    reduction, so ``|r| <= ln2 / 2``; ``exp(r)`` is a degree-11 minimax polynomial
    evaluated by Estrin's scheme with ``llvm.fmuladd`` (FMA on AVX2 + FMA hardware,
    mul + add elsewhere); ``2**n`` is built from the exponent bits as two
    factors ``2**(n >> 1) * 2**(n - (n >> 1))`` so gradual underflow and overflow
    happen in a single, correctly rounded final multiplication.

    Callers must not compile with ``fastmath`` flags that assume no NaN/inf
    (``nnan``, ``ninf``, or ``fastmath=True``): the range tests and NaN propagation
    rely on IEEE semantics. ``vexp`` is inlined into the caller, so the caller's flags apply.

    """
    kd = _vexp_fmuladd(x, _VEXP_LOG2E, _VEXP_SHIFT)
    nf = kd - _VEXP_SHIFT
    n = _vexp_f64_as_i64(kd) - _VEXP_SHIFT_BITS
    r = _vexp_fmuladd(nf, -_VEXP_LN2_HI, x)
    r = _vexp_fmuladd(nf, -_VEXP_LN2_LO, r)
    # Estrin rather than Horner: the dependency chain is 4 FMAs deep instead of 9, which
    # lets the out-of-order core overlap more loop iterations.
    r2 = r * r
    r4 = r2 * r2
    q23 = _vexp_fmuladd(_VEXP_C3, r, _VEXP_C2)
    q45 = _vexp_fmuladd(_VEXP_C5, r, _VEXP_C4)
    q67 = _vexp_fmuladd(_VEXP_C7, r, _VEXP_C6)
    q89 = _vexp_fmuladd(_VEXP_C9, r, _VEXP_C8)
    q1011 = _vexp_fmuladd(_VEXP_C11, r, _VEXP_C10)
    q25 = _vexp_fmuladd(q45, r2, q23)
    q69 = _vexp_fmuladd(q89, r2, q67)
    q29 = _vexp_fmuladd(q69, r4, q25)
    q = _vexp_fmuladd(q1011, r4 * r4, q29)
    # Adding 1 last: the polynomial's rounding errors are scaled by r**2 <= 0.12 and
    # the only full-size rounding is this final addition.
    p = 1.0 + _vexp_fmuladd(r2, q, r)
    # A single 2**n is not representable for n = 1024 or n < -1022; two halves are.
    n1 = n >> 1
    s1 = _vexp_i64_as_f64((n1 + 1023) << 52)
    s2 = _vexp_i64_as_f64((n - n1 + 1023) << 52)
    y = (p * s1) * s2
    # NaN fails both comparisons and keeps the NaN computed above; out-of-range x
    # (including +-inf) replaces whatever the integer arithmetic made of it.
    y = _VEXP_INF if x > _VEXP_X_MAX else y
    return 0.0 if x < _VEXP_X_MIN else y


# --- end embed: vecmath ---
