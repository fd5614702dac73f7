"""The training loop: a generated network module + a Dataset → a History.

The loop is the notes' algorithm 6.1 — shuffle every epoch, mini-batches (the last,
partial one included), one fused ``train_step`` per batch, then evaluate — plus what
makes a run observable and safe: per-epoch loss, accuracy and gradient norm, each layer's
gradient norm, update ratio and dead and saturated units, the diagnosis of the notes'
table, learning curves, early stopping (:mod:`derive.train.stopping`), and an atomic
checkpoint after every epoch from which ``resume=True`` continues bit for bit.

A network module is anything with the generated modules' interface::

    PARAM_NAMES, INPUT_SHAPE, N_CLASSES, LOSS, TRAIN
    init_params(seed, dtype) -> list of arrays
    init_state(params) -> list of arrays
    predict(params, x) -> outputs
    loss_and_grad(params, x, y) -> (loss, grads)
    train_step(params, state, x, y, lr) -> loss       (updates params and state in place)

and, optionally, ``LAYERS`` (type, activation, hyper-parameters per layer), with
parameters named ``<type><index>.<name>`` (``dense0.W``), and
``activation_slopes(params, x)`` (σ'(s) per layer, None where a layer has no elementwise
activation): per-layer measurements use them when present.

Classification targets are passed as int64 class labels of shape ``(N,)``.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

import numpy as np

from derive.errors import DeriveError
from derive.train.checkpoint import (
    CHECKPOINT,
    Checkpoint,
    check_compatible,
    load_checkpoint,
    run_lock,
    save_checkpoint,
)
from derive.train.data import Dataset, Normaliser, normalise, split_validation, to_input_shape
from derive.train.progress import Progress
from derive.train.report import (
    CURVES_CSV,
    CURVES_PNG,
    SATURATED_SLOPE,
    Diagnosis,
    EpochRecord,
    LayerRecord,
    diagnose,
    write_curves,
)
from derive.train.schedules import from_spec, lr_at
from derive.train.stopping import EarlyStopping, Watch, early_stopping_from, stopped_line

REQUIRED = ("init_params", "init_state", "predict", "loss_and_grad", "train_step",
            "INPUT_SHAPE")
#: Defaults when neither the call nor the module's TRAIN table sets them (the notes' run).
DEFAULTS = {"epochs": 20, "batch_size": 32, "lr": 0.01, "seed": 0}
#: Samples of the fixed batch the gradient norm is measured on.
GRAD_SAMPLE = 1024
#: Samples of the fixed batch dead and saturated units are counted on.
MONITOR_SAMPLE = 256
#: How a diagnosis line starts, per language.
DIAGNOSIS = {"en": "diagnosis", "pt": "diagnóstico"}
#: Batch size of evaluation passes (no gradient is kept, so larger is fine).
EVAL_BATCH = 1024


@dataclass(frozen=True, eq=False)
class History:
    """The outcome of :func:`fit`.

    Attributes
    ----------
    records : tuple of EpochRecord
        One per epoch done, resumed epochs included.
    params, state : list of ndarray
        The trained parameters and the optimizer state.
    diagnoses : tuple of Diagnosis
        The rows of the notes' diagnosis table that apply.
    files : tuple of Path
        Files written into ``out_dir`` (checkpoint, curves).
    resumed_from : int
        Epochs loaded from a checkpoint (0 for a fresh run).
    stopped : str
        Why training stopped before ``epochs`` ("" when it did not): a non-finite loss,
        or early stopping (its line, in the run's language).
    best_epoch : int
        With early stopping, the best epoch of the monitored value (1-based; 0 without).
        When early stopping ended the run with ``restore_best``, ``params`` are that
        epoch's.

    """

    records: tuple[EpochRecord, ...]
    params: list[np.ndarray]
    state: list[np.ndarray]
    diagnoses: tuple[Diagnosis, ...] = ()
    files: tuple[Path, ...] = ()
    resumed_from: int = 0
    stopped: str = ""
    best_epoch: int = 0

    def column(self, name: str) -> np.ndarray:
        """One field of every record, e.g. ``history.column("val_loss")``."""
        return np.array([getattr(r, name) for r in self.records], dtype=float)


# --- learning-rate schedules -------------------------------------------------------------

Schedule = Callable[[int], float]


def lr_schedule(spec, lr: float, epochs: int) -> Schedule:
    """A schedule: 0-based epoch → learning rate.

    Parameters
    ----------
    spec : None, str, mapping or callable
        A name or a spec's ``[train]`` ``schedule`` table, built by
        :func:`derive.train.schedules.from_spec` (``constant``, ``step``, ``exponential``,
        ``cosine``, optional warm-up); or a callable ``(epoch, lr) -> lr``.
    lr : float
        The initial learning rate α₀.
    epochs : int
        The run's length (cosine's T and step's default step size depend on it).

    """
    if callable(spec):
        return lambda t: float(spec(t, lr))
    record = from_spec(spec, lr, epochs)
    return lambda t: float(lr_at(record, t))


def _describe_schedule(spec, lr: float, epochs: int) -> str:
    """The schedule as a checkpoint records it: resuming must not change any rate.

    The record's repr holds every parameter, including those that default from the
    run's length (cosine's ``t_max``), so stretching such a run is refused on resume.
    """
    if callable(spec):
        return f"{getattr(spec, '__module__', '?')}.{getattr(spec, '__qualname__', '?')}"
    return repr(from_spec(spec, lr, epochs))


def _describe_module(module) -> dict:
    """The network, loss and optimizer as a checkpoint records them, for resuming.

    Parameter shapes alone do not tell two networks apart (another activation, stride or
    loss keeps them), nor two optimizers with the same state (momentum and nesterov).
    Modules without the generated modules' descriptive names record nothing here.
    """
    described = {}
    layers = getattr(module, "LAYERS", None)
    if layers is not None:
        steps = [f"{kind}({', '.join(f'{k}={v!r}' for k, v in sorted(hyper.items()))})"
                 + (f" {activation}" if activation else "")
                 for kind, activation, hyper in layers]
        described["network"] = " -> ".join([str(tuple(module.INPUT_SHAPE)), *steps])
    if getattr(module, "LOSS", None) is not None:
        described["loss"] = str(module.LOSS)
    name = getattr(module, "OPTIMIZER", None)
    if name is not None:
        train = dict(getattr(module, "TRAIN", {}) or {})
        hyper = {k: float(train.get(k, v))
                 for k, v in (getattr(module, "OPTIMIZER_PARAMS", {}) or {}).items()
                 if k != "lr"}  # the rate is recorded (and compared) on its own
        described["optimizer"] = f"{name}({', '.join(f'{k}={v!r}' for k, v in hyper.items())})"
    return described


# --- evaluation --------------------------------------------------------------------------


def _correct(outputs: np.ndarray, y: np.ndarray) -> int:
    outputs = np.asarray(outputs)
    if outputs.ndim >= 2 and outputs.shape[1] > 1:
        guess = np.argmax(outputs.reshape(len(outputs), -1), axis=1)
    else:  # one output: a probability of class 1
        guess = (outputs.reshape(len(outputs)) > 0.5).astype(np.int64)
    return int(np.count_nonzero(guess == y))


def _is_classifier(module, y: np.ndarray) -> bool:
    return getattr(module, "N_CLASSES", None) is not None and y.dtype.kind == "i"


def accuracy(module, params, x: np.ndarray, y: np.ndarray,
             batch_size: int = EVAL_BATCH) -> float:
    """Fraction of samples whose predicted class is the label (NaN for regression)."""
    if len(x) == 0 or not _is_classifier(module, y):
        return math.nan
    with np.errstate(all="ignore"):
        correct = sum(_correct(module.predict(params, x[b:b + batch_size]),
                               y[b:b + batch_size]) for b in range(0, len(x), batch_size))
    return correct / len(x)


def evaluate(module, params, x: np.ndarray, y: np.ndarray,
             batch_size: int = EVAL_BATCH) -> tuple[float, float]:
    """Mean loss and accuracy over ``x``, in batches.

    Parameters
    ----------
    module
        A network module.
    params : list of ndarray
        Its parameters.
    x, y : ndarray
        Inputs (batch first) and targets.
    batch_size : int
        Samples per pass; only memory depends on it.

    Returns
    -------
    loss, accuracy : float
        The sample-weighted mean loss; accuracy is NaN for regression, both are NaN for
        an empty set.

    """
    if len(x) == 0:
        return math.nan, math.nan
    loss_only = getattr(module, "loss", None)
    total = 0.0
    with np.errstate(all="ignore"):
        for b in range(0, len(x), batch_size):
            xb, yb = x[b:b + batch_size], y[b:b + batch_size]
            loss = loss_only(params, xb, yb) if loss_only else module.loss_and_grad(
                params, xb, yb)[0]
            total += float(loss) * len(xb)
    return total / len(x), accuracy(module, params, x, y, batch_size)


def _norm(arrays) -> float:
    """‖(a, b, ...)‖: the L2 norm of the arrays seen as one vector."""
    with np.errstate(all="ignore"):
        return math.sqrt(math.fsum(float(np.vdot(a, a)) for a in arrays))


def gradient_norm(module, params, x: np.ndarray, y: np.ndarray) -> float:
    """Global gradient norm ‖∇L‖ (all parameters as one vector) on the batch ``x, y``."""
    with np.errstate(all="ignore"):
        _, grads = module.loss_and_grad(params, x, y)
    return _norm(grads)


# --- each layer --------------------------------------------------------------------------


def layer_groups(module) -> tuple[tuple[str, tuple[int, ...], int | None], ...]:
    """The layers a module names: (name, indices of its parameters, index in LAYERS).

    A generated module names a layer's parameters ``<type><index>.<name>`` and lists its
    layers in ``LAYERS``; a layer counts when it has parameters or an activation. A
    module without ``LAYERS`` is grouped by the parameter names' prefixes (index None),
    and one whose names have no prefix has no layers to report.
    """
    names = [str(n) for n in getattr(module, "PARAM_NAMES", ())]
    owner = [n.rpartition(".")[0] for n in names]
    layers = getattr(module, "LAYERS", None)
    if layers is None:
        if not names or "" in owner:
            return ()
        return tuple((label, tuple(j for j, o in enumerate(owner) if o == label), None)
                     for label in dict.fromkeys(owner))
    groups = []
    for index, (kind, activation, _) in enumerate(layers):
        label = f"{kind}{index}"
        own = tuple(j for j, o in enumerate(owner) if o == label)
        if own or activation is not None:
            groups.append((label, own, index))
    return tuple(groups)


def unit_fractions(slope: np.ndarray | None) -> tuple[float, float]:
    """Dead units and saturated values of one layer, from σ'(s) on a batch.

    Parameters
    ----------
    slope : ndarray or None
        The activation's derivative at every unit, batch first: ``(N, units)``, or
        ``(N, channels, ...)`` for a convolution, whose units are its channels.

    Returns
    -------
    dead, saturated : float
        The fraction of units with σ'(s) = 0 on every sample (and position), and the
        fraction of values with 0 < |σ'(s)| < :data:`SATURATED_SLOPE`; NaN, NaN for None.

    """
    if slope is None or slope.size == 0:
        return math.nan, math.nan
    magnitude = np.abs(slope.reshape(slope.shape[0], slope.shape[1], -1))
    dead = float(np.mean(np.all(magnitude == 0, axis=(0, 2))))
    saturated = float(np.mean((magnitude > 0) & (magnitude < SATURATED_SLOPE)))
    return dead, saturated


def measure_layers(module, params, start: list[np.ndarray], grads: list[np.ndarray],
                   x_monitor: np.ndarray | None) -> tuple[LayerRecord, ...]:
    """Each layer's gradient norm, update ratio, dead units and saturated values.

    Parameters
    ----------
    module
        A network module.
    params, start : list of ndarray
        The parameters now and at the start of the epoch.
    grads : list of ndarray
        The gradient of every parameter on the fixed gradient batch.
    x_monitor : ndarray or None
        The fixed batch on which ``module.activation_slopes`` (when the module has it)
        gives σ'(s); None skips dead and saturated units.

    """
    groups = layer_groups(module)
    slopes = None
    if groups and x_monitor is not None and hasattr(module, "activation_slopes"):
        with np.errstate(all="ignore"):
            slopes = module.activation_slopes(params, x_monitor)
    records = []
    for name, own, index in groups:
        size = _norm(start[j] for j in own)
        change = _norm(params[j] - start[j] for j in own)
        ratio = change / size if size > 0 else math.nan
        slope = slopes[index] if slopes is not None and index is not None else None
        records.append(LayerRecord(name, _norm(grads[j] for j in own), ratio,
                                   *unit_fractions(slope)))
    return tuple(records)


# --- fit -----------------------------------------------------------------------------------


def _check_module(module) -> None:
    missing = [name for name in REQUIRED if not hasattr(module, name)]
    if missing:
        raise DeriveError(
            f"this is not a network module: it has no {', '.join(missing)}.",
            where=getattr(module, "__file__", None) or getattr(module, "__name__", "module"),
            fix="Generate one with `derive kernels SPEC.toml`.")


def _option(name: str, given, train: dict, kind: type):
    value = given if given is not None else train.get(name, DEFAULTS[name])
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if kind is int:
        ok = ok and float(value).is_integer() and value >= (0 if name in ("epochs", "seed")
                                                            else 1)
    else:
        ok = ok and value > 0
    if not ok:
        raise DeriveError(f"{name} = {value!r} is not a valid {name.replace('_', ' ')}.",
                          where=name, fix={
                              "epochs": "Give a whole number ≥ 0.",
                              "batch_size": "Give a whole number ≥ 1.",
                              "lr": "Give a positive number, e.g. 0.01.",
                              "seed": "Give a whole number ≥ 0.",
                          }[name])
    return kind(value)


def _fingerprint(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for a in arrays:
        digest.update(f"{a.shape}{a.dtype}".encode())
        digest.update(np.ascontiguousarray(a).data)
    return digest.hexdigest()[:16]


def _remove_stranded_temporaries(out: Path) -> None:
    """Delete temporaries a killed run left behind (atomic_write names them .NAME.*.tmp).

    They were never renamed into place, so no output refers to them; without this a
    run killed while writing would leave a hidden partial file forever.
    """
    for name in (CHECKPOINT, CURVES_CSV, CURVES_PNG):
        for stale in out.glob(f".{name}.*.tmp"):
            stale.unlink(missing_ok=True)


def _with_validation(data: Dataset, fraction: float | None, seed: int,
                     shuffle: bool) -> Dataset:
    if fraction is None or fraction == 0:
        return data
    if len(data.x_val):
        raise DeriveError(
            f"the data set already holds {len(data.x_val)} validation samples; "
            f"validation_split={fraction!r} would split a second time.",
            where="validation_split",
            fix="Give the split once: to prepare()/dataset_for(), or to fit().")
    x_tr, y_tr, x_val, y_val = split_validation(data.x_train, data.y_train, fraction,
                                                shuffle=shuffle, seed=seed)
    return replace(data, x_train=x_tr, y_train=y_tr, x_val=x_val, y_val=y_val)


def fit(module, data: Dataset, *, epochs: int | None = None, batch_size: int | None = None,
        lr: float | None = None, seed: int | None = None, schedule=None,
        validation_split: float | None = None, out_dir: Path | str | None = None,
        resume: bool = False, progress: bool = True, stream: TextIO | None = None,
        shuffle_validation: bool = False, lang: str = "en",
        early_stopping=None) -> History:
    """Train a network module on a data set.

    Parameters
    ----------
    module
        A generated network module (see the module docstring for the interface).
    data : Dataset
        From :func:`derive.train.data.prepare`; inputs in the network's INPUT_SHAPE. The
        parameters are created in its inputs' dtype.
    epochs, batch_size, lr, seed : optional
        Default to the module's ``TRAIN`` table, then to the notes' run (20 epochs,
        batch 32, lr 0.01, seed 0). ``seed`` seeds the initial parameters and the
        shuffling.
    schedule : optional
        A learning-rate schedule (see :func:`lr_schedule`); defaults to ``TRAIN``'s.
    validation_split : float, optional
        Hold out this last fraction of ``data``'s training samples for validation (as
        Keras does); None uses ``data``'s own validation set. Normalisation statistics
        were fitted before this split, so prefer giving the split to ``prepare``.
    out_dir : path, optional
        Where the checkpoint (after every epoch) and the learning curves go. Nothing is
        written without it.
    resume : bool
        Continue from ``out_dir``'s checkpoint; the result is bit for bit the one of an
        uninterrupted run. The network, loss, optimizer and options must be those of the
        checkpointed run, except ``epochs``. While it runs, the run holds ``out_dir``'s
        lock (:func:`derive.train.checkpoint.run_lock`): a second run into the same
        folder is refused.
    progress : bool
        Progress bar and per-epoch lines on ``stream`` (stderr); the bar is drawn only on
        a terminal.
    stream : file, optional
        Where progress goes.
    shuffle_validation : bool
        With ``validation_split``: a seeded random subset instead of the last fraction.
    lang : str
        Language of the diagnosis lines on ``stream``: ``en`` or ``pt`` (the History
        holds both), and of the early-stopping line.
    early_stopping : optional
        A table of ``patience``, ``min_delta``, ``monitor`` (``val_loss`` or
        ``val_accuracy``) and ``restore_best`` (see :mod:`derive.train.stopping`), True
        for the defaults, or False for none; None uses ``TRAIN``'s ``early_stopping``.
        It needs validation samples.

    Returns
    -------
    History

    Raises
    ------
    DeriveError
        For invalid options, a module that is not a network module, a checkpoint that
        is missing, unreadable or from another run, or a folder another run is writing.

    """
    _check_module(module)
    if lang not in DIAGNOSIS:
        raise DeriveError(f"lang = {lang!r} is not a language of the diagnosis.",
                          where="lang", fix=f"Give one of: {', '.join(DIAGNOSIS)}.")
    options = _options(module, epochs, batch_size, lr, seed, schedule) | {"lang": lang}
    data = _with_validation(data, validation_split, options["seed"], shuffle_validation)
    if len(data.x_train) == 0:
        raise DeriveError("the data set has no training samples.", where=data.name)
    options["stopping"] = _early_stopping(module, data, early_stopping)
    if resume and out_dir is None:
        raise DeriveError("resuming needs the directory of the run's checkpoint.",
                          where="resume", fix="Pass --out DIR (the run's output directory).")
    report = Progress(options["epochs"], stream, progress)
    if out_dir is None:
        return _train(module, data, None, resume, report, **options)
    out = Path(out_dir)
    # The lock comes first: without it, a second run would delete the first one's
    # temporaries in flight and interleave its checkpoints with the first one's.
    with run_lock(out):
        _remove_stranded_temporaries(out)
        return _train(module, data, out, resume, report, **options)


def _options(module, epochs, batch_size, lr, seed, schedule) -> dict:
    """The run's options: the call's, else the module's ``TRAIN`` table's, else defaults."""
    train = dict(getattr(module, "TRAIN", {}) or {})
    epochs = _option("epochs", epochs, train, int)
    batch_size = _option("batch_size", batch_size, train, int)
    lr = _option("lr", lr, train, float)
    seed = _option("seed", seed, train, int)
    schedule = train.get("schedule") if schedule is None else schedule
    return {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
            "schedule": schedule, "rate": lr_schedule(schedule, lr, epochs)}


def _early_stopping(module, data: Dataset, given) -> EarlyStopping | None:
    """The run's early stopping (the call's, else ``TRAIN``'s), checked against the data."""
    table = getattr(module, "TRAIN", {}) or {}
    settings = early_stopping_from(table.get("early_stopping") if given is None else given)
    if settings is None:
        return None
    if len(data.x_val) == 0:
        raise DeriveError(
            f"early stopping watches {settings.monitor} on the validation set, and this "
            "data set holds no validation samples (without them the training loss keeps "
            "falling and would never say when to stop).", where="early_stopping",
            fix="Hold some out (validation_split, e.g. 0.1), or train without early "
                "stopping.")
    if settings.monitor == "val_accuracy" and not _is_classifier(module, data.y_val):
        raise DeriveError("this network does not classify, so there is no accuracy to "
                          "watch.", where="early_stopping.monitor",
                          fix="Use monitor = 'val_loss'.")
    return settings


