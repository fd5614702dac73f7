"""Weight initialisers: Xavier/Glorot, He/Kaiming and plain normal, seeded.

Shapes follow PyTorch: dense weights W are (out, in), convolution kernels
(out, in, kh, kw). Fan-in and fan-out are computed as ``torch.nn.init`` computes them, so
the bounds and deviations are PyTorch's; the random streams are NumPy's (a
``numpy.random.Generator``), not PyTorch's. Draws are made in float64 and then rounded to
the requested dtype, so a float32 network starts at the float64 one's values, rounded.

Seed 003, §9.2: to keep the activations' variance constant across layers, draw
W ~ U(−√(6/(n_in + n_out)), √(6/(n_in + n_out))) — :func:`xavier_uniform`.
"""

from __future__ import annotations

import difflib
import math
from functools import singledispatch

import numpy as np

from derive.errors import DeriveError


@singledispatch
def generator(rng) -> np.random.Generator:
    """A NumPy Generator from a seed or an existing Generator (which is used as is).

    Raises
    ------
    TypeError
        For anything else (a global-state ``np.random`` call would not be reproducible).
    """
    raise TypeError(f"rng must be a numpy.random.Generator or an int seed, not "
                    f"{type(rng).__name__}")


@generator.register
def _(rng: np.random.Generator) -> np.random.Generator:
    return rng


@generator.register(int)
@generator.register(np.integer)
def _(rng) -> np.random.Generator:
    return np.random.default_rng(int(rng))


def fan_in_and_fan_out(shape: tuple[int, ...]) -> tuple[int, int]:
    """Fan-in and fan-out of a weight of ``shape``, as PyTorch computes them.

    For (out, in, *kernel): fan_in = in·Πkernel and fan_out = out·Πkernel; a dense
    (out, in) weight has fan_in = in, fan_out = out.

    Raises
    ------
    ValueError
        For fewer than two dimensions (a bias has no fan-out).
    """
    shape = tuple(int(d) for d in shape)
    if len(shape) < 2:
        raise ValueError(f"fan-in and fan-out need at least 2 dimensions, got shape {shape}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


#: The recommended gain of each nonlinearity (``torch.nn.init.calculate_gain``).
GAINS = {
    "linear": lambda slope: 1.0,
    "identity": lambda slope: 1.0,
    "conv1d": lambda slope: 1.0,
    "conv2d": lambda slope: 1.0,
    "conv3d": lambda slope: 1.0,
    "sigmoid": lambda slope: 1.0,
    "tanh": lambda slope: 5.0 / 3,
    "relu": lambda slope: math.sqrt(2.0),
    "leaky_relu": lambda slope: math.sqrt(2.0 / (1 + (0.01 if slope is None else slope) ** 2)),
    "selu": lambda slope: 3.0 / 4,
}


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The gain that keeps activations' variance for ``nonlinearity`` (PyTorch's table).

    Parameters
    ----------
    nonlinearity : str
        ``"linear"``, ``"sigmoid"``, ``"tanh"``, ``"relu"``, ``"leaky_relu"``, ``"selu"``...
    param : float, optional
        The negative slope of ``leaky_relu`` (default 0.01).
    """
    rule = GAINS.get(nonlinearity)
    if rule is None:
        close = difflib.get_close_matches(nonlinearity, GAINS, n=2)
        raise DeriveError(f"no gain for nonlinearity {nonlinearity!r}.", where="init",
                          fix=f"Did you mean {' or '.join(close)}?" if close
                          else f"Use one of: {', '.join(GAINS)}.")
    return rule(param)


def _fan(shape, mode: str) -> int:
    fan_in, fan_out = fan_in_and_fan_out(shape)
    if mode not in ("fan_in", "fan_out"):
        raise DeriveError(f"mode {mode!r} is not fan_in or fan_out.", where="init")
    return fan_in if mode == "fan_in" else fan_out


def _uniform(shape, rng, bound: float, dtype) -> np.ndarray:
    return generator(rng).uniform(-bound, bound, size=tuple(shape)).astype(dtype)


def _normal(shape, rng, std: float, dtype, mean: float = 0.0) -> np.ndarray:
    return generator(rng).normal(mean, std, size=tuple(shape)).astype(dtype)


def xavier_bound(shape, gain: float = 1.0) -> float:
    """Glorot and Bengio (2010)'s uniform bound gain·√(6/(fan_in + fan_out))."""
    fan_in, fan_out = fan_in_and_fan_out(shape)
    return gain * math.sqrt(6.0 / (fan_in + fan_out))


def xavier_std(shape, gain: float = 1.0) -> float:
    """Glorot and Bengio (2010)'s deviation gain·√(2/(fan_in + fan_out))."""
    fan_in, fan_out = fan_in_and_fan_out(shape)
    return gain * math.sqrt(2.0 / (fan_in + fan_out))


def kaiming_std(shape, a: float = 0.0, mode: str = "fan_in",
                nonlinearity: str = "leaky_relu") -> float:
    """He et al. (2015)'s deviation gain/√fan (PyTorch's defaults: √2/√fan_in)."""
    return calculate_gain(nonlinearity, a) / math.sqrt(_fan(shape, mode))


