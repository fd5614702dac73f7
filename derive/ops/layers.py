"""Layers as indexed equations: batch-first, NCHW, dense W of shape (out, in).

Each layer is its output element written as a SymPy expression over indexed arrays;
its gradients come from differentiating Σ d_out · out in delta form (see
:func:`derive.calculus.derivation.derive_layer`), its kernels from lowering those sums.
"""

from __future__ import annotations

import sympy as sp
from sympy import IndexedBase, Sum

from derive.registry import register
from derive.spec import Layer, Param


def _ints(names: str):
    return sp.symbols(names, integer=True, nonnegative=True)


def _sizes(names: str):
    return sp.symbols(names, integer=True, positive=True)


# Sizes: batch, in/out features, channels, heights/widths, filters, windows.
N, I, O, C, H, W, F, KH, KW, OH, OW, HP, WP = _sizes("N I O C H W F KH KW OH OW HP WP")
S, P = _sizes("S P")  # stride, padding
n, i, o, c, h, w, f = _ints("n i o c h w f")
ki, kj = _ints("i j")  # offsets inside a window

x = IndexedBase("x", real=True)
xp = IndexedBase("x_pad", real=True)
Wt = IndexedBase("W", real=True)
bias = IndexedBase("b", real=True)
kernel = IndexedBase("K", real=True)
s = IndexedBase("s", real=True)
y = IndexedBase("y", real=True)

STRIDE = Param(S, 1, latex="S", keyword="stride")
PADDING = Param(sp.Symbol("P", integer=True, nonnegative=True), 0, latex="P", keyword="padding")
WINDOW = Param(KH, 2, latex="k", keyword="kernel_size")

DENSE = register(Layer(
    name="dense", title="Dense (fully connected)", latex=r"\operatorname{dense}",
    out=s[n, o], expr=Sum(Wt[o, i] * x[n, i], (i, 0, I - 1)) + bias[o],
    arrays=((x, (N, I)), (Wt, (O, I)), (bias, (O,)), (s, (N, O))),
    inputs=(x,), weights=(Wt, bias)))

CONV2D = register(Layer(
    name="conv2d", title="2-D convolution (cross-correlation)", latex=r"\operatorname{conv}",
    out=y[n, f, h, w],
    expr=Sum(kernel[f, c, ki, kj] * xp[n, c, S * h + ki, S * w + kj],
             (c, 0, C - 1), (ki, 0, KH - 1), (kj, 0, KW - 1)) + bias[f],
    arrays=((x, (N, C, H, W)), (xp, (N, C, HP, WP)), (kernel, (F, C, KH, KW)), (bias, (F,)),
            (y, (N, F, OH, OW))),
    inputs=(xp,), weights=(kernel, bias),
    hyper=(STRIDE, PADDING),
    sizes=((HP, H + 2 * PADDING.symbol), (WP, W + 2 * PADDING.symbol),
           (OH, (HP - KH) // S + 1), (OW, (WP - KW) // S + 1)),
    padding=(xp, x, PADDING.symbol)))

AVG_POOL2D = register(Layer(
    name="avg_pool2d", title="2-D average pooling", latex=r"\operatorname{avgpool}",
    out=y[n, c, h, w],
    expr=Sum(x[n, c, S * h + ki, S * w + kj], (ki, 0, KH - 1), (kj, 0, KH - 1)) / KH**2,
    arrays=((x, (N, C, H, W)), (y, (N, C, OH, OW))),
    inputs=(x,), hyper=(WINDOW, Param(S, 2, latex="S", keyword="stride")),
    sizes=((OH, (H - KH) // S + 1), (OW, (W - KH) // S + 1))))

GLOBAL_AVG_POOL2D = register(Layer(
    name="global_avg_pool2d", title="Global average pooling",
    latex=r"\operatorname{gap}",
    out=y[n, c], expr=Sum(x[n, c, h, w], (h, 0, H - 1), (w, 0, W - 1)) / (H * W),
    arrays=((x, (N, C, H, W)), (y, (N, C))), inputs=(x,)))

FLATTEN = register(Layer(
    name="flatten", title="Flatten", latex=r"\operatorname{flatten}",
    # Flattening only renames elements: y[n, c, h, w] is stored at y[n, (c·H + h)·W + w].
    out=y[n, c, h, w], expr=x[n, c, h, w],
    arrays=((x, (N, C, H, W)), (y, (N, C, H, W))), inputs=(x,), view=(N, C * H * W)))
