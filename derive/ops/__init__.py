"""The catalogue: declarations only. Importing this package registers them all."""

from derive.ops import activations, layers, losses, optimizers, regularisers  # noqa: F401
