"""Network specs: a TOML file → a validated, shape-checked :class:`NetworkSpec`.

A spec names the input shape, an ordered list of layers (each a catalogue layer with an
optional activation), the loss, and an optional ``[train]`` table. Every error names
the file, the layer index and the field, says what is wrong, and how to fix it.
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from derive import registry
from derive.errors import DeriveError
from derive.formula import check_identifier


class SpecError(DeriveError):
    """A network spec that cannot be used."""


@dataclass(frozen=True)
class LayerSpec:
    """One layer of a network, with its shapes worked out.

    Attributes
    ----------
    index : int
        Position in the spec (0-based), as error messages name it.
    type : str
        Catalogue layer name (``dense``, ``conv2d``, ...).
    activation : str or None
        Catalogue activation applied to the layer's output.
    hyper : dict
        The layer's hyper-parameters as its generated kernels take them.
    in_shape, out_shape : tuple of int
        Per-example shapes (no batch axis).
    params : tuple of (str, tuple)
        Learnable arrays: name and shape.
    """

    index: int
    type: str
    activation: str | None
    hyper: dict
    in_shape: tuple
    out_shape: tuple
    params: tuple

    @property
    def label(self) -> str:
        """``dense0``-style name used for parameters and buffers."""
        return f"{self.type}{self.index}"


@dataclass(frozen=True)
class NetworkSpec:
    """A validated network: layers with shapes, loss, training settings."""

    name: str
    source: str
    input_shape: tuple
    layers: tuple[LayerSpec, ...]
    loss: str
    train: dict = field(default_factory=dict)
    init: str = "xavier_uniform"

    @property
    def output_shape(self) -> tuple:
        """Per-example shape of the network's output."""
        return self.layers[-1].out_shape if self.layers else self.input_shape


TRAIN_DEFAULTS = {
    "optimizer": "gd", "lr": 0.01, "batch_size": 32, "epochs": 20,
    "validation_split": 0.1, "seed": 0, "schedule": "constant",
}
LOSSES_OVER_CLASSES = {"categorical_cross_entropy", "sparse_categorical_cross_entropy",
                       "softmax_cross_entropy"}


def _fail(path: str, where: str, what: str, fix: str = "") -> SpecError:
    return SpecError(what, where=f"{path}: {where}" if where else path, fix=fix)


