"""Learning-rate schedules: small frozen records and one function, ``lr_at``.

A schedule maps a counter — the epoch when the loop steps it once per epoch, the
update when once per mini-batch; PyTorch calls it ``last_epoch`` either way — to a
learning rate. Each record's formula is the closed form of the PyTorch scheduler it is
named after, so rates compare one to one with ``torch.optim.lr_scheduler``.

Seed 003, §9.1, lists step decay α₀·γ^⌊t/s⌋, exponential decay α₀·e^(−kt) and cosine
annealing "α₀·cos(πt/T)". That last form turns negative after T/2; annealing means the
half cosine from α₀ down to α_min, ½(α₀ − α_min)(1 + cos(πt/T)) + α_min (Loshchilov and
Hutter, 2017), which is what :class:`CosineAnnealing` computes.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import singledispatch

from derive.errors import DeriveError
from derive.trainspec import SCHEDULES as PARAMETERS


def _require_positive(record, *names: str) -> None:
    for name in names:
        value = getattr(record, name)
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise DeriveError(f"{name} = {value!r} must be a positive number.",
                              where=f"{type(record).__name__} schedule")


@dataclass(frozen=True)
class Constant:
    """α_t = α₀."""

    lr: float


@dataclass(frozen=True)
class StepDecay:
    """α_t = α₀·γ^⌊t/s⌋ (``torch.optim.lr_scheduler.StepLR``).

    Parameters
    ----------
    lr : float
        α₀.
    step_size : int
        s, the number of counts between decays.
    gamma : float
        γ, the factor applied every ``step_size`` counts (PyTorch's default 0.1).
    """

    lr: float
    step_size: int
    gamma: float = 0.1

    def __post_init__(self):
        _require_positive(self, "lr", "step_size", "gamma")


@dataclass(frozen=True)
class ExponentialDecay:
    """α_t = α₀·γ^t (``torch.optim.lr_scheduler.ExponentialLR``).

    The notes' α₀·e^(−kt) is γ = e^(−k); see :meth:`from_rate`.
    """

    lr: float
    gamma: float

    def __post_init__(self):
        _require_positive(self, "lr", "gamma")

    @classmethod
    def from_rate(cls, lr: float, k: float) -> ExponentialDecay:
        """The notes' form α₀·e^(−kt)."""
        return cls(lr, math.exp(-k))


@dataclass(frozen=True)
class CosineAnnealing:
    """α_t = α_min + ½(α₀ − α_min)(1 + cos(πt/T)) (``CosineAnnealingLR``).

    Parameters
    ----------
    lr : float
        α₀, the rate at t = 0.
    t_max : int
        T, the count at which the rate reaches α_min (past it, the cosine rises again,
        as PyTorch's does).
    eta_min : float
        α_min.
    """

    lr: float
    t_max: int
    eta_min: float = 0.0

    def __post_init__(self):
        _require_positive(self, "lr", "t_max")


@dataclass(frozen=True)
class LinearWarmup:
    """A linear ramp from ``start_factor``·α to α over ``warmup`` counts, then ``after``.

    During the ramp the rate is ``after``'s first rate times
    start + (1 − start)·t/warmup (``torch.optim.lr_scheduler.LinearLR``); from t = warmup
    on it is ``after`` at t − warmup (``SequentialLR`` with milestone ``warmup``).
    """

    after: object
    warmup: int
    start_factor: float = 1.0 / 3.0

    def __post_init__(self):
        _require_positive(self, "warmup", "start_factor")


@singledispatch
def lr_at(schedule, t: int) -> float:
    """The learning rate of ``schedule`` at count ``t`` (0 for the first epoch or step).

    Parameters
    ----------
    schedule : Constant, StepDecay, ExponentialDecay, CosineAnnealing or LinearWarmup
        The schedule record.
    t : int
        The counter, from 0.

    Returns
    -------
    float
        The learning rate.
    """
    raise TypeError(f"no learning-rate rule for {type(schedule).__name__} — "
                    "did you add a new schedule?")


@lr_at.register
def _(schedule: Constant, t: int) -> float:
    return float(schedule.lr)


@lr_at.register
def _(schedule: StepDecay, t: int) -> float:
    return schedule.lr * schedule.gamma ** (t // schedule.step_size)


@lr_at.register
def _(schedule: ExponentialDecay, t: int) -> float:
    return schedule.lr * schedule.gamma**t


@lr_at.register
def _(schedule: CosineAnnealing, t: int) -> float:
    s = schedule
    return s.eta_min + (s.lr - s.eta_min) * (1 + math.cos(math.pi * t / s.t_max)) / 2


@lr_at.register
def _(schedule: LinearWarmup, t: int) -> float:
    if t >= schedule.warmup:
        return lr_at(schedule.after, t - schedule.warmup)
    start = schedule.start_factor
    return lr_at(schedule.after, 0) * (start + (1 - start) * t / schedule.warmup)


#: Schedule names in a spec's ``[train]`` table → (record, its parameters' names).
SCHEDULES = {name: (record, PARAMETERS[name]) for name, record in (
    ("constant", Constant), ("step", StepDecay), ("exponential", ExponentialDecay),
    ("cosine", CosineAnnealing))}


def from_spec(spec, lr: float, epochs: int):
    """Build a schedule from a spec's ``schedule`` entry.

    Parameters
    ----------
    spec : None, str or mapping
        ``None`` or a name (``"constant"``, ``"step"``, ``"exponential"``, ``"cosine"``),
        or a table ``{name = ..., <parameters>, warmup = n, start_factor = f}``.
        ``exponential`` takes ``gamma`` or the notes' rate ``k``; ``cosine``'s ``t_max``
        defaults to ``epochs``, ``step``'s ``step_size`` to a tenth of them.
    lr : float
        α₀.
    epochs : int
        The run's length, for the defaults above.

    Raises
    ------
    DeriveError
        For an unknown name or parameter, naming the close matches.
    """
    if spec is None:
        return Constant(lr)
    table = {"name": spec} if isinstance(spec, str) else dict(spec)
    if not isinstance(spec, str | Mapping) or not isinstance(table.get("name"), str):
        raise DeriveError("a schedule is a name or a table with a name, e.g. "
                          '{name = "cosine"}.', where="schedule")
    name = table.pop("name").strip().lower()
    warmup = {k: table.pop(k) for k in ("warmup", "start_factor") if k in table}
    if name not in SCHEDULES:
        close = difflib.get_close_matches(name, SCHEDULES, n=2)
        raise DeriveError(f"unknown learning-rate schedule {name!r}.", where="schedule",
                          fix=f"Did you mean {' or '.join(close)}?" if close
                          else f"Use one of: {', '.join(SCHEDULES)}.")
    record, allowed = SCHEDULES[name]
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise DeriveError(f"the {name} schedule has no parameter {', '.join(unknown)}.",
                          where="schedule", fix=f"Its parameters: {', '.join(allowed) or 'none'}.")
    if name == "exponential":
        schedule = (ExponentialDecay.from_rate(lr, table["k"]) if "k" in table
                    else ExponentialDecay(lr, table.get("gamma", 0.95)))
    elif name == "step":
        schedule = StepDecay(lr, int(table.get("step_size", max(epochs // 10, 1))),
                             table.get("gamma", 0.1))
    elif name == "cosine":
        schedule = CosineAnnealing(lr, int(table.get("t_max", max(epochs, 1))),
                                   table.get("eta_min", 0.0))
    else:
        schedule = record(lr)
    if warmup:
        return LinearWarmup(schedule, int(warmup.get("warmup", 0)) or 1,
                            warmup.get("start_factor", 1.0 / 3.0))
    return schedule
