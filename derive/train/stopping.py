"""Early stopping: watch a validation measure, stop when it no longer improves.

The rule (Keras' ``EarlyStopping``): an epoch improves on the best so far when its
validation loss is lower by more than ``min_delta`` (its accuracy higher by more than
``min_delta``); after ``patience`` epochs in a row without an improvement, training stops,
and with ``restore_best`` the parameters go back to those of the best epoch. The notes'
diagnosis table says the same in words: when the validation loss worsens while the
training loss improves, stop earlier.

The counters (best epoch, best value, epochs waited) and the best parameters are saved in
every checkpoint, so a resumed run stops where the uninterrupted one would.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from derive.errors import DeriveError
from derive.trainspec import EARLY_STOPPING, MONITORS


@dataclass(frozen=True)
class EarlyStopping:
    """The settings of early stopping (a spec's ``[train] early_stopping`` table).

    Attributes
    ----------
    patience : int
        Epochs in a row without an improvement after which training stops.
    min_delta : float
        How much the monitored value must improve on the best to count.
    monitor : str
        ``val_loss`` (minimised) or ``val_accuracy`` (maximised).
    restore_best : bool
        Put back the best epoch's parameters when training stops early.

    """

    patience: int = EARLY_STOPPING["patience"]
    min_delta: float = EARLY_STOPPING["min_delta"]
    monitor: str = EARLY_STOPPING["monitor"]
    restore_best: bool = EARLY_STOPPING["restore_best"]

    def improves(self, value: float, best: float) -> bool:
        """Whether ``value`` improves on ``best`` (NaN: nothing yet) by more than min_delta."""
        if not math.isfinite(value):
            return False
        if math.isnan(best):
            return True
        if MONITORS[self.monitor] == "min":
            return value < best - self.min_delta
        return value > best + self.min_delta

    def describe(self) -> str:
        """The settings as a checkpoint records them (resuming with others is refused)."""
        return (f"patience={self.patience}, min_delta={self.min_delta!r}, "
                f"monitor={self.monitor}, restore_best={self.restore_best}")


def early_stopping_from(table) -> EarlyStopping | None:
    """Early stopping from a spec's table (None or False: none; True: the defaults).

    Raises
    ------
    DeriveError
        For an unknown key or a value of the wrong type or range (a spec is checked
        when it is read; this guards what is passed to :func:`derive.train.fit`).

    """
    if table is None or table is False:
        return None
    if table is True:
        return EarlyStopping()
    if isinstance(table, EarlyStopping):
        return table
    where = "early_stopping"
    if not isinstance(table, Mapping):
        raise DeriveError(f"must be a table of {', '.join(EARLY_STOPPING)}, got {table!r}.",
                          where=where, fix="E.g. {'patience': 5, 'monitor': 'val_loss'}.")
    unknown = [k for k in table if k not in EARLY_STOPPING]
    if unknown:
        raise DeriveError(f"unknown key {unknown[0]!r}.", where=where,
                          fix=f"Its keys are: {', '.join(EARLY_STOPPING)}.")
    settings = EarlyStopping(**table)
    patience, delta = settings.patience, settings.min_delta
    checks = [
        ("patience", isinstance(patience, int) and not isinstance(patience, bool)
         and patience >= 1, "a whole number ≥ 1"),
        ("min_delta", isinstance(delta, int | float) and not isinstance(delta, bool)
         and math.isfinite(delta) and delta >= 0, "a number ≥ 0"),
        ("monitor", settings.monitor in MONITORS, f"one of {', '.join(MONITORS)}"),
        ("restore_best", isinstance(settings.restore_best, bool), "true or false"),
    ]
    for key, ok, must in checks:
        if not ok:
            raise DeriveError(f"{key} must be {must}, got {getattr(settings, key)!r}.",
                              where=f"{where}.{key}")
    return settings


@dataclass
class Watch:
    """Early stopping's counters through a run.

    Attributes
    ----------
    settings : EarlyStopping
    best_epoch : int
        The 1-based epoch of the best value so far (0: none yet).
    best : float
        The best value so far (NaN: none yet).
    wait : int
        Epochs since the best one.
    best_params : list of ndarray or None
        A copy of the best epoch's parameters (kept only with ``restore_best``).
    stopped : bool
        Whether early stopping ended the run.

    """

    settings: EarlyStopping
    best_epoch: int = 0
    best: float = math.nan
    wait: int = 0
    best_params: list[np.ndarray] | None = None
    stopped: bool = False

    def update(self, epoch: int, value: float, params: list[np.ndarray]) -> bool:
        """Record one epoch's monitored value; return whether training should stop."""
        if self.settings.improves(value, self.best):
            self.best_epoch, self.best, self.wait = epoch, float(value), 0
            if self.settings.restore_best:
                self.best_params = [p.copy() for p in params]
        else:
            self.wait += 1
        self.stopped = self.wait >= self.settings.patience
        return self.stopped

    def counters(self) -> dict:
        """The counters as a checkpoint records them (JSON: NaN is written as null)."""
        return {"best_epoch": self.best_epoch,
                "best": None if math.isnan(self.best) else self.best,
                "wait": self.wait, "stopped": self.stopped}

    def restore(self, counters: Mapping, best_params: list[np.ndarray] | None) -> None:
        """Continue from a checkpoint's counters and best parameters."""
        best = counters.get("best")
        self.best_epoch = int(counters.get("best_epoch", 0))
        self.best = math.nan if best is None else float(best)
        self.wait = int(counters.get("wait", 0))
        self.stopped = bool(counters.get("stopped", False))
        self.best_params = best_params or None


#: The log line when early stopping ends a run, per language.
_STOPPED = {
    "en": "early stopping: {monitor} did not improve by more than {delta:g} for {patience} "
          "epoch(s); stopped at epoch {epoch}, best epoch {best_epoch} ({monitor} "
          "{best:.6g}){restored}",
    "pt": "parada antecipada: {monitor} não melhorou mais que {delta:g} em {patience} "
          "época(s); o treino parou na época {epoch}, a melhor foi a época {best_epoch} "
          "({monitor} {best:.6g}){restored}",
}
_RESTORED = {
    "en": "; its parameters were restored.",
    "pt": "; os parâmetros dessa época foram restaurados.",
}


def stopped_line(watch: Watch, epoch: int, lang: str = "en") -> str:
    """One line saying where early stopping ended the run and which epoch was best."""
    s = watch.settings
    restored = _RESTORED[lang] if s.restore_best and watch.best_params is not None else "."
    return _STOPPED[lang].format(monitor=s.monitor, delta=s.min_delta, patience=s.patience,
                                 epoch=epoch, best_epoch=watch.best_epoch, best=watch.best,
                                 restored=restored)
