"""Network specs: a TOML file → a validated, shape-checked :class:`NetworkSpec`.

A spec names the input shape, an ordered list of layers (each a catalogue layer with an
optional activation), the loss, and an optional ``[train]`` table. Every error names
the file, the layer index and the field, says what is wrong, and how to fix it.
"""

from __future__ import annotations

import difflib
import math
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path

import sympy as sp

from derive import registry
from derive.codegen.network import INITS
from derive.errors import DeriveError
from derive.files import module_name_clash
from derive.formula import check_identifier
from derive.netplan import LayerSpec, NetworkSpec, fused_loss, layer_op, layer_types
from derive.ops.regularisers import CLIPS, strength_keys
from derive.trainspec import (
    EARLY_STOPPING,
    MONITORS,
    NORMALISATIONS,
    SCHEDULES,
    single_value_batches,
)

__all__ = ["LayerSpec", "NetworkSpec", "SpecError", "check_train", "load_spec", "parse_spec"]


class SpecError(DeriveError):
    """A network spec that cannot be used."""


TRAIN_DEFAULTS = {
    "optimizer": "gd", "lr": 0.01, "batch_size": 32, "epochs": 20,
    "validation_split": 0.1, "seed": 0, "schedule": "constant",
}

# The keys each table may hold. A key outside them is a mistake (a misspelling, or a
# setting derive does not have, like momentum = 0.9 for adam): ignoring it would train
# something other than what the file says, so it is refused.
TOP_KEYS = ("network", "layers", "train", "loss")
NETWORK_KEYS = ("name", "input_shape", "loss", "init")
#: Keys of every layer; each layer type's own come from its declaration
#: (:meth:`derive.spec.Layer.network_keys`). ``name`` names a layer so that a later one's
#: ``skip_from`` can add its output (see :func:`_skip_from`).
LAYER_COMMON_KEYS = ("type", "activation", "name", "skip_from")
#: What ``skip_from`` says to add the network's input itself.
SKIP_INPUT = "input"
#: [train] keys besides the optimizer's own hyper-parameters (``mu``, ``beta1``, ...).
TRAIN_KEYS = (*TRAIN_DEFAULTS, "normalisation", "early_stopping", *strength_keys(),
              "regularise_biases", *(rule.name for rule in CLIPS))
#: Each schedule parameter's kind: "count" an integer ≥ 1, "fraction" a number in (0, 1],
#: "rate" a number ≥ 0, "exponent" a number in (0, 700] (e^−k underflows to 0 past 745).
#: Optimizer hyper-parameters with a range narrower than "a number ≥ 0": Adam's and
#: NAdam's betas divide by 1 − βᵗ (0 at β = 1), RMSprop's ρ > 1 makes its average of
#: squares negative. The others (mu, alpha, eps, momentum_decay) are any number ≥ 0.
OPTIMIZER_PARAMETERS = {"beta1": "decay", "beta2": "decay", "rho": "average"}
SCHEDULE_PARAMETERS = {"step_size": "count", "t_max": "count", "warmup": "count",
                       "gamma": "fraction", "start_factor": "fraction", "k": "exponent",
                       "eta_min": "rate"}

# Bounds on what a spec may ask for. They sit far above any network this project trains
# on a CPU, and far below what would exhaust memory or hang code generation: a typo such
# as units = 2**40 must be an error, not an allocation of terabytes.
#: Layers in one network (each becomes kernels, buffers and lines of generated code).
MAX_LAYERS = 100
#: Learnable numbers in all layers together (2**28 float64 ≈ 2 GiB, before gradients
#: and optimizer state, which take as much again each).
MAX_PARAMETERS = 2**28
#: Numbers one example produces in all layers together (input included), kept for the
#: backward pass; a batch holds this many per example.
MAX_ACTIVATIONS = 2**25
#: Largest seed: generated modules pass it to their kernels as a 64-bit integer.
MAX_SEED = 2**63 - 1
#: More epochs than any course exercise needs: a typo (1e23) must not run for ever.
MAX_EPOCHS = 1_000_000
#: Largest spec file read (a 100-layer spec takes a few kilobytes).
MAX_SPEC_BYTES = 1 << 20


