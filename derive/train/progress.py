"""A plain-text progress bar on stderr: carriage-return redraws on a terminal, nothing else.

On a terminal the current epoch's bar is redrawn in place (at most ten times a second, so
drawing never costs more than the training); every finished epoch leaves one summary
line. When the stream is not a terminal (a log file, a pipe, CI) only the summary lines
are written, and with ``enabled=False`` nothing at all.
"""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO

from derive.train.report import EpochRecord

WIDTH = 24
REDRAW_SECONDS = 0.1


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _metric(value: float, fmt: str = ".4f") -> str:
    return format(value, fmt) if math.isfinite(value) else str(value)


def epoch_line(r: EpochRecord, epochs: int) -> str:
    """One finished epoch as a line of text."""
    width = len(str(epochs))
    parts = [f"epoch {r.epoch:>{width}}/{epochs}", f"loss {_metric(r.train_loss)}"]
    if not math.isnan(r.train_accuracy):
        parts.append(f"acc {_metric(r.train_accuracy)}")
    if not math.isnan(r.val_loss):
        parts.append(f"val_loss {_metric(r.val_loss)}")
    if not math.isnan(r.val_accuracy):
        parts.append(f"val_acc {_metric(r.val_accuracy)}")
    parts += [f"|grad| {_metric(r.grad_norm, '.3g')}{layer_range(r)}", *layer_parts(r),
              f"lr {r.lr:g}", f"{r.seconds:.1f}s"]
    return "  ".join(parts)


def layer_range(r: EpochRecord) -> str:
    """`` (layers 1.2e-05→4.3e-02)``: the first and last layers' gradient norms, if any."""
    if not r.layers:
        return ""
    first, last = r.layers[0], r.layers[-1]
    return f" (layers {_metric(first.grad_norm, '.1e')}→{_metric(last.grad_norm, '.1e')})"


def layer_parts(r: EpochRecord) -> list[str]:
    """The other per-layer measurements of an epoch line, compact.

    The largest update ratio, and the worst layer's dead units and saturated values
    (when any).
    """
    parts = []
    ratios = [layer.update_ratio for layer in r.layers if not math.isnan(layer.update_ratio)]
    if ratios:
        parts.append(f"Δθ/θ ≤ {_metric(max(ratios), '.1e')}")
    for measure, label in (("dead", "dead"), ("saturated", "sat")):
        worst = max((layer for layer in r.layers if getattr(layer, measure) > 0),
                    key=lambda layer, m=measure: getattr(layer, m), default=None)
        if worst is not None:
            parts.append(f"{label} {getattr(worst, measure):.0%} {worst.name}")
    return parts


class Progress:
    """Progress of a training run, written to a text stream.

    Parameters
    ----------
    epochs : int
        Total number of epochs (for ``epoch 3/20``).
    stream : file, optional
        Where to write; stderr by default.
    enabled : bool
        False writes nothing.

    """

    def __init__(self, epochs: int, stream: TextIO | None = None, enabled: bool = True):
        self.epochs = epochs
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled
        self.bar = enabled and _isatty(self.stream)
        self._last_draw = -math.inf
        self._drawn = 0

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            self.enabled = self.bar = False  # a closed stream must not stop training

    def batch(self, epoch: int, done: int, total: int, loss: float) -> None:
        """Redraw the bar after ``done`` of ``total`` samples (throttled)."""
        if not self.bar:
            return
        now = time.monotonic()
        if done < total and now - self._last_draw < REDRAW_SECONDS:
            return
        self._last_draw = now
        filled = WIDTH * done // max(total, 1)
        text = (f"epoch {epoch}/{self.epochs} [{'#' * filled}{'.' * (WIDTH - filled)}] "
                f"{done}/{total}  loss {_metric(loss)}")
        pad = " " * max(0, self._drawn - len(text))
        self._drawn = len(text)
        self._write(f"\r{text}{pad}")

    def _clear(self) -> None:
        if self.bar and self._drawn:
            self._write("\r" + " " * self._drawn + "\r")
            self._drawn = 0

    def epoch_done(self, record: EpochRecord) -> None:
        """Replace the bar by the epoch's summary line."""
        if self.enabled:
            self._clear()
            self._write(epoch_line(record, self.epochs) + "\n")

    def message(self, text: str) -> None:
        """A line of its own (resuming, diagnosis, files written)."""
        if self.enabled:
            self._clear()
            self._write(text + "\n")

    def notice(self, text: str) -> None:
        """A line the user must see even with progress off: how the run differs from the spec.

        ``--no-progress`` silences the bar and the epoch lines, not a change the run makes
        to what was asked (a batch merged into another).
        """
        self._clear()
        self._write(text + "\n")
