"""A recurrent layer's module: its step's kernels and the loops over time around them.

The step is an ordinary layer (:func:`derive.calculus.recurrence.cut_step`), lowered and
printed as any layer's kernels. What is new is only the order of the calls, read from
the :class:`~derive.calculus.recurrence.RecurrenceDerivation`: forward runs the step for
t = 0, 1, …, T − 1, each reading the states the step before wrote (h_0 first, and c_0
for an LSTM's cell state); backward runs it for t = T − 1, …, 0, adding to the upstream
gradient at t what step t + 1 sent back through each previous-state input, summing the
weights' gradients over t and giving what step 0 sent back to each initial state.
"""

from __future__ import annotations

import sympy as sp

from derive.calculus.recurrence import RecurrenceDerivation
from derive.codegen.emit import (
    cache_name,
    environment,
    header_lines,
    kernel_source,
    runtime_helpers,
    uses_math,
    with_hash,
)
from derive.codegen.lower import lower_step
from derive.codegen.printer import NumbaPrinter


def time_slice(name: str, axis: int, time: str) -> str:
    """``name`` at one time step: the slice with ``time`` on its time axis.

    Parameters
    ----------
    name : str
        The array's name in the generated code.
    axis : int
        Its time axis.
    time : str
        The time step, as code (``"t"``, ``"t - 1"``).
    """
    return f"{name}[{':, ' * axis}{time}]"


def render_recurrent(rd: RecurrenceDerivation, source: str, command: str) -> str:
    """Render the generated module of a recurrent layer.

    Parameters
    ----------
    rd : RecurrenceDerivation
        The layer cut into one step, derived.
    source : str
        What the header names as the module's source.
    command : str
        The command that regenerates the file.
    """
    op, step = rd.op, rd.step
    m = lower_step(rd.derivation, source)
    printer = NumbaPrinter()
    kernels = [kernel_source(m.forward, step, printer), kernel_source(m.backward, step, printer)]
    rec = op.recurrence
    shapes = dict(op.arrays)
    public = list(op.inputs) + list(op.weights)
    sized = NumbaPrinter({s_: f'sizes["{s_}"]' for _, dims in op.arrays for d in dims
                          for s_ in sp.sympify(d).free_symbols})

    def dims(array):
        return [str(d) if isinstance(d, sp.Symbol) else None for d in shapes[array]]

    def shape(array):
        return ", ".join(sized.doprint(d) for d in shapes[array])

    length = sized.doprint(rd.length)
    ordinal = ("second", "third", "fourth", "fifth")
    # Each carried state: its sequence, its initial input, the step's input holding it one
    # step back, and the gradient carried back to it from the step after.
    states = [{"name": str(state), "initial": str(initial), "previous": str(previous),
               "carried": "carried" if k == 0 else f"carried_{state}",
               "shape": shape(state), "initial_shape": shape(initial),
               "at": time_slice(str(state), rd.axis[state], "t"),
               "before": time_slice(str(state), rd.axis[state], "t - 1"),
               "last": time_slice(str(state), rd.axis[state], f"{length} - 1"),
               "position": ordinal[k]}
              for k, (state, initial, previous) in enumerate(rd.states)]
    carried = {previous: str(previous) for _, _, previous in rd.states}
    # The step's inputs read one time step at a time (the carried states are not).
    step_inputs = [{"name": str(a), "step": f"{a}_t", "at": time_slice(str(a), rd.axis[a], "t")}
                   for a in step.inputs if a not in carried]
    state = rec.state
    context = {
        "header": header_lines(source, command),
        "title": op.title,
        "formulas": [(lbl, f) for lbl, f in m.formulas] + list(rd.formulas()),
        "kernels": kernels,
        "uses_math": uses_math(*kernels),
        "helpers": runtime_helpers(printer.helpers),
        "parallel": m.forward.parallel or m.backward.parallel,
        "cache_name": cache_name("layers", op.name),
        "public": [(str(a), dims(a)) for a in public],
        "args": ", ".join(str(a) for a in public),
        "grads": ", ".join(f"d_{a}" for a in public),
        "dtype_name": str(public[0]),
        "initials": [s["initial"] for s in states],
        "state": str(state),
        "states": states,
        "length": length,
        "step_inputs": step_inputs,
        # The step kernels' inputs and input gradients, in the step's order.
        "call_inputs": [carried.get(a, f"{a}_t") for a in step.inputs],
        "step_grads": [f"d_{carried.get(a, f'{a}_t')}" for a in step.inputs],
        "weights": [str(w) for w in op.weights],
        "upstream": f"d_{state}",
        "upstream_at": time_slice(f"d_{state}", rd.axis[state], "t"),
    }
    text = environment().get_template("kernels/recurrent.py.jinja").render(context)
    return with_hash(text)
