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

import dataclasses
from dataclasses import dataclass

import sympy as sp

from derive.calculus.derivation import derive_layer, gradient_array, output_upstream, upstream_of
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
from derive.codegen.lower import lower_layer, lower_step
from derive.codegen.printer import NumbaPrinter
from derive.spec import Layer


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


@dataclass(frozen=True)
class Split:
    """A recurrent layer's step with the input's part of it taken out of the time loop.

    The terms of a step's pre-activation that read only the input at t and the weights
    (W_ih x_t + b_ih + b_hh) do not depend on the state: for every t at once they are one
    layer over the N·T rows of the batch-first input, :attr:`projection`, whose matrix
    product the contraction rules turn into one GEMM. Its derivation gives, over those
    rows, the input's gradient and the sums over n and t of its weights' gradients
    (dE/dW_ih = Σ_t d_s_tᵀ x_t, one GEMM after the loop). What remains, :attr:`step`, reads
    the projection's output at t as an input.

    Attributes
    ----------
    projection : Layer or None
        The input's part over every time step (None: no term of the step can be hoisted).
    step : Layer
        The step that reads it.
    sequences : tuple of sympy.IndexedBase
        The step's inputs read one time step at a time, in the step's order.
    """

    projection: Layer | None
    step: Layer
    sequences: tuple


def split_input(rd: RecurrenceDerivation) -> Split:
    """Take the terms that read no state out of the step, as one layer over all time steps.

    The first step assignment holding a sum that reads only arrays the step receives at
    each t and the weights is split: those terms become the projection's output (named
    after the assignment, ``s_in``; or the assignment's own array when every term moves),
    an input of the step. The input arrays must be batch-first, time second, so that the
    N·T rows are the arrays reshaped.

    Parameters
    ----------
    rd : RecurrenceDerivation
        The layer cut into one step.
    """
    step = rd.step
    carried = {previous for _, _, previous in rd.states}
    sequences = [a for a in step.inputs if a not in carried]
    plain = Split(None, step, tuple(sequences))
    if any(rd.axis.get(a) != 1 for a in sequences):
        return plain
    readable = set(sequences) | set(step.weights)
    shapes = dict(step.arrays)
    for k, (target, expr) in enumerate(step.steps):
        terms = sp.Add.make_args(expr)
        moved = [t for t in terms if all(e.base in readable for e in t.atoms(sp.Indexed))]
        if not any(t.has(sp.Sum) for t in moved):
            continue
        kept = [t for t in terms if t not in moved]
        base = target.base if not kept else sp.IndexedBase(f"{target.base}_in", real=True)
        reads = {e.base for t in moved for e in t.atoms(sp.Indexed)}
        inputs = tuple(a for a in sequences if a in reads)
        weights = tuple(w for w in step.weights if w in reads)
        arrays = tuple((a, shapes[a]) for a in inputs + weights) + ((base, shapes[target.base]),)
        # A kernel reads its sizes off its arrays' axes: a size only a product spans
        # (4H, the gates' rows) becomes a size of its own, G.
        spans = sorted({d for _, dims in arrays for d in dims if not isinstance(d, sp.Symbol)},
                       key=sp.default_sort_key)
        sizes = {d: sp.Symbol("G" if len(spans) == 1 else f"G{k}", integer=True, positive=True)
                 for k, d in enumerate(spans)}
        expr = sp.Add(*moved).xreplace(sizes)
        projection = Layer(
            name=f"{rd.op.name}_input", title=f"{rd.op.title}, the input's part",
            latex=step.latex, out=base[target.indices], expr=expr,
            arrays=tuple((a, tuple(sizes.get(d, d) for d in dims)) for a, dims in arrays),
            inputs=inputs, weights=weights, in_networks=False)
        steps = list(step.steps)
        if kept:
            steps[k] = (target, base[target.indices] + sp.Add(*kept))
        else:
            del steps[k]
        rest = [*steps, (step.out, step.expr)]
        still = {e.base for _, e_ in rest for e in e_.atoms(sp.Indexed)}
        # The projection's output takes the place of the first input it reads.
        new_inputs = []
        for a in step.inputs:
            if a == inputs[0]:
                new_inputs.append(base)
            if a in still:
                new_inputs.append(a)
        written = {t.base for t, _ in rest}
        arrays = tuple((a, d) for a, d in step.arrays if a in still | written)
        if kept:
            arrays += ((base, shapes[target.base]),)
        cut = dataclasses.replace(
            step, steps=tuple(steps), arrays=arrays, inputs=tuple(new_inputs),
            weights=tuple(w for w in step.weights if w in still))
        return Split(projection, cut, tuple(a for a in cut.inputs if a not in carried))
    return plain


