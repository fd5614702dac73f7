"""Checks that prove generated kernels right; shared by the tests and ``derive check``."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from functools import singledispatch
from pathlib import Path
from types import ModuleType

import numpy as np

from derive.calculus.derivation import derive_activation
from derive.calculus.verify import sample_points
from derive.errors import DeriveError
from derive.spec import Activation


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
    """Import a generated module from its file (Numba's cache needs a real file)."""
    path = Path(path).resolve()
    if not path.is_file():
        raise DeriveError(
            "the generated module does not exist.", where=str(path),
            fix="Generate it first with `derive kernels NAME` (or --all).",
        )
    name = f"_derive_generated_{path.parent.name}_{path.stem}"
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
