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

import sympy as sp

from derive import registry
from derive.ops.regularisers import CLIPS, regulariser_for, strength_keys
from derive.ops.sequences import READOUTS


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
    name : str or None
        The name the spec gives the layer, by which a later layer's ``skip_from`` names it.
    skip_from : int or None
        A skip connection: the index of the earlier layer whose output is added to this
        layer's (``-1`` for the network's input), as :data:`SKIP_SUM` adds them; None
        when there is none.
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
    name: str | None = None
    skip_from: int | None = None

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

    def skips_into(self, index: int) -> tuple[LayerPlan, ...]:
        """The layers whose skip connection adds the output of layer ``index`` (-1: the input).

        That output then has more than one reader: the layer above it and each of these
        sums, and its gradient is the sum of what each sends back (the chain rule).
        """
        return tuple(layer for layer in self.layers if layer.spec.skip_from == index)

    @property
    def skips(self) -> tuple[LayerPlan, ...]:
        """The layers that add an earlier output to their own, in order."""
        return tuple(layer for layer in self.layers if layer.spec.skip_from is not None)


@dataclass(frozen=True)
class SkipSum:
    """The sum a skip connection computes, one element at a time, declared once.

    A layer with a skip connection outputs x⁽ˡ⁾ = f(s⁽ˡ⁾) + x⁽ᵏ⁾: :attr:`through` stands
    for its own output f(s⁽ˡ⁾) (what the layers of the block compute), :attr:`skipped`
    for the earlier output x⁽ᵏ⁾, :attr:`total` for x⁽ˡ⁾. In the backward pass each term
    receives the gradient of the total times the sum's partial derivative with respect
    to it (:meth:`derivative`): the code generator prints both the sum and these
    products from here, and the documents show the derivative.
    """

    through: sp.Symbol
    skipped: sp.Symbol
    total: sp.Expr

    def derivative(self, term: sp.Symbol) -> sp.Expr:
        """∂ total / ∂ ``term``, derived by SymPy."""
        return sp.diff(self.total, term)


_THROUGH, _SKIPPED = sp.symbols("a r", real=True)
#: x⁽ˡ⁾ = f(s⁽ˡ⁾) + x⁽ᵏ⁾, element by element.
SKIP_SUM = SkipSum(_THROUGH, _SKIPPED, _THROUGH + _SKIPPED)


def layer_op(name: str):
    """The declaration of a spec's layer type: a catalogue layer, or a sequence readout.

    The readouts (``last_state``, ``time_mean``, :data:`~derive.ops.sequences.READOUTS`)
    are layers only networks use, between a recurrent layer and a dense head.

    Raises
    ------
    UnknownNameError
        For a name that is neither (the registry's message, with close matches).
    """
    return READOUTS.get(name) or registry.get(name, "layer")


def layer_types() -> list[str]:
    """Every layer type a spec may name: the catalogue's layers, then the readouts."""
    return [op.name for op in registry.all_ops("layer")] + list(READOUTS)


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

    @property
    def vocabulary(self) -> int | None:
        """The number of tokens V when the input is tokens 0..V−1 (an embedding first), else None.

        A layer that reads integer indices (:attr:`~derive.spec.Layer.indices`) can only be
        first, where the data comes in; its declaration says which axis the tokens index.
        """
        first = self.layers[0] if self.layers else None
        op = layer_op(first.type) if first is not None else None
        if op is None or not op.indices:
            return None
        return int(sp.sympify(op.index_range(op.indices[0])).xreplace(dict(first.sizes)))

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
            spec=layer, op=layer_op(layer.type),
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
