"""What a training run reports: per-epoch records, learning curves, and their diagnosis.

The diagnosis is the notes' table (seed 003, section 7.2):

============================  ==========================================================
training loss explodes        learning rate too high
training loss stagnates       learning rate too low, or a plateau / saturated units
training loss oscillates      batch too small or learning rate too high
validation worsens while      overfitting: regularise, stop earlier, or get more data
training improves
============================  ==========================================================

and what the notes say of each layer (seed 002, "Funções de Ativação Alternativas"; seed
004, section 8.3): the first layers' gradients vanish behind saturating activations, and
ReLU units can die. Each rule is a small function of the history, so it can be tested on
made-up curves. Every message is written in English and in Portuguese.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from derive.files import atomic_write

CURVES_CSV = "curves.csv"
CURVES_PNG = "curves.png"
#: Languages a diagnosis is written in.
LANGUAGES = ("en", "pt")


@dataclass(frozen=True)
class LayerRecord:
    """What one epoch measured of one layer.

    Attributes
    ----------
    name : str
        The layer's name in the parameters' names (``dense0``).
    grad_norm : float
        ‖∇L‖ over the layer's parameters, on the epoch's fixed gradient batch.
    update_ratio : float
        ‖Δθ‖/‖θ‖ of the layer's parameters over the whole epoch (the change the epoch
        made, over the parameters at its start).
    dead : float
        Fraction of the layer's units (neurons, or channels of a convolution) whose
        activation derivative σ'(s) is exactly 0 on every sample of the monitoring batch:
        no gradient reaches their weights (for ReLU, output 0 for every sample). NaN for
        a layer without an elementwise activation.
    saturated : float
        Fraction of the layer's unit values (unit × sample) in an activation's flat
        tail: 0 < σ'(s) < :data:`SATURATED_SLOPE` in magnitude (the sigmoid beyond
        |s| ≈ 4.6, tanh beyond |s| ≈ 3.0). NaN without an elementwise activation.

    """

    name: str
    grad_norm: float
    update_ratio: float
    dead: float
    saturated: float


#: The measurements of a LayerRecord, as curves.csv's columns name them after the layer.
LAYER_FIELDS = tuple(f.name for f in fields(LayerRecord))[1:]
#: |σ'(s)| below this (and above 0) counts as a saturated unit value.
SATURATED_SLOPE = 1e-2


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
    layers : tuple of LayerRecord
        Per-layer measurements, in the network's order (empty for a module that does not
        name its layers).

    """

    epoch: int
    lr: float
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    grad_norm: float
    seconds: float
    layers: tuple[LayerRecord, ...] = field(default=(), metadata={"per_layer": True})

    def values(self) -> tuple:
        """The scalar fields, in :data:`FIELDS` order."""
        return tuple(getattr(self, name) for name in FIELDS)


#: The scalar fields of an epoch record: curves.csv's first columns, a checkpoint's table.
FIELDS = tuple(f.name for f in fields(EpochRecord) if not f.metadata.get("per_layer"))


