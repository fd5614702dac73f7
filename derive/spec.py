"""Frozen records for the catalogue's declarations.

A declaration says what an op *is*; everything else — its derivative, its kernel, its
LaTeX, its tests — is computed from it by later stages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import sympy as sp

#: The input of an elementwise activation.
x = sp.Symbol("x", real=True)
#: The output of an elementwise activation, used by derivatives written in terms of it.
y = sp.Symbol("y", real=True)
#: Batch size and number of classes/outputs of an indexed declaration (a loss's sums).
N = sp.Symbol("N", integer=True, positive=True)
K = sp.Symbol("K", integer=True, positive=True)
#: Summation indices of declarations (n over the batch, k and j over classes); the
#: calculus works in these same symbols (:mod:`derive.calculus.indexed`).
n, k, j = sp.symbols("n k j", integer=True, nonnegative=True)


@dataclass(frozen=True)
class Param:
    """A named scalar parameter of an op.

    Parameters
    ----------
    symbol : sympy.Symbol
        The symbol used in the declaration's expression.
    default : float
        Its value unless the caller overrides it.
    learnable : bool
        Whether backward also returns the gradient with respect to it.
    latex : str
        How LaTeX writes it (defaults to the symbol's name).
    keyword : str
        Its keyword in generated public functions (defaults to the symbol's name).
    below : float, optional
        A value it must stay strictly below (dropout's p < 1); the lower bound comes from
        the symbol's assumptions.
    per_call : bool
        Whether the caller passes a new value at every call (dropout's training flag and
        seed), rather than a setting fixed once (a spec's stride or eps).
    stream : bool
        Whether it is the seed of random draws: a network gives each layer (and each
        layer's activation) its own stream of the run's seed, so that two layers never
        draw the same numbers.

    """

    symbol: sp.Symbol
    default: float
    learnable: bool = False
    latex: str = ""
    keyword: str = ""
    below: float | None = None
    per_call: bool = False
    stream: bool = False

    @property
    def name(self) -> str:
        """The Python name of the parameter in generated code's public functions."""
        return self.keyword or self.symbol.name


#: What a caller passes at every call of an op that declares noise: whether to draw the
#: random terms (training) or use their evaluation values, and the seed the draws are a
#: function of. Each default's type is the argument's type (a flag, an integer).
DRAW_MODE = (
    Param(sp.Symbol("training", integer=True, nonnegative=True), False, latex="",
          keyword="training", per_call=True),
    Param(sp.Symbol("seed", integer=True, nonnegative=True), 0, latex="", keyword="seed",
          per_call=True, stream=True),
)


@dataclass(frozen=True)
class Noise:
    """A random variable drawn once per element in training mode.

    The draw is a pure function of (seed, element index), so backward regenerates
    exactly the values forward used, in parallel and without storing them.

    Parameters
    ----------
    symbol : sympy.Symbol
        The symbol standing for the draw in the declaration.
    distribution : str
        ``"uniform"`` on [low, high] or ``"normal"`` with mean 0 and deviation 1.
    low, high : sympy.Expr
        The bounds of a uniform draw (expressions in the op's parameters).
    eval_value : sympy.Expr
        The value used in evaluation mode (e.g. the mean slope).

    """

    symbol: sp.Symbol
    distribution: str
    eval_value: sp.Expr
    low: sp.Expr = sp.Integer(0)
    high: sp.Expr = sp.Integer(1)


@dataclass(frozen=True)
class Rearrange:
    """One step of algebra a lecture shows after the rules, on the way to the final form.

    The rules of differentiation end in whatever shape they end in (σ' as
    e^{−x}/(1 + e^{−x})²); the step that teaches is often the algebra after them (split
    the fraction, recognise σ and 1 − σ). A declaration lists those steps; the recorder
    inserts them and checks each, like every other step, at random points.

    Parameters
    ----------
    rule : str
        What the step does: a key of :data:`derive.calculus.steps.RULES` whose sentence
        each language's prose holds (``"split_product"``, ``"split_sum"``,
        ``"use_identity"``, ``"common_denominator"``, ``"cancel"``).
    form : sympy.Expr
        The expression after the step. For an activation, the whole derivative in
        :data:`x`; for a loss, the derivative of the summand in ``pred[n, k]`` and
        ``target[n, k]`` (the recorder multiplies by the scale and prints the indices).
        :class:`~derive.calculus.functions.Factors` keeps a product written factor by
        factor.
    identities : tuple of tuple of sympy.Expr
        Equalities the step uses, each a chain a = b = ... (e.g. 1 − σ(x) =
        e^{−x}/(1 + e^{−x})); every link is checked.
    inner : tuple of (sympy.Expr, sympy.Expr)
        A name the step introduces or substitutes and what it stands for.
    quote : tuple of sympy.Expr
        What the prose of the step names (the term a sum keeps, an index equality).
    """

    rule: str
    form: sp.Expr
    identities: tuple[tuple[sp.Expr, ...], ...] = ()
    inner: tuple[tuple[sp.Expr, sp.Expr], ...] = ()
    quote: tuple[sp.Expr, ...] = ()


@dataclass(frozen=True)
class Activation:
    """An elementwise activation y = f(x; params).

    Parameters
    ----------
    name : str
        Catalogue name, also the generated module's name.
    expr : sympy.Expr
        f as a SymPy expression in :data:`x`, the parameters and any noise symbols.
        Kinked functions are ``Piecewise``; the branch that owns a boundary decides the
        derivative there (PyTorch's subgradient convention).
    title : str
        Human name, e.g. ``"Logistic sigmoid"``.
    latex : str
        The LaTeX symbol of f.
    params : tuple of Param
        Named parameters with defaults.
    grad_in_output : sympy.Expr, optional
        f' written with :data:`y` standing for f(x); checked against ``diff`` when
        registered. When absent, the engine looks for such a form itself.
    noise : tuple of Noise
        Random draws used in training mode.
    domain : tuple of float
        Where tests sample ordinary inputs.
    shown_as : tuple of sympy.Expr
        How a lecture defines f when not by ``expr`` itself (tanh(x) as
        sinh(x)/cosh(x) = (e^x − e^{−x})/(e^x + e^{−x})): expressions equal to ``expr``,
        checked when registered; the derivation starts from the first.
    rearrange : tuple of Rearrange
        The algebra shown after the rules of differentiation (see :class:`Rearrange`).
    output_identities : tuple of tuple of sympy.Expr
        Equalities in :data:`y` that turn the derivative into ``grad_in_output``
        (softsign: 1 − |y| = 1/(1 + |x|)), quoted and checked in that step.
    remarks : tuple of str
        Keys of remarks the prose makes about this op (each language's prose has a
        ``remark_<key>`` macro), e.g. where the course notes say otherwise.

    """

    name: str
    expr: sp.Expr
    title: str
    latex: str
    params: tuple[Param, ...] = ()
    grad_in_output: sp.Expr | None = None
    noise: tuple[Noise, ...] = ()
    domain: tuple[float, float] = (-5.0, 5.0)
    shown_as: tuple[sp.Expr, ...] = ()
    rearrange: tuple[Rearrange, ...] = ()
    output_identities: tuple[tuple[sp.Expr, ...], ...] = ()
    remarks: tuple[str, ...] = ()
    kind: str = field(default="activation", init=False)

    @property
    def defaults(self) -> dict[sp.Symbol, float]:
        """Parameter symbols mapped to their default values."""
        return {p.symbol: p.default for p in self.params}

    @property
    def learnable(self) -> tuple[Param, ...]:
        """The parameters backward returns gradients for."""
        return tuple(p for p in self.params if p.learnable)

    @property
    def stochastic(self) -> bool:
        """Whether training mode draws random numbers."""
        return bool(self.noise)

    @property
    def per_call(self) -> tuple[Param, ...]:
        """The parameters a caller passes at every call: :data:`DRAW_MODE` if it draws."""
        return DRAW_MODE if self.noise else ()


@dataclass(frozen=True)
class Loss:
    """A loss L = scale · Σ_n Σ_k term(pred[n, k], target[n, k]).

    Parameters
    ----------
    name, title, latex : str
        As for :class:`Activation`.
    term : sympy.Expr
        The summand, in ``pred[n, k]`` and ``target[n, k]`` (indices from
        :mod:`derive.calculus.indexed`).
    scale : sympy.Expr
        The reduction: ``1/(N*K)`` for a mean over all elements, ``1/N`` for a mean over
        the batch, ``1/2`` for Rumelhart's ½Σ.
    pred, target : sympy.IndexedBase
        The prediction (probabilities, values or logits) and the target.
    targets : tuple of str
        Target encodings the kernels accept: ``"dense"`` (an array like pred) and/or
        ``"index"`` (integer class labels; derived by substituting the one-hot delta).
    identities : tuple of (pattern, value)
        Facts about targets the derivation may use, e.g. one-hot rows sum to 1.
    fused : tuple of (str, str)
        In a network, the output activations this loss is computed together with:
        ``(activation, loss)`` pairs, read "this activation followed by this loss is
        computed as ``loss``, one stable loss on the last layer's pre-activations" (softmax
        then cross-entropy as softmax cross-entropy on the logits). ``predict`` then applies
        the activation itself.
    classes : bool
        Whether targets are classes (one-hot rows or integer labels) and predictions one
        score per class: a network's output must then be flat, and integer labels are
        accepted for one-hot targets.
    params : tuple of Param
        Named parameters (e.g. Huber's delta).
    log_floor : float, optional
        Forward logs are clamped below at this value (PyTorch's BCE uses −100).
    grad_floor : float, optional
        Denominators of the gradient are clamped below at this value (PyTorch: 1e-12).
    samples : str
        How tests draw (pred, target): ``"values"``, ``"probabilities"``,
        ``"binary"``, ``"signs"``, ``"classes"``, ``"logits"``.
    rearrange : tuple of Rearrange
        The algebra shown after the rules of differentiation (see :class:`Rearrange`),
        in terms of the summand's derivative.
    recipe : str
        How the lecture derives the gradient, a key of
        :data:`derive.calculus.steps.RECIPES`: ``"open_sum"`` (the notes' way: drop the
        sum over cases, open the sum over outputs, keep the term that depends on the
        prediction), ``"softmax_of_logits"`` (cross-entropy of a softmax, the logarithm
        of the quotient taken apart and Σ_j y_j = 1 used) or ``"sigmoid_of_logits"``
        (binary cross-entropy of σ(z), ln σ written with ln(1 + e^z)).
    """

    name: str
    title: str
    latex: str
    term: sp.Expr
    scale: sp.Expr
    pred: sp.IndexedBase
    target: sp.IndexedBase
    targets: tuple[str, ...] = ("dense",)
    identities: tuple = ()
    fused: tuple[tuple[str, str], ...] = ()
    classes: bool = False
    params: tuple[Param, ...] = ()
    log_floor: float | None = None
    grad_floor: float | None = None
    samples: str = "values"
    rearrange: tuple[Rearrange, ...] = ()
    recipe: str = "open_sum"
    kind: str = field(default="loss", init=False)

    @property
    def defaults(self) -> dict[sp.Symbol, float]:
        """Parameter symbols mapped to their default values."""
        return {p.symbol: p.default for p in self.params}

    @property
    def expr(self) -> sp.Expr:
        """The whole loss as a SymPy expression with symbolic N and K."""
        return self.scale * sp.Sum(sp.Sum(self.term, (k, 0, K - 1)), (n, 0, N - 1))


@dataclass(frozen=True)
class VectorFunction:
    """A row-wise vector function y[n, k] = f(x[n, :])_k, such as softmax.

    Parameters
    ----------
    name, title, latex : str
        As for :class:`Activation`.
    out : sympy.Expr
        y[n, k] in terms of ``arg[n, ...]`` (indices from :mod:`derive.calculus.indexed`).
    arg : sympy.IndexedBase
        The input array.
    output : sympy.IndexedBase, optional
        The name of the output array in a lecture (softmax_k).
    shown_as : sympy.Expr, optional
        output[n, k] as a lecture writes it (e^{z_k} / Σ_i e^{z_i}), checked equal to
        ``out``.
    upstream : sympy.IndexedBase, optional
        The gradient arriving at the output, ∂E/∂output[n, k].
    jacobian : tuple of Rearrange
        The derivation of ∂output[n, k]/∂arg[n, j], step by step (each checked).
    vjp : tuple of Rearrange
        The derivation of ∂E/∂arg[n, j] from the Jacobian: the product the kernel
        computes.
    """

    name: str
    title: str
    latex: str
    out: sp.Expr
    arg: sp.IndexedBase
    domain: tuple[float, float] = (-5.0, 5.0)
    kind: str = field(default="vector", init=False)
    params: tuple[Param, ...] = ()
    output: sp.IndexedBase | None = None
    shown_as: sp.Expr | None = None
    upstream: sp.IndexedBase | None = None
    jacobian: tuple[Rearrange, ...] = ()
    vjp: tuple[Rearrange, ...] = ()


@dataclass(frozen=True)
class Recurrence:
    """How a layer's output feeds back into its next time step (an RNN's hidden state).

    Parameters
    ----------
    time : sympy.Symbol
        The time index of the declaration's arrays (``t`` in ``h[n, t, o]``).
    state : sympy.IndexedBase
        The carried array: the output, read one step back as ``state[..., t - 1, ...]``.
    initial : sympy.IndexedBase
        The state before the first step (``h_0``), one of the layer's inputs: its shape
        is the state's without the time axis.
    carried : tuple of (IndexedBase, IndexedBase)
        Further states, each a step of the declaration read one step back, and its
        initial input (an LSTM's cell state c, from c_0). The layer returns each one's
        last value after the output's.
    """

    time: sp.Symbol
    state: sp.IndexedBase
    initial: sp.IndexedBase
    carried: tuple = ()

    @property
    def states(self) -> tuple:
        """Every carried state with its initial input: the output's first."""
        return ((self.state, self.initial), *self.carried)


@dataclass(frozen=True)
class SpecKey:
    """A key of a network spec's ``[[layers]]`` table that sets sizes of a layer.

    Parameters
    ----------
    name : str
        The key, e.g. ``units``.
    sizes : tuple of sympy.Symbol
        The declaration's sizes it sets (``units`` sets O; ``kernel_size`` sets KH and KW).
        A key named like a hyper-parameter sets that parameter, and only changes its
        default.
    default : int or sympy.Expr, optional
        Its value when the spec leaves it out, possibly in sizes set before it (a pooling
        window's stride defaults to the window); None makes the key required.
    """

    name: str
    sizes: tuple[sp.Symbol, ...] = ()
    default: int | sp.Expr | None = None


@dataclass(frozen=True)
class Layer:
    """A layer out[idx] = expr over indexed arrays, batch-first.

    Parameters
    ----------
    name, title, latex : str
        As for :class:`Activation`.
    out : sympy.Indexed
        The output element with its index symbols, e.g. ``s[n, o]``.
    expr : sympy.Expr
        Its value, a SymPy expression over ``Indexed`` inputs and weights with ``Sum``.
    arrays : tuple of (IndexedBase, tuple)
        Every array's shape in size symbols (inputs, weights and the output).
    inputs : tuple of IndexedBase
        Differentiable inputs (backward returns their gradients first).
    weights : tuple of IndexedBase
        Learnable parameters (backward returns their gradients after the inputs').
    hyper : tuple of Param
        Integer hyper-parameters (stride, padding, window size), kernel arguments.
    sizes : tuple of (Symbol, Expr)
        Sizes computed from others, e.g. OH = (H − KH)//S + 1.
    padding : tuple, optional
        ``(padded, original, amount)``: the declaration reads ``padded``, the original
        input zero-padded by ``amount`` on both spatial sides; gradients are cropped back.
    view : tuple, optional
        The output's shape as callers see it when it differs from the declared one
        (flatten declares y[n, c, h, w] and shows it as (N, C·H·W)).
    steps : tuple of (Indexed, Expr)
        Named intermediate arrays computed before the output, in order (a batch's mean
        and variance, a window's arg-max). Gradients flow back through them by the
        chain rule, one delta-form derivation per step.
    buffers : tuple of IndexedBase
        Inputs that are not differentiated (running statistics, dropout masks).
    indices : tuple of IndexedBase
        Integer inputs read only as subscripts of other arrays (an embedding's token
        ids): no gradient flows to them. Calls take them first, as PyTorch's
        ``embedding(input, weight)`` does; each value must lie inside the axis it
        subscripts (:meth:`index_range`).
    spec_keys : tuple of SpecKey
        How a network spec sets the sizes the input does not fix (a dense layer's units,
        a convolution's filters and window); every hyper-parameter that is not
        :attr:`Param.per_call` is a key too, under its keyword. From these and the input's
        shape a network works out every size of the layer (:meth:`network_keys`).
    in_networks : bool
        Whether network specs may use the layer on its own (batch normalisation with
        running statistics is used only as another layer's :attr:`evaluation`).
    any_input : str, optional
        How a network feeds it an input whose shape is not the declared one; its output
        then has the input's shape. ``"flat"``: every axis after the batch is read as
        the declaration's one (dropout after a convolution); ``"unit_axes"``: the
        declared axes the input lacks have size 1 (batch normalisation over (C,) or
        (C, L), as ``torch.nn.BatchNorm1d``).
    evaluation : str, optional
        The declaration a network computes instead in evaluation mode (batch statistics
        in training, running statistics in evaluation); it reads the same input and
        weights, and its :attr:`buffers` are kept with the network's parameters.
    running : tuple of (Indexed, Expr)
        How a training step updates the evaluation declaration's buffers: each buffer
        element and its new value, in the buffer itself and this declaration's steps
        (running mean and unbiased variance with momentum).
    running_params : tuple of Param
        The parameters of :attr:`running` (the momentum); a spec may set each by keyword.
    recurrence : Recurrence, optional
        The output is a state carried through time: each step reads the previous one
        (see :mod:`derive.calculus.recurrence`, which cuts the declaration into one step
        and runs backpropagation through time over it).
    extra_outputs : tuple of IndexedBase
        Steps the layer returns besides its output (one LSTM step returns its cell state
        with h). Backward takes the caller's gradient of each after the output's, and
        adds it to what flows back through the steps that read it.
    inits : tuple of (IndexedBase, float)
        Arrays a network starts at a constant rather than at random or 0: a scale γ at
        1, running statistics at 0 and 1, as PyTorch starts them.
    matrix_form : bool
        Whether the layer is the affine map s = W x + b of a weight matrix, so that a
        network of such layers can be written in the notes' matrix formulas
        (δ⁽ˡ⁾ = ((W⁽ˡ⁺¹⁾)ᵀ δ⁽ˡ⁺¹⁾) ⊙ f'(s⁽ˡ⁾), ∂E/∂W⁽ˡ⁾ = δ⁽ˡ⁾ (x⁽ˡ⁻¹⁾)ᵀ).
    """

    name: str
    title: str
    latex: str
    out: sp.Indexed
    expr: sp.Expr
    arrays: tuple
    inputs: tuple
    weights: tuple = ()
    hyper: tuple[Param, ...] = ()
    sizes: tuple = ()
    padding: tuple | None = None
    view: tuple | None = None
    steps: tuple = ()
    buffers: tuple = ()
    indices: tuple = ()
    spec_keys: tuple[SpecKey, ...] = ()
    in_networks: bool = True
    matrix_form: bool = False
    any_input: str | None = None
    evaluation: str | None = None
    running: tuple = ()
    running_params: tuple[Param, ...] = ()
    inits: tuple = ()
    recurrence: Recurrence | None = None
    extra_outputs: tuple = ()
    kind: str = field(default="layer", init=False)

    @property
    def params(self) -> tuple[Param, ...]:
        """Hyper-parameters (for the shared CLI/list code)."""
        return self.hyper

    def shape(self, base: sp.IndexedBase) -> tuple:
        """Declared shape of one array."""
        return dict(self.arrays)[base]

    @property
    def source(self) -> sp.IndexedBase:
        """The array a network feeds with the layer below's output (before any padding)."""
        return self.padding[1] if self.padding else (self.inputs or self.indices)[0]

    def index_range(self, base: sp.IndexedBase) -> sp.Expr:
        """The size of the axis an integer input subscripts (an embedding's vocabulary V).

        Read from the declaration: the first array element, in its steps or output,
        whose subscript is an element of ``base``.
        """
        for _, expr in (*self.steps, (self.out, self.expr)):
            for element in sorted(expr.atoms(sp.Indexed), key=sp.default_sort_key):
                for axis, subscript in enumerate(element.indices):
                    if base in {a.base for a in sp.sympify(subscript).atoms(sp.Indexed)}:
                        return self.shape(element.base)[axis]
        raise ValueError(f"{base} subscripts no array of {self.name}")

    def network_keys(self) -> tuple[SpecKey, ...]:
        """A spec's keys for this layer, in the order they are read.

        The :attr:`spec_keys` that set sizes, then each hyper-parameter that is not
        per-call (under its keyword, with its default unless a spec key of that name gives
        another), so a key's default may use the sizes read before it.
        """
        given = {key.name: key for key in self.spec_keys}
        hyper = [p for p in self.hyper if not p.per_call]
        names = {p.name for p in hyper}
        keys = [key for key in self.spec_keys if key.name not in names]
        # A recurrent layer's state size (the hidden size H, the state's last axis) is
        # the spec's ``units`` unless the declaration names a key for it: what the
        # input does not fix, as a dense layer's units.
        if self.recurrence is not None:
            units = self.shape(self.recurrence.state)[-1]
            if not any(units in key.sizes for key in keys):
                keys.append(SpecKey("units", (units,)))
        for p in (*hyper, *self.running_params):
            key = given.get(p.name)
            keys.append(SpecKey(p.name, (p.symbol,), p.default if key is None else key.default))
        return tuple(keys)

    def input_sizes(self, in_shape: tuple) -> dict | None:
        """The declared input's sizes when a network feeds it ``in_shape``, or None.

        An input of the declared number of axes gives its sizes one to one; another is
        read as :attr:`any_input` says, or not at all (None).
        """
        symbols = self.shape(self.source)[1:]
        if self.any_input == "flat" and len(symbols) == 1:
            return {symbols[0]: math.prod(in_shape)}
        if self.any_input == "unit_axes" and len(in_shape) <= len(symbols):
            in_shape = tuple(in_shape) + (1,) * (len(symbols) - len(in_shape))
        if len(symbols) != len(in_shape):
            return None
        return dict(zip(symbols, in_shape, strict=True))

    def network_shapes(self, sizes: dict, in_shape: tuple | None = None) -> tuple[tuple, tuple]:
        """Per-example output shape and ``(name, shape)`` of each weight, given the sizes.

        Parameters
        ----------
        sizes : dict
            Size symbol → value, for the input's sizes and every :meth:`network_keys`
            key; the declaration's computed :attr:`sizes` are added in place.
        in_shape : tuple of int, optional
            What the network feeds the layer: a layer that reads :attr:`any_input` gives
            an output of this shape.

        Raises
        ------
        ValueError
            Naming a size that nothing sets (the declaration needs a spec key for it).
        """
        for size, expr in self.sizes:
            sizes[size] = self.numbers((expr,), sizes)[0]
        out = self.numbers((self.view or self.shape(self.out.base))[1:], sizes)
        if self.any_input is not None and in_shape is not None:
            out = tuple(in_shape)
        weights = tuple((w.label.name, self.numbers(self.shape(w), sizes))
                        for w in self.weights)
        return out, weights

    def numbers(self, shape, sizes: dict) -> tuple[int, ...]:
        """A declared shape's dimensions as integers, given the sizes.

        Raises
        ------
        ValueError
            Naming a size that nothing sets (the declaration needs a spec key for it).
        """
        dims = [sp.sympify(sp.sympify(d).xreplace(sizes)) for d in shape]
        unset = sorted({s.name for d in dims for s in d.free_symbols})
        if unset:
            raise ValueError(f"nothing sets the size {', '.join(unset)} of {self.name}: "
                             "its declaration needs a SpecKey for it (see Layer.spec_keys)")
        return tuple(int(d) for d in dims)


#: The weight an optimizer updates, one element of a parameter array.
w = sp.Symbol("w", real=True)
#: The gradient dL/dw of that element.
g = sp.Symbol("g", real=True)
#: The optimizer's step count, 1 on the first update (as PyTorch counts it).
t = sp.Symbol("t", positive=True, integer=True)
#: The learning rate, every optimizer's first parameter (ε in seed 004, α in 003).
lr = sp.Symbol("lr", positive=True)


@dataclass(frozen=True)
class Slot:
    """A state slot of an optimizer: a value kept between updates.

    Parameters
    ----------
    symbol : sympy.Symbol
        The symbol the update equations use; after the slot's own assignment it means
        the new value.
    latex : str
        How LaTeX writes it (defaults to the symbol's name).
    init : float
        The value before the first update.
    per_step : bool
        One value per parameter array, updated once per step and depending only on the
        step count and hyper-parameters (NAdam's product of momentum coefficients), rather
        than one value per element.
    """

    symbol: sp.Symbol
    latex: str = ""
    init: float = 0.0
    per_step: bool = False

    @property
    def name(self) -> str:
        """The slot's name in generated code and in the state's documentation."""
        return self.symbol.name


@dataclass(frozen=True)
class Optimizer:
    """An optimizer as its update equations for one element of a parameter array.

    Parameters
    ----------
    name, title, latex : str
        As for :class:`Activation`.
    updates : tuple of (sympy.Symbol, sympy.Expr)
        Ordered assignments read like statements: per-step quantities first, then state
        updates and named intermediates, the weight update :data:`w` last. A symbol
        assigned earlier means its new value in later right-hand sides. Right-hand sides
        use :data:`w`, :data:`g`, the slots, the parameters and the step count :data:`t`.
    state : tuple of Slot
        What the optimizer keeps between updates.
    params : tuple of Param
        Hyper-parameters with defaults, the learning rate ``lr`` first.
    reference : str
        Where the formulation comes from and how it relates to others (shown in the
        generated module's docstring).
    decay : sympy.Expr
        The change of w that does not depend on the gradient (decoupled weight decay,
        −lr·λ·w in AdamW), in :data:`w` and the parameters; 0 for an optimizer that
        leaves w alone under a zero gradient. Checked when registered: from a fresh
        state a zero gradient must move w by exactly this.
    """

    name: str
    title: str
    latex: str
    updates: tuple[tuple[sp.Symbol, sp.Expr], ...]
    state: tuple[Slot, ...] = ()
    params: tuple[Param, ...] = ()
    reference: str = ""
    decay: sp.Expr = sp.Integer(0)
    kind: str = field(default="optimizer", init=False)

    @property
    def defaults(self) -> dict[sp.Symbol, float]:
        """Parameter symbols mapped to their default values."""
        return {p.symbol: p.default for p in self.params}

    @property
    def learning_rate(self) -> Param:
        """The learning rate: the first parameter (checked when the op is registered)."""
        return self.params[0]

    @property
    def expr(self) -> sp.Expr:
        """The new weight in terms of the old state (what ``derive list`` shows)."""
        values: dict = {}
        for target, rhs in self.updates:
            values[target] = rhs.xreplace(values)
        return values[w]

    @property
    def uses_step(self) -> bool:
        """Whether the update depends on the step count t (bias corrections)."""
        return any(rhs.has(t) for _, rhs in self.updates)

    @property
    def varying(self) -> frozenset[sp.Symbol]:
        """Symbols whose values differ between elements.

        :data:`w`, :data:`g`, the per-element slots, and every assigned symbol whose
        right-hand side uses one of them. Everything else is the same for a whole array
        and is computed once per step.
        """
        out = {w, g} | {slot.symbol for slot in self.state if not slot.per_step}
        for target, rhs in self.updates:
            if rhs.free_symbols & out:
                out.add(target)
        return frozenset(out)


#: The L2 norm of every gradient of one step taken together (what clipping by norm reads).
grad_norm = sp.Symbol("grad_norm", nonnegative=True)
#: The sum, over every element of every gradient of one step, of a clip rule's summand.
grad_total = sp.Symbol("grad_total", nonnegative=True)


@dataclass(frozen=True)
class Regulariser:
    """A penalty on every element of the weights, added to the loss while training.

    Training then minimises E + Σ R(w) over the regularised elements, so the gradient of
    each gains ∂R/∂w, derived from :attr:`penalty` (never written by hand). The reported
    loss stays E, the data's.

    Parameters
    ----------
    name, title, latex : str
        As for :class:`Activation`.
    penalty : sympy.Expr
        R(w) for one element :data:`w`, in :data:`w` and the strengths. A kink is written
        with ``Abs``: its derivative ``sign(w)`` is 0 at w = 0, PyTorch's subgradient.
    strengths : tuple of Param
        The strengths λ, each set by the ``[train]`` key of its name (``l1``, ``l2``); a
        spec that sets exactly these keys gets this regulariser.
    reference : str
        Where the convention comes from and what it equals in PyTorch.
    """

    name: str
    title: str
    latex: str
    penalty: sp.Expr
    strengths: tuple[Param, ...]
    reference: str = ""
    kind: str = field(default="regulariser", init=False)

    @property
    def params(self) -> tuple[Param, ...]:
        """The strengths (for code shared with the other records)."""
        return self.strengths

    @property
    def expr(self) -> sp.Expr:
        """The penalty (what ``derive list`` shows)."""
        return self.penalty


@dataclass(frozen=True)
class Clip:
    """A rule that limits the gradient of the loss before the optimizer reads it.

    Parameters
    ----------
    name, title, latex : str
        As for :class:`Activation`; ``name`` is the rule's ``[train]`` key.
    threshold : Param
        The limit c, set by that key.
    clipped : sympy.Expr
        The clipped element, in :data:`g`, the threshold and, for a rule over every
        gradient at once, its per-step statistic.
    summand : sympy.Expr, optional
        What the rule sums over every element of every gradient of a step, in :data:`g`
        (g² for the global norm); None for an elementwise rule.
    statistic : tuple of (sympy.Symbol, sympy.Expr), optional
        The per-step value ``clipped`` reads and how it follows from that sum,
        :data:`grad_total` (``(grad_norm, sqrt(grad_total))``).
    reference : str
        What it equals in PyTorch.
    """

    name: str
    title: str
    latex: str
    threshold: Param
    clipped: sp.Expr
    summand: sp.Expr | None = None
    statistic: tuple[sp.Symbol, sp.Expr] | None = None
    reference: str = ""
    kind: str = field(default="clip", init=False)

    @property
    def params(self) -> tuple[Param, ...]:
        """The threshold, then the per-step statistic as a per-call argument."""
        if self.statistic is None:
            return (self.threshold,)
        return (self.threshold, Param(self.statistic[0], 0.0, per_call=True))