def xavier_uniform(shape, rng, gain: float = 1.0, dtype=np.float64) -> np.ndarray:
    """W ~ U(−b, b), b = gain·√(6/(fan_in + fan_out)) (``torch.nn.init.xavier_uniform_``).

    Parameters
    ----------
    shape : tuple of int
        (out, in) or (out, in, kh, kw).
    rng : numpy.random.Generator or int
        The generator, or a seed for a new one.
    gain : float
        Scale for the following nonlinearity (:func:`calculate_gain`).
    dtype : numpy dtype
        float32 or float64.

    Returns
    -------
    ndarray
        The weights.
    """
    return _uniform(shape, rng, xavier_bound(shape, gain), dtype)


def xavier_normal(shape, rng, gain: float = 1.0, dtype=np.float64) -> np.ndarray:
    """W ~ N(0, σ²), σ = gain·√(2/(fan_in + fan_out)) (``xavier_normal_``).

    Parameters are as for :func:`xavier_uniform`.
    """
    return _normal(shape, rng, xavier_std(shape, gain), dtype)


def kaiming_uniform(shape, rng, a: float = 0.0, mode: str = "fan_in",
                    nonlinearity: str = "leaky_relu", dtype=np.float64) -> np.ndarray:
    """W ~ U(−b, b), b = √3·gain/√fan (``torch.nn.init.kaiming_uniform_``).

    Parameters
    ----------
    shape : tuple of int
        (out, in) or (out, in, kh, kw).
    rng : numpy.random.Generator or int
        The generator, or a seed for a new one.
    a : float
        Negative slope of the leaky ReLU that follows (0: ReLU, gain √2).
    mode : {"fan_in", "fan_out"}
        Preserve the forward pass's variance (fan_in) or the backward pass's.
    nonlinearity : str
        As for :func:`calculate_gain`.
    dtype : numpy dtype
        float32 or float64.
    """
    return _uniform(shape, rng, math.sqrt(3.0) * kaiming_std(shape, a, mode, nonlinearity),
                    dtype)


def kaiming_normal(shape, rng, a: float = 0.0, mode: str = "fan_in",
                   nonlinearity: str = "leaky_relu", dtype=np.float64) -> np.ndarray:
    """W ~ N(0, σ²), σ = gain/√fan (``torch.nn.init.kaiming_normal_``).

    Parameters are as for :func:`kaiming_uniform`.
    """
    return _normal(shape, rng, kaiming_std(shape, a, mode, nonlinearity), dtype)


def normal(shape, rng, std: float = 1.0, mean: float = 0.0, dtype=np.float64) -> np.ndarray:
    """W ~ N(mean, std²), seed 003's Algorithm 1 (PyTorch's ``normal_`` defaults)."""
    return _normal(shape, rng, std, dtype, mean)


def uniform(shape, rng, low: float = 0.0, high: float = 1.0, dtype=np.float64) -> np.ndarray:
    """W ~ U(low, high); e.g. a bias as ``torch.nn.Linear`` draws it, ±1/√fan_in."""
    return generator(rng).uniform(low, high, size=tuple(shape)).astype(dtype)


def zeros(shape, rng=None, dtype=np.float64) -> np.ndarray:
    """All zeros (biases); ``rng`` is accepted so every initialiser is called alike."""
    return np.zeros(tuple(shape), dtype=dtype)


#: Initialiser names a spec may use → function(shape, rng, **options, dtype=...).
INITIALISERS = {
    "xavier_uniform": xavier_uniform,
    "glorot_uniform": xavier_uniform,
    "xavier_normal": xavier_normal,
    "glorot_normal": xavier_normal,
    "kaiming_uniform": kaiming_uniform,
    "he_uniform": kaiming_uniform,
    "kaiming_normal": kaiming_normal,
    "he_normal": kaiming_normal,
    "normal": normal,
    "uniform": uniform,
    "zeros": zeros,
}


def initialise(name: str, shape, rng, dtype=np.float64, **options) -> np.ndarray:
    """Draw an array with the initialiser called ``name``.

    Parameters
    ----------
    name : str
        A key of :data:`INITIALISERS` (``"xavier_uniform"``, ``"he_normal"``, ...).
    shape : tuple of int
        The array's shape.
    rng : numpy.random.Generator or int
        The generator, or a seed.
    dtype : numpy dtype
        float32 or float64.
    **options
        The initialiser's own options (``gain``, ``std``, ``a``, ``mode``...).

    Raises
    ------
    DeriveError
        For an unknown name, with the close matches.
    """
    init = INITIALISERS.get(name)
    if init is None:
        close = difflib.get_close_matches(name, INITIALISERS, n=3)
        raise DeriveError(f"no initialiser called {name!r}.", where="init",
                          fix=f"Did you mean {', '.join(close)}?" if close
                          else f"Use one of: {', '.join(INITIALISERS)}.")
    return init(shape, rng, dtype=dtype, **options)