@dataclass
class _Run:
    """What a run carries from epoch to epoch, and what its checkpoint holds."""

    params: list[np.ndarray]
    state: list[np.ndarray]
    rng: np.random.Generator
    records: list[EpochRecord]
    config: dict
    normaliser: Normaliser | None = None
    watch: Watch | None = None

    def checkpoint(self) -> Checkpoint:
        watch = self.watch
        return Checkpoint(len(self.records), self.params, self.state,
                          self.rng.bit_generator.state, tuple(self.records), self.config,
                          self.normaliser, watch.counters() if watch else {},
                          (watch.best_params or []) if watch else [])


def _run_config(module, data: Dataset, *, epochs: int, batch_size: int, lr: float,
                seed: int, schedule, stopping: EarlyStopping | None) -> dict:
    """What a checkpoint records of the run, so that resuming differently is refused."""
    x, y = data.x_train, data.y_train
    # Only a run with early stopping records it: checkpoints of runs without it keep
    # their configuration, and resuming one with early stopping added is refused.
    extra = {} if stopping is None else {"early_stopping": stopping.describe()}
    return extra | {
        "batch_size": batch_size, "lr": lr, "seed": seed, "epochs": epochs,
        "schedule": _describe_schedule(schedule, lr, epochs),
        "param_names": list(getattr(module, "PARAM_NAMES", [])),
        **_describe_module(module),
        "n_train": len(x), "n_val": len(data.x_val),
        "data": _fingerprint(x, y, data.x_val, data.y_val),
        "normalisation": data.normaliser.method,
    }


