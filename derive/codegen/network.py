"""Network spec → one generated module that trains without Python work per layer.

The chain rule across layers is composed from the per-layer derivations, not by
differentiating the unrolled network: each layer's generated forward and backward
kernels are embedded once per layer type, and the network's jitted functions call them
in order (δ⁽ˡ⁾ = backward of layer l applied to δ⁽ˡ⁺¹⁾, times the activation's
derivative). Work buffers are allocated once per batch size.
"""

from __future__ import annotations

import ast
import dataclasses
import math
from dataclasses import dataclass

import sympy as sp

from derive import registry
from derive.calculus.derivation import derive_activation, derive_layer, derive_loss
from derive.codegen.emit import (
    _element_context,
    _environment,
    _kernel_source,
    _row_context,
    cache_name,
    docstring_text,
    header_lines,
    helper_source,
    with_hash,
)
from derive.codegen.lower import gradient_array, lower_activation, lower_layer, lower_loss
from derive.codegen.optimizer import lower_optimizer, render_optimizer, slot_init
from derive.codegen.printer import NumbaPrinter
from derive.network import NetworkSpec

#: (last activation, loss) pairs computed as one fused, stable loss on the logits.
FUSED = {
    ("softmax", "categorical_cross_entropy"): "softmax_cross_entropy",
    ("softmax", "sparse_categorical_cross_entropy"): "softmax_cross_entropy",
    ("softmax", "softmax_cross_entropy"): "softmax_cross_entropy",
    ("sigmoid", "binary_cross_entropy"): "binary_cross_entropy_with_logits",
}
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


def _embed_functions(text: str, names: set[str]) -> str:
    """The source of the named top-level functions (with decorators) of a module text."""
    tree = ast.parse(text)
    lines = text.splitlines()
    pieces = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in names:
            start = min([d.lineno for d in node.decorator_list] + [node.lineno]) - 1
            pieces.append("\n".join(lines[start:node.end_lineno]))
    return "\n\n\n".join(pieces)


def _optimizer_source(name: str) -> tuple[str, object]:
    op = registry.get(name, "optimizer")
    module = lower_optimizer(op, "network")
    text = render_optimizer(module, {p.symbol: p.name for p in op.params}, "network")
    source = _embed_functions(text, {"_update_element", "update"})
    return source.replace("def update(", "def _update("), module


def _rename(kernel, name):
    return dataclasses.replace(kernel, name=name)


@dataclass(frozen=True)
class NetworkPlan:
    """What the network template writes: kernels to embed and the lines that call them.

    Layer l reads ``out{l-1}`` (``x`` for the first) and writes ``z{l}``; its activation
    writes ``out{l}``. Backward fills ``d_out{l}`` from the layer above, then the
    activation's derivative gives ``d_z{l}`` and the layer's derived backward gives
    ``d_out{l-1}`` and the parameter gradients ``g_*``: the δ recursion.
    """

    views: tuple[str, ...]
    forward: tuple[str, ...]
    backward: tuple[str, ...]
    buffers: dict  # name → per-example shape
    layer_kernels: tuple  # (forward, backward or None, op) LayerKernels, one per type and use
    activations: tuple  # Activation declarations used after layers
    output: str  # the buffer the loss reads
    output_grad: str  # the buffer the loss's gradient goes to
    loss: str  # the loss actually computed (fused with the last activation or not)
    final_activation: str | None  # applied by predict after the forward pass


