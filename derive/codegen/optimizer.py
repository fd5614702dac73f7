"""Optimizer declaration → kernel IR → generated module text.

An optimizer's update equations become one fused loop per parameter array. Everything
that is the same for every element of the array — the step count's powers, NAdam's
momentum schedule, the bias corrections — is computed once per call, before the loop;
the per-element statements are the declared ones, in the declared order.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp
from sympy.printing.str import StrPrinter

from derive.codegen.emit import (
    cache_name,
    environment,
    header_lines,
    runtime_helpers,
    with_hash,
)
from derive.codegen.ir import Assign, Scalar
from derive.codegen.lower import fold_constants
from derive.codegen.printer import NumbaPrinter
from derive.spec import Optimizer, Slot, g, t, w


@dataclass(frozen=True)
class StateSlot:
    """A state slot as the generated module allocates it."""

    name: str
    init: float
    per_step: bool


@dataclass(frozen=True)
class OptimizerModule:
    """Everything the optimizer template needs to write one generated module.

    ``prologue`` runs once per call of the kernel (per-step quantities, per-step slots
    and hoisted constants); ``body`` runs for every element, reading the element inputs
    and the ``scalars`` and producing ``outputs`` (the new weight and per-element slots).
    """

    name: str
    title: str
    source: str
    reference: str
    params: tuple[Scalar, ...]
    slots: tuple[StateSlot, ...]
    uses_step: bool
    prologue: tuple[Assign, ...]
    inputs: tuple[sp.Symbol, ...]
    scalars: tuple[sp.Symbol, ...]
    body: tuple[Assign, ...]
    outputs: tuple[sp.Symbol, ...]
    per_step_slots: tuple[sp.Symbol, ...]
    equations: tuple[tuple[str, str], ...]


def fold_numbers(expr: sp.Expr) -> sp.Expr:
    """:func:`fold_constants`, except that rational exponents stay exact.

    √s must stay a square root (the printer writes ``math.sqrt``), not ``s**0.5``.
    """
    if isinstance(expr, sp.Pow) and expr.exp.is_Rational:
        return sp.Pow(fold_numbers(expr.base), expr.exp)
    if expr.is_Atom:
        return fold_constants(expr)
    return expr.func(*(fold_numbers(a) for a in expr.args))


class UpdatePrinter(NumbaPrinter):
    """The NumbaPrinter, with sums in SymPy's own argument order.

    That order prints ``w - g*lr`` as the equations are written; the default ordering
    of terms would print ``-g*lr + w``.
    """

    def _print_Add(self, expr, order=None):
        return super()._print_Add(expr, order="none")


class EquationPrinter(StrPrinter):
    """SymPy's str printer with sums in argument order, for the docstring's equations."""

    def _print_Add(self, expr, order=None):
        return super()._print_Add(expr, order="none")


def _worth_hoisting(expr: sp.Expr, per_step: set) -> bool:
    """Whether computing ``expr`` once per call saves work in the loop.

    Powers, functions and anything that changes with the step do; plain arithmetic on
    hyper-parameters (1 − β₁) costs one instruction and reads better inline.
    """
    if expr.is_Atom:
        return False
    return bool(
        expr.free_symbols & per_step
        or expr.atoms(sp.Function)
        or any(not p.exp.is_Integer or p.exp < 0 for p in expr.atoms(sp.Pow))
    )


def hoist_invariants(expr: sp.Expr, varying: frozenset, per_step: set,
                     constants: dict) -> sp.Expr:
    """Replace the largest loop-invariant pieces of ``expr`` by named constants.

    Parameters
    ----------
    expr : sympy.Expr
        A per-element right-hand side.
    varying : frozenset of sympy.Symbol
        Symbols that differ between elements.
    per_step : set of sympy.Symbol
        Symbols that change with the step (t, per-step intermediates and slots).
    constants : dict
        Invariant expression → its constant's symbol; extended in place, so identical
        pieces share one constant.

    Returns
    -------
    sympy.Expr
        ``expr`` with the hoisted pieces replaced.
    """

    def name(piece):
        if piece not in constants:
            constants[piece] = sp.Symbol(f"k{len(constants)}", real=True)
        return constants[piece]

    def invariant(e):
        return not (e.free_symbols & varying)

    def visit(e):
        if e.is_Atom:
            return e
        if invariant(e):
            return name(e) if _worth_hoisting(e, per_step) else e
        if isinstance(e, sp.Pow) and invariant(e.base) and _worth_hoisting(e.base, per_step):
            return sp.Pow(name(e.base), visit(e.exp))
        if isinstance(e, sp.Mul | sp.Add):
            fixed = [a for a in e.args if invariant(a)]
            moving = [visit(a) for a in e.args if not invariant(a)]
            together = e.func(*fixed)
            if not _worth_hoisting(together, per_step):
                return e.func(*fixed, *moving)
            divisors = [a for a in fixed if isinstance(a, sp.Pow) and a.exp == -1
                        and _worth_hoisting(a.base, per_step)]
            rest = e.func(*[a for a in fixed if a not in divisors])
            if isinstance(e, sp.Mul) and divisors and not _worth_hoisting(rest, per_step):
                # Only the divisor changes with the step: keep it a division of the
                # element's value (m / (1 − β₁ᵗ) → m / k0), as the equations read.
                return e.func(rest, *(sp.Pow(name(d.base), -1) for d in divisors), *moving)
            return e.func(name(together), *moving)
        return e.func(*(visit(a) for a in e.args))

    return visit(expr)


def lower_optimizer(op: Optimizer, source: str) -> OptimizerModule:
    """Lower an optimizer's declaration to the IR of its generated module.

    Parameters
    ----------
    op : Optimizer
        The declaration.
    source : str
        What the generated file's header names as its source.
    """
    varying = op.varying
    per_step = {t} | {target for target, _ in op.updates if target not in varying}
    constants: dict = {}
    prologue, body = [], []
    for target, rhs in op.updates:
        rhs = fold_numbers(rhs)
        if target in varying:
            body.append(Assign(target, hoist_invariants(rhs, varying, per_step, constants)))
        else:
            prologue.append(Assign(target, rhs))
    prologue += [Assign(symbol, piece) for piece, symbol in constants.items()]
    element_slots = tuple(s.symbol for s in op.state if not s.per_step)
    inputs = (w, g, *element_slots)
    used = set().union(*(a.expr.free_symbols for a in body)) - set(inputs)
    used -= {a.target for a in body}
    # Hyper-parameters in declared order, then per-step values in computed order.
    order = [p.symbol for p in op.params] + [a.target for a in prologue]
    order += [s.symbol for s in op.state if s.per_step]
    scalars = tuple(dict.fromkeys(s for s in order if s in used))
    return OptimizerModule(
        name=op.name, title=op.title, source=source, reference=op.reference,
        params=tuple(Scalar(p.name, float(p.default), False) for p in op.params),
        slots=tuple(_state_slot(s) for s in op.state),
        uses_step=op.uses_step,
        prologue=tuple(prologue),
        inputs=inputs,
        scalars=scalars,
        body=tuple(body),
        outputs=(w, *element_slots),
        per_step_slots=tuple(s.symbol for s in op.state if s.per_step),
        equations=tuple((target.name, EquationPrinter().doprint(rhs))
                        for target, rhs in op.updates),
    )


def affine_update(op: Optimizer) -> tuple[sp.Expr, sp.Expr] | None:
    """(β, α) when the update is ``w ← β w + α g`` with β and α fixed for the step.

    Read off the declaration by SymPy: β = ∂w'/∂w and α = ∂w'/∂g of the new weight w'
    (:attr:`~derive.spec.Optimizer.expr`) must hold hyper-parameters only, and w' − β w −
    α g must vanish. Gradient descent qualifies (β = 1, α = −η), also with a coupled L2
    penalty (β = 1 − ηλ); an optimizer with state (momentum, Adam) does not, nor an L1
    penalty (sign(w)), a clipped gradient, or a value read from the whole step's
    gradients first (the norm clipping by norm divides by). Such an update can be done by
    the weight gradient's own GEMM (``w ← α A B + β w``).

    Parameters
    ----------
    op : Optimizer
        The declaration, after :func:`~derive.calculus.regularise.regularised`.

    Returns
    -------
    tuple of sympy.Expr or None
        (β, α), in the optimizer's parameters; None when the update is not of that form.
    """
    if op.state or any(p.per_call for p in op.params):
        return None
    new = op.expr
    beta, alpha = sp.diff(new, w), sp.diff(new, g)
    fixed = {p.symbol for p in op.params}
    if not (beta.free_symbols | alpha.free_symbols) <= fixed or alpha == 0:
        return None
    if sp.expand(new - beta * w - alpha * g) != 0:
        return None
    return beta, alpha


def _state_slot(slot: Slot) -> StateSlot:
    return StateSlot(slot.name, float(slot.init), slot.per_step)


def slot_init(slot: StateSlot, like: str = "w") -> str:
    """The expression that allocates a slot's initial array, at its declared value.

    Both the optimizer's module and a network module that embeds the optimizer set their
    state up with it, so the two start alike (NAdam's μ product at 1, not 0).

    Parameters
    ----------
    slot : StateSlot
        A lowered state slot.
    like : str
        The name of the parameter array a per-element slot takes its shape and dtype from.

    Returns
    -------
    str
        A NumPy expression: a float64 array of shape (1,) for a per-step slot, else an
        array like the parameter's.
    """
    if slot.per_step:
        return f"np.full(1, {slot.init!r})"
    if slot.init == 0.0:
        return f"np.zeros_like({like})"
    return f"np.full_like({like}, {slot.init!r})"


def render_optimizer(m: OptimizerModule, param_names: dict, command: str) -> str:
    """Render the generated module of one optimizer.

    Parameters
    ----------
    m : OptimizerModule
        The lowered optimizer.
    param_names : dict
        Hyper-parameter symbol → its keyword in generated code.
    command : str
        The command that regenerates the file, for its header.

    Returns
    -------
    str
        The module's text, hash line included.
    """
    names = [p.name for p in m.params]
    slot_names = [s.name for s in m.slots]
    per_step = [s.name for s in m.slots if s.per_step]
    update, helpers = _update_context(m, param_names, PARALLEL_FLAVOURS)
    context = update | {
        "cache_name": cache_name("optimizers", m.name),
        "header": header_lines(m.source, command),
        "param_sig": "".join(f", {p.name}={p.default!r}" for p in m.params[1:]),
        "lr_default": m.params[0].default,
        "call_params": ", ".join(f"float({n})" for n in names),
        "slots_tuple": "(" + ", ".join(f'"{s}"' for s in slot_names)
        + ("," if len(slot_names) == 1 else "") + ")",
        "per_step_tuple": "(" + ", ".join(str(s.per_step) for s in m.slots)
        + ("," if len(slot_names) == 1 else "") + ")",
        "slot_init": {s.name: slot_init(s) for s in m.slots},
        "per_step_doc": (f"{', '.join(per_step)} holds one float64 value per parameter array"
                         if per_step else ""),
        "helpers": runtime_helpers(helpers),
    }
    text = environment().get_template("kernels/optimizer.py.jinja").render(context)
    return with_hash(text)


#: The update loop's flavours: (name suffix, decorator, loop range).
SERIAL_FLAVOUR = ("", 'njit(cache=True, error_model="numpy")', "range")
PARALLEL_FLAVOURS = (SERIAL_FLAVOUR,
                     ("_parallel", 'njit(cache=True, error_model="numpy", parallel=True)',
                      "prange"))


def _update_context(m: OptimizerModule, param_names: dict, flavours,
                    name: str = "update") -> tuple[dict, set]:
    """What ``kernels/_update.jinja`` prints, and the runtime helpers it calls."""
    # Inside the kernel a per-step slot lives in element 0 of its one-element array.
    in_kernel = UpdatePrinter(param_names | {s: f"{s.name}[0]" for s in m.per_step_slots})
    in_element = UpdatePrinter(param_names)
    prologue = [f"{in_kernel.doprint(a.target)} = {in_kernel.doprint(a.expr)}"
                for a in m.prologue]
    body = [f"{in_element.doprint(a.target)} = {in_element.doprint(a.expr)}" for a in m.body]
    slot_names = [s.name for s in m.slots]
    element_slots = [s.name for s in m.slots if not s.per_step]
    step_arg = ", t" if m.uses_step else ""
    context = {
        "m": m,
        "update_name": name,
        "flavours": flavours,
        "kernel_args": ", ".join(["w", "g", *slot_names, *(p.name for p in m.params)])
        + step_arg,
        "element_args": ", ".join(in_element.doprint(s) for s in (*m.inputs, *m.scalars)),
        "element_call": ", ".join(
            [f"{n}[i]" for n in ["w", "g", *element_slots]]
            + [in_kernel.doprint(s) for s in m.scalars]
        ),
        "element_targets": ", ".join(f"{n}[i]" for n in ["w", *element_slots]),
        "returns": ", ".join(in_element.doprint(s) for s in m.outputs),
        "prologue": prologue,
        "body": body,
    }
    return context, in_kernel.helpers | in_element.helpers


def render_update(m: OptimizerModule, param_names: dict, name: str) -> tuple[str, set]:
    """The update kernel of one optimizer as another module embeds it.

    A network module calls it from its own jitted train step: ``_update_element`` and one
    serial loop over a flat parameter array, named ``name``, with the arguments of the
    optimizer module's ``update``.

    Parameters
    ----------
    m : OptimizerModule
        The lowered optimizer.
    param_names : dict
        Hyper-parameter symbol → its name in the kernel's arguments.
    name : str
        The loop function's name.

    Returns
    -------
    source : str
        The two functions' source.
    helpers : set of str
        The runtime helpers the source calls.
    """
    context, helpers = _update_context(m, param_names, (SERIAL_FLAVOUR,), name)
    return environment().get_template("kernels/_update.jinja").render(context), helpers
