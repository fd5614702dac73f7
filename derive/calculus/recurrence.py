"""Recurrences: a layer whose output is a state carried through time, cut into one step.

A recurrent layer is declared over the whole sequence, its state read one step back
(``h[n, t - 1, j]``). Backpropagation through time needs no rule of its own: cut the
declaration at one time step — every array loses its time axis and the state read at
t − 1 becomes an input of the step, ``h_prev`` — and the step is an ordinary layer,
differentiated by :func:`derive.calculus.derivation.derive_layer` like any other. Its
gradient with respect to ``h_prev`` is what the step sends back to the step before it.

Walking the steps backwards then gives BPTT, by the chain rule over the unrolled graph:

- ∂E/∂h_t collects the loss at t (the upstream gradient of the output at t) and the
  gradient the step t + 1 sends back through its ``h_prev``;
- an input read at every step (x_t) gets its gradient at t from step t alone;
- a weight is read by every step, so its gradient is the sum over t of the step's;
- the initial state h_0 is ``h_prev`` of the first step: it gets what step 0 sends back.

:class:`RecurrenceDerivation` holds the step, its derivation and these roles; the code
generator turns them into a forward loop over t and a backward loop over reversed t.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import sympy as sp

from derive.calculus.derivation import LayerDerivation, derive_layer
from derive.spec import Layer


@dataclass(frozen=True)
class RecurrenceDerivation:
    """A recurrent layer cut into one time step, and the roles BPTT gives its arrays.

    Attributes
    ----------
    op : Layer
        The declaration over the whole sequence.
    step : Layer
        One time step: the declaration with the time axis removed from every array and
        the state read at t − 1 as the input :attr:`previous`.
    derivation : LayerDerivation
        The step's gradients, derived like any layer's.
    previous : sympy.IndexedBase
        The step's input holding the state of the step before (``h_prev``).
    sequences : tuple of sympy.IndexedBase
        Arrays with a time axis, by their name in the step (x, and the state itself).
    axis : dict
        Each sequence array (by its name in the step) → its time axis in the declaration.
    length : sympy.Symbol
        The number of time steps T.
    """

    op: Layer
    step: Layer
    derivation: LayerDerivation
    previous: sp.IndexedBase
    sequences: tuple
    axis: dict
    length: sp.Symbol

    @property
    def carried(self) -> tuple:
        """(state, previous): the step's output and the input it becomes one step later."""
        return (self.op.recurrence.state, self.previous)

    @property
    def states(self) -> tuple:
        """(state, initial, previous) of every carried state, the output's first."""
        return tuple((state, initial, previous_of(state))
                     for state, initial in self.op.recurrence.states)

    @property
    def summed(self) -> tuple:
        """Arrays every step reads whole (the weights): their gradients add up over t."""
        return self.op.weights

    def formulas(self) -> tuple:
        """BPTT in words of the step's gradients, as (label, formula) pairs."""
        t = self.op.recurrence.time
        rows = []
        for k, (state, _, previous) in enumerate(self.states):
            # Only the output is returned at every t; another state only at the end.
            here = f"d_{state}[t] + " if k == 0 else ""
            rows.append((f"dE/d{state}[t] (total)",
                         f"{here}dE/d{previous} of step {t} + 1 (dE/d{state}_last after "
                         "the last step)"))
        rows += [(f"dE/d{w}", f"Sum over {t} of the step's dL/d{w}") for w in self.summed]
        rows += [(f"dE/d{initial}", f"dE/d{previous} of step 0")
                 for _, initial, previous in self.states]
        return tuple(rows)


def _time_axes(op: Layer) -> dict:
    """Each array with a time axis → that axis, read from where the time index sits."""
    time = op.recurrence.time
    found = {}
    for _, expr in (*op.steps, (op.out, op.expr)):
        for element in expr.atoms(sp.Indexed) | {op.out}:
            for axis, subscript in enumerate(element.indices):
                if time in sp.sympify(subscript).free_symbols:
                    found[element.base] = axis
    for target, _ in op.steps:
        found[target.base] = list(target.indices).index(time)
    return found


def cut_step(op: Layer) -> tuple[Layer, sp.IndexedBase, dict]:
    """The declaration at one time step, its previous-state input and the time axes.

    Every element a[..., t, ...] becomes a[..., ...] and the state read one step back,
    h[..., t − 1, ...], becomes h_prev[..., ...]; shapes lose their time axis.

    Raises
    ------
    ValueError
        When the state is read other than at t or t − 1 (a recurrence of higher order).
    """
    rec = op.recurrence
    time = rec.time
    axes = _time_axes(op)
    # Each carried state read one step back is an input of the step: h_prev, c_prev.
    previous = {state: previous_of(state) for state, _ in rec.states}

    def drop(indices, axis):
        return tuple(ix for k, ix in enumerate(indices) if k != axis)

    def cut(element):
        if element.base not in axes:
            return element
        axis = axes[element.base]
        shift = sp.expand(element.indices[axis] - time)
        if shift == 0:
            return element.base[drop(element.indices, axis)]
        if element.base in previous and shift == -1:
            return previous[element.base][drop(element.indices, axis)]
        raise ValueError(f"{op.name}: {element} reads the state at {element.indices[axis]}; "
                         f"a step may read it only at the previous time, {time} - 1")

    def cut_expr(expr):
        return expr.replace(lambda e: isinstance(e, sp.Indexed), cut)

    shapes = dict(op.arrays)
    initials = {initial: previous[state] for state, initial in rec.states}
    arrays = tuple((a, drop(dims, axes[a]) if a in axes else dims)
                   for a, dims in op.arrays if a not in initials)
    arrays += tuple((initials[a], shapes[a]) for a in initials)
    inputs = tuple(initials.get(a, a) for a in op.inputs)
    step = Layer(
        name=f"{op.name}_step", title=f"{op.title}, one time step", latex=op.latex,
        out=cut(op.out), expr=cut_expr(op.expr),
        steps=tuple((cut(t), cut_expr(e)) for t, e in op.steps),
        arrays=arrays, inputs=inputs, weights=op.weights, hyper=op.hyper,
        # The other states are steps of the step, returned with its output.
        extra_outputs=tuple(state for state, _ in rec.carried),
        in_networks=False)
    return step, previous[rec.state], axes


def previous_of(state: sp.IndexedBase) -> sp.IndexedBase:
    """The step's input holding ``state`` one time step back (h → h_prev)."""
    return sp.IndexedBase(f"{state}_prev", real=True)


@cache
def derive_recurrence(op: Layer) -> RecurrenceDerivation:
    """Derive a recurrent layer: its step's gradients and the roles BPTT gives them.

    Parameters
    ----------
    op : Layer
        A declaration with a :attr:`~derive.spec.Layer.recurrence`.

    Returns
    -------
    RecurrenceDerivation
        The step (a layer), its derivation in delta form, and which arrays are carried,
        summed over time or read one time step at a time.
    """
    step, previous, axes = cut_step(op)
    time_axis = list(op.out.indices).index(op.recurrence.time)
    length = op.shape(op.out.base)[time_axis]
    sequences = tuple(a for a in axes if a in dict(op.arrays))
    return RecurrenceDerivation(op, step, derive_layer(step), previous, sequences,
                                {a: axes[a] for a in sequences}, length)