def _start(module, data: Dataset, out: Path | None, resume: bool, report: Progress,
           seed: int, config: dict, stopping: EarlyStopping | None) -> _Run:
    """A fresh run from the seed, or the one ``out``'s checkpoint holds."""
    params = module.init_params(seed, data.x_train.dtype)
    run = _Run(params, module.init_state(params), np.random.default_rng(seed), [], config,
               data.normaliser, None if stopping is None else Watch(stopping))
    if resume:
        where = str(out / CHECKPOINT)
        ck = load_checkpoint(out / CHECKPOINT)
        check_compatible(ck, config, run.params, where, run.state)
        if ck.early_stopping.get("stopped"):
            raise DeriveError(
                f"early stopping ended this run at epoch {ck.epoch} (best epoch "
                f"{ck.early_stopping.get('best_epoch')}): there is nothing to continue.",
                where=where, fix="Start a new run in another --out (with a larger patience "
                                 "to train longer).")
        run.params, run.state, run.records = ck.params, ck.state, list(ck.records)
        run.rng.bit_generator.state = ck.rng_state
        if run.watch is not None:
            run.watch.restore(ck.early_stopping, ck.best_params)
        report.message(f"resuming from {where} after epoch {ck.epoch}")
    return run


def keeps_batch_statistics(module) -> bool:
    """Whether a network normalises with its batches' statistics (batch normalisation).

    Its running statistics are the arrays kept with the parameters but not learnt.
    """
    return not all(getattr(module, "TRAINABLE", ()))