def _fail(path: str, where: str, what: str, fix: str = "") -> SpecError:
    return SpecError(what, where=f"{path}: {where}" if where else path, fix=fix)


def _close(name, known) -> str:
    """"Did you mean ...?" for a misspelt name, or the list of names that exist."""
    close = difflib.get_close_matches(str(name), list(known), 2)
    return f"Did you mean {' or '.join(close)}?" if close else f"Use one of: {', '.join(known)}."


def _int(path, where, value, name, minimum=1, maximum=None) -> int:
    if value is None:
        raise _fail(path, where, f"{name} is missing.", f"Add e.g. {name} = {max(minimum, 1)}.")
    if (isinstance(value, bool) or not isinstance(value, int) or value < minimum
            or (maximum is not None and value > maximum)):
        bound = f"≥ {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise _fail(path, where, f"{name} must be an integer {bound}, got {value!r}.")
    return value


def _number(path, where, value, name, kind="positive") -> float:
    """A finite number (not a bool) of ``kind`` (see :data:`SCHEDULE_PARAMETERS`)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and {"positive": lambda v: v > 0, "rate": lambda v: v >= 0,
                 "fraction": lambda v: 0 < v <= 1, "exponent": lambda v: 0 < v <= 700,
                 "decay": lambda v: 0 <= v < 1, "average": lambda v: 0 <= v <= 1,
                 }[kind](value)
    if not ok:
        must = {"positive": "a number > 0", "rate": "a number ≥ 0",
                "fraction": "a number in (0, 1]", "exponent": "a number in (0, 700]",
                "decay": "a number in [0, 1)", "average": "a number in [0, 1]"}[kind]
        raise _fail(path, where, f"{name} must be {must}, got {value!r}.")
    return value


def _check_keys(path, where, table: Mapping, known, what: str) -> None:
    """Refuse a key that is not one of ``known``, naming the closest and all of them."""
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), 1)
            hint = f"Did you mean {close[0]!r}? " if close else ""
            raise _fail(path, f"{where}.{key}" if where else str(key),
                        f"unknown key {key!r} in {what}.",
                        f"{hint}Known keys: {', '.join(known) or 'none'}.")


def _check_finite(path, data: dict) -> None:
    """Refuse NaN and infinity anywhere in the file (TOML allows ``nan`` and ``inf``).

    No setting of a spec means anything as NaN or infinity, and each would reach a
    kernel or a generated file. The walk uses a stack: the nesting depth is the user's.
    """
    stack = [("", data)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            raise _fail(path, where, f"{value!r} is not a finite number.",
                        "Give a finite value.")
        if isinstance(value, dict):
            stack += [(f"{where}.{k}" if where else str(k), v) for k, v in value.items()]
        elif isinstance(value, list):
            stack += [(f"{where}[{i}]", v) for i, v in enumerate(value)]


#: What to do when a layer cannot read a recurrent layer's sequence of states.
READOUT_FIX = ('Reduce the time axis first: add [[layers]] with type = "last_state" (the last '
               'state) or type = "time_mean" (the mean over time) before it.')

#: How errors describe an input of each rank when a layer needs another.
_INPUT_NEEDS = {
    1: ("a flat input", 'Add a layer with type = "flatten" before it.'),
    2: ("a sequence input (C, L)", "Put it first, with input_shape = [C, L]."),
    3: ("an image input (C, H, W)",
        "Put it before the flatten layer, or set input_shape = [C, H, W]."),
}


def _layer_shapes(path, where, op, options, in_shape, sequence=False):
    """Hyper-parameters, output shape, parameter shapes and sizes of one layer.

    Everything comes from the declaration: its input's declared shape fixes the sizes the
    layer below gives, its :meth:`~derive.spec.Layer.network_keys` the others, and its
    computed sizes and arrays' shapes the rest. A layer type needs no code here.
    ``sequence`` says the layer below is recurrent (its output has a time axis), so a
    layer that cannot read it is told to reduce the time axis first.
    """
    sizes = op.input_sizes(in_shape)
    if sizes is None:
        symbols = op.shape(op.source)[1:]
        need, fix = _INPUT_NEEDS.get(len(symbols), (
            f"an input of shape ({', '.join(map(str, symbols))})", "Check the layers before it."))
        if sequence:
            fix = READOUT_FIX
        got = f"shape {in_shape}" if len(symbols) == 1 else f"{in_shape}"
        raise _fail(path, where, f"{op.name} needs {need}, got {got}.", fix)
    hyper_params = {p.symbol: p for p in (*op.hyper, *op.running_params)}
    hyper = {}
    for key in op.network_keys():
        value = options.get(key.name)
        if value is None and key.default is not None:
            value = sp.sympify(sp.sympify(key.default).xreplace(sizes))
            value = int(value) if value.is_Integer else float(value)
        param = hyper_params.get(key.sizes[0]) if len(key.sizes) == 1 else None
        symbol = key.sizes[0]
        if symbol.is_integer:
            value = _int(path, f"{where}.{key.name}", value, key.name,
                         minimum=1 if symbol.is_positive else 0)
        else:
            value = _real(path, f"{where}.{key.name}", value, key.name, symbol,
                          param.below if param is not None else None)
        sizes.update(dict.fromkeys(key.sizes, value))
        if param is not None:
            hyper[param.name] = value
    try:
        out_shape, params = op.network_shapes(sizes, in_shape)
    except ValueError as exc:  # the declaration misses a spec key: its author's mistake
        raise _fail(path, f"{where}.type", f"{exc}.") from None
    if min(out_shape, default=1) < 1 or any(v < 1 for s, v in sizes.items()
                                            if s.is_positive and isinstance(v, int)):
        keys = ", ".join(key.name for key in op.network_keys())
        raise _fail(path, where, f"the {op.name} window does not fit the input {in_shape}"
                    f" (its output would have shape {out_shape}).",
                    f"Check {keys} against the input's shape." if keys else "")
    return hyper, out_shape, params, tuple(sizes.items())


def _real(path, where, value, name, symbol, below) -> float:
    """A finite number within the bounds of ``symbol``'s assumptions and below ``below``."""
    ok = (isinstance(value, int | float) and not isinstance(value, bool)
          and math.isfinite(value) and (value > 0 if symbol.is_positive else value >= 0)
          and (below is None or value < below))
    if not ok:
        must = (f"in [0, {below:g})" if below is not None and not symbol.is_positive
                else "> 0" if symbol.is_positive else "≥ 0")
        raise _fail(path, where, f"{name} must be a number {must}, got {value!r}.")
    return float(value)


