"""Layers as indexed equations: batch-first, NCHW, dense W of shape (out, in).

Each layer is its output element written as a SymPy expression over indexed arrays;
its gradients come from differentiating Σ d_out · out in delta form (see
:func:`derive.calculus.derivation.derive_layer`), its kernels from lowering those sums.
"""

from __future__ import annotations

import sympy as sp
from sympy import IndexedBase, Sum

from derive.calculus.functions import sigmoid, uniform01
from derive.calculus.indexed import ArgMax, floordiv
from derive.ops.activations import RELU, TANH
from derive.registry import register
from derive.spec import Activation, Layer, Param, Recurrence, SpecKey
from derive.spec import x as activation_input


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
    inputs=(x,), weights=(Wt, bias), spec_keys=(SpecKey("units", (O,)),), matrix_form=True))

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
    padding=(xp, x, PADDING.symbol),
    spec_keys=(SpecKey("filters", (F,)), SpecKey("kernel_size", (KH, KW), default=3))))

AVG_POOL2D = register(Layer(
    name="avg_pool2d", title="2-D average pooling", latex=r"\operatorname{avgpool}",
    out=y[n, c, h, w],
    expr=Sum(x[n, c, S * h + ki, S * w + kj], (ki, 0, KH - 1), (kj, 0, KH - 1)) / KH**2,
    arrays=((x, (N, C, H, W)), (y, (N, C, OH, OW))),
    inputs=(x,), hyper=(WINDOW, Param(S, 2, latex="S", keyword="stride")),
    sizes=((OH, (H - KH) // S + 1), (OW, (W - KH) // S + 1)),
    # In a spec the windows do not overlap unless a stride says so.
    spec_keys=(SpecKey("stride", default=KH),)))

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

arg = IndexedBase("arg", integer=True)  # flat position of each window's maximum
MAX_POOL2D = register(Layer(
    name="max_pool2d", title="2-D max pooling", latex=r"\operatorname{maxpool}",
    steps=((arg[n, c, h, w],
            ArgMax(x[n, c, S * h + ki, S * w + kj], (ki, 0, KH - 1), (kj, 0, KH - 1))),),
    out=y[n, c, h, w],
    # The output reads the input at its window's arg-max, so the gradient is routed there.
    expr=x[n, c, S * h + floordiv(arg[n, c, h, w], KH), S * w + sp.Mod(arg[n, c, h, w], KH)],
    arrays=((x, (N, C, H, W)), (arg, (N, C, OH, OW)), (y, (N, C, OH, OW))),
    inputs=(x,), hyper=(WINDOW, Param(S, 2, latex="S", keyword="stride")),
    sizes=((OH, (H - KH) // S + 1), (OW, (W - KH) // S + 1)),
    spec_keys=(SpecKey("stride", default=KH),)))

eps = sp.Symbol("epsilon", positive=True)
EPS = Param(eps, 1e-5, latex=r"\varepsilon", keyword="eps")
gamma, beta = IndexedBase("gamma", real=True), IndexedBase("beta", real=True)
mean, var, xhat = (IndexedBase(name, real=True) for name in ("mu", "var", "xhat"))
M = N * H * W  # elements per channel
running_mean = IndexedBase("running_mean", real=True)
running_var = IndexedBase("running_var", real=True)
momentum = sp.Symbol("momentum", nonnegative=True)

BATCH_NORM = register(Layer(
    name="batch_norm", title="Batch normalisation (batch statistics)",
    latex=r"\operatorname{BN}",
    steps=(
        (mean[c], Sum(x[n, c, h, w], (n, 0, N - 1), (h, 0, H - 1), (w, 0, W - 1)) / M),
        (var[c], Sum((x[n, c, h, w] - mean[c]) ** 2,
                     (n, 0, N - 1), (h, 0, H - 1), (w, 0, W - 1)) / M),
        (xhat[n, c, h, w], (x[n, c, h, w] - mean[c]) / sp.sqrt(var[c] + eps)),
    ),
    out=y[n, c, h, w], expr=gamma[c] * xhat[n, c, h, w] + beta[c],
    arrays=((x, (N, C, H, W)), (gamma, (C,)), (beta, (C,)), (mean, (C,)), (var, (C,)),
            (xhat, (N, C, H, W)), (y, (N, C, H, W))),
    inputs=(x,), weights=(gamma, beta), hyper=(EPS,),
    # In a network: over (C,) or (C, L) as BatchNorm1d, over (C, H, W) as BatchNorm2d;
    # evaluation normalises with the running statistics, which every training step moves
    # towards the batch's (the variance unbiased), as torch.nn.BatchNorm does.
    any_input="unit_axes", evaluation="batch_norm_inference",
    running=((running_mean[c], (1 - momentum) * running_mean[c] + momentum * mean[c]),
             (running_var[c], (1 - momentum) * running_var[c]
              + momentum * var[c] * M / (M - 1))),
    running_params=(Param(momentum, 0.1, latex="m", keyword="momentum", below=1.0),),
    inits=((gamma, 1.0),)))

BATCH_NORM_INFERENCE = register(Layer(
    name="batch_norm_inference", title="Batch normalisation (running statistics)",
    latex=r"\operatorname{BN}",
    out=y[n, c, h, w],
    expr=gamma[c] * (x[n, c, h, w] - running_mean[c]) / sp.sqrt(running_var[c] + eps)
    + beta[c],
    arrays=((x, (N, C, H, W)), (gamma, (C,)), (beta, (C,)), (running_mean, (C,)),
            (running_var, (C,)), (y, (N, C, H, W))),
    inputs=(x,), weights=(gamma, beta), buffers=(running_mean, running_var), hyper=(EPS,),
    # A network computes it in evaluation mode in place of batch_norm, not on its own.
    in_networks=False, inits=((gamma, 1.0), (running_mean, 0.0), (running_var, 1.0))))

D = sp.Symbol("D", integer=True, positive=True)  # features normalised together
k = sp.Symbol("k", integer=True, nonnegative=True)
LAYER_NORM = register(Layer(
    name="layer_norm", title="Layer normalisation (over the last axis)",
    latex=r"\operatorname{LN}",
    steps=(
        (mean[n], Sum(x[n, k], (k, 0, D - 1)) / D),
        (var[n], Sum((x[n, k] - mean[n]) ** 2, (k, 0, D - 1)) / D),
        (xhat[n, k], (x[n, k] - mean[n]) / sp.sqrt(var[n] + eps)),
    ),
    out=y[n, k], expr=gamma[k] * xhat[n, k] + beta[k],
    arrays=((x, (N, D)), (gamma, (D,)), (beta, (D,)), (mean, (N,)), (var, (N,)),
            (xhat, (N, D)), (y, (N, D))),
    inputs=(x,), weights=(gamma, beta), hyper=(EPS,), inits=((gamma, 1.0),)))

p_drop = sp.Symbol("p_drop", nonnegative=True)
training = sp.Symbol("training", integer=True, nonnegative=True)
seed = sp.Symbol("seed", integer=True, nonnegative=True)
keep = IndexedBase("keep", real=True)
DROPOUT = register(Layer(
    name="dropout", title="Inverted dropout", latex=r"\operatorname{dropout}",
    # In training each element is kept with probability 1 − p and scaled by 1/(1 − p)
    # (so evaluation needs no rescaling); the draw is a pure function of (seed, position).
    steps=((keep[n, k], sp.Piecewise(
        (sp.Piecewise((0, uniform01(seed, n * D + k) < p_drop), (1 / (1 - p_drop), True)),
         sp.Eq(training, 1)),
        (1, True))),),
    out=y[n, k], expr=x[n, k] * keep[n, k],
    arrays=((x, (N, D)), (keep, (N, D)), (y, (N, D))),
    inputs=(x,),
    hyper=(Param(p_drop, 0.5, latex="p", keyword="p", below=1.0),
           Param(training, 1, latex="", keyword="training", per_call=True),
           Param(seed, 0, latex="", keyword="seed", per_call=True, stream=True)),
    # Each element is dropped on its own, so a network may put it after any layer.
    any_input="flat"))

# Sizes of a sequence: length, padded length, filter width, output length.
L, LP, KL, OL = _sizes("L LP KL OL")
CONV1D = register(Layer(
    name="conv1d", title="1-D convolution (cross-correlation)", latex=r"\operatorname{conv}",
    out=y[n, f, h],
    expr=Sum(kernel[f, c, ki] * xp[n, c, S * h + ki], (c, 0, C - 1), (ki, 0, KL - 1)) + bias[f],
    arrays=((x, (N, C, L)), (xp, (N, C, LP)), (kernel, (F, C, KL)), (bias, (F,)),
            (y, (N, F, OL))),
    inputs=(xp,), weights=(kernel, bias),
    hyper=(STRIDE, PADDING),
    sizes=((LP, L + 2 * PADDING.symbol), (OL, (LP - KL) // S + 1)),
    padding=(xp, x, PADDING.symbol),
    spec_keys=(SpecKey("filters", (F,)), SpecKey("kernel_size", (KL,), default=3))))

# Sizes of a sequence of tokens: its length and the vocabulary.
T, V = _sizes("T V")
t = _ints("t")
tokens = IndexedBase("x", integer=True, nonnegative=True)
EMBEDDING = register(Layer(
    name="embedding", title="Embedding (table lookup)", latex=r"\operatorname{embed}",
    # Row x[n, t] of the table is the output at (n, t); a token that occurs twice reads the
    # same row twice, so its gradient is the sum of both upstream rows (a scatter-add).
    out=y[n, t, k], expr=Wt[tokens[n, t], k],
    arrays=((tokens, (N, T)), (Wt, (V, D)), (y, (N, T, D))),
    inputs=(), indices=(tokens,), weights=(Wt,),
    spec_keys=(SpecKey("vocabulary", (V,)), SpecKey("dim", (D,)))))

# Elman recurrent layer, PyTorch's parameterisation (torch.nn.RNN): hidden size H, input
# size I; the state h[n, t − 1, k] is read back one step later.
h, h0 = IndexedBase("h", real=True), IndexedBase("h_0", real=True)
W_ih, W_hh = IndexedBase("W_ih", real=True), IndexedBase("W_hh", real=True)
b_ih, b_hh = IndexedBase("b_ih", real=True), IndexedBase("b_hh", real=True)


def elman(name: str, title: str, activation: Activation) -> Layer:
    """The Elman layer h_t = f(W_ih x_t + b_ih + W_hh h_{t−1} + b_hh) of an activation f.

    Parameters
    ----------
    name, title : str
        The declaration's name and title.
    activation : Activation
        The catalogue's f, applied to every element of s_t (PyTorch's ``nonlinearity``).

    Returns
    -------
    Layer
        A layer with a :class:`~derive.spec.Recurrence`: its kernels and documents go
        through :mod:`derive.calculus.recurrence` (one time step, then backpropagation
        through time).
    """
    return Layer(
        name=name, title=title, latex=r"\operatorname{rnn}",
        # The state is summed over k, not j: a lecture prints the output index o as j.
        steps=((s[n, t, o], Sum(W_ih[o, i] * x[n, t, i], (i, 0, I - 1)) + b_ih[o]
                + Sum(W_hh[o, k] * h[n, t - 1, k], (k, 0, H - 1)) + b_hh[o]),),
        out=h[n, t, o], expr=activation.expr.xreplace({activation_input: s[n, t, o]}),
        arrays=((x, (N, T, I)), (h0, (N, H)), (W_ih, (H, I)), (b_ih, (H,)), (W_hh, (H, H)),
                (b_hh, (H,)), (s, (N, T, H)), (h, (N, T, H))),
        inputs=(x, h0), weights=(W_ih, b_ih, W_hh, b_hh),
        recurrence=Recurrence(time=t, state=h, initial=h0))


# torch.nn.RNN's nonlinearity="tanh" (its default) and nonlinearity="relu".
RNN = register(elman(name="rnn", title="Recurrent layer (Elman)", activation=TANH))
RNN_RELU = register(elman(name="rnn_relu", title="Recurrent layer (Elman, ReLU)",
                          activation=RELU))

# Long short-term memory, PyTorch's parameterisation (torch.nn.LSTM): input size F,
# hidden size H. The four gates share one pre-activation s of 4H rows, computed as one
# product each with W_ih (4H, F) and W_hh (4H, H); its rows are, in PyTorch's order,
#   [0, H)  the input gate i,   [H, 2H) the forget gate f,
#   [2H, 3H) the candidate g,   [3H, 4H) the output gate o,
# so W_ih[H + j, k] is the forget gate's weight of input feature k at unit j. The cell
# state c and the output h are both carried to the next step.
c, c0 = IndexedBase("c", real=True), IndexedBase("c_0", real=True)
gate_i, gate_f, gate_g, gate_o = (IndexedBase(name, real=True) for name in "ifgo")
j, m = kj, sp.Symbol("m", integer=True, nonnegative=True)
LSTM = register(Layer(
    name="lstm", title="Long short-term memory (LSTM)", latex=r"\operatorname{lstm}",
    steps=(
        (s[n, t, j], Sum(W_ih[j, k] * x[n, t, k], (k, 0, F - 1)) + b_ih[j]
         + Sum(W_hh[j, m] * h[n, t - 1, m], (m, 0, H - 1)) + b_hh[j]),
        (gate_i[n, t, j], sigmoid(s[n, t, j])),
        (gate_f[n, t, j], sigmoid(s[n, t, H + j])),
        (gate_g[n, t, j], sp.tanh(s[n, t, 2 * H + j])),
        (gate_o[n, t, j], sigmoid(s[n, t, 3 * H + j])),
        (c[n, t, j], gate_f[n, t, j] * c[n, t - 1, j] + gate_i[n, t, j] * gate_g[n, t, j]),
    ),
    out=h[n, t, j], expr=gate_o[n, t, j] * sp.tanh(c[n, t, j]),
    arrays=((x, (N, T, F)), (h0, (N, H)), (c0, (N, H)), (W_ih, (4 * H, F)), (b_ih, (4 * H,)),
            (W_hh, (4 * H, H)), (b_hh, (4 * H,)), (s, (N, T, 4 * H)),
            *((gate, (N, T, H)) for gate in (gate_i, gate_f, gate_g, gate_o)),
            (c, (N, T, H)), (h, (N, T, H))),
    inputs=(x, h0, c0), weights=(W_ih, b_ih, W_hh, b_hh),
    recurrence=Recurrence(time=t, state=h, initial=h0, carried=((c, c0),))))

# Gated recurrent unit, PyTorch's parameterisation (torch.nn.GRU): input size F, hidden
# size H. W_ih (3H, F) and W_hh (3H, H) each hold three blocks of H rows, in PyTorch's
# order [0, H) the reset gate r, [H, 2H) the update gate z, [2H, 3H) the candidate
# (PyTorch's n, printed h̃: n is the batch index here). The input's part s and the
# state's part v of the pre-activations are kept apart, because the reset gate scales
# only the state's part of the candidate's:
#   r = σ(s_r + v_r),  z = σ(s_z + v_z),  h̃ = tanh(s_h̃ + r ⊙ v_h̃),
#   h_t = (1 − z) ⊙ h̃ + z ⊙ h_{t−1}.
# h_t reads h_{t−1} directly as well, through z: the path that keeps the gradient alive.
v = IndexedBase("v", real=True)
gate_r, gate_z, candidate = (IndexedBase(name, real=True) for name in ("r", "z", "htilde"))
GRU = register(Layer(
    name="gru", title="Gated recurrent unit (GRU)", latex=r"\operatorname{gru}",
    steps=(
        (s[n, t, j], Sum(W_ih[j, k] * x[n, t, k], (k, 0, F - 1)) + b_ih[j]),
        (v[n, t, j], Sum(W_hh[j, m] * h[n, t - 1, m], (m, 0, H - 1)) + b_hh[j]),
        (gate_r[n, t, j], sigmoid(s[n, t, j] + v[n, t, j])),
        (gate_z[n, t, j], sigmoid(s[n, t, H + j] + v[n, t, H + j])),
        (candidate[n, t, j], sp.tanh(s[n, t, 2 * H + j] + gate_r[n, t, j] * v[n, t, 2 * H + j])),
    ),
    out=h[n, t, j],
    expr=(1 - gate_z[n, t, j]) * candidate[n, t, j] + gate_z[n, t, j] * h[n, t - 1, j],
    arrays=((x, (N, T, F)), (h0, (N, H)), (W_ih, (3 * H, F)), (b_ih, (3 * H,)),
            (W_hh, (3 * H, H)), (b_hh, (3 * H,)), (s, (N, T, 3 * H)), (v, (N, T, 3 * H)),
            *((gate, (N, T, H)) for gate in (gate_r, gate_z, candidate)), (h, (N, T, H))),
    inputs=(x, h0), weights=(W_ih, b_ih, W_hh, b_hh),
    recurrence=Recurrence(time=t, state=h, initial=h0)))