def batch_starts(n: int, batch_size: int, merge_single: bool) -> list[int]:
    """Where each mini-batch of an epoch starts, in the shuffled order.

    With ``merge_single``, a last batch of one sample joins the batch before it: batch
    normalisation cannot normalise one value per channel (its variance is 0), so the
    epoch's last batch holds ``batch_size + 1`` samples instead.
    """
    starts = list(range(0, n, batch_size))
    if merge_single and len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return starts


def _step_through_batches(module, run: _Run, data: Dataset, batch_size: int, epoch: int,
                          epoch_lr: float, report: Progress) -> tuple[float, float]:
    """One pass over the shuffled training set, one ``train_step`` per mini-batch.

    Returns the mean loss over the samples seen and the last batch's loss; the pass
    stops at the first batch whose loss is not finite.
    """
    x, y = data.x_train, data.y_train
    order = run.rng.permutation(len(x))
    total, done = 0.0, 0
    loss = 0.0
    starts = batch_starts(len(x), batch_size, keeps_batch_statistics(module))
    for b, end in zip(starts, [*starts[1:], len(x)], strict=True):
        batch = order[b:end]
        with np.errstate(all="ignore"):
            loss = float(module.train_step(run.params, run.state, x[batch], y[batch], epoch_lr))
        total += loss * len(batch)
        done += len(batch)
        report.batch(epoch + 1, done, len(x), total / done)
        if not math.isfinite(loss):
            break
    return total / done, loss