def _int(path, where, value, name, minimum=1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(path, where, f"{name} must be an integer ≥ {minimum}, got {value!r}.")
    return value


def _layer_shapes(path, where, kind, options, in_shape):
    """Hyper-parameters, output shape and parameter shapes of one layer."""
    def need_image():
        if len(in_shape) != 3:
            raise _fail(path, where, f"{kind} needs an image input (C, H, W), got {in_shape}.",
                        "Put it before the flatten layer, or set input_shape = [C, H, W].")
        return in_shape

    def need_flat():
        if len(in_shape) != 1:
            raise _fail(path, where, f"{kind} needs a flat input, got shape {in_shape}.",
                        "Add a layer with type = \"flatten\" before it.")
        return in_shape[0]

    if kind == "dense":
        units = _int(path, where, options.get("units"), "units")
        features = need_flat()
        return {}, (units,), (("W", (units, features)), ("b", (units,)))
    if kind == "conv2d":
        channels, height, width = need_image()
        filters = _int(path, where, options.get("filters"), "filters")
        size = _int(path, where, options.get("kernel_size", 3), "kernel_size")
        stride = _int(path, where, options.get("stride", 1), "stride")
        padding = _int(path, where, options.get("padding", 0), "padding", minimum=0)
        out_h = (height + 2 * padding - size) // stride + 1
        out_w = (width + 2 * padding - size) // stride + 1
        if out_h < 1 or out_w < 1:
            raise _fail(path, where, f"a {size}×{size} window does not fit the input "
                        f"{in_shape} with padding {padding}.", "Use a smaller kernel_size.")
        return ({"stride": stride, "padding": padding}, (filters, out_h, out_w),
                (("K", (filters, channels, size, size)), ("b", (filters,))))
    if kind in ("max_pool2d", "avg_pool2d"):
        channels, height, width = need_image()
        size = _int(path, where, options.get("kernel_size", 2), "kernel_size")
        stride = _int(path, where, options.get("stride", size), "stride")
        out_h, out_w = (height - size) // stride + 1, (width - size) // stride + 1
        if out_h < 1 or out_w < 1:
            raise _fail(path, where, f"a {size}×{size} window does not fit {in_shape}.")
        return {"kernel_size": size, "stride": stride}, (channels, out_h, out_w), ()
    if kind == "global_avg_pool2d":
        return {}, (need_image()[0],), ()
    if kind == "flatten":
        channels, height, width = need_image()
        return {}, (channels * height * width,), ()
    if kind == "layer_norm":
        features = need_flat()
        eps = float(options.get("eps", 1e-5))
        return {"eps": eps}, (features,), (("gamma", (features,)), ("beta", (features,)))
    if kind == "dropout":
        need_flat()
        rate = options.get("p", 0.5)
        if not isinstance(rate, int | float) or not 0 <= rate < 1:
            raise _fail(path, where, f"p must be a probability in [0, 1), got {rate!r}.")
        return {"p": float(rate)}, in_shape, ()
    supported = "dense, conv2d, max_pool2d, avg_pool2d, global_avg_pool2d, flatten, " \
                "layer_norm, dropout"
    raise _fail(path, where, f"layer type {kind!r} is not supported in networks yet.",
                f"Use one of: {supported}.")


def parse_spec(text: str, path: str = "<spec>") -> NetworkSpec:
    """Parse and validate a network spec.

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
    network = data.get("network", {})
    if not isinstance(network, dict):
        raise _fail(path, "[network]", "must be a table.")
    name = check_identifier(str(network.get("name", Path(path).stem)), f"{path}: network.name")
    shape = network.get("input_shape")
    if (not isinstance(shape, list) or not shape or len(shape) not in (1, 3)
            or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)):
        raise _fail(path, "network.input_shape",
                    f"must be [features] or [channels, height, width] of positive integers, "
                    f"got {shape!r}.", 'E.g. input_shape = [784] or [1, 28, 28].')
    layers_data = data.get("layers")
    if not isinstance(layers_data, list) or not layers_data:
        raise _fail(path, "[[layers]]", "the spec has no layers.",
                    "Add [[layers]] tables, e.g. type = \"dense\", units = 10.")
    layers = []
    in_shape = tuple(shape)
    known_layers = [op.name for op in registry.all_ops("layer")]
    for index, entry in enumerate(layers_data):
        where = f"layers[{index}]"
        if not isinstance(entry, dict):
            raise _fail(path, where, "must be a table.")
        kind = entry.get("type")
        if kind not in known_layers:
            close = difflib.get_close_matches(str(kind), known_layers, 2)
            raise _fail(path, f"{where}.type", f"unknown layer type {kind!r}.",
                        f"Did you mean {' or '.join(close)}?" if close
                        else f"Use one of: {', '.join(known_layers)}.")
        activation = entry.get("activation")
        if activation is not None:
            names = [op.name for op in registry.all_ops("activation")] + ["softmax"]
            if activation not in names:
                close = difflib.get_close_matches(str(activation), names, 2)
                raise _fail(path, f"{where}.activation", f"unknown activation {activation!r}.",
                            f"Did you mean {' or '.join(close)}?" if close
                            else "Run `derive list` to see them.")
            if activation != "softmax" and (registry.get(activation).learnable
                                            or registry.get(activation).stochastic):
                raise _fail(path, f"{where}.activation",
                            f"{activation} has learnable or random parameters, which networks "
                            "do not support yet.", "Use relu, leaky_relu, elu, tanh, ...")
            if activation == "softmax" and index != len(layers_data) - 1:
                raise _fail(path, f"{where}.activation",
                            "softmax is only supported on the last layer.")
        hyper, out_shape, params = _layer_shapes(path, where, kind, entry, in_shape)
        layers.append(LayerSpec(index, kind, activation, hyper, in_shape, out_shape, params))
        in_shape = out_shape
    loss = network.get("loss", data.get("loss"))
    loss_names = [op.name for op in registry.all_ops("loss")]
    if loss not in loss_names:
        close = difflib.get_close_matches(str(loss), loss_names, 2)
        raise _fail(path, "network.loss", f"unknown loss {loss!r}.",
                    f"Did you mean {' or '.join(close)}?" if close
                    else f"Use one of: {', '.join(loss_names)}.")
    if loss in LOSSES_OVER_CLASSES and len(in_shape) != 1:
        raise _fail(path, "network.loss", f"{loss} needs a flat output, got {in_shape}.")
    train = dict(TRAIN_DEFAULTS) | data.get("train", {})
    if train["optimizer"] not in [op.name for op in registry.all_ops("optimizer")]:
        names = [op.name for op in registry.all_ops("optimizer")]
        close = difflib.get_close_matches(str(train["optimizer"]), names, 2)
        raise _fail(path, "train.optimizer", f"unknown optimizer {train['optimizer']!r}.",
                    f"Did you mean {' or '.join(close)}?" if close else f"Use one of {names}.")
    init = str(network.get("init", "xavier_uniform"))
    return NetworkSpec(name, path, tuple(shape), tuple(layers), loss, train, init)


def load_spec(path: str | Path) -> NetworkSpec:
    """Read and validate a spec file (see :func:`parse_spec`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read the spec ({getattr(exc, 'strerror', None) or exc}).",
                        where=str(path), fix="Check the path.") from None
    return parse_spec(text, str(path))