def parse_spec(text: str, path: str = "<spec>") -> NetworkSpec:
    """Parse and validate a network spec.

    Every table is checked for keys it does not have, every value for its type and
    range, and the network for its size (see :data:`MAX_LAYERS`, :data:`MAX_PARAMETERS`,
    :data:`MAX_ACTIVATIONS`), so that what the file says is what gets trained.

    Parameters
    ----------
    text : str
        TOML text.
    path : str
        The file's name, for error messages.

    Returns
    -------
    NetworkSpec

    Raises
    ------
    SpecError
        Naming the file, layer index and field.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _fail(path, "", f"this is not valid TOML: {exc}.",
                    "Check the quoting and brackets on that line.") from None
    except RecursionError:  # tomllib reads nested arrays and tables recursively
        raise _fail(path, "", "arrays or tables are nested too deeply to read.",
                    "A spec nests at most three levels ([[layers]], a schedule table).") from None
    _check_keys(path, "", data, TOP_KEYS, "the spec's top level")
    _check_finite(path, data)
    network = data.get("network", {})
    if not isinstance(network, dict):
        raise _fail(path, "[network]", "must be a table.", 'Write it as [network] with '
                    'name, input_shape and loss under it.')
    _check_keys(path, "network", network, NETWORK_KEYS, "[network]")
    name = network.get("name", Path(path).stem)
    if not isinstance(name, str):
        raise _fail(path, "network.name", f"must be a string, got {name!r}.",
                    'E.g. name = "mlp".')
    name = check_identifier(name, f"{path}: network.name")
    clash = module_name_clash(name)
    if clash is not None:  # the spec's name is its module's file name
        raise _fail(path, "network.name", f"{name!r} is {clash}.",
                    f'Choose another name, e.g. name = "net_{name.strip("_")}".')
    shape = network.get("input_shape")
    if (not isinstance(shape, list) or not shape or len(shape) not in (1, 2, 3)
            or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)):
        raise _fail(path, "network.input_shape",
                    "must be [features], [channels, length] or [channels, height, width] of "
                    f"positive integers, got {shape!r}.",
                    'E.g. input_shape = [784] or [1, 28, 28].')
    layers_data = data.get("layers")
    if layers_data is not None and not isinstance(layers_data, list):
        raise _fail(path, "layers", f"must be an array of tables, got {layers_data!r}.",
                    "Write each layer as a [[layers]] table.")
    if not layers_data:
        raise _fail(path, "[[layers]]", "the spec has no layers.",
                    "Add [[layers]] tables, e.g. type = \"dense\", units = 10.")
    if len(layers_data) > MAX_LAYERS:
        raise _fail(path, "[[layers]]", f"the spec has {len(layers_data)} layers; derive "
                    f"builds networks of at most {MAX_LAYERS}.", "Use fewer layers.")
    layers = []
    in_shape = tuple(shape)
    n_params = 0
    n_activations = _size(in_shape)
    _check_size(path, "network.input_shape", n_params, n_activations)
    known_layers = layer_types()
    names = _layer_names(path, layers_data)
    for index, entry in enumerate(layers_data):
        where = f"layers[{index}]"
        kind = entry.get("type")
        if not isinstance(kind, str) or kind not in known_layers:
            raise _fail(path, f"{where}.type", f"unknown layer type {kind!r}.",
                        _close(kind, known_layers))
        op = layer_op(kind)
        if not op.in_networks:
            supported = [name for name in known_layers if layer_op(name).in_networks]
            raise _fail(path, f"{where}.type", f"layer type {kind!r} is not supported in "
                        "networks yet.", f"Use one of: {', '.join(supported)}.")
        if op.indices and index > 0:
            raise _fail(path, f"{where}.type", f"a {kind} layer reads tokens, which only the "
                        "network's input holds, not a layer's output.",
                        "Make it the first layer.")
        activation = entry.get("activation")
        if activation is not None:
            _check_activation(path, f"{where}.activation", activation,
                              last=index == len(layers_data) - 1)
        per_channel = _per_channel_keys(activation)
        _check_keys(path, where, entry,
                    LAYER_COMMON_KEYS + tuple(key.name for key in op.network_keys())
                    + tuple(per_channel), f"a {kind} layer"
                    + (f" with activation {activation}" if per_channel else ""))
        below = layer_op(layers[-1].type) if layers else None
        hyper, out_shape, params, sizes = _layer_shapes(
            path, where, op, entry, in_shape,
            sequence=below is not None and below.recurrence is not None)
        learnt = _activation_params(path, where, entry, per_channel, out_shape)
        buffers = _buffers(op, dict(sizes))
        skip = _skip_from(path, index, entry, names, layers, tuple(shape), out_shape)
        n_params += sum(_size(shape) for _, shape in params + learnt)
        # A skip connection keeps the sum besides the layer's own output.
        n_activations += _size(out_shape) * (1 if skip is None else 2)
        _check_size(path, where, n_params, n_activations)
        layers.append(LayerSpec(index, kind, activation, hyper, in_shape, out_shape, params,
                                sizes, learnt, buffers, entry.get("name"), skip))
        in_shape = out_shape
    if "loss" in network and "loss" in data:
        raise _fail(path, "loss", "the loss is given twice, in [network] and at the top.",
                    "Keep the one in [network].")
    loss = network.get("loss", data.get("loss"))
    loss_names = [op.name for op in registry.all_ops("loss")]
    if loss not in loss_names:
        raise _fail(path, "network.loss", f"unknown loss {loss!r}.", _close(loss, loss_names))
    loss_op = registry.get(loss, "loss")
    if loss_op.classes and len(in_shape) != 1:
        raise _fail(path, "network.loss", f"{loss} needs a flat output, got {in_shape}.")
    last = layers[-1].activation
    if last is not None and not _elementwise(last) and fused_loss(loss_op, last) is None:
        # A row-wise function (softmax) has no kernel of its own in a network: it is
        # computed only inside a loss that declares it fused, so any other loss would
        # fail when the module is written.
        losses = _losses_fusing(last)
        raise _fail(path, f"layers[{len(layers) - 1}].activation",
                    f"{last} is only supported before a loss computed together with it ("
                    f"{'; '.join(op.title.lower() for op in losses)}), not {loss}.",
                    f"Use loss = {losses[0].name!r}, or another activation."
                    .replace("'", '"'))
    if layers[-1].skip_from is not None and fused_loss(loss_op, last) is not None:
        raise _fail(path, f"layers[{len(layers) - 1}].skip_from",
                    f"the last layer's {last} is computed inside the loss "
                    f"({registry.get(fused_loss(loss_op, last)).title.lower()}), so there "
                    "is no output of that layer to add another one to.",
                    "Put the skip connection on a layer below the last one.")
    given = data.get("train", {})
    if not isinstance(given, dict):
        raise _fail(path, "train", f"must be a table, got {given!r}.",
                    "Write it as a [train] table, e.g. [train] with epochs = 5 under it.")
    train = dict(TRAIN_DEFAULTS) | given
    if layer_op(layers[0].type).indices:
        # Tokens are row numbers of the embedding's table: a normalisation would move them.
        if train.setdefault("normalisation", "none") != "none":
            raise _fail(path, "train.normalisation", f"the input is tokens (the "
                        f"{layers[0].type} layer's rows), which cannot be normalised.",
                        'Drop normalisation, or write normalisation = "none".')
    check_train(train, path)
    _check_monitor(path, train, loss_op)
    check_batch_size(layers, train["batch_size"], f"{path}: train.batch_size")
    init = _init(path, network.get("init", "xavier_uniform"))
    return NetworkSpec(name, path, tuple(shape), tuple(layers), loss, train, init)


def check_batch_size(layers, batch_size: int, where: str) -> None:
    """Refuse a batch size that leaves a batch-statistics layer one value per channel.

    Parameters
    ----------
    layers : sequence of LayerSpec
        The spec's layers; those whose declaration keeps running statistics of its batches
        (``running``) are checked, the channel axis first in their input shape.
    batch_size : int
        Samples per training batch (the spec's, or ``derive train --batch-size``).
    where : str
        The field named in the error.

    Raises
    ------
    SpecError
        With the layer, why, and the fix (:func:`~derive.trainspec.single_value_batches`).
    """
    normalising = [(layer.index, layer.type, _size(layer.in_shape[1:])) for layer in layers
                   if layer_op(layer.type).running]
    problem = single_value_batches(batch_size, normalising)
    if problem is not None:
        raise SpecError(problem[0], where=where, fix=problem[1])


def _layer_names(path, layers_data: list) -> dict:
    """Each named layer's index, after checking every layer is a table and names are unique.

    A name is what a later layer's ``skip_from`` says to add that layer's output.
    """
    names: dict = {}
    for index, entry in enumerate(layers_data):
        where = f"layers[{index}]"
        if not isinstance(entry, dict):
            raise _fail(path, where, "must be a table.")
        name = entry.get("name")
        if name is None:
            continue
        if not isinstance(name, str) or not name.strip():
            raise _fail(path, f"{where}.name", f"a layer's name must be a non-empty string, "
                        f"got {name!r}.", 'E.g. name = "block1".')
        if name == SKIP_INPUT:
            raise _fail(path, f"{where}.name", f"{SKIP_INPUT!r} names the network's input "
                        "in skip_from, not a layer.", 'Choose another name, e.g. "block1".')
        if name in names:
            raise _fail(path, f"{where}.name", f"layers[{names[name]}] is already named "
                        f"{name!r}.", "Give each layer its own name.")
        names[name] = index
    return names


def _skip_from(path, index: int, entry: dict, names: dict, layers: list, input_shape,
               out_shape) -> int | None:
    """The index of the output a layer's ``skip_from`` adds to its own (-1: the input).

    ``skip_from`` names an earlier layer (by its ``name``) or ``"input"``; the output it
    names must have the layer's output shape, as the two are added element by element.
    """
    value = entry.get("skip_from")
    if value is None:
        return None
    where = f"layers[{index}].skip_from"
    if not isinstance(value, str):
        raise _fail(path, where, f"skip_from must be the name of an earlier layer or "
                    f"{SKIP_INPUT!r}, got {value!r}.",
                    'Name the earlier layer (name = "block1") and write skip_from = "block1".')
    if value == SKIP_INPUT:
        source, shape, what = -1, input_shape, "the network's input"
    elif value in names and names[value] < index:
        source = names[value]
        shape, what = layers[source].out_shape, f"layer {value!r} (layers[{source}])"
    elif value in names:
        raise _fail(path, where, f"{value!r} is layers[{names[value]}], "
                    f"{'this layer itself' if names[value] == index else 'above this one'};"
                    " a skip connection adds the output of an earlier layer.",
                    f'Name a layer below it, or write skip_from = "{SKIP_INPUT}".')
    else:
        earlier = [name for name, i in names.items() if i < index] + [SKIP_INPUT]
        raise _fail(path, where, f"no earlier layer is named {value!r}.",
                    _close(value, earlier).replace("'", '"'))
    if tuple(shape) != tuple(out_shape):
        raise _fail(path, where, f"layers[{index}] ({entry['type']}) outputs shape "
                    f"{tuple(out_shape)} but {what} has shape {tuple(shape)}; a skip "
                    "connection adds two outputs of the same shape.",
                    "Skip from an output of the same shape, or change the sizes (units, "
                    "filters) so that the two agree.")
    return source


def _per_channel_keys(activation: str | None) -> dict:
    """``<param>_per_channel`` key → parameter, for each learnable one of the activation.

    PReLU's ``alpha_per_channel`` gives it one α per channel, as ``torch.nn.PReLU``'s
    ``num_parameters``.
    """
    if activation is None or not _elementwise(activation):
        return {}
    return {f"{p.name}_per_channel": p for p in registry.get(activation).learnable}


def _activation_params(path, where, entry, per_channel: dict, out_shape) -> tuple:
    """(name, shape) of the activation's learnable parameters.

    One value each, or one per channel (the output's first axis) when the spec says
    ``<param>_per_channel = true``.
    """
    learnt = []
    for key, param in per_channel.items():
        value = entry.get(key, False)
        if not isinstance(value, bool):
            raise _fail(path, f"{where}.{key}", f"{key} must be true or false, got {value!r}.")
        learnt.append((param.name, (out_shape[0],) if value else (1,)))
    return tuple(learnt)


def _buffers(op, sizes: dict) -> tuple:
    """(name, shape, initial value) of what the layer's evaluation declaration keeps."""
    if op.evaluation is None:
        return ()
    evaluation = registry.get(op.evaluation, "layer")
    inits = dict(evaluation.inits)
    return tuple((b.label.name, evaluation.numbers(evaluation.shape(b), sizes), inits[b])
                 for b in evaluation.buffers)


def _elementwise(activation: str) -> bool:
    return registry.get(activation).kind == "activation"


def _losses_fusing(activation: str) -> list:
    """The losses a network computes together with ``activation`` before them."""
    return [op for op in registry.all_ops("loss") if fused_loss(op, activation)]


def _check_activation(path, where, activation, last: bool) -> None:
    """Refuse an activation networks cannot compute where the spec puts it.

    Elementwise activations run after any layer (learning their parameters, drawing in
    training); a row-wise function (softmax) only as the last one, inside a loss that
    declares it fused.
    """
    elementwise = [op.name for op in registry.all_ops("activation")]
    fusable = [name for op in registry.all_ops("loss") for name, _ in op.fused]
    names = list(dict.fromkeys(elementwise + fusable))
    if activation not in names:
        close = difflib.get_close_matches(str(activation), names, 2)
        raise _fail(path, where, f"unknown activation {activation!r}.",
                    f"Did you mean {' or '.join(close)}?" if close
                    else "Run `derive list` to see them.")
    if not _elementwise(activation) and not last:
        raise _fail(path, where, f"{activation} is only supported on the last layer.")


def _size(shape) -> int:
    return math.prod(shape)


def _check_size(path, where, n_params, n_activations) -> None:
    if n_params > MAX_PARAMETERS:
        raise _fail(path, where, f"the network reaches {n_params:,} parameters here, more "
                    f"than derive's limit of {MAX_PARAMETERS:,}.",
                    "Check units, filters and kernel_size (a typo?).")
    if n_activations > MAX_ACTIVATIONS:
        raise _fail(path, where, f"one example reaches {n_activations:,} values through the "
                    f"layers here, more than derive's limit of {MAX_ACTIVATIONS:,}.",
                    "Check input_shape, filters and padding (a typo?).")


def _init(path, init) -> str:
    if not isinstance(init, str) or init not in INITS:  # a list or table is not hashable
        raise _fail(path, "network.init", f"unknown initialiser {init!r}.",
                    _close(init, list(INITS)))
    return init


def check_train(train: dict, path: str = "<spec>") -> None:
    """Refuse a ``[train]`` table with unknown keys or values of the wrong type or range.

    Parameters
    ----------
    train : dict
        The table with :data:`TRAIN_DEFAULTS` filled in.
    path : str
        The spec's file name, for messages.

    Raises
    ------
    SpecError
        Naming the file and the key.
    """
    optimizers = {op.name: op for op in registry.all_ops("optimizer")}
    name = train.get("optimizer")
    if not isinstance(name, str) or name not in optimizers:
        raise _fail(path, "train.optimizer", f"unknown optimizer {name!r}.",
                    _close(name, list(optimizers)))
    # The optimizer's own hyper-parameters (momentum's mu, Adam's betas...) may be set;
    # its lr is the run's learning rate, already a key of its own.
    hyper = [p.name for p in optimizers[name].params if p != optimizers[name].learning_rate]
    for key in train:
        if key in TRAIN_KEYS or key in hyper:
            continue
        owners = [op for op, o in optimizers.items() if key in {p.name for p in o.params}]
        if owners:
            decays = any(key in {s.name for s in optimizers[o].decay.free_symbols}
                         for o in owners)
            raise _fail(path, f"train.{key}", f"{key} is a parameter of "
                        f"{' and '.join(owners)}, not of {name}.",
                        f"Drop it, or use optimizer = {owners[0]!r}"
                        + (", or l2 for a penalty added to the gradient (PyTorch's "
                           "weight_decay of SGD and Adam)." if decays else "."))
        _check_keys(path, "train", {key: None}, [*TRAIN_KEYS, *hyper], "[train]")
    _number(path, "train.lr", train["lr"], "lr")
    _int(path, "train.batch_size", train["batch_size"], "batch_size")
    _int(path, "train.epochs", train["epochs"], "epochs", maximum=MAX_EPOCHS)
    _int(path, "train.seed", train["seed"], "seed", minimum=0, maximum=MAX_SEED)
    split = train["validation_split"]
    if (isinstance(split, bool) or not isinstance(split, int | float)
            or not 0 <= split < 1):
        raise _fail(path, "train.validation_split",
                    f"validation_split must be a fraction in [0, 1), got {split!r}.",
                    "E.g. 0.1 holds out a tenth of the training samples; 0 holds out none.")
    normalisation = train.get("normalisation", "minmax")
    if normalisation not in NORMALISATIONS:
        raise _fail(path, "train.normalisation", f"unknown normalisation {normalisation!r}.",
                    _close(normalisation, NORMALISATIONS))
    for key in hyper:
        if key in train:
            _number(path, f"train.{key}", train[key], key,
                    OPTIMIZER_PARAMETERS.get(key, "rate"))
    _check_schedule(path, train["schedule"])
    _check_regularisation(path, train)
    if "early_stopping" in train:
        _check_early_stopping(path, train["early_stopping"], train["validation_split"])


def _check_early_stopping(path, table, validation_split) -> None:
    """Refuse an ``early_stopping`` table that is not :data:`EARLY_STOPPING`'s keys.

    ``early_stopping = true`` is the table of defaults, ``false`` no early stopping.
    """
    where = "train.early_stopping"
    if table is False:
        return
    table = {} if table is True else table
    if not isinstance(table, dict):
        raise _fail(path, where, f"must be a table (or true for the defaults), got "
                    f"{table!r}.", 'E.g. early_stopping = {patience = 5, monitor = "val_loss"}.')
    _check_keys(path, where, table, list(EARLY_STOPPING), "early_stopping")
    if "patience" in table:
        _int(path, f"{where}.patience", table["patience"], "patience", maximum=MAX_EPOCHS)
    if "min_delta" in table:
        _number(path, f"{where}.min_delta", table["min_delta"], "min_delta", "rate")
    monitor = table.get("monitor", EARLY_STOPPING["monitor"])
    if not isinstance(monitor, str) or monitor not in MONITORS:
        raise _fail(path, f"{where}.monitor", "early stopping watches "
                    f"{' or '.join(MONITORS)} (on the validation set), not {monitor!r}.",
                    _close(monitor, list(MONITORS)))
    if not isinstance(table.get("restore_best", True), bool):
        raise _fail(path, f"{where}.restore_best", "restore_best must be true or false, "
                    f"got {table['restore_best']!r}.")
    if validation_split == 0:
        raise _fail(path, where, f"early stopping watches {monitor} on the validation set, "
                    "and validation_split = 0 holds no samples out for it (the training "
                    "loss keeps falling, so it would never say when to stop).",
                    "Set validation_split, e.g. 0.1, or remove early_stopping.")


def _check_monitor(path, train: dict, loss_op) -> None:
    """Refuse early stopping on an accuracy the network does not measure (regression)."""
    table = train.get("early_stopping")
    if isinstance(table, dict) and table.get("monitor") == "val_accuracy" \
            and not loss_op.classes:
        raise _fail(path, "train.early_stopping.monitor",
                    f"the loss {loss_op.name} does not classify, so there is no accuracy "
                    "to watch.", 'Use monitor = "val_loss".')


def _check_regularisation(path, train) -> None:
    """Refuse penalty strengths below 0, thresholds of 0 or below, and two clip rules."""
    for key in strength_keys():
        if key in train:
            _number(path, f"train.{key}", train[key], key, "rate")
    clips = [rule.name for rule in CLIPS if rule.name in train]
    for key in clips:
        _number(path, f"train.{key}", train[key], key)
    if len(clips) > 1:
        raise _fail(path, f"train.{clips[1]}", f"{' and '.join(clips)} are both set; a run "
                    "clips its gradients one way.", f"Keep one of {', '.join(clips)}.")
    biases = train.get("regularise_biases", False)
    if not isinstance(biases, bool):
        raise _fail(path, "train.regularise_biases",
                    f"regularise_biases must be true or false, got {biases!r}.")


def _check_schedule(path, schedule) -> None:
    where = "train.schedule"
    if isinstance(schedule, dict):
        name = schedule.get("name")
        if not isinstance(name, str):
            raise _fail(path, f"{where}.name", f"the schedule table needs a name, got "
                        f"{name!r}.", 'E.g. schedule = {name = "cosine", eta_min = 0.001}.')
    elif isinstance(schedule, str):
        name = schedule
    else:
        raise _fail(path, where, f"must be a name or a table, got {schedule!r}.",
                    'E.g. schedule = "cosine" or schedule = {name = "step", step_size = 5}.')
    name = name.strip().lower()
    if name not in SCHEDULES:
        raise _fail(path, where, f"unknown learning-rate schedule {name!r}.",
                    _close(name, list(SCHEDULES)))
    if isinstance(schedule, dict):
        known = ["name", *SCHEDULES[name], "warmup", "start_factor"]
        _check_keys(path, where, schedule, known, f"the {name} schedule")
        for key, value in schedule.items():
            kind = SCHEDULE_PARAMETERS.get(key)
            if kind == "count":
                _int(path, f"{where}.{key}", value, key)
            elif kind is not None:
                _number(path, f"{where}.{key}", value, key, kind)


def load_spec(path: str | Path) -> NetworkSpec:
    """Read and validate a spec file (see :func:`parse_spec`)."""
    path = Path(path)
    try:
        # Only a regular file, and only so much of it: /dev/zero or a FIFO would
        # otherwise be read without end (or wait for a writer for ever).
        if not stat.S_ISREG(path.stat().st_mode):
            raise SpecError("this is not a regular file (a directory, device or pipe?).",
                            where=str(path), fix="Give the path of a .toml spec file.")
        with open(path, "rb") as f:
            raw = f.read(MAX_SPEC_BYTES + 1)
        if len(raw) > MAX_SPEC_BYTES:
            raise SpecError(f"the file is larger than a spec may be ({MAX_SPEC_BYTES:,} "
                            "bytes).", where=str(path), fix="Check the path (is this a spec?).")
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read the spec ({getattr(exc, 'strerror', None) or exc}).",
                        where=str(path), fix="Check the path.") from None
    return parse_spec(text, str(path))