def _measure(module, params, data: Dataset, grad_batch, epoch: int, epoch_lr: float,
             train_loss: float, start: float, start_params: list[np.ndarray]) -> EpochRecord:
    """The epoch's record: losses and accuracies on both sets, the gradient norms, time."""
    val_loss, val_acc = evaluate(module, params, data.x_val, data.y_val)
    with np.errstate(all="ignore"):
        _, grads = module.loss_and_grad(params, *grad_batch)
    layers = measure_layers(module, params, start_params, grads,
                            data.x_train[:MONITOR_SAMPLE])
    return EpochRecord(
        epoch=epoch + 1, lr=epoch_lr, train_loss=train_loss,
        train_accuracy=accuracy(module, params, data.x_train, data.y_train),
        val_loss=val_loss, val_accuracy=val_acc,
        grad_norm=_norm(grads),
        seconds=time.perf_counter() - start,
        layers=layers,
    )


def _stop_message(loss: float, epoch: int, out: Path | None) -> str:
    kept = (f" {out / CHECKPOINT} keeps epoch {epoch}, the last finite one."
            if out is not None and epoch else "")
    return f"the loss became {loss} in epoch {epoch + 1}; training stopped.{kept}"


def _final_curves(module, data: Dataset, out: Path, records: list[EpochRecord],
                  best: int | None) -> list[Path]:
    """Write the curves with their plot; return the files the run leaves in ``out``."""
    # The file's stem is the spec's name; __name__ is the module's cache name.
    source = getattr(module, "__file__", None)
    title = f"{Path(source).stem if source else 'network'} on {data.name}"
    curves = write_curves(records, out, title=title, best=best)
    return [p for p in (out / CHECKPOINT, *curves) if p.exists()]