def render_recurrent(rd: RecurrenceDerivation, source: str, command: str) -> str:
    """Render the generated module of a recurrent layer.

    The input's part of every step (:func:`split_input`) runs once before the loop over
    time, as a layer over the N·T rows, and its backward once after the loop back; the
    loops themselves are jitted and reuse one set of per-step buffers.

    Parameters
    ----------
    rd : RecurrenceDerivation
        The layer cut into one step, derived.
    source : str
        What the header names as the module's source.
    command : str
        The command that regenerates the file.
    """
    op = rd.op
    split = split_input(rd)
    step, projection = split.step, split.projection
    m = lower_step(derive_layer(step), source, keep=True)
    printer = NumbaPrinter()
    kernels = [kernel_source(m.forward, step, printer), kernel_source(m.backward, step, printer)]
    calls = (None, None)
    if projection is not None:
        p = lower_layer(derive_layer(projection), source)
        pair = [dataclasses.replace(k, name=f"_input{k.name}") for k in (p.forward, p.backward)]
        kernels += [kernel_source(k, projection, printer) for k in pair]
        # Its arguments: a sequence as its N·T rows, a weight whole.
        calls = tuple(f"{k.name}({', '.join(_rows(a, projection, step.weights) for a in k.arrays)})"
                      for k in pair)
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
    # The names inside the jitted loops, by each array's role in the step's kernels.
    local = {w: str(w) for w in step.weights}
    local |= {gradient_array(w): f"d_{w}_t" for w in step.weights}
    local |= {a: f"{a}_t" for a in split.sequences}
    local |= {gradient_array(a): f"d_{a}_t" for a in split.sequences}
    for s in states:
        state, previous = sp.IndexedBase(s["name"]), sp.IndexedBase(s["previous"])
        local |= {state: f"{state}_t", previous: str(previous),
                  gradient_array(previous): f"d_{previous}"}
        local[output_upstream(state)] = s["carried"]
    local[upstream_of(step)] = f"d_{rec.state}_t"
    # The step's intermediate arrays, kept for every t by the forward loop for backward.
    kept = [t.base for t, _ in step.steps if t.base not in step.extra_outputs]
    local |= {a: f"{a}_t" for a in kept}
    local = {str(k): v for k, v in local.items()}
    # The step's sequence inputs: an input of the layer, or the projection's output.
    made = str(projection.out.base) if projection is not None else None
    sequences = [{"name": str(a), "at": time_slice(str(a), 1, "t")} for a in split.sequences]
    # A weight both parts read gets the two gradients added.
    in_step = [str(w) for w in step.weights]
    in_projection = [str(w) for w in projection.weights] if projection is not None else []
    context = {
        "header": header_lines(source, command),
        "title": op.title,
        "formulas": ([(lbl, f) for lbl, f in p.formulas] if projection is not None else [])
        + [(lbl, f) for lbl, f in m.formulas] + list(rd.formulas()),
        "kernels": kernels,
        "uses_math": uses_math(*kernels),
        "helpers": runtime_helpers(printer.helpers),
        "parallel": any("parallel=True" in k for k in kernels),
        "cache_name": cache_name("layers", op.name),
        "public": [(str(a), dims(a)) for a in public],
        "args": ", ".join(str(a) for a in public),
        "grads": ", ".join(f"d_{a}" for a in public),
        "dtype_name": str(public[0]),
        "initials": [s["initial"] for s in states],
        "state": str(rec.state),
        "states": states,
        "length": length,
        "upstream": f"d_{rec.state}",
        "sequences": sequences,
        "step_weights": in_step,
        "loop_args": [a["name"] for a in sequences] + [s["initial"] for s in states]
        + in_step + [s["name"] for s in states] + [str(a) for a in kept],
        "kept": [{"name": str(a), "at": time_slice(str(a), 1, "t"),
                  "shape": ", ".join(sized.doprint(d) for d in
                                     (*step.shape(a)[:1], rd.length, *step.shape(a)[1:]))}
                 for a in kept],
        "forward_call": f"_forward({', '.join(local[str(a)] for a in m.forward.arrays)})",
        "backward_call": f"_backward({', '.join(local[str(a)] for a in m.backward.arrays)})",
        "made": made,
        "made_shape": (f"{shape(projection.inputs[0]).rsplit(', ', 1)[0]}, "
                       f"{sized.doprint(step.shape(projection.out.base)[-1])}"
                       if projection is not None else None),
        "input_forward": calls[0],
        "input_backward": calls[1],
        "projection_weights": in_projection,
        "both": [w for w in in_step if w in in_projection],
        # The layer's inputs the step reads itself (not through the projection).
        "step_inputs": [str(a) for a in split.sequences if str(a) != made],
        "projected": [str(a) for a in projection.inputs] if projection is not None else [],
    }
    text = environment().get_template("kernels/recurrent.py.jinja").render(context)
    return with_hash(text)


def _rows(array, projection, step_weights=()) -> str:
    """An argument of the projection's kernels: a sequence as its N·T rows, a weight whole.

    A weight the step reads too has its projection's gradient written apart
    (``d_W_in``), to be added to the step's sum over time.
    """
    name = str(array)
    weights = {str(w) for w in projection.weights}
    if name in weights:
        return name
    if name.startswith("d_") and name[2:] in weights:
        return f"{name}_in" if name[2:] in {str(w) for w in step_weights} else name
    return f"{name}.reshape((-1,) + {name}.shape[2:])"
