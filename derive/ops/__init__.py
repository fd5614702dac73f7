"""The catalogue: declarations only. Importing this package registers them all."""

from derive.ops import (  # noqa: F401
    activations,
    attention,
    layers,
    losses,
    optimizers,
    regularisers,
)