def plan_network(spec: NetworkSpec) -> NetworkPlan:
    """Lay out buffers and kernel calls for a network (see :class:`NetworkPlan`)."""
    last = spec.layers[-1]
    fused = FUSED.get((last.activation, spec.loss))
    views, forward, backward_by_layer, buffers = [], [], [], {}
    kernels, activations = {}, {}
    # Gradients flow back only as far as the first layer with parameters: the input
    # gradient of that layer would be thrown away, and the layers before it (flatten,
    # pooling, ...) have nothing to learn, so they get no backward pass at all.
    trainable = [layer.index for layer in spec.layers if layer.params]
    first_trainable = trainable[0] if trainable else len(spec.layers)
    for layer in spec.layers:
        i = layer.index
        op = registry.get(layer.type, "layer")
        first = i <= first_trainable  # its input gradient is not wanted
        frozen = i < first_trainable  # no gradient is wanted at all
        key = (op.name, first, frozen)
        if key not in kernels:
            module = lower_layer(derive_layer(op), "network", input_gradients=not first)
            suffix = "_backward_weights" if first else "_backward"
            kernels[key] = (_rename(module.forward, f"_{op.name}_forward"),
                            None if frozen else _rename(module.backward, f"_{op.name}{suffix}"),
                            op)
        fwd, bwd, _ = kernels[key]
        padded = op.padding[0] if op.padding else None
        source, d_source = ("x", "d_x") if i == 0 else (f"out{i - 1}", f"d_out{i - 1}")
        z, d_z = f"z{i}", f"d_z{i}"
        # Flatten declares its output with the input's axes; everything else its own.
        z_shape = layer.in_shape if op.view is not None else layer.out_shape
        buffers |= {z: z_shape, d_z: z_shape}
        names = {op.out.base: z, sp.IndexedBase(f"d_{op.out.base}", real=True): d_z}
        for array in op.inputs:
            names[array] = f"xpad{i}" if array == padded else source
            names[gradient_array(array)] = f"d_xpad{i}" if array == padded else d_source
        for (pname, _), array in zip(layer.params, op.weights, strict=True):
            names[array] = f"p_{layer.label}_{pname}"
            names[gradient_array(array)] = f"g_{layer.label}_{pname}"
        values = {p_.symbol: _hyper_value(p_, layer.hyper) for p_ in op.hyper}

        def call(kernel, values=values, names=names):
            args = [names[a] for a in kernel.arrays] + [values[h] for h in kernel.hyper]
            return f"{kernel.name}({', '.join(args)})"

        if padded is not None:
            pad = layer.hyper["padding"]
            c, h, w = layer.in_shape
            buffers |= {f"xpad{i}": (c, h + 2 * pad, w + 2 * pad),
                        f"d_xpad{i}": (c, h + 2 * pad, w + 2 * pad)}
            forward.append(f"_pad_into({source}, xpad{i}, {pad})")
        forward.append(call(fwd))
        steps_back = []
        shape = "(N, " + ", ".join(map(str, layer.out_shape)) + ")"
        if layer.activation and not (layer is last and fused):
            act = registry.get(layer.activation, "activation")
            activations[act.name] = act
            buffers |= {f"out{i}": layer.out_shape, f"d_out{i}": layer.out_shape}
            forward.append(f"_{act.name}_apply({z}, out{i})")
            steps_back.append(f"_{act.name}_apply_backward({z}, out{i}, d_out{i}, {d_z})")
        else:
            # No activation: the output is the layer's result itself, seen flat if needed.
            views += [f"out{i} = {z}.reshape({shape})", f"d_out{i} = {d_z}.reshape({shape})"]
        if frozen:
            steps_back = []
        else:
            steps_back.append(call(bwd))
        if padded is not None and not first:
            steps_back.append(f"_crop_into(d_xpad{i}, {d_source}, {layer.hyper['padding']})")
        backward_by_layer.append(steps_back)
    backward = [line for steps in reversed(backward_by_layer) for line in steps]
    return NetworkPlan(tuple(views), tuple(forward), tuple(backward), buffers,
                       tuple(kernels.values()), tuple(activations.values()),
                       f"out{last.index}", f"d_out{last.index}", fused or spec.loss,
                       last.activation if fused else None)


def _hyper_value(param, given: dict) -> str:
    # Dropout's mode and seed vary per call; every other hyper-parameter is a constant.
    if param.name in ("training", "seed"):
        return param.name
    return repr(given.get(param.name, param.default))


def _hyper_value_for_optimizer(param, train: dict) -> str:
    return "lr" if param.name == "lr" else repr(float(train.get(param.name, param.default)))


def _target_doc(spec: NetworkSpec, encoding: str, classes: bool) -> str:
    """What the module's docstring says y is."""
    if encoding == "index":
        return "integer class labels of shape (N,)"
    shape = ", ".join(map(str, spec.output_shape))
    if classes:
        return f"class probabilities of shape (N, {shape}) or integer class labels of shape (N,)"
    domain = TARGET_DOMAINS.get(registry.get(spec.loss, "loss").samples)
    where = ("" if domain is None else f" in [{domain[1]}, {domain[2]}]" if domain[0] == "range"
             else " each " + " or ".join(map(str, domain[1:])))
    return f"targets of shape (N, {shape}){where}"


