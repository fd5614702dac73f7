"""A recurrent layer's module: its step's kernels and the loops over time around them.

The step is an ordinary layer (:func:`derive.calculus.recurrence.cut_step`), lowered and
printed as any layer's kernels. What is new is only the order of the calls, read from
the :class:`~derive.calculus.recurrence.RecurrenceDerivation`: forward runs the step for
t = 0, 1, …, T − 1, each reading the state the step before wrote (h_0 first); backward
runs it for t = T − 1, …, 0, adding to the upstream gradient at t what step t + 1 sent
back through its previous-state input, summing the weights' gradients over t and giving
what step 0 sent back to h_0.
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
from derive.codegen.lower import lower_layer
from derive.codegen.printer import NumbaPrinter


def _at(name: str, axis: int, time: str) -> str:
    """``name`` at one time step: the slice with ``time`` on its time axis."""
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
    m = lower_layer(rd.derivation, source)
    printer = NumbaPrinter()
    kernels = [kernel_source(m.forward, step, printer), kernel_source(m.backward, step, printer)]
    rec = op.recurrence
    state, previous = rd.carried
    shapes = dict(op.arrays)
    public = list(op.inputs) + list(op.weights)
    sized = NumbaPrinter({s_: f'sizes["{s_}"]' for _, dims in op.arrays for d in dims
                          for s_ in sp.sympify(d).free_symbols})

    def dims(array):
        return [str(d) if isinstance(d, sp.Symbol) else None for d in shapes[array]]

    # Each input of the step: read at one time step, or the carried state.
    step_inputs = []
    for a in step.inputs:
        if a == previous:
            step_inputs.append({"name": str(rec.initial), "step": str(previous),
                                "carried": True})
        else:
            step_inputs.append({"name": str(a), "step": f"{a}_t", "carried": False,
                                "at": _at(str(a), rd.axis[a], "t")})
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
        "initial": str(rec.initial),
        "initial_shape": ", ".join(sized.doprint(d) for d in shapes[rec.initial]),
        "state": str(state),
        "state_shape": ", ".join(sized.doprint(d) for d in shapes[state]),
        "state_at": _at(str(state), rd.axis[state], "t"),
        "state_before": _at(str(state), rd.axis[state], "t - 1"),
        "state_last": _at(str(state), rd.axis[state], f"{sized.doprint(rd.length)} - 1"),
        "length": sized.doprint(rd.length),
        "step_inputs": step_inputs,
        "weights": [str(w) for w in op.weights],
        "upstream": f"d_{state}",
        "upstream_at": _at(f"d_{state}", rd.axis[state], "t"),
    }
    text = environment().get_template("kernels/recurrent.py.jinja").render(context)
    return with_hash(text)
