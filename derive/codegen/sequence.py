"""A recurrent layer inside a network module: its step's kernels run over time, jitted.

A layer with a :attr:`~derive.spec.Layer.recurrence` is cut into one time step
(:func:`derive.calculus.recurrence.derive_recurrence`), whose forward and backward are
ordinary layer kernels. The network calls two jitted loops around them, printed from the
:class:`~derive.calculus.recurrence.RecurrenceDerivation` for any number of carried
states (h for an Elman layer or a GRU, h and c for an LSTM):

- ``_<layer>_sequence`` runs the step for t = 0, …, T − 1 from zero initial states,
  writing every state into the network's buffers (the output's into the layer's z);
- ``_<layer>_sequence_backward`` runs the step's backward for t = T − 1, …, 0 from the
  states the forward pass kept: dE/dh_t is the upstream gradient at t plus what step
  t + 1 sent back through h_prev, any other state's gradient what step t + 1 sent back
  through its previous value; the weights' gradients add up over t.

Nothing here knows a layer by name: the arrays' roles come from the derivation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from derive.calculus.derivation import output_upstream, upstream_of
from derive.calculus.recurrence import derive_recurrence
from derive.codegen.emit import environment
from derive.codegen.lower import gradient_array, lower_step
from derive.codegen.recurrent import time_slice


@dataclass(frozen=True)
class SequenceCalls:
    """What a network needs to run one recurrent layer.

    Attributes
    ----------
    forward, backward : tuple of str
        The lines of the network's forward and backward passes.
    buffers : dict
        Work buffers the lines use (name → per-example shape): every carried state but
        the output (which is the layer's own z buffer), the zero initial states and the
        gradients sent back to them.
    kernels : tuple
        (forward, backward, step) of the step's kernels, as the network lists layer kernels.
    sources : tuple of str
        The two loops over time, printed.
    """

    forward: tuple
    backward: tuple
    buffers: dict
    kernels: tuple
    sources: tuple


def sequence_calls(op, layer, names: dict, source: str, d_source: str | None,
                   z: str, d_z: str) -> SequenceCalls:
    """The calls, buffers and loops that run recurrent layer ``layer`` in a network.

    Parameters
    ----------
    op : Layer
        The declaration (with a recurrence).
    layer : LayerSpec
        The layer in the spec.
    names : dict
        Each weight (IndexedBase) → the network's parameter and gradient names.
    source, d_source : str
        The buffers of the layer's input and of its gradient (None: the layer is the
        first to learn, and what it sends back is dropped into a scratch buffer).
    z, d_z : str
        The buffers of the layer's output (every state) and of its gradient.
    """
    rd = derive_recurrence(op)
    step, i = rd.step, layer.index
    module = lower_step(rd.derivation, "network")
    fwd = dataclasses.replace(module.forward, name=f"_{step.name}_forward")
    bwd = dataclasses.replace(module.backward, name=f"_{step.name}_backward")
    if fwd.hyper or bwd.hyper:
        raise NotImplementedError(f"{op.name}: a recurrent step with hyper-parameters")
    sizes = dict(layer.sizes)
    states = list(rd.states)
    sequence_inputs = [a for a in step.inputs if a in rd.axis]
    # The local names inside the loops, by each array's role in the step.
    local = {a: f"{a}_t" for a in sequence_inputs}
    local |= {gradient_array(a): f"d_{a}_t" for a in sequence_inputs}
    for state, _, previous in states:
        local |= {previous: str(previous), gradient_array(previous): f"d_{previous}",
                  state: f"{state}_t"}
    local[upstream_of(step)] = f"d_{rd.op.recurrence.state}_t"
    local |= {output_upstream(state): f"d_{state}_t" for state, _, _ in states[1:]}
    local |= {w: str(w) for w in op.weights}
    local |= {gradient_array(w): f"d_{w}_t" for w in op.weights}
    seq_args = [str(a) for a in op.inputs] + [str(w) for w in op.weights]
    state_args = [str(state) for state, _, _ in states]
    output = str(rd.op.recurrence.state)
    context = {
        "name": op.name,
        "args": seq_args + state_args,
        "backward_args": (seq_args + state_args + [f"d_{output}"]
                          + [f"d_{a}" for a in op.inputs] + [f"d_{w}" for w in op.weights]),
        "length": f"{output}.shape[{rd.axis[rd.op.recurrence.state]}]",
        "states": [{"name": str(state), "initial": str(initial), "previous": str(previous),
                    "at": time_slice(str(state), rd.axis[state], "t"),
                    "before": time_slice(str(state), rd.axis[state], "t - 1")}
                   for state, initial, previous in states],
        "inputs": [{"name": str(a), "at": time_slice(str(a), rd.axis[a], "t")}
                   for a in sequence_inputs],
        "upstream_at": time_slice(f"d_{output}", rd.axis[rd.op.recurrence.state], "t"),
        "weights": [str(w) for w in op.weights],
        "forward_call": f"{fwd.name}({', '.join(local[a] for a in fwd.arrays)})",
        "backward_call": f"{bwd.name}({', '.join(local[a] for a in bwd.arrays)})",
    }
    template = environment().get_template("kernels/_network_sequence.jinja")
    forward_source, backward_source = template.render(context).split("\n\n\n# ----\n")
    # The network's buffers: each state but the output, each zero initial state and
    # the gradient that reaches it.
    buffers, initial_names, state_names, initial_grads = {}, {}, {output: z}, {}
    for state, initial, _ in states:
        shape = op.numbers(op.shape(initial)[1:], sizes)
        initial_names[initial] = f"state{i}_{initial}"
        initial_grads[initial] = f"d_state{i}_{initial}"
        buffers |= {initial_names[initial]: shape, initial_grads[initial]: shape}
        if str(state) != output:
            state_names[str(state)] = f"state{i}_{state}"
            buffers[state_names[str(state)]] = op.numbers(op.shape(state)[1:], sizes)
    if d_source is None:
        d_source = f"d_in{i}"
        buffers[d_source] = tuple(layer.in_shape)
    inputs = [source if a not in initial_names else initial_names[a] for a in op.inputs]
    d_inputs = [d_source if a not in initial_names else initial_grads[a] for a in op.inputs]
    params = [names[w] for w in op.weights]
    grads = [names[gradient_array(w)] for w in op.weights]
    states_now = [state_names[str(state)] for state, _, _ in states]
    forward = [f"{initial_names[initial]}[:] = 0.0" for _, initial, _ in states]
    forward.append(f"_{op.name}_sequence({', '.join(inputs + params + states_now)})")
    backward = [f"_{op.name}_sequence_backward("
                f"{', '.join(inputs + params + states_now + [d_z] + d_inputs + grads)})"]
    return SequenceCalls(tuple(forward), tuple(backward), buffers, (fwd, bwd, step),
                         (forward_source.strip("\n"), backward_source.strip("\n")))
