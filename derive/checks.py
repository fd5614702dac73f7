"""Checks that prove generated kernels right; shared by the tests and ``derive check``."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from dataclasses import astuple, dataclass
from functools import singledispatch
from pathlib import Path
from types import ModuleType

import numpy as np

from derive.calculus.derivation import derive_activation
from derive.calculus.verify import sample_points
from derive.errors import DeriveError
from derive.spec import Activation, Layer, Loss, Optimizer, VectorFunction


@dataclass(frozen=True)
class Tolerances:
    """Every tolerance the checks use, in one place.

    Central differences with step h·max(1, |x|) have truncation error O(h²) and rounding
    error O(ε/h); h = 1e-6 balances them near 1e-10, so 1e-6 relative leaves margin.
    """

    fd_step: float = 1e-6
    fd_rtol: float = 1e-6
    fd_atol: float = 1e-8
    #: Samples stay this far from kinks so that x ± h never straddles one.
    kink_margin: float = 1e-3
    #: An optimizer kernel against its equations in 30 digits: a few roundings per step.
    update_rtol: float = 1e-12
    #: A module's forward against its declaration's value in 30 digits. Far looser than
    #: float64 needs (stable rewrites round differently), far tighter than any other
    #: function agrees with it (tanh and sigmoid differ by up to 0.5).
    declaration_rtol: float = 1e-9


TOL = Tolerances()


@dataclass(frozen=True)
class CheckResult:
    """The outcome of comparing one gradient with finite differences."""

    name: str
    quantity: str
    max_abs_error: float
    max_rel_error: float
    passed: bool


def load_module(path: Path) -> ModuleType:
    """Import a generated module from its file (Numba's cache needs a real file).

    Parameters
    ----------
    path : Path
        The generated ``.py`` file.

    Returns
    -------
    ModuleType
        The module, executed afresh and registered in sys.modules under a name made from
        its path. Whatever the name, the module's Numba cache loads: each generated module
        also registers itself under the fixed name its cache records.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise DeriveError(
            "the generated module does not exist.", where=str(path),
            fix="Generate it first with `derive kernels NAME` (or --all); if it was "
                "written elsewhere with -o DIR, check it there with `derive check NAME -o DIR`.",
        )
    # The path's digest keeps same-named modules of two folders from replacing each other.
    digest = hashlib.sha256(str(path).encode("utf-8", "surrogateescape")).hexdigest()[:12]
    name = f"_derive_generated_{path.parent.name}_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _compare(name, quantity, analytic, numeric) -> CheckResult:
    analytic, numeric = np.asarray(analytic, float), np.asarray(numeric, float)
    err = np.abs(analytic - numeric)
    rel = err / np.maximum(np.abs(numeric), 1e-300)
    ok = bool(np.all(err <= TOL.fd_atol + TOL.fd_rtol * np.abs(numeric)))
    return CheckResult(name, quantity, float(err.max(initial=0)), float(rel.max(initial=0)), ok)


@singledispatch
def finite_difference_check(op, module: ModuleType, seed: int = 0) -> list[CheckResult]:
    """Compare a generated module's backward with central finite differences (float64)."""
    raise TypeError(f"no finite-difference check for {type(op).__name__}")


@finite_difference_check.register
def _(op: Activation, module: ModuleType, seed: int = 0) -> list[CheckResult]:
    kinks = derive_activation(op).kinks
    x = np.array(sample_points(op, kinks, n=64, seed=seed), dtype=np.float64)
    params = {p.name: p.default for p in op.params}
    modes = [{"training": False}, {"training": True, "seed": seed}] if op.stochastic else [{}]
    results = []
    for mode in modes:
        label = f" ({'training' if mode.get('training') else 'evaluation'})" if mode else ""
        y = module.forward(x, **params, **mode)
        keep = np.isfinite(y)  # custom formulas may be undefined on part of the domain
        xs, ys = x[keep], y[keep]
        h = TOL.fd_step * np.maximum(1.0, np.abs(xs))
        fd = (module.forward(xs + h, **params, **mode)
              - module.forward(xs - h, **params, **mode)) / (2 * h)
        grads = module.backward(xs, ys, np.ones_like(xs), **params, **mode)
        d_x = grads[0] if isinstance(grads, tuple) else grads
        results.append(_compare(op.name, "d_x" + label, d_x, fd))
        for k, p in enumerate(op.learnable, start=1):
            step = TOL.fd_step * max(1.0, abs(p.default))
            up = module.forward(xs, **(params | {p.name: p.default + step}), **mode).sum()
            down = module.forward(xs, **(params | {p.name: p.default - step}), **mode).sum()
            results.append(_compare(op.name, f"d_{p.name}" + label, grads[k],
                                    (up - down) / (2 * step)))
    return results


def _outputs(result) -> tuple:
    """A forward's outputs as a tuple: a recurrence returns (states, last state)."""
    return result if isinstance(result, tuple) else (result,)


def _flat(result) -> np.ndarray:
    """Every output of a forward, one array (the only one's shape when there is one)."""
    outs = [np.asarray(r, dtype=float) for r in _outputs(result)]
    return outs[0] if len(outs) == 1 else np.concatenate([np.ravel(r) for r in outs])


def _call_module(op, module: ModuleType, *args, **kwargs) -> np.ndarray:
    """Call the module's forward; any failure means it is not this op's module."""
    try:
        return _flat(module.forward(*args, **kwargs))
    except Exception as exc:  # noqa: BLE001 — a foreign module may raise anything
        text = str(exc).strip().splitlines()
        raise DeriveError(
            f"this module does not compute {op.kind} {op.name!r}: its forward raised "
            f"{type(exc).__name__} ({text[0][:120] if text else 'no message'}).",
            where=str(getattr(module, "__file__", module.__name__)),
            fix=f"Regenerate it with `derive kernels {op.name}`.") from None


def _against_declaration(op, module, got, want) -> CheckResult:
    got, want = np.asarray(got, float), np.asarray(want, float)
    if got.shape != want.shape:
        raise DeriveError(
            f"this module does not compute {op.kind} {op.name!r}: its forward returns shape "
            f"{got.shape}, the declaration {want.shape}.",
            where=str(getattr(module, "__file__", module.__name__)),
            fix=f"Regenerate it with `derive kernels {op.name}`.")
    err = np.abs(got - want)
    scale = np.maximum(np.abs(want), 1.0)
    ok = bool(np.all(err <= TOL.declaration_rtol * scale))  # NaN compares False: a failure
    rel = err / scale
    return CheckResult(op.name, "forward = declaration", float(np.nanmax(err, initial=0)),
                       float(np.nanmax(rel, initial=0)) if ok else float(np.max(rel)), ok)


@singledispatch
def declaration_check(op, module: ModuleType, seed: int = 0) -> list[CheckResult]:
    """Compare a module's forward with its declaration's value at seeded sample points.

    The finite-difference check only proves backward consistent with the module's own
    forward; this proves the forward is the declared function, evaluated from the
    declaration in 30-digit arithmetic. A module generated for another op (tanh's
    kernels saved as ``sigmoid.py``) fails here.

    Returns
    -------
    list of CheckResult
        One row (none for kinds whose check is against their equations already).

    Raises
    ------
    DeriveError
        When the module's forward cannot even be called as this op's.

    """
    return []  # optimizers: checked against their equations by optimizer_check


@declaration_check.register
def _(op: Layer, module: ModuleType, seed: int = 0) -> list[CheckResult]:
    # A layer's declaration is a sum over indexed arrays with intermediate steps, padding
    # and strides; its reference is the module derive writes from that declaration now
    # (the generator the test suite checks against PyTorch), run on the same inputs.
    import tempfile

    from derive.codegen.emit import RUNTIME_NAME, runtime_text
    from derive.pipeline import render_module

    reference_text = render_module(op, f"the declaration {op.name!r}", "derive check")
    with tempfile.TemporaryDirectory(prefix="derive-check-") as folder:
        path = Path(folder) / f"{op.name}.py"
        path.write_text(reference_text, encoding="utf-8")
        (Path(folder) / RUNTIME_NAME).write_text(runtime_text(), encoding="utf-8")
        reference = load_module(path)
        arrays, hyper = _layer_samples(op, np.random.default_rng(seed))
        want = _flat(reference.forward(*[a.copy() for a in arrays], **hyper))
    got = _call_module(op, module, *[a.copy() for a in arrays], **hyper)
    return [_against_declaration(op, module, got, want)]


@declaration_check.register
def _(op: Activation, module: ModuleType, seed: int = 0) -> list[CheckResult]:
    from derive.calculus.verify import evaluate
    from derive.spec import x as x_symbol

    kinks = derive_activation(op).kinks
    xs = np.array(sample_points(op, kinks, n=16, seed=seed), dtype=np.float64)
    params = {p.name: p.default for p in op.params}
    values = dict(op.defaults)
    expr = op.expr.xreplace({n.symbol: n.eval_value for n in op.noise}).xreplace(values)
    mode = {"training": False} if op.stochastic else {}
    got = _call_module(op, module, xs.copy(), **params, **mode)
    want = [evaluate(expr, {x_symbol: float(v)}) for v in xs]
    return [_against_declaration(op, module, got, want)]


def _declared_sum(op, expr, values: dict) -> float:
    import sympy as sp

    from derive.calculus.indexed import lse
    from derive.calculus.verify import evaluate

    # lse is opaque to doit(); written as log Σ exp, its sum expands like the others.
    expr = expr.replace(lambda e: isinstance(e, lse), lambda e: e.rewrite(sp.log)).doit()
    # The arrays' elements become numbers; KroneckerDelta of integer labels folds itself.
    numbers = {a: values[(a.base, *map(int, a.indices))]
               for a in expr.atoms(sp.Indexed) if (a.base, *map(int, a.indices)) in values}
    return evaluate(expr.xreplace(numbers), {})


@declaration_check.register
def _(op: Loss, module: ModuleType, seed: int = 0) -> list[CheckResult]:
    import sympy as sp

    from derive.calculus.derivation import LABELS
    from derive.calculus.indexed import K, N, k, n

    results = []
    for encoding in getattr(module, "ENCODINGS", op.targets):
        pred, target = loss_samples(op, encoding, seed=seed)
        rows, classes = pred.shape
        values = {(op.pred, i, c): float(pred[i, c]) for i in range(rows)
                  for c in range(classes)}
        term = op.term.xreplace({p.symbol: p.default for p in op.params})
        if encoding == "index":
            labels = {LABELS[i]: int(target[i]) for i in range(rows)}
            term = term.xreplace({op.target[n, k]: sp.KroneckerDelta(k, LABELS[n])})
        else:
            labels = {}
            values |= {(op.target, i, c): float(target[i, c]) for i in range(rows)
                       for c in range(classes)}
        whole = (op.scale * sp.Sum(sp.Sum(term, (k, 0, K - 1)), (n, 0, N - 1)))
        whole = whole.xreplace({N: rows, K: classes})
        want = _declared_sum(op, whole.doit().xreplace(labels), values)
        got = _call_module(op, module, pred.copy(), target.copy())
        result = _against_declaration(op, module, got, want)
        results.append(CheckResult(result.name, f"{result.quantity} ({encoding} targets)",
                                   *astuple(result)[2:]))
    return results


@declaration_check.register
def _(op: VectorFunction, module: ModuleType, seed: int = 0) -> list[CheckResult]:
    from derive.calculus.indexed import K, N, k, n

    rng = np.random.default_rng(seed)
    z = rng.uniform(*op.domain, (3, 4))
    values = {(op.arg, i, c): float(z[i, c]) for i in range(3) for c in range(4)}
    out = op.out.xreplace({N: 3, K: 4})
    want = np.array([[_declared_sum(op, out.xreplace({n: i, k: c}), values)
                      for c in range(4)] for i in range(3)])
    got = _call_module(op, module, z.copy())
    return [_against_declaration(op, module, got, want)]


def loss_samples(op: Loss, encoding: str, shape=(4, 3), seed: int = 0):
    """Seeded (pred, target) pairs of the kind the loss is defined on, in float64."""
    rng = np.random.default_rng(seed)
    rows, classes = shape
    pred = {
        "probabilities": lambda: rng.uniform(0.05, 0.95, shape),
        "logits": lambda: rng.uniform(-3, 3, shape),
    }.get(op.samples, lambda: rng.uniform(-2, 2, shape))()
    if encoding == "index":
        return pred, rng.integers(0, classes, rows)
    target = {
        # Rows that sum to one satisfy every declared target identity.
        "probabilities": lambda: rng.dirichlet(np.ones(classes), rows),
        "logits": lambda: rng.dirichlet(np.ones(classes), rows),
        "signs": lambda: rng.choice([-1.0, 1.0], shape),
        "binary": lambda: rng.integers(0, 2, shape).astype(float),
    }.get(op.samples, lambda: rng.uniform(-2, 2, shape))()
    return pred, target


@finite_difference_check.register
def _(op: Loss, module: ModuleType, seed: int = 0) -> list[CheckResult]:
    results = []
    for encoding in module.ENCODINGS:
        pred, target = loss_samples(op, encoding, seed=seed)
        analytic = module.backward(pred, target)
        numeric = np.empty_like(pred)
        for index in np.ndindex(pred.shape):
            h = TOL.fd_step * max(1.0, abs(pred[index]))
            up, down = pred.copy(), pred.copy()
            up[index] += h
            down[index] -= h
            numeric[index] = (module.forward(up, target) - module.forward(down, target)) / (2 * h)
        results.append(_compare(op.name, f"d_pred ({encoding} targets)", analytic, numeric))
    return results


@finite_difference_check.register
def _(op: VectorFunction, module: ModuleType, seed: int = 0) -> list[CheckResult]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(*op.domain, (3, 5))
    d_y = rng.uniform(-1, 1, x.shape)
    y = module.forward(x)
    analytic = module.backward(x, y, d_y)
    numeric = np.empty_like(x)
    for index in np.ndindex(x.shape):
        h = TOL.fd_step * max(1.0, abs(x[index]))
        up, down = x.copy(), x.copy()
        up[index] += h
        down[index] -= h
        numeric[index] = np.sum(d_y * (module.forward(up) - module.forward(down))) / (2 * h)
    return [_compare(op.name, "d_x (vector-Jacobian product)", analytic, numeric)]


@finite_difference_check.register
def _(op: Optimizer, module: ModuleType, seed: int = 0) -> list[CheckResult]:
    # An optimizer has no derivative to difference; its check is against its equations.
    return optimizer_check(op, module, seed)


def optimizer_check(op: Optimizer, module: ModuleType, seed: int = 0, steps: int = 3,
                    size: int = 5) -> list[CheckResult]:
    """Run a generated optimizer a few steps and compare with its declared equations.

    The equations are evaluated statement by statement in 30-digit arithmetic at the same
    float64 inputs (seeded weights and a fresh gradient each step, default
    hyper-parameters); the kernel's weights and per-element slots must agree to
    ``TOL.update_rtol`` relative to the largest value.

    Parameters
    ----------
    op : Optimizer
        The declaration.
    module : module
        Its generated module.
    seed : int
        Seed of the weights and gradients.
    steps, size : int
        How many updates, of how many elements.

    Returns
    -------
    list of CheckResult
        One row for the weights and one per per-element slot.
    """
    from derive.calculus.verify import evaluate
    from derive.spec import g, t, w

    rng = np.random.default_rng(seed)
    w0 = rng.uniform(-1.0, 1.0, size)
    grads = rng.normal(size=(steps, size))
    hyper = {p.name: p.default for p in op.params}
    params = [w0.copy()]
    state = module.init_state(params)
    for k in range(steps):
        module.step(params, [grads[k].copy()], state, t=k + 1, **hyper)
    slots = [s for s in op.state if not s.per_step]
    got = {w: params[0]} | {s.symbol: state[0][op.state.index(s)] for s in slots}
    want = {symbol: np.empty(size) for symbol in got}
    for i in range(size):
        values = op.defaults | {s.symbol: s.init for s in op.state} | {w: w0[i]}
        for k in range(steps):
            values |= {g: grads[k, i], t: k + 1}
            for target, rhs in op.updates:
                values[target] = evaluate(rhs, values)
        for symbol in want:
            want[symbol][i] = values[symbol]
    results = []
    for symbol in got:
        err = np.abs(got[symbol] - want[symbol])
        scale = np.max(np.abs(want[symbol]))
        rel = err / max(scale, 1e-300)
        results.append(CheckResult(op.name, f"{symbol.name} after {steps} steps",
                                   float(err.max()), float(rel.max()),
                                   bool(np.all(rel <= TOL.update_rtol))))
    return results


@finite_difference_check.register
def _(op: Layer, module: ModuleType, seed: int = 0) -> list[CheckResult]:
    rng = np.random.default_rng(seed)
    arrays, hyper = _layer_samples(op, rng)
    differentiable = len(op.inputs) + len(op.weights)
    # One upstream gradient per output (a recurrence's states and its last state).
    d_outs = [rng.normal(size=out.shape) for out in _outputs(module.forward(*arrays, **hyper))]
    analytic = module.backward(*arrays, *d_outs, **hyper)
    names = module.forward.__code__.co_varnames
    results = []
    # Integer inputs (token ids) come first and have no gradient.
    for k in range(len(op.indices), len(op.indices) + differentiable):
        array = arrays[k]
        numeric = np.empty_like(array)
        for index in np.ndindex(array.shape):
            h = TOL.fd_step * max(1.0, abs(array[index]))
            up = [a.copy() for a in arrays]
            down = [a.copy() for a in arrays]
            up[k][index] += h
            down[k][index] -= h
            ups = _outputs(module.forward(*up, **hyper))
            downs = _outputs(module.forward(*down, **hyper))
            numeric[index] = sum(np.sum(d * (u - v))
                                 for d, u, v in zip(d_outs, ups, downs, strict=True)) / (2 * h)
        results.append(_compare(op.name, f"d_{names[k]}", analytic[k - len(op.indices)],
                                numeric))
    return results


def _layer_samples(op: Layer, rng) -> tuple[list[np.ndarray], dict]:
    """Seeded arrays for a layer's public arguments, and its default hyper-parameters."""
    import sympy as sp

    first, last = len(op.indices), len(op.indices) + len(op.inputs) + len(op.weights)
    shapes, sizes = _small_layer_shapes(op)
    # Buffers are running variances and means: positive values are valid for both.
    arrays = [rng.normal(size=s) if first <= k < last else np.abs(rng.normal(size=s)) + 0.5
              for k, s in enumerate(shapes)]
    # Token ids: more tokens than rows of the table, so some repeat.
    for k, base in enumerate(op.indices):
        bound = int(sp.sympify(op.index_range(base)).xreplace(sizes))
        arrays[k] = rng.integers(0, bound, size=shapes[k])
    return arrays, {p.name: p.default for p in op.hyper}


def _small_layer_shapes(op: Layer) -> tuple[list[tuple[int, ...]], dict]:
    """Small concrete shapes for a layer's public arrays (spatial axes at least 5).

    Returns them with the sizes they give (size symbol → value).
    """
    import sympy as sp

    padded, original, _ = op.padding or (None, None, None)
    public = list(op.indices) + [original if a == padded else a for a in op.inputs]
    public += list(op.weights) + list(op.buffers)
    shapes = dict(op.arrays)
    sizes: dict = {}
    values = iter([2, 3, 5, 6, 3, 2, 3, 2, 3, 2, 3])
    concrete = []
    for position, array in enumerate(public):
        dims = []
        for axis, d in enumerate(shapes[array]):
            d = sp.sympify(d)
            if not d.is_Symbol and d.free_symbols <= set(sizes):
                # A size in others already drawn (an LSTM's 4H rows of gate weights).
                sizes[d] = int(d.xreplace(sizes))
            if d not in sizes:
                spatial = position == 0 and len(shapes[array]) == 4 and axis >= 2
                sizes[d] = max(next(values), 5) if spatial else next(values)
            dims.append(sizes[d])
        concrete.append(tuple(dims))
    return concrete, sizes