@dataclass(frozen=True)
class Diagnosis:
    """One row of the notes' diagnosis table that applies to a run.

    Attributes
    ----------
    kind : str
        ``exploding``, ``stagnating``, ``oscillating``, ``overfitting``, ``vanishing``,
        ``dead`` or ``saturated``.
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

    def text(self, lang: str = "en") -> str:
        """The message in ``lang`` (``en`` or ``pt``)."""
        by_language = {"en": self.message, "pt": self.message_pt}
        if lang not in by_language:
            raise ValueError(f"lang must be one of {LANGUAGES}, got {lang!r}")
        return by_language[lang]


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
        f"a perda de treino explode (época {bad.epoch}): a taxa de aprendizado ({bad.lr:g}) "
        f"está alta demais. Reduza-a, por exemplo para {bad.lr / 10:g} (Notas de Aula, "
        "Otimização de Redes Neurais, seção 7.2).",
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
        f"a perda de treino estagna ({start:.4g} → {end:.4g} nas épocas {epochs}, menos de "
        f"{STAGNATION_TOL:.0%}): a taxa de aprendizado ({window[-1].lr:g}) está baixa demais, "
        "ou o treino está num platô (unidades saturadas). Aumente a taxa, ou experimente "
        "momentum ou Adam.",
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
        f"a perda de treino oscila (subiu em {len(rises)} de {len(losses) - 1} épocas, a "
        f"primeira vez na época {at.epoch}): o batch é pequeno demais ou a taxa de "
        f"aprendizado ({at.lr:g}) alta demais. Use um batch maior ou uma taxa menor (ou um "
        "cronograma de taxas).",
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
        f"({b.train_loss:.4g} → {records[-1].train_loss:.4g}): overfitting: stop at epoch "
        f"{b.epoch}, regularise (e.g. a dropout layer), or use more data.",
        f"a perda de validação piora ({b.val_loss:.4g} na época {b.epoch} → "
        f"{records[-1].val_loss:.4g}) enquanto a de treino melhora: é overfitting. Pare na "
        f"época {b.epoch}, regularize (por exemplo com uma camada de dropout) ou use mais "
        "dados.",
    )


#: First layer's gradient norm over the last layer's under which the gradient vanishes.
VANISHING_RATIO = 1e-2
#: A layer with at least this fraction of dead units (or saturated values) is reported.
DEAD_FRACTION = 0.5
SATURATED_FRACTION = 0.5


def _vanishing(records: Sequence[EpochRecord]) -> Diagnosis | None:
    last = records[-1] if records else None
    norms = [layer.grad_norm for layer in last.layers] if last else []
    if len(norms) < 2 or not all(map(math.isfinite, norms)) or norms[-1] <= 0:
        return None
    ratio = norms[0] / norms[-1]
    if ratio >= VANISHING_RATIO:
        return None
    first, final = last.layers[0], last.layers[-1]
    orders = math.floor(-math.log10(max(ratio, 1e-300)))
    return Diagnosis(
        "vanishing", last.epoch,
        f"the gradient vanishes: at epoch {last.epoch} the first layer's gradient norm "
        f"({first.name}, {first.grad_norm:.2g}) is {orders} orders of magnitude below the "
        f"last layer's ({final.name}, {final.grad_norm:.2g}), so the first layers hardly "
        "learn. Each layer multiplies the backpropagated error by its activation's "
        "derivative (the sigmoid's is at most 1/4): use ReLU in the hidden layers, or fewer "
        "layers.",
        f"o gradiente desvanece: na época {last.epoch} a norma do gradiente da primeira "
        f"camada ({first.name}, {first.grad_norm:.2g}) está {orders} ordens de grandeza "
        f"abaixo da última ({final.name}, {final.grad_norm:.2g}), e as primeiras camadas "
        "quase não aprendem. Cada camada multiplica o erro retropropagado pela derivada da "
        "sua ativação (a da sigmoide é no máximo 1/4): use ReLU nas camadas ocultas, ou "
        "menos camadas (slides Retropropagação em Redes Neurais, Funções de Ativação "
        "Alternativas).",
    )


def _worst_layer(records: Sequence[EpochRecord], name: str, at_least: float):
    """The last epoch's layer with the largest ``name`` fraction, if it reaches at_least."""
    layers = [layer for layer in (records[-1].layers if records else ())
              if getattr(layer, name) >= at_least]  # NaN (no activation) never does
    return max(layers, key=lambda layer: getattr(layer, name), default=None)


def _dead(records: Sequence[EpochRecord]) -> Diagnosis | None:
    worst = _worst_layer(records, "dead", DEAD_FRACTION)
    if worst is None:
        return None
    epoch = records[-1].epoch
    return Diagnosis(
        "dead", epoch,
        f"{worst.dead:.0%} of the units of {worst.name} are dead at epoch {epoch}: their "
        "activation's derivative is 0 on every sample, so no gradient reaches their "
        "weights and they never recover (dying ReLUs). Lower the learning rate, or use a "
        "leaky variant (leaky_relu, elu).",
        f"{worst.dead:.0%} das unidades de {worst.name} estão mortas na época {epoch}: a "
        "derivada da ativação é 0 em todas as amostras, nenhum gradiente chega aos seus "
        "pesos e elas não se recuperam (Aprendizado de Máquina, seção 8.3, Dying ReLUs "
        "Problem). Reduza a taxa de aprendizado, ou use uma variante com vazamento "
        "(leaky_relu, elu; seção 8.4).",
    )


def _saturated(records: Sequence[EpochRecord]) -> Diagnosis | None:
    worst = _worst_layer(records, "saturated", SATURATED_FRACTION)
    if worst is None:
        return None
    epoch = records[-1].epoch
    return Diagnosis(
        "saturated", epoch,
        f"{worst.saturated:.0%} of the values of {worst.name} sit in the activation's flat "
        f"tails at epoch {epoch} (|σ'(s)| < {SATURATED_SLOPE:g}): saturated units pass "
        "almost no gradient. Normalise the inputs, start from smaller weights (xavier "
        "initialisation), or use ReLU.",
        f"{worst.saturated:.0%} dos valores de {worst.name} estão nas caudas planas da "
        f"ativação na época {epoch} (|σ'(s)| < {SATURATED_SLOPE:g}): unidades saturadas "
        "quase não deixam passar gradiente. Normalize as entradas, comece com pesos "
        "menores (inicialização de Xavier) ou use ReLU.",
    )


RULES = (_exploding, _stagnating, _oscillating, _overfitting, _vanishing, _dead, _saturated)


def diagnose(records: Sequence[EpochRecord]) -> tuple[Diagnosis, ...]:
    """The rows of the notes' diagnosis table that apply to a run's history.

    An exploding loss hides the other rows (they would only be its symptoms).
    """
    found = [d for rule in RULES if (d := rule(records)) is not None]
    if any(d.kind == "exploding" for d in found):
        return tuple(d for d in found if d.kind == "exploding")
    return tuple(found)


