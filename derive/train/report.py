"""What a training run reports: per-epoch records, learning curves, and their diagnosis.

The diagnosis is the notes' table (seed 003, section 7.2):

============================  ==========================================================
training loss explodes        learning rate too high
training loss stagnates       learning rate too low, or a plateau / saturated units
training loss oscillates      batch too small or learning rate too high
validation worsens while      overfitting: regularise, stop earlier, or get more data
training improves
============================  ==========================================================

Each rule is a small function of the history, so it can be tested on made-up curves.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import astuple, dataclass, fields
from pathlib import Path

import numpy as np

from derive.files import atomic_write

CURVES_CSV = "curves.csv"
CURVES_PNG = "curves.png"


@dataclass(frozen=True)
class EpochRecord:
    """What one epoch measured.

    Attributes
    ----------
    epoch : int
        1-based epoch number.
    lr : float
        Learning rate used during the epoch.
    train_loss : float
        Mean of the mini-batch losses over the epoch (as Keras reports it).
    train_accuracy : float
        Accuracy on the training samples at the end of the epoch (NaN for regression).
    val_loss, val_accuracy : float
        On the validation samples at the end of the epoch (NaN without validation).
    grad_norm : float
        Global gradient norm ‖∇L‖ over all parameters, on a fixed sample batch, at the end
        of the epoch.
    seconds : float
        Wall time of the epoch.

    """

    epoch: int
    lr: float
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    grad_norm: float
    seconds: float


FIELDS = tuple(f.name for f in fields(EpochRecord))


@dataclass(frozen=True)
class Diagnosis:
    """One row of the notes' diagnosis table that applies to a run.

    Attributes
    ----------
    kind : str
        ``exploding``, ``stagnating``, ``oscillating`` or ``overfitting``.
    epoch : int
        The epoch where it shows (first non-finite loss, best validation epoch, ...).
    message : str
        What was seen and what to do, in English.
    message_pt : str
        The same in Portuguese, in the notes' words.

    """

    kind: str
    epoch: int
    message: str
    message_pt: str

    def __str__(self) -> str:
        return self.message


# --- diagnosis --------------------------------------------------------------------------

#: Relative change under which the training loss counts as not moving.
STAGNATION_TOL = 0.01
#: A loss this far below its start has converged rather than stagnated.
CONVERGED_FRACTION = 0.1
#: Relative rise of the training loss that counts as a step up.
RISE_TOL = 0.01
#: Relative rise of the validation loss above its best that counts as worsening.
OVERFIT_TOL = 0.05


def _exploding(records: Sequence[EpochRecord]) -> Diagnosis | None:
    losses = [r.train_loss for r in records]
    bad = next((r for r in records if not math.isfinite(r.train_loss)), None)
    if bad is None and len(losses) >= 2 and losses[-1] > 2 * min(losses) \
            and losses[-1] > losses[0]:
        bad = records[-1]
    if bad is None:
        return None
    seen = ("became " + ("NaN" if math.isnan(bad.train_loss) else "infinite")
            if not math.isfinite(bad.train_loss)
            else f"grew from {losses[0]:.4g} to {losses[-1]:.4g}")
    return Diagnosis(
        "exploding", bad.epoch,
        f"the training loss {seen} (epoch {bad.epoch}): it explodes, so the learning rate "
        f"({bad.lr:g}) is too high. Lower it, e.g. to {bad.lr / 10:g}.",
        f"a perda de treino explode (época {bad.epoch}): taxa de aprendizado muito alta "
        f"({bad.lr:g}). Reduza-a, por exemplo para {bad.lr / 10:g}.",
    )


def _stagnating(records: Sequence[EpochRecord]) -> Diagnosis | None:
    if len(records) < 3:
        return None
    window = records[-min(5, len(records)):]
    first, start, end = records[0].train_loss, window[0].train_loss, window[-1].train_loss
    if not all(map(math.isfinite, (first, start, end))) or start == 0:
        return None
    moved = (start - end) / abs(start)
    converged = abs(end) < CONVERGED_FRACTION * abs(first)
    if moved >= STAGNATION_TOL or converged or end > start * (1 + RISE_TOL):
        return None
    epochs = f"{window[0].epoch}–{window[-1].epoch}"
    return Diagnosis(
        "stagnating", window[0].epoch,
        f"the training loss stagnates ({start:.4g} → {end:.4g} over epochs {epochs}, "
        f"less than {STAGNATION_TOL:.0%}): the learning rate ({window[-1].lr:g}) is too "
        "low, or training sits on a plateau (saturated units). Raise the learning rate, or "
        "try momentum or Adam.",
        f"a perda de treino estagna (épocas {epochs}): taxa muito baixa ou saturação. "
        "Aumente a taxa de aprendizado ou use momentum/Adam.",
    )


def _oscillating(records: Sequence[EpochRecord]) -> Diagnosis | None:
    losses = [r.train_loss for r in records]
    if len(losses) < 4 or not all(map(math.isfinite, losses)):
        return None
    rises = [i + 1 for i in range(len(losses) - 1)
             if losses[i + 1] > losses[i] * (1 + RISE_TOL) + 1e-12]
    # A few rises in a long run are noise; the notes' pattern goes up and down repeatedly.
    if len(rises) < max(2, (len(losses) - 1) // 3):
        return None
    at = records[rises[0]]
    return Diagnosis(
        "oscillating", at.epoch,
        f"the training loss oscillates (it rose in {len(rises)} of {len(losses) - 1} "
        f"epochs, first at epoch {at.epoch}): the batch is too small or the learning rate "
        f"({at.lr:g}) too high. Use a larger batch or a lower learning rate (or a "
        "schedule).",
        f"a perda de treino oscila (subiu em {len(rises)} de {len(losses) - 1} épocas): "
        "batch muito pequeno ou taxa alta.",
    )


def _overfitting(records: Sequence[EpochRecord]) -> Diagnosis | None:
    val = [r.val_loss for r in records]
    if len(records) < 3 or not all(map(math.isfinite, val)):
        return None
    best = int(np.argmin(val))
    tail = records[best + 1:]
    worse = [r for r in tail if r.val_loss > val[best] * (1 + OVERFIT_TOL)]
    train_improves = records[-1].train_loss < records[best].train_loss
    if len(tail) < 2 or len(worse) < 2 or records[-1] not in worse or not train_improves:
        return None
    b = records[best]
    return Diagnosis(
        "overfitting", b.epoch,
        f"the validation loss worsens ({b.val_loss:.4g} at epoch {b.epoch} → "
        f"{records[-1].val_loss:.4g}) while the training loss improves "
        f"({b.train_loss:.4g} → {records[-1].train_loss:.4g}): overfitting. Regularise "
        f"(L2, dropout), stop at epoch {b.epoch}, or use more data.",
        f"a validação piora (melhor na época {b.epoch}) enquanto o treino melhora: "
        "overfitting, precisa regularização.",
    )


RULES = (_exploding, _stagnating, _oscillating, _overfitting)


def diagnose(records: Sequence[EpochRecord]) -> tuple[Diagnosis, ...]:
    """The rows of the notes' diagnosis table that apply to a run's history.

    An exploding loss hides the other rows (they would only be its symptoms).
    """
    found = [d for rule in RULES if (d := rule(records)) is not None]
    if any(d.kind == "exploding" for d in found):
        return tuple(d for d in found if d.kind == "exploding")
    return tuple(found)


# --- learning curves ---------------------------------------------------------------------


def curves_csv(records: Sequence[EpochRecord]) -> str:
    """The history as CSV text, one row an epoch (floats in full precision)."""
    lines = [",".join(FIELDS)]
    for r in records:
        lines.append(",".join(str(v) if isinstance(v, int) else repr(float(v))
                              for v in astuple(r)))
    return "\n".join(lines) + "\n"


def curves_png(records: Sequence[EpochRecord], title: str = "") -> bytes:
    """Learning curves — loss, accuracy, gradient norm per epoch — as PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # A bare Figure with the Agg canvas: no pyplot, no global backend state, no display.
    fig = Figure(figsize=(12, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_acc, ax_grad = fig.subplots(1, 3)
    epochs = [r.epoch for r in records]

    def plot(ax, name, label, style="o-"):
        values = np.array([getattr(r, name) for r in records], dtype=float)
        if np.isfinite(values).any():
            ax.plot(epochs, values, style, label=label, markersize=3)

    plot(ax_loss, "train_loss", "training")
    plot(ax_loss, "val_loss", "validation")
    plot(ax_acc, "train_accuracy", "training")
    plot(ax_acc, "val_accuracy", "validation")
    plot(ax_grad, "grad_norm", "‖∇L‖")
    for ax, name in ((ax_loss, "loss"), (ax_acc, "accuracy"), (ax_grad, "gradient norm")):
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    losses = np.array([r.train_loss for r in records], dtype=float)
    if np.isfinite(losses).all() and losses.min() > 0 and losses.max() / losses.min() > 50:
        ax_loss.set_yscale("log")
    if title:
        fig.suptitle(title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def write_curves(records: Sequence[EpochRecord], out_dir: Path, *, png: bool = True,
                 title: str = "") -> list[Path]:
    """Write ``curves.csv`` (and ``curves.png``) into ``out_dir``, each atomically.

    Returns
    -------
    list of Path
        The files written.

    """
    out_dir = Path(out_dir)
    written = [out_dir / CURVES_CSV]
    atomic_write(written[0], curves_csv(records))
    if png and records:
        written.append(out_dir / CURVES_PNG)
        atomic_write(written[1], curves_png(records, title))
    return written