def _train(module, data: Dataset, out: Path | None, resume: bool, report: Progress, *,
           epochs: int, batch_size: int, lr: float, seed: int, schedule,
           rate: Schedule, lang: str, stopping: EarlyStopping | None) -> History:
    """The loop of :func:`fit`, once the options are checked and the folder is locked."""
    config = {} if out is None else _run_config(
        module, data, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
        schedule=schedule, stopping=stopping)
    run = _start(module, data, out, resume, report, seed, config, stopping)
    watch = run.watch
    resumed_from = len(run.records)
    # The gradient norm is measured on the same fixed batch every epoch, so its curve
    # shows the optimisation, not sampling noise; it uses no random numbers (resume).
    grad_batch = (data.x_train[:GRAD_SAMPLE], data.y_train[:GRAD_SAMPLE])
    n_train = len(data.x_train)
    if len(batch_starts(n_train, batch_size, keeps_batch_statistics(module))) < -(
            -n_train // batch_size):
        report.notice(f"{n_train} training samples leave one for the last batch, which batch "
                      "normalisation cannot normalise: it joins the batch before it "
                      f"({batch_size + 1} samples)")
    files: list[Path] = []
    stopped = ""
    for epoch in range(len(run.records), epochs):
        start = time.perf_counter()
        epoch_lr = rate(epoch)
        start_params = [p.copy() for p in run.params]  # for each layer's update ratio
        train_loss, loss = _step_through_batches(module, run, data, batch_size, epoch,
                                                 epoch_lr, report)
        if not math.isfinite(loss):
            stopped = _stop_message(loss, epoch, out)
        record = _measure(module, run.params, data, grad_batch, epoch, epoch_lr, train_loss,
                          start, start_params)
        run.records.append(record)
        report.epoch_done(record)
        if stopped:
            break
        monitored = getattr(record, watch.settings.monitor) if watch else math.nan
        if watch is not None and watch.update(record.epoch, monitored, run.params):
            stopped = stopped_line(watch, record.epoch, lang)
            if watch.best_params is not None:
                run.params = [p.copy() for p in watch.best_params]
        if out is not None:
            files = [save_checkpoint(out / CHECKPOINT, run.checkpoint()),
                     *write_curves(run.records, out, png=False, best=_best(watch))]
        if stopped:
            break
    if out is not None and run.records:
        files = _final_curves(module, data, out, run.records, _best(watch))
    diagnoses = diagnose(run.records)
    if stopped:
        report.message(stopped)
    for d in diagnoses:
        report.message(f"{DIAGNOSIS[lang]}: {d.text(lang)}")
    return History(tuple(run.records), run.params, run.state, diagnoses, tuple(files),
                   resumed_from, stopped, watch.best_epoch if watch else 0)


def _best(watch: Watch | None) -> int | None:
    """The epoch curves mark as the best: None without early stopping, else 0 or more."""
    return None if watch is None else watch.best_epoch


# --- predicting ----------------------------------------------------------------------------


def predict(module, x: np.ndarray, checkpoint: Checkpoint | Path | str,
            batch_size: int = EVAL_BATCH) -> np.ndarray:
    """The network's outputs on raw samples, scaled as the checkpointed run scaled its own.

    Parameters
    ----------
    module
        The network module the run trained.
    x : ndarray
        Samples as the data source gives them (not normalised), batch first.
    checkpoint : Checkpoint or path
        A run's checkpoint (or its file): its parameters and its input normalisation,
        whose statistics were fitted on that run's training samples.
    batch_size : int
        Samples per pass; only memory depends on it.

    Returns
    -------
    ndarray
        ``module.predict`` on the normalised samples.

    Raises
    ------
    DeriveError
        When the checkpoint does not record its normalisation (written by an older
        derive), or the samples do not fit the network's input.

    """
    ck = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(Path(checkpoint))
    if ck.normaliser is None:
        raise DeriveError("this checkpoint does not record the input normalisation its run "
                          "trained with, so new samples cannot be scaled the same way.",
                          where=str(checkpoint) if not isinstance(checkpoint, Checkpoint)
                          else "checkpoint",
                          fix="Train again with this derive (the checkpoint then records "
                              "it), or normalise the samples yourself.")
    dtype = ck.params[0].dtype if ck.params else np.float64
    shaped = to_input_shape(normalise(ck.normaliser, np.asarray(x, dtype=np.float64)),
                            tuple(module.INPUT_SHAPE), "samples", dtype)
    with np.errstate(all="ignore"):
        parts = [np.asarray(module.predict(ck.params, shaped[b:b + batch_size]))
                 for b in range(0, len(shaped), batch_size)]
    return np.concatenate(parts) if parts else np.empty((0,))
