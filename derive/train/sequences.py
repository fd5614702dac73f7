"""Why a recurrent layer forgets: the gradient of a loss at the end with respect to each state.

For a loss E read from the last state h_T, the chain rule through time gives
∂E/∂h_t = (∂h_{t+1}/∂h_t)ᵀ ⋯ (∂h_T/∂h_{T−1})ᵀ ∂E/∂h_T, a product of T − t Jacobians. An
Elman layer's Jacobians shrink it (|tanh′| ≤ 1 times W_hh), so its norm falls
exponentially as t moves back from T: the first steps of a long sequence get no gradient,
which is why a plain RNN cannot learn the adding problem. An LSTM's cell state carries
it through ∂c_t/∂c_{t−1} = f_t, close to 1 while the forget gate stays open.

:func:`state_gradient_norms` measures ‖∂E/∂h_t‖ for every t with the layer's own
generated module (``generated/layers/<name>.py``): the state after t steps is the initial
state of the rest of the sequence, so the backward pass of the rest returns ∂E/∂h_t as
the gradient of that initial state. :func:`plot_state_gradients` draws the curves.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np


def state_gradient_norms(layer, x: np.ndarray, weights, d_last: np.ndarray | None = None,
                         ) -> np.ndarray:
    """‖∂E/∂h_t‖ for t = 0, …, T − 1, averaged over the batch, E read from the last state.

    Parameters
    ----------
    layer : module
        A recurrent layer's generated module: ``forward(x, *initials, *weights)`` returns
        (every state, then the last of each carried state); ``backward(x, *initials,
        *weights, d_states)`` returns (d_x, the initial states' gradients, …).
    x : ndarray
        Inputs, shape (N, T, F).
    weights : sequence of ndarray
        The layer's weights in its declaration's order (W_ih, b_ih, W_hh, b_hh).
    d_last : ndarray, optional
        ∂E/∂h_T, shape (N, H); ones when not given (the sum of the last state).

    Returns
    -------
    ndarray
        Shape (T,): entry t is the mean over examples of ‖∂E/∂h_t‖₂.
    """
    x = np.ascontiguousarray(x)
    n, steps = x.shape[0], x.shape[1]
    carried = _initials(layer)
    outputs = layer.forward(x, *([None] * carried), *weights)
    states = outputs[0]
    if d_last is None:
        d_last = np.ones_like(states[:, -1])
    norms = np.empty(steps)
    norms[-1] = np.linalg.norm(d_last, axis=1).mean()
    for t in range(steps - 1):
        # The states after step t start the rest of the sequence, x[:, t+1:].
        head = layer.forward(np.ascontiguousarray(x[:, :t + 1]),
                             *([None] * carried), *weights)
        rest = np.ascontiguousarray(x[:, t + 1:])
        d_states = np.zeros((n, steps - t - 1, states.shape[2]), x.dtype)
        d_states[:, -1] = d_last
        grads = layer.backward(rest, *head[1:], *weights, d_states)
        norms[t] = np.linalg.norm(grads[1], axis=1).mean()
    return norms


def _initials(layer) -> int:
    """The number of initial states ``layer.forward`` takes (h_0; h_0 and c_0)."""
    names = list(inspect.signature(layer.forward).parameters)
    return sum(1 for name in names if name.endswith("_0"))


def plot_state_gradients(curves: dict, path: str | Path, title: str = "") -> Path:
    """Plot ‖∂E/∂h_t‖ over t, one curve per name, on a log scale, into a PNG.

    Parameters
    ----------
    curves : dict
        Name (e.g. "rnn", "lstm") → :func:`state_gradient_norms`'s array.
    path : str or Path
        The PNG to write.
    title : str
        The figure's title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, norms in curves.items():
        ax.semilogy(np.arange(len(norms)), np.maximum(norms, 1e-300), label=name)
    ax.set_xlabel("time step t")
    ax.set_ylabel("‖∂E/∂h_t‖")
    if title:
        ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