def render_network(spec: NetworkSpec, command: str) -> str:
    """Render the generated module of a network spec.

    Parameters
    ----------
    spec : NetworkSpec
        The validated spec.
    command : str
        The command that regenerates the file, for its header.
    """
    from derive.calculus.derivation import LABELS
    from derive.codegen.emit import _ELEMENT_NAMES

    plan = plan_network(spec)
    printer = NumbaPrinter()
    layer_sources = []
    seen = set()
    for forward, backward, op in plan.layer_kernels:
        for kernel in (forward, backward):
            # A type used first and later shares its forward; a frozen layer has no backward.
            if kernel is not None and kernel.name not in seen:
                seen.add(kernel.name)
                layer_sources.append(_kernel_source(kernel, op, printer))
    element_printer = NumbaPrinter(_ELEMENT_NAMES)
    activations = []
    for act in plan.activations:
        lowered = lower_activation(derive_activation(act), "network")
        activations.append({
            "name": act.name,
            "forward": _element_context(lowered.forward, element_printer),
            "backward": _element_context(lowered.backward, element_printer),
            "params": "".join(f", {p.default!r}" for p in act.params),
        })
    loss_op = registry.get(plan.loss, "loss")
    classes = spec.loss in ("categorical_cross_entropy", "sparse_categorical_cross_entropy",
                            "softmax_cross_entropy")
    encoding = "index" if classes and "index" in loss_op.targets else "dense"
    lowered_loss = lower_loss(derive_loss(loss_op), "network")
    variant = next(v for v in lowered_loss.variants if v.encoding == encoding)
    loss_printer = NumbaPrinter({loss_op.pred: "pred", loss_op.target: "target",
                                 LABELS: "target"})
    loss = {"forward": _row_context(variant.forward, loss_printer),
            "backward": _row_context(variant.backward, loss_printer)}
    optimizer_source, optimizer = _optimizer_source(spec.train["optimizer"])
    param_names, param_shapes, fans, biases, params_args = [], [], [], [], []
    for layer in spec.layers:
        for pname, shape in layer.params:
            param_names.append(f"{layer.label}.{pname}")
            param_shapes.append(shape)
            receptive = 1
            for d in shape[2:]:
                receptive *= d
            fans.append((shape[1] * receptive, shape[0] * receptive) if len(shape) > 1
                        else (shape[0], shape[0]))
            biases.append(len(shape) == 1)
            params_args.append(f"p_{layer.label}_{pname}")
    grads_args = [name.replace("p_", "g_", 1) for name in params_args]
    slot_names = [s.name for s in optimizer.slots]
    slot_args = [f"s_{name[2:]}_{slot}" for name in params_args for slot in slot_names]
    updates = []
    for p_name, g_name in zip(params_args, grads_args, strict=True):
        slots = [f"s_{p_name[2:]}_{slot}" for slot in slot_names]
        flat = [f"{a}.reshape({a}.size)" for a in (p_name, g_name)]
        flat += [f"{s}.reshape({s}.size)" for s in slots]
        hyper = [_hyper_value_for_optimizer(p_, spec.train) for p_ in optimizer.params]
        step = ["step[0]"] if optimizer.uses_step else []
        updates.append(f"_update({', '.join(flat + hyper + step)})")
    helpers, extra_imports = helper_source(printer.helpers | element_printer.helpers
                                           | loss_printer.helpers | {"vexp"})
    init_scale, init_kind = INITS[spec.init]
    summary = [f"input {spec.input_shape}"] + [
        f"layer {layer.index}: {layer.type} {layer.in_shape} -> {layer.out_shape}"
        + (f", {layer.activation}" if layer.activation else "")
        for layer in spec.layers
    ] + [f"loss: {spec.loss}" + (f", computed as {plan.loss} on the logits"
                                  if plan.loss != spec.loss else "")]
    context = {
        "cache_name": cache_name("networks", spec.name),
        "header": header_lines(f"the network spec {spec.source}", command),
        # The spec's path is the user's text, and the docstring quotes it.
        "spec": dataclasses.replace(spec, source=docstring_text(spec.source)),
        "plan": plan,
        "summary": summary,
        "final_activation": plan.final_activation,
        "optimizer": spec.train["optimizer"],
        "target_doc": _target_doc(spec, encoding, classes),
        "n_classes": spec.output_shape[0] if classes else None,
        "output_size": math.prod(spec.output_shape),
        "target_domain": TARGET_DOMAINS.get(registry.get(spec.loss, "loss").samples),
        "encoding": encoding,
        "train": dict(sorted(spec.train.items())),
        "param_names": param_names,
        "param_shapes": param_shapes,
        "fans": fans,
        "biases": biases,
        "optimizer_params": {p_.name: p_.default for p_ in optimizer.params},
        "slots": slot_names,
        "per_step": [s.per_step for s in optimizer.slots],
        "slot_inits": ", ".join(slot_init(s, "p") for s in optimizer.slots),
        "buffer_shapes": list(plan.buffers.values()),
        "helpers": helpers,
        "extra_imports": extra_imports,
        "layer_sources": layer_sources,
        "parallel": any(kernel.parallel for forward, backward, _ in plan.layer_kernels
                        for kernel in (forward, backward) if kernel is not None),
        "activations": activations,
        "loss": loss,
        "optimizer_source": optimizer_source,
        # Argument lists, each name after a comma: a network may have no parameters.
        "params_args": "".join(f", {a}" for a in params_args),
        "grads_args": "".join(f", {a}" for a in grads_args),
        "slot_args": "".join(f", {a}" for a in slot_args),
        "buffer_args": "".join(f", {a}" for a in plan.buffers),
        "updates": updates,
        "layers": [(layer.type, layer.activation, dict(sorted(layer.hyper.items())))
                   for layer in spec.layers],
        "init_scale": init_scale,
        "init_kind": init_kind,
    }
    env = _environment()
    env.filters.setdefault(
        "tuple_repr", lambda v: repr(tuple(v)) if isinstance(v, list) else repr(v))
    text = env.get_template("kernels/network.py.jinja").render(context)
    return with_hash(text)
