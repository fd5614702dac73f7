"""Network spec → one generated module that trains without Python work per layer.

The chain rule across layers is composed from the per-layer derivations, not by
differentiating the unrolled network: each layer's generated forward and backward
kernels are embedded once per layer type, and the network's jitted functions call them
in order (δ⁽ˡ⁾ = backward of layer l applied to δ⁽ˡ⁺¹⁾, times the activation's
derivative). Work buffers are allocated once per batch size.

What is composed comes from the spec's :attr:`~derive.netplan.NetworkSpec.plan`, which the
LaTeX documents read too; :func:`render_network` reads like its table of contents, one
emitter per part of the module.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import singledispatch

import sympy as sp

from derive import registry
from derive.calculus.derivation import (
    LABELS,
    OUTPUT,
    derive_activation,
    derive_layer,
    derive_loss,
    derive_vector,
)
from derive.calculus.regularise import (
    penalty_gradient,
    regularised,
    weight_only_params,
)
from derive.codegen.emit import (
    ELEMENT_NAMES,
    cache_name,
    docstring_text,
    draw_line,
    element_context,
    environment,
    header_lines,
    kernel_source,
    row_context,
    runtime_helpers,
    with_hash,
)
from derive.codegen.ir import LayerKernel, RowKernel
from derive.codegen.loops import Contraction, Gemm, GemmUpdate, LoopNest, Matrix, arrays_used
from derive.codegen.lower import (
    gradient_array,
    lower_activation,
    lower_layer,
    lower_loss,
    lower_running,
    lower_vector,
)
from derive.codegen.optimizer import affine_update, lower_optimizer, render_update, slot_init
from derive.codegen.printer import NumbaPrinter
from derive.codegen.sequence import sequence_calls
from derive.netplan import SKIP_SUM, NetworkPlan, NetworkSpec, layer_op
from derive.spec import Activation, VectorFunction, g, grad_total

#: Initialisers: name → (bound or standard deviation as Python text in fan_in, fan_out, kind).
INITS = {
    "xavier_uniform": ("math.sqrt(6.0 / (fan_in + fan_out))", "uniform"),
    "xavier_normal": ("math.sqrt(2.0 / (fan_in + fan_out))", "normal"),
    "he_uniform": ("math.sqrt(6.0 / fan_in)", "uniform"),
    "he_normal": ("math.sqrt(2.0 / fan_in)", "normal"),
    "normal": ("0.01", "normal"),
}
#: What a loss's dense targets may hold, from the samples its declaration says it is
#: defined on: ("range", lowest, highest) or ("values", allowed...). Others take any real.
TARGET_DOMAINS = {
    "probabilities": ("range", 0.0, 1.0),
    "logits": ("range", 0.0, 1.0),
    "binary": ("values", 0.0, 1.0),
    "signs": ("values", -1.0, 1.0),
}


def _rename(kernel, name):
    return dataclasses.replace(kernel, name=name)


@dataclass(frozen=True)
class NetworkLayout:
    """Where the network's arrays live and the lines that call its kernels.

    Layer l reads ``out{l-1}`` (``x`` for the first) and writes ``z{l}``; its activation
    writes ``out{l}``. Backward fills ``d_out{l}`` from the layer above, then the
    activation's derivative gives ``d_z{l}`` and the layer's derived backward gives
    ``d_out{l-1}`` and the parameter gradients ``g_*``: the δ recursion. The forward
    pass alone (``predict``) then applies the activation the loss takes in, into
    ``outputs``.
    """

    views: tuple[str, ...]
    forward: tuple[str, ...]
    backward: tuple[str, ...]
    predict: tuple[str, ...]
    buffers: dict  # name → per-example shape
    layer_kernels: tuple  # (forward, backward or None, op) LayerKernels, one per type and use
    output: str  # the buffer the loss reads
    output_grad: str  # the buffer the loss's gradient goes to
    prediction: str  # what the forward pass alone returns
    # (layer, activation, index of z{l}, index of out{l} in buffers, the backward's other
    # arguments in evaluation mode) for every layer that applies its activation
    # elementwise, so a trainer can watch σ'(s) per layer.
    activated: tuple = ()
    # The training step's backward pass when it folds updates into weight gradients'
    # GEMMs (:func:`~derive.codegen.network.fold_weight_updates`), and the parameters it
    # updates so; () when nothing folds (the step calls _loss_and_grad, then updates).
    train_backward: tuple = ()
    folded: tuple = ()
    # Further kernels' sources: each recurrent layer type's loops over time.
    sources: tuple = ()


def lay_out(plan: NetworkPlan, folds: dict | None = None) -> NetworkLayout:
    """Lay out buffers and kernel calls for a network (see :class:`NetworkLayout`).

    ``folds`` maps a parameter's name (``p_dense0_W``) to the texts of (α, β) of its update
    ``w ← β w + α g`` when the optimizer's update has that form
    (:func:`~derive.codegen.optimizer.affine_update`); the training step then has each such
    weight whose gradient is one GEMM updated by that GEMM.
    """
    views, forward, backward_by_layer, buffers = [], [], [], {}
    kernels, activated, n_params, sources = {}, [], 0, {}
    folds, folded, train_calls, fold_memo = folds or {}, [], {}, {}
    for layer_plan in plan.layers:
        layer, op = layer_plan.spec, layer_plan.op
        i = layer.index
        first = not layer_plan.wants_input_gradient
        # A recurrent layer runs its step's kernels over time (sequence_calls, below).
        fwd, bwd = ((None, None) if op.recurrence is not None
                    else _kernels_of(op, first, layer_plan.trains, kernels))
        # A layer with an evaluation declaration (batch norm) runs it in evaluation mode,
        # and in training a forward that also moves the running buffers.
        evaluation = registry.get(op.evaluation, "layer") if op.evaluation else None
        if evaluation is not None:
            eval_fwd, eval_bwd = _kernels_of(evaluation, first, layer_plan.trains, kernels)
            running = _running_op(op, evaluation)
            if ("running", op.name) not in kernels:
                kernels["running", op.name] = (
                    _rename(lower_running(running), f"_{op.name}_forward_running"), None,
                    running)
            fwd = kernels["running", op.name][0]
        padded = op.padding[0] if op.padding else None
        source, d_source = ("x", "d_x") if i == 0 else (f"out{i - 1}", f"d_out{i - 1}")
        z, d_z = f"z{i}", f"d_z{i}"
        # A view (flatten) declares its output with the input's axes; the others their own.
        z_shape = layer.in_shape if op.view is not None else layer.out_shape
        buffers |= {z: z_shape, d_z: z_shape}
        names = {}
        sizes = dict(layer.sizes)
        # A layer that reads any input (dropout after a convolution) sees the buffers
        # in its declared shape: a reshape of the contiguous buffer, no copy.
        out_declared = op.numbers(op.shape(op.out.base)[1:], sizes)
        names[op.out.base] = _seen_as(z, z_shape, out_declared)
        names[sp.IndexedBase(f"d_{op.out.base}", real=True)] = _seen_as(d_z, z_shape,
                                                                        out_declared)
        for array in op.inputs:
            declared = op.numbers(op.shape(array)[1:], sizes)
            names[array] = (f"xpad{i}" if array == padded
                            else _seen_as(source, layer.in_shape, declared))
            names[gradient_array(array)] = (f"d_xpad{i}" if array == padded
                                            else _seen_as(d_source, layer.in_shape, declared))
        # Indices (an embedding's tokens) are the network's input itself: no gradient.
        names |= dict.fromkeys(op.indices, source)
        for (pname, _), array in zip(layer.params, op.weights, strict=True):
            names[array] = f"p_{layer.label}_{pname}"
            names[gradient_array(array)] = f"g_{layer.label}_{pname}"
        for (pname, _, _), array in zip(layer.buffers, evaluation.buffers if evaluation
                                        else (), strict=True):
            names[array] = f"p_{layer.label}_{pname}"
        values = {p_.symbol: _hyper_value(p_, layer.hyper, stream(i, 0))
                  for p_ in (*op.hyper, *op.running_params)}

        def call(kernel, values=values, names=names):
            args = [names[a] for a in kernel.arrays] + [values[h] for h in kernel.hyper]
            return f"{kernel.name}({', '.join(args)})"

        def by_mode(training, evaluating, evaluation=evaluation, call=call):
            """Lines that call ``training`` in training mode and ``evaluating`` otherwise."""
            if evaluation is None:
                return [call(training)]
            return ["if training:", f"    {call(training)}", "else:", f"    {call(evaluating)}"]

        if padded is not None:
            pad = layer.hyper[_padding_param(op).name]
            sizes = dict(layer.sizes)
            padded_shape = tuple(int(sp.sympify(d).xreplace(sizes))
                                 for d in op.shape(padded)[1:])
            buffers |= {f"xpad{i}": padded_shape, f"d_xpad{i}": padded_shape}
            forward.append(f"_pad_into({source}, xpad{i}, {pad})")
        recurrent = None
        if op.recurrence is not None:
            recurrent = sequence_calls(op, layer, names, source, None if first else d_source,
                                       z, d_z)
            buffers |= recurrent.buffers
            kernels.setdefault(("sequence", op.name), recurrent.kernels)
            sources.setdefault(op.name, recurrent.sources)
            forward += recurrent.forward
        elif evaluation is None and math.prod(layer.out_shape) >= TRANSPOSED_MIN_COLUMNS \
                and (flipped := _transposed_kernel(op, fwd, kernels)) is not None:
            forward += [f"if N <= {TRANSPOSED_MAX_ROWS} and {source}.itemsize == 4:",
                        f"    {call(flipped)}", "else:", f"    {call(fwd)}"]
        else:
            forward += by_mode(fwd, evaluation and eval_fwd)
        steps_back = []
        shape = "(N, " + ", ".join(map(str, layer.out_shape)) + ")"
        # With a skip connection out{i} holds the sum f(s) + x^(k); the layer's own output
        # f(s) goes to act{i} (its activation's backward reads it). The sum's derivative
        # in its first term is 1, so d_out{i} is also that term's gradient, d_act{i}.
        skip = layer.skip_from is not None
        own = f"act{i}" if skip else f"out{i}"
        if skip:
            buffers |= {f"out{i}": layer.out_shape}
        if layer_plan.activation is not None:
            act = layer_plan.activation
            buffers |= {own: layer.out_shape, f"d_out{i}": layer.out_shape}
            # Its learnable parameters follow the layer's weights in the parameter list.
            learnt = [(f"p_{layer.label}_{name}", n_params + len(layer.params) + k)
                      for k, (name, _) in enumerate(layer.activation_params)]
            mode = [stream(i, 1) if p_.stream else p_.name for p_ in act.per_call]
            args = _arguments([name for name, _ in learnt] + mode)
            back = _arguments([a for name, _ in learnt
                               for a in (name, name.replace("p_", "g_", 1))] + mode)
            # activation_slopes: the parameters' values, a scratch gradient, evaluation mode.
            slope_args = _arguments([a for _, k in learnt
                                     for a in (f"params[{k}]", f"np.zeros_like(params[{k}])")]
                                    + ["0"] * len(mode))
            forward.append(f"_{act.name}_apply({z}, {own}{args})")
            activated.append((i, act.name, z, own, slope_args))
            steps_back.append(f"_{act.name}_apply_backward({z}, {own}, d_out{i}, {d_z}{back})")
            through = own
        else:
            # No activation: the output is the layer's result itself, seen flat if needed.
            through = f"{z}.reshape({shape})"
            views += ([] if skip else [f"out{i} = {through}"]) + [
                f"d_out{i} = {d_z}.reshape({shape})"]
        if skip:
            skipped = "x" if layer.skip_from < 0 else f"out{layer.skip_from}"
            forward.append(f"_skip_sum({through}, {skipped}, out{i})")
        if layer_plan.trains and recurrent is not None:
            steps_back += recurrent.backward
        elif layer_plan.trains:
            steps_back += by_mode(bwd, evaluation and eval_bwd)
            weights = [array for (pname, _), array in zip(layer.params, op.weights, strict=True)
                       if names[array] in folds]
            if evaluation is None and weights:
                update, done = _folded_kernel(op, first, bwd, weights, kernels, fold_memo)
                scales = {}
                for array, alpha, beta in done:
                    scales |= dict(zip((alpha, beta), folds[names[array]], strict=True))
                    folded.append(names[array])
                if done:
                    train_calls[i] = (call(bwd), call(update, values | scales))
        else:
            steps_back = []
        if padded is not None and not first:
            steps_back.append(f"_crop_into(d_xpad{i}, {d_source}, "
                              f"{layer.hyper[_padding_param(op).name]})")
        backward_by_layer.append(steps_back)
        n_params += len(layer.params) + len(layer.activation_params) + len(layer.buffers)
    # The identity path of each skip connection: once the layer above x^(k) has written
    # its gradient (the path through the block), each sum that read x^(k) adds its own.
    for layer_plan in plan.skips:
        source = layer_plan.spec.skip_from
        if source >= 0 and plan.layers[source + 1].wants_input_gradient:
            backward_by_layer[source + 1].append(
                f"_skip_gradient(d_out{layer_plan.spec.index}, d_out{source})")
    backward = [line for steps in reversed(backward_by_layer) for line in steps]
    train_backward = []
    if folded:
        for i, steps in reversed(list(enumerate(backward_by_layer))):
            old, new = train_calls.get(i, (None, None))
            train_backward += [new if line == old else line for line in steps]
    last = plan.layers[-1].spec.index
    output = f"out{last}"
    predict: list[str] = []
    prediction = output
    if plan.output_activation is not None:
        prediction = "outputs"
        predict = [f"outputs = np.empty_like({output})",
                   output_call(plan.output_activation, output, prediction)]
    where = list(buffers).index
    activated = tuple((i, name, where(z), where(out), args)
                      for i, name, z, out, args in activated)
    return NetworkLayout(tuple(views), tuple(forward), tuple(backward), tuple(predict),
                         buffers, tuple(kernels.values()), output, f"d_out{last}", prediction,
                         activated, tuple(train_backward), tuple(folded),
                         tuple(text for pair in sources.values() for text in pair))


def _kernels_of(op, first: bool, trains: bool, kernels: dict) -> tuple:
    """A layer type's forward and backward kernels (None if it does not train).

    Each is lowered once per use: a first layer's backward computes the weights'
    gradients only.
    """
    key = (op.name, first, not trains)
    if key not in kernels:
        module = lower_layer(derive_layer(op), "network", input_gradients=not first)
        suffix = "_backward_weights" if first else "_backward"
        kernels[key] = (_rename(module.forward, f"_{op.name}_forward"),
                        _rename(module.backward, f"_{op.name}{suffix}") if trains else None,
                        op)
    return kernels[key][:2]


#: A float32 product ``s = x Wᵀ`` with few rows (examples) and many columns (units) runs
#: faster through SciPy's OpenBLAS (0.3.30, the BLAS Numba calls) as ``sᵀ = W xᵀ``, copied
#: back while the bias is added; measured on one core, 784 inputs to 128 units: 125 -> 93 µs
#: at 32 rows, 193 -> 174 at 64, 349 against 330 at 128 (slower), no gain in float64 or
#: below 64 units (10 units: 2.9 -> 4.0 µs at 32 rows).
TRANSPOSED_MAX_ROWS = 64
TRANSPOSED_MIN_COLUMNS = 64


def _transposed_kernel(op, forward, kernels: dict):
    """A layer type's forward with its product transposed (:func:`transposed_product`).

    None when the forward is not one whole GEMM followed by an elementwise term.
    """
    key = ("transposed", op.name)
    if key not in kernels:
        flipped = transposed_product(forward, op)
        if flipped is None:
            return None
        kernels[key] = (flipped, None, op)
    return kernels[key][0]


def transposed_product(kernel: LayerKernel, op) -> LayerKernel | None:
    """``kernel`` computing its product as ``sᵀ = W xᵀ`` into a scratch array.

    For a forward kernel that is one whole GEMM ``s = x Wᵀ`` followed by a loop adding an
    elementwise term over all of ``s`` (a dense layer's bias): the GEMM writes
    ``s_t = (x Wᵀ)ᵀ`` with its operands swapped and transposed, and the loop writes
    ``s[n, o] = s_t[o, n] + b[o]``, one pass as before. The same sums, in BLAS's order
    for the other shape; see :data:`TRANSPOSED_MAX_ROWS` for when it is faster.

    Parameters
    ----------
    kernel : LayerKernel
        A layer's forward kernel (:func:`lower_layer`).
    op : Layer
        Its declaration (the shape of the product's target).

    Returns
    -------
    LayerKernel or None
        The kernel ``<name>_transposed``, or None when ``kernel`` has another form.
    """
    if len(kernel.statements) != 2:
        return None
    product, tail = kernel.statements
    if not isinstance(product, Contraction) or not isinstance(tail, LoopNest):
        return None
    gemm = product.gemm
    target = gemm.out.array
    shape = op.shape(target) if target in dict(op.arrays) else ()
    plain = all(m.shape is None and not m.fixed for m in (gemm.left, gemm.right))
    whole = (len(shape) == 2 and tail.index == tuple(lp.index for lp in tail.loops)
             and all(lp.low == 0 and lp.high == size - 1
                     for lp, size in zip(tail.loops, shape, strict=True)))
    if not (_whole_gemm(product, target) and plain and whole and tail.array == target
            and tail.accumulate and not tail.accumulators):
        return None
    scratch = sp.IndexedBase(f"{target}_t", real=True)
    flipped = dataclasses.replace(product, gemm=Gemm(
        Matrix(scratch),
        dataclasses.replace(gemm.right, transposed=not gemm.right.transposed),
        dataclasses.replace(gemm.left, transposed=not gemm.left.transposed)))
    copy = dataclasses.replace(tail, value=tail.value + scratch[tuple(reversed(tail.index))],
                               accumulate=False)
    return dataclasses.replace(
        kernel, name=f"{kernel.name}_transposed", statements=(flipped, copy),
        allocations=kernel.allocations + ((scratch, tuple(reversed(shape)), False),))


def _folded_kernel(op, first: bool, backward, weights, kernels: dict, memo: dict) -> tuple:
    """A layer type's backward with ``weights``' updates folded in, and what it folded.

    Lowered once per type, use and set of weights; a kernel that folds something joins
    the network's other kernels.
    """
    key = ("update", op.name, first, tuple(map(str, weights)))
    if key not in memo:
        memo[key] = fold_weight_updates(backward, weights)
        if memo[key][1]:
            kernels[key] = (None, memo[key][0], op)
    return memo[key]


def _whole_gemm(statement, target) -> bool:
    """Whether ``statement`` writes all of ``target`` as one GEMM and nothing else."""
    if not isinstance(statement, Contraction):
        return False
    out = statement.gemm.out
    return (out.array == target and not out.fixed and not out.transposed
            and not (statement.loops or statement.packs or statement.local
                     or statement.shared or statement.epilogue or statement.zero)
            and statement.unpack is None and statement.reduce is None)


def fold_weight_updates(kernel: LayerKernel, weights) -> tuple[LayerKernel, tuple]:
    """A backward kernel that adds each weight gradient's GEMM into the weight itself.

    For an update ``w ← β w + α g`` (plain gradient descent, also with an L2 penalty),
    ``g = A B`` computed by BLAS and then read back by the update is one GEMM with
    ``C = w``: ``w ← α A B + β w``. A weight is folded when its gradient is exactly one
    whole GEMM (a dense layer's ``d_W = d_sᵀ x``) and no statement after it reads the
    weight (the input gradient ``d_s W`` must see the weight before its step); the others
    keep their gradient.

    Parameters
    ----------
    kernel : LayerKernel
        A layer's backward kernel (:func:`lower_layer`).
    weights : iterable of sympy.IndexedBase
        The weights whose update may be folded.

    Returns
    -------
    kernel : LayerKernel
        The kernel without the folded weights' gradient arrays among its arguments and
        with ``alpha_<w>``, ``beta_<w>`` (α and β) after its hyper-parameters; ``kernel``
        itself when nothing folds.
    folded : tuple
        (weight, α's symbol, β's symbol) of each weight folded, in argument order.
    """
    statements, folded, scales = list(kernel.statements), [], []
    for weight in (a for a in kernel.arrays if a in set(weights)):
        gradient = gradient_array(weight)
        at = [i for i, st in enumerate(statements) if gradient in arrays_used(st)]
        if (len(at) != 1 or gradient not in kernel.arrays or not _whole_gemm(statements[at[0]],
                                                                              gradient)
                or any(weight in arrays_used(st) for st in statements[at[0] + 1:])):
            continue
        gemm = statements[at[0]].gemm
        alpha, beta = (sp.Symbol(f"{role}_{weight}", real=True) for role in ("alpha", "beta"))
        statements[at[0]] = GemmUpdate(dataclasses.replace(gemm.out, array=weight),
                                       gemm.left, gemm.right, alpha, beta)
        folded.append((weight, alpha, beta))
        scales += [alpha, beta]
    if not folded:
        return kernel, ()
    dropped = {gradient_array(w) for w, _, _ in folded}
    return dataclasses.replace(
        kernel, name=f"{kernel.name}_update",
        arrays=tuple(a for a in kernel.arrays if a not in dropped),
        hyper=kernel.hyper + tuple(scales), statements=tuple(statements)), tuple(folded)


def _running_op(op, evaluation):
    """``op`` as :func:`lower_running` reads it.

    Its evaluation declaration's buffers join its arrays, and the running parameters
    (the momentum) its hyper-parameters.
    """
    return dataclasses.replace(
        op, arrays=op.arrays + tuple((b, evaluation.shape(b)) for b in evaluation.buffers),
        hyper=op.hyper + op.running_params)


def skip_context(plan: NetworkPlan) -> dict | None:
    """The skip connections' two element kernels, printed from :data:`SKIP_SUM`.

    ``forward`` is the sum x⁽ˡ⁾ = f(s⁽ˡ⁾) + x⁽ᵏ⁾ of elements ``a[i]`` and ``b[i]``;
    ``backward`` what the identity path adds to ∂E/∂x⁽ᵏ⁾: the sum's derivative in x⁽ᵏ⁾
    times ``d_total[i]``, ∂E/∂x⁽ˡ⁾. None when the network has no skip connection.
    """
    if not plan.skips:
        return None
    if SKIP_SUM.derivative(SKIP_SUM.through) != 1:
        # lay_out hands the layer's own output the sum's gradient unchanged.
        raise NotImplementedError("a skip sum whose derivative in the layer's output is not 1")
    upstream = sp.Symbol("d_total", real=True)
    printer = NumbaPrinter({SKIP_SUM.through: "a_flat[i]", SKIP_SUM.skipped: "b_flat[i]",
                            upstream: "d_total_flat[i]"})
    return {"forward": printer.doprint(SKIP_SUM.total),
            "backward": printer.doprint(SKIP_SUM.derivative(SKIP_SUM.skipped) * upstream)}


def padding_context(plan: NetworkPlan) -> dict | None:
    """The slices that pad an input and crop its gradient back, or None if nothing pads.

    The declarations pad every axis after the batch and the channels by the same amount.
    """
    ranks = {len(layer.op.shape(layer.op.padding[0])) for layer in plan.layers
             if layer.op.padding}
    if not ranks:
        return None
    if len(ranks) > 1:
        raise NotImplementedError("networks pad inputs of one number of axes only")
    axes = range(2, ranks.pop())
    return {"pad": ", ".join(f"pad:pad + x.shape[{a}]" for a in axes),
            "crop": ", ".join(f"pad:pad + d_x.shape[{a}]" for a in axes)}


def _padding_param(op):
    """The hyper-parameter that says how much the declaration's padded input is padded."""
    amount = op.padding[2]
    return next(p for p in op.hyper if p.symbol == amount)


def _hyper_value(param, given: dict, seed: str) -> str:
    # A per-call parameter (dropout's mode) is an argument of the network's functions of
    # the same name, except the seed of draws, which is the layer's own stream of it;
    # every other hyper-parameter is a constant.
    if param.stream:
        return seed
    if param.per_call:
        return param.name
    return repr(given.get(param.name, param.default))


#: Streams of the run's seed a network hands out: two per layer (the layer's draws and
#: its activation's), more than a network has layers.
STREAMS = 256


def stream(index: int, part: int) -> str:
    """The seed of layer ``index``'s draws (``part`` 0) or its activation's (1)."""
    return f"seed * {STREAMS} + {2 * index + part}"


def _seen_as(buffer: str, shape: tuple, declared: tuple) -> str:
    """A buffer of per-example ``shape`` as a kernel declared for ``declared`` reads it."""
    if tuple(shape) == tuple(declared):
        return buffer
    return f"{buffer}.reshape((N, {', '.join(map(str, declared))}))"


# ---- the activation the loss takes in, applied by the forward pass alone -----------------


@singledispatch
def output_call(op, source: str, target: str) -> str:
    """The line that applies a network's output activation ``op`` to ``source``."""
    raise TypeError(f"no output kernel for {type(op).__name__} {op.name!r}: networks compute "
                    "elementwise activations and row-wise vector functions")


@output_call.register
def _(op: Activation, source: str, target: str) -> str:
    return f"_{op.name}_apply({source}, {target})"


@output_call.register
def _(op: VectorFunction, source: str, target: str) -> str:
    return f"_{op.name}_rows({source}, {target})"


def activation_context(act: Activation) -> dict:
    """An activation's derived element functions, as the network template embeds them.

    A fixed parameter is a constant of the network; a learnable one an array of one
    value or of one per channel (axis 1 of the layer's output), read at each element's
    channel and given its gradient summed over the rest. Draws follow the network's
    mode: drawn from the layer's seed in training, their evaluation value otherwise.
    """
    names = {p.symbol: f"p_{p.name}" for p in act.params}
    printer = NumbaPrinter(ELEMENT_NAMES | names)
    lowered = lower_activation(derive_activation(act), "network")
    learnable = [names[p.symbol] for p in act.learnable]
    index = {n: f"(i // {n}_inner) % {n}.size" for n in learnable}
    setup = [f"{names[p.symbol]} = {float(p.default)!r}" for p in act.params
             if not p.learnable]
    setup += [f"{n}_inner = max(1, z.size // (z.shape[0] * {n}.size))" for n in learnable]
    draws = [draw_line(d, printer) for d in lowered.draws]
    if draws:
        setup.append("offset = 0  # a draw's position is the element's in the whole array")
    element = [f"{names[p.symbol]}[{index[names[p.symbol]]}]" if p.learnable
               else names[p.symbol] for p in act.params]
    element += [printer.doprint(d.target) for d in lowered.draws]
    mode = "".join(f", {p.name}" for p in act.per_call)
    sums = lowered.backward.output_names[1:]
    return {
        "name": act.name,
        "forward": element_context(lowered.forward, printer),
        "backward": element_context(lowered.backward, printer),
        "setup": setup,
        "draws": draws,
        "element_args": "".join(f", {e}" for e in element),
        "apply_args": "".join(f", {n}" for n in learnable) + mode,
        "backward_args": "".join(f", {n}, g_{n}" for n in learnable) + mode,
        "targets": ", ".join(["d_z_flat[i]", *(f"{s}_i" for s in sums)]),
        "sums": [(f"g_{n}", index[n], f"{s}_i") for n, s in zip(learnable, sums, strict=True)],
        "helpers": printer.helpers,
    }


def row_function_context(op: VectorFunction) -> dict:
    """A row-wise function's derived forward kernel (softmax), as the template embeds it."""
    printer = NumbaPrinter({op.arg: "x", OUTPUT: "y"})
    lowered = lower_vector(derive_vector(op), "network")
    return {"name": op.name, "forward": row_context(lowered.forward, printer),
            "helpers": printer.helpers}


def _output_functions(plan: NetworkPlan) -> tuple[list, list]:
    """(activations, row functions) to embed: the network's own and the output's."""
    activations = list(plan.activations)
    rows = []
    out = plan.output_activation
    if isinstance(out, VectorFunction):
        rows.append(out)
    elif out is not None and out not in activations:
        activations.append(out)
    return ([activation_context(a) for a in activations],
            [row_function_context(r) for r in rows])


# ---- the other parts of the module ----------------------------------------------------------


def layer_sources(layout: NetworkLayout, printer: NumbaPrinter) -> list[str]:
    """The source of every layer kernel the network calls, each once."""
    sources, seen = [], set()
    for forward, backward, op in layout.layer_kernels:
        for kernel in (forward, backward):
            # A type used first and later shares its forward; a frozen layer has no backward.
            if kernel is not None and kernel.name not in seen:
                seen.add(kernel.name)
                sources.append(kernel_source(kernel, op, printer))
    return sources + list(layout.sources)


def loss_context(plan: NetworkPlan) -> dict:
    """The computed loss's row kernels, for the encoding of targets the network takes."""
    loss_op = plan.computed_loss
    encoding = "index" if plan.loss.classes and "index" in loss_op.targets else "dense"
    lowered = lower_loss(derive_loss(loss_op), "network")
    variant = next(v for v in lowered.variants if v.encoding == encoding)
    printer = NumbaPrinter({loss_op.pred: "pred", loss_op.target: "target", LABELS: "target"})
    return {"encoding": encoding,
            "forward": row_context(variant.forward, printer),
            "backward": row_context(variant.backward, printer),
            "fused": fused_loss(variant.forward, variant.backward, printer),
            "helpers": printer.helpers}


def fused_loss(forward: RowKernel, backward: RowKernel, printer: NumbaPrinter) -> dict | None:
    """The loss and its gradient in one pass over the rows, when their reductions agree.

    A training step needs both, and the gradient's kernel recomputes each row's
    reductions (softmax cross-entropy's log-sum-exp) that the loss's computed. When they
    are the same sums, the fused kernel computes them once a row, adds the row's loss and
    writes its gradient: the same expressions in the same order, so the same numbers.
    Returns the two parts as :func:`row_context` gives them (the loss's with the
    gradient's row index), or None when the reductions differ.
    """
    if forward.col is not None or backward.col is None:
        return None
    rename = {forward.row: backward.row}
    reductions = tuple(dataclasses.replace(r, body=sp.sympify(r.body).xreplace(rename))
                       for r in forward.reductions)
    if reductions != tuple(backward.reductions):
        return None
    loss = RowKernel(backward.row, None, (),
                     tuple(dataclasses.replace(a, expr=sp.sympify(a.expr).xreplace(rename))
                           for a in forward.body),
                     sp.sympify(forward.value).xreplace(rename))
    return {"loss": row_context(loss, printer), "gradient": row_context(backward, printer)}


def parameter_context(spec: NetworkSpec) -> dict:
    """Names, shapes, fans and argument names of every parameter array, in order.

    Each layer's weights (at random, 0 for a bias, or the constant the declaration's
    ``inits`` gives, γ = 1), then its activation's learnable parameters (at their declared
    value), then the arrays it keeps without learning them (running statistics, at their
    declared value; their gradient stays 0 and no update touches them).
    """
    names, shapes, fans, biases, args, inits, trainable = [], [], [], [], [], [], []
    for layer in spec.layers:
        activation = registry.get(layer.activation) if layer.activation_params else None
        values = {p.name: float(p.default) for p in activation.params} if activation else {}
        starts = {a.label.name: value for a, value in layer_op(layer.type).inits}
        arrays = ([(pname, shape, starts.get(pname), True) for pname, shape in layer.params]
                  + [(pname, shape, values[pname], True)
                     for pname, shape in layer.activation_params]
                  + [(pname, shape, init, False) for pname, shape, init in layer.buffers])
        for pname, shape, init, learnt in arrays:
            names.append(f"{layer.label}.{pname}")
            shapes.append(shape)
            receptive = math.prod(shape[2:])
            fans.append((shape[1] * receptive, shape[0] * receptive) if len(shape) > 1
                        else (shape[0], shape[0]))
            biases.append(len(shape) == 1)
            args.append(f"p_{layer.label}_{pname}")
            inits.append(init)
            trainable.append(learnt)
    return {"param_names": names, "param_shapes": shapes, "fans": fans, "biases": biases,
            "params": args, "grads": [name.replace("p_", "g_", 1) for name in args],
            "inits": inits, "trainable": trainable}


def optimizer_context(spec: NetworkSpec, parameters: dict) -> dict:
    """The optimizer's embedded update kernel, its state's set-up and the update calls.

    ``parameters`` is :func:`parameter_context`'s. With a regulariser or a clip rule in
    the plan, the update reads g ← clip(g) + ∂R/∂w
    (:func:`~derive.calculus.regularise.regularised`) in its one elementwise pass; the
    strengths and a decoupled decay are passed as 0 for the parameters
    :func:`unpenalised` names. When that update is ``w ← β w + α g``
    (:func:`~derive.codegen.optimizer.affine_update`), ``folds`` gives each parameter's
    (α, β) as code, for :func:`lay_out` to fold into the weight gradients' GEMMs.
    """
    params = parameters["params"]
    declared = registry.get(spec.train["optimizer"], "optimizer")
    plan = spec.plan
    op = regularised(declared, plan.regulariser, plan.clip)
    weights_only = weight_only_params(declared, plan.regulariser)
    module = lower_optimizer(op, "network")
    source, helpers = render_update(module, {p.symbol: p.name for p in op.params}, "_update")
    slot_names = [s.name for s in module.slots]
    scales = affine_update(op)
    updates, folds = [], {}
    for p_name, spared in zip(params, unpenalised(spec, parameters), strict=True):
        g_name = p_name.replace("p_", "g_", 1)
        slots = [f"s_{p_name[2:]}_{slot}" for slot in slot_names]
        flat = [f"{a}.reshape({a}.size)" for a in (p_name, g_name, *slots)]
        values = ["0.0" if spared and p_.symbol in weights_only
                  else _optimizer_value(p_, op, spec.train) for p_ in op.params]
        # Each hyper-parameter in the parameter's own dtype, as PyTorch applies it: a
        # Python float would make a float32 update compute in float64 and convert every
        # element twice (measured 1.4x slower for SGD, 2x with L2, on the notes' MLP).
        hyper = [f"{p_name}.dtype.type({value})" for value in values]
        step = ["step[0]"] if module.uses_step else []
        updates.append(f"_update({', '.join(flat + hyper + step)})")
        if scales is not None:
            printer = NumbaPrinter({p_.symbol: value
                                    for p_, value in zip(op.params, values, strict=True)})
            folds[p_name] = tuple(printer.doprint(scale) for scale in reversed(scales))
    return {
        "optimizer": op.name,
        "optimizer_source": source,
        "optimizer_params": {p_.name: float(p_.default) for p_ in declared.params},
        "slots": slot_names,
        "per_step": [s.per_step for s in module.slots],
        "slot_inits": ", ".join(slot_init(s, "p") for s in module.slots),
        "slot_args": [f"s_{name[2:]}_{slot}" for name in params for slot in slot_names],
        "updates": updates,
        "folds": folds,
        "helpers": helpers,
        "training_notes": training_notes(
            spec, declared, not spec.train.get("regularise_biases", False)),
    } | clip_context(plan.clip, [p.replace("p_", "g_", 1) for p in params])


def unpenalised(spec: NetworkSpec, parameters: dict) -> list[bool]:
    """Which parameters no penalty or decay shrinks, in order.

    The biases (1-D parameters, ``parameters["biases"]``) unless the spec sets
    ``regularise_biases = true``, and arrays that are not learnt (``parameters
    ["trainable"]`` false: running statistics), whose value a penalty must not move.
    """
    n = len(parameters["params"])
    biases = parameters["biases"] if not spec.train.get("regularise_biases", False) \
        else [False] * n
    learnt = parameters.get("trainable") or [True] * n
    return [bias or not trained for bias, trained in zip(biases, learnt, strict=True)]


def training_notes(spec: NetworkSpec, op, spare_biases: bool) -> list[str]:
    """The module docstring's lines on what a step does to the loss's gradient."""
    plan, train = spec.plan, spec.train
    where = "the weights (not the 1-D biases)" if spare_biases else "every parameter"
    notes = []
    if plan.clip is not None:
        notes.append(f"train_step clips the loss's gradients first: {plan.clip.title.lower()}"
                     f" ({plan.clip.name} = {train[plan.clip.name]!r}).")
    if plan.regulariser is not None:
        reg = plan.regulariser
        values = ", ".join(f"{p.name} = {train[p.name]!r}" for p in reg.strengths)
        notes += [f"Then it adds the gradient of a penalty R to {where}:",
                  f"    {reg.title}: R(w) = {reg.penalty}, dR/dw = {penalty_gradient(reg)},",
                  f"    {values}."]
    if weight_only_params(op) & set(op.defaults):
        notes.append(f"The {op.name} decay {op.decay} applies to {where}.")
    if notes:
        notes.append("The loss train_step returns is the data loss alone, without R.")
    return notes


def clip_context(clip, grads: list[str]) -> dict:
    """The pass over every gradient a clip rule needs before the updates, if any.

    Clipping by norm reads one number of the whole step (‖g‖ over all gradients): the
    rule's summand, summed by ``_gradient_total`` over each gradient array, then its
    statistic. An elementwise rule needs nothing before the update.
    """
    if clip is None or clip.summand is None:
        return {"clip_source": "", "clip_lines": []}
    source = environment().get_template("kernels/_gradient_total.jinja").render(
        summand=NumbaPrinter({g: "g[i]"}).doprint(clip.summand))
    total = " + ".join(f"_gradient_total({a}.reshape({a}.size))" for a in grads) or "0.0"
    symbol, value = clip.statistic
    return {"clip_source": source,
            "clip_lines": [f"{grad_total.name} = {total}",
                           f"{symbol.name} = {NumbaPrinter().doprint(value)}"]}


def _optimizer_value(param, op, train: dict) -> str:
    # The learning rate is the update's argument lr (a schedule may change it each epoch);
    # a per-call value (the gradients' norm) is a variable of the train step.
    if param == op.learning_rate:
        return "lr"
    if param.per_call:
        return param.name
    return repr(float(train.get(param.name, param.default)))


def _target_doc(spec: NetworkSpec, encoding: str) -> str:
    """What the module's docstring says y is."""
    if encoding == "index":
        return "integer class labels of shape (N,)"
    shape = ", ".join(map(str, spec.output_shape))
    if spec.plan.loss.classes:
        return f"class probabilities of shape (N, {shape}) or integer class labels of shape (N,)"
    domain = TARGET_DOMAINS.get(spec.plan.loss.samples)
    where = ("" if domain is None else f" in [{domain[1]}, {domain[2]}]" if domain[0] == "range"
             else " each " + " or ".join(map(str, domain[1:])))
    return f"targets of shape (N, {shape}){where}"


def summary_lines(spec: NetworkSpec) -> list[str]:
    """The module docstring's outline of the network, a line per layer."""
    computed = spec.plan.computed_loss.name
    return [f"input {spec.input_shape}"] + [
        f"layer {layer.index}: {layer.type} {layer.in_shape} -> {layer.out_shape}"
        + (f", {layer.activation}" if layer.activation else "")
        + ("" if layer.skip_from is None else " + the input" if layer.skip_from < 0
           else f" + the output of layer {layer.skip_from}")
        for layer in spec.layers
    ] + [f"loss: {spec.loss}" + (f", computed as {computed} on the logits"
                                  if computed != spec.loss else "")]


def _skip_entry(layer) -> dict:
    """``skip_from`` (the index of the output added, -1 the input) for a layer that has one.

    Listed with the layer's hyper-parameters in the module's LAYERS, so that a tool that
    rebuilds the network, and a checkpoint's description of it, see the connection.
    """
    return {} if layer.skip_from is None else {"skip_from": layer.skip_from}


def _arguments(names) -> str:
    """An argument list with each name after a comma: a network may have no parameters."""
    return "".join(f", {a}" for a in names)


def render_network(spec: NetworkSpec, command: str) -> str:
    """Render the generated module of a network spec.

    Parameters
    ----------
    spec : NetworkSpec
        The validated spec.
    command : str
        The command that regenerates the file, for its header.
    """
    plan = spec.plan
    params = parameter_context(spec)
    optimizer = optimizer_context(spec, params)
    layout = lay_out(plan, optimizer["folds"])
    printer = NumbaPrinter()
    layers = layer_sources(layout, printer)
    activations, row_functions = _output_functions(plan)
    loss = loss_context(plan)
    # What a layer keeps without learning it (running statistics) is not updated, nor a
    # weight whose update the backward pass folded into its gradient's GEMM.
    optimizer["updates"] = [
        u for u, learnt, p_name in zip(optimizer["updates"], params["trainable"],
                                       params["params"], strict=True)
        if learnt and p_name not in layout.folded]
    helpers = runtime_helpers(
        printer.helpers | loss["helpers"] | optimizer["helpers"]
        | set().union(*(f["helpers"] for f in activations + row_functions)))
    init_scale, init_kind = INITS[spec.init]
    domain = TARGET_DOMAINS.get(plan.loss.samples)
    context = params | optimizer | {
        "cache_name": cache_name("networks", spec.name),
        "header": header_lines(f"the network spec {spec.source}", command),
        # The spec's path is the user's text, and the docstring quotes it.
        "spec": dataclasses.replace(spec, source=docstring_text(spec.source)),
        "layout": layout,
        "computed_loss": plan.computed_loss.name,
        "summary": summary_lines(spec),
        "final_activation": plan.output_activation.name if plan.fused else None,
        "target_doc": _target_doc(spec, loss["encoding"]),
        "n_classes": spec.output_shape[0] if plan.loss.classes else None,
        "vocabulary": spec.vocabulary,
        "output_size": math.prod(spec.output_shape),
        "target_range": domain[1:] if domain and domain[0] == "range" else None,
        "target_values": domain[1:] if domain and domain[0] == "values" else None,
        "encoding": loss["encoding"],
        "train": dict(sorted(spec.train.items())),
        "buffer_shapes": list(layout.buffers.values()),
        "helpers": helpers,
        "layer_sources": layers,
        "parallel": any(kernel.parallel for forward, backward, _ in layout.layer_kernels
                        for kernel in (forward, backward) if kernel is not None),
        "activations": activations,
        "row_functions": row_functions,
        "loss": loss,
        "padding": padding_context(plan),
        "skip": skip_context(plan),
        "params_args": _arguments(params["params"]),
        "grads_args": _arguments(params["grads"]),
        "slot_args": _arguments(optimizer["slot_args"]),
        "buffer_args": _arguments(layout.buffers),
        "layers": [(layer.type, layer.activation, dict(sorted(
                       (layer.hyper | _skip_entry(layer)).items()))) for layer in spec.layers],
        "init_scale": init_scale,
        "init_kind": init_kind,
    }
    env = environment()
    env.filters.setdefault(
        "tuple_repr", lambda v: repr(tuple(v)) if isinstance(v, list) else repr(v))
    text = env.get_template("kernels/network.py.jinja").render(context)
    return with_hash(text)
