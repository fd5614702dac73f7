"""A network as later stages read it: the spec's records and the plan made from them.

:mod:`derive.network` reads a TOML spec into a :class:`NetworkSpec`; the code generator
(:mod:`derive.codegen.network`) and the typesetter (:mod:`derive.latex.network`) both
compose the network from its :attr:`NetworkSpec.plan`, made once from the declarations:
which loss is computed (a cross-entropy after a softmax becomes softmax cross-entropy on
the logits, as the loss declares in :attr:`~derive.spec.Loss.fused`), which activations
run inside the network, and which layers need gradients. This module needs only the
registry and the declarations, so both stages may import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from derive import registry
from derive.ops.regularisers import CLIPS, regulariser_for, strength_keys


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
    sizes : tuple of (sympy.Symbol, int)
        Every size of the declaration with this layer's value (the batch N aside).
    activation_params : tuple of (str, tuple)
        The activation's learnable parameters (PReLU's α): name and shape, one value or
        one per channel.
    buffers : tuple of (str, tuple, float)
        Arrays kept with the parameters but not learnt (batch normalisation's running
        statistics): name, shape and value before training.
    """

    index: int
    type: str
    activation: str | None
    hyper: dict
    in_shape: tuple
    out_shape: tuple
    params: tuple
    sizes: tuple = ()
    activation_params: tuple = ()
    buffers: tuple = ()

    @property
    def label(self) -> str:
        """``dense0``-style name used for parameters and buffers."""
        return f"{self.type}{self.index}"


@dataclass(frozen=True)
class LayerPlan:
    """One layer as the network composes it.

    Attributes
    ----------
    spec : LayerSpec
        The layer as the spec gives it.
    op : Layer
        Its declaration.
    activation : Activation or None
        The activation computed inside the network after it (None when there is none, or
        when the loss takes it in, see :attr:`NetworkPlan.output_activation`).
    wants_input_gradient : bool
        Whether its backward pass sends a gradient to the layer below (not for the first
        layer with parameters, nor any layer before it).
    trains : bool
        Whether it has a backward pass at all (layers before the first with parameters
        have nothing to learn and nothing to send a gradient to).
    """

    spec: LayerSpec
    op: object
    activation: object | None
    wants_input_gradient: bool
    trains: bool


@dataclass(frozen=True)
class NetworkPlan:
    """What every stage composes: the layers in order and the loss actually computed.

    Attributes
    ----------
    layers : tuple of LayerPlan
    loss : Loss
        The spec's loss declaration.
    computed_loss : Loss
        The loss computed on the last layer's output: the spec's, or the stable loss
        it is fused into with the last activation.
    output_activation : Activation, VectorFunction or None
        The last layer's activation when the computed loss takes it in; ``predict``
        applies it, and the δ at the output is the fused loss's gradient.
    regulariser : Regulariser or None
        The penalty whose gradient training adds to the weights' (``[train]`` l1, l2).
    clip : Clip or None
        The rule that limits the loss's gradient first (``[train]`` clip_value, clip_norm).
    """

    layers: tuple[LayerPlan, ...]
    loss: object
    computed_loss: object
    output_activation: object | None
    regulariser: object | None = None
    clip: object | None = None

    @property
    def fused(self) -> bool:
        """Whether the last activation is computed inside the loss."""
        return self.output_activation is not None

    @property
    def activations(self) -> tuple:
        """The activation declarations computed inside the network, each once, in order."""
        seen = {layer.activation.name: layer.activation for layer in self.layers
                if layer.activation is not None}
        return tuple(seen.values())


def fused_loss(loss, activation: str | None) -> str | None:
    """The loss computed for ``activation`` followed by ``loss``, when the loss declares one."""
    return dict(loss.fused).get(activation)


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

    @cached_property
    def plan(self) -> NetworkPlan:
        """The network's plan (see :class:`NetworkPlan`), made once per spec."""
        return plan_network(self)


def plan_network(spec: NetworkSpec) -> NetworkPlan:
    """Compose a spec's layers and loss from their declarations (see :class:`NetworkPlan`)."""
    loss = registry.get(spec.loss, "loss")
    last = spec.layers[-1]
    fused = fused_loss(loss, last.activation)
    # Gradients flow back only as far as the first layer with parameters: the input
    # gradient of that layer would be thrown away, and the layers before it (flatten,
    # pooling, ...) have nothing to learn, so they get no backward pass at all.
    trainable = [layer.index for layer in spec.layers if layer.params]
    first_trainable = trainable[0] if trainable else len(spec.layers)
    layers = []
    for layer in spec.layers:
        inside = layer.activation and not (layer is last and fused)
        layers.append(LayerPlan(
            spec=layer, op=registry.get(layer.type, "layer"),
            activation=registry.get(layer.activation, "activation") if inside else None,
            wants_input_gradient=layer.index > first_trainable,
            trains=layer.index >= first_trainable))
    return NetworkPlan(
        layers=tuple(layers), loss=loss,
        computed_loss=registry.get(fused, "loss") if fused else loss,
        output_activation=registry.get(last.activation) if fused else None,
        # A strength of 0 penalises nothing: the module is then the unregularised one.
        regulariser=regulariser_for(key for key in strength_keys() if spec.train.get(key)),
        clip=next((rule for rule in CLIPS if rule.name in spec.train), None))