# --- learning curves ---------------------------------------------------------------------


def curves_csv(records: Sequence[EpochRecord], best: int | None = None) -> str:
    """The history as CSV text, one row an epoch (floats in full precision).

    The scalar fields come first; with early stopping (``best`` not None), a column
    ``best``, 1 on the best epoch's row and 0 elsewhere; then, per layer,
    ``<layer>.grad_norm``, ``<layer>.update_ratio``, ``<layer>.dead`` and
    ``<layer>.saturated``, named after the first record's layers (a record that lacks
    them leaves its cells empty).
    """
    names = [layer.name for layer in records[0].layers] if records else []
    marked = ["best"] if best is not None else []
    lines = [",".join([*FIELDS, *marked,
                       *(f"{n}.{m}" for n in names for m in LAYER_FIELDS)])]
    for r in records:
        cells = [str(v) if isinstance(v, int) else repr(float(v)) for v in r.values()]
        cells += [str(int(r.epoch == best))] if marked else []
        by_name = {layer.name: layer for layer in r.layers}
        for n in names:
            layer = by_name.get(n)
            cells += [repr(float(getattr(layer, m))) if layer else "" for m in LAYER_FIELDS]
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


def curves_png(records: Sequence[EpochRecord], title: str = "",
               best: int | None = None) -> bytes:
    """Learning curves — loss, accuracy, gradient norm per epoch — as PNG bytes.

    With per-layer records, a second row plots each layer's gradient norm, update ratio,
    and dead and saturated fractions, coloured from the first layer to the last. A
    ``best`` epoch (early stopping's) is marked on the loss and accuracy plots by a
    dashed vertical line.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    names = [layer.name for layer in records[0].layers] if records else []
    # A bare Figure with the Agg canvas: no pyplot, no global backend state, no display.
    fig = Figure(figsize=(12, 7.6 if names else 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2 if names else 1, 3, squeeze=False)
    ax_loss, ax_acc, ax_grad = axes[0]
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
    if best:
        for ax in (ax_loss, ax_acc):
            if ax.lines:  # no accuracy plot for regression: no line on an empty one
                ax.axvline(best, color="tab:red", linestyle="--", linewidth=1,
                           label=f"best epoch ({best})")
    for ax, name in ((ax_loss, "loss"), (ax_acc, "accuracy"), (ax_grad, "gradient norm")):
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    losses = np.array([r.train_loss for r in records], dtype=float)
    if np.isfinite(losses).all() and losses.min() > 0 and losses.max() / losses.min() > 50:
        ax_loss.set_yscale("log")
    if names:
        _plot_layers(axes[1], records, names)
    for ax in axes.flat:  # epochs are whole numbers
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _plot_layers(axes, records: Sequence[EpochRecord], names: list[str]) -> None:
    """Per-layer curves on three axes: gradient norms, update ratios, dead and saturated."""
    import matplotlib as mpl

    ax_grad, ax_update, ax_units = axes
    colours = mpl.colormaps["viridis"](np.linspace(0, 0.9, len(names)))
    epochs = [r.epoch for r in records]

    def series(name, measure):
        return np.array([next((getattr(layer, measure) for layer in r.layers
                               if layer.name == name), math.nan) for r in records], dtype=float)

    for name, colour in zip(names, colours, strict=True):
        for ax, measure in ((ax_grad, "grad_norm"), (ax_update, "update_ratio")):
            values = series(name, measure)
            if (values > 0).any():
                ax.plot(epochs, values, "o-", color=colour, label=name, markersize=2)
        for measure, style in (("dead", "o-"), ("saturated", "s--")):
            values = series(name, measure)
            if np.isfinite(values).any() and (values > 0).any():
                ax_units.plot(epochs, values, style, color=colour, markersize=2,
                              label=f"{name} {measure}")
    for ax, title in ((ax_grad, "gradient norm per layer"),
                      (ax_update, "‖Δθ‖/‖θ‖ per layer and epoch"),
                      (ax_units, "dead units (—), saturated values (--)")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize="x-small", ncols=2 if len(ax.lines) > 6 else 1)
    for ax in (ax_grad, ax_update):
        if ax.lines:
            ax.set_yscale("log")
    ax_units.set_ylim(-0.02, 1.02)


def write_curves(records: Sequence[EpochRecord], out_dir: Path, *, png: bool = True,
                 title: str = "", best: int | None = None) -> list[Path]:
    """Write ``curves.csv`` (and ``curves.png``) into ``out_dir``, each atomically.

    ``best``, early stopping's best epoch (None without early stopping), is marked in
    both (see :func:`curves_csv` and :func:`curves_png`).

    Returns
    -------
    list of Path
        The files written.

    """
    out_dir = Path(out_dir)
    written = [out_dir / CURVES_CSV]
    atomic_write(written[0], curves_csv(records, best))
    if png and records:
        written.append(out_dir / CURVES_PNG)
        atomic_write(written[1], curves_png(records, title, best))
    return written
