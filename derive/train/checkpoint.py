"""Checkpoints: everything a run needs to continue bit for bit, in one atomic ``.npz``.

A checkpoint holds the parameters, the optimizer state, the number of epochs done, the
shuffling generator's state, the history so far, the run's configuration (so that
resuming with different options is refused rather than silently not reproducible), the
input normalisation fitted on the training samples (so that new inputs are scaled as the
network was trained: :func:`derive.train.predict`), and early stopping's counters with
the best epoch's parameters. It is
written through :func:`derive.files.atomic_write`: a run killed at any moment
leaves the previous checkpoint or the new one, never a truncated file.

Nothing is pickled: arrays are stored as arrays and the rest as one JSON string, and the
file is read back with ``allow_pickle=False``.

A run holds its folder's lock (:func:`run_lock`) while it writes there, so two runs into
one folder cannot interleave their checkpoints.
"""

from __future__ import annotations

import io
import json
import os
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from derive.errors import DeriveError
from derive.files import atomic_write
from derive.train.data import Normaliser
from derive.train.report import FIELDS, LAYER_FIELDS, EpochRecord, LayerRecord

CHECKPOINT = "checkpoint.npz"
FORMAT = 1
#: The lock file a run keeps in its folder; it holds the run's process id.
LOCK = "train.lock"
#: Configuration keys that checkpoints did not always record: an older checkpoint without
#: them is compared on the rest (its parameters' and state's shapes still are).
LATER_KEYS = ("network", "loss", "optimizer", "normalisation")
#: A lock file younger than this with no process id in it is being written, not stale.
FRESH_SECONDS = 5.0


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """A training run's state after a whole number of epochs.

    Attributes
    ----------
    epoch : int
        Epochs completed.
    params, state : list of ndarray
        The network's parameters and optimizer state, as the module keeps them.
    rng_state : dict
        ``numpy.random.Generator.bit_generator.state`` of the shuffling generator.
    records : tuple of EpochRecord
        The history so far.
    config : dict
        The options that must match to resume (JSON-able values).
    normaliser : Normaliser or None
        The input normalisation the run trained with (None in checkpoints written before
        it was recorded).
    early_stopping : dict
        Early stopping's counters (``best_epoch``, ``best``, ``wait``, ``stopped``); empty
        without early stopping.
    best_params : list of ndarray
        The best epoch's parameters, kept for early stopping's ``restore_best``.

    """

    epoch: int
    params: list[np.ndarray]
    state: list[np.ndarray]
    rng_state: dict
    records: tuple[EpochRecord, ...]
    config: dict
    normaliser: Normaliser | None = None
    early_stopping: dict = field(default_factory=dict)
    best_params: list[np.ndarray] = field(default_factory=list)


def checkpoint_bytes(ck: Checkpoint) -> bytes:
    """The checkpoint as the bytes of an ``.npz`` file."""
    meta = {
        "format": FORMAT,
        "epoch": ck.epoch,
        "n_params": len(ck.params),
        "n_state": len(ck.state),
        "rng_state": ck.rng_state,
        "config": ck.config,
        "fields": list(FIELDS),
        # Every record of a run measures the same layers, named once here.
        "layers": [layer.name for layer in ck.records[0].layers] if ck.records else [],
        "layer_fields": list(LAYER_FIELDS),
        "normalisation": ck.normaliser.method if ck.normaliser is not None else None,
        "early_stopping": ck.early_stopping,
        "n_best": len(ck.best_params),
    }
    arrays = {f"param_{i}": np.asarray(p) for i, p in enumerate(ck.params)}
    arrays |= {f"state_{i}": np.asarray(s) for i, s in enumerate(ck.state)}
    arrays |= {f"best_{i}": np.asarray(p) for i, p in enumerate(ck.best_params)}
    if ck.normaliser is not None:
        arrays["norm_shift"] = np.asarray(ck.normaliser.shift, dtype=np.float64)
        arrays["norm_scale"] = np.asarray(ck.normaliser.scale, dtype=np.float64)
    arrays["records"] = np.array([r.values() for r in ck.records], dtype=np.float64
                                 ).reshape(len(ck.records), len(FIELDS))
    arrays["layer_records"] = np.array(
        [[[getattr(layer, m) for m in LAYER_FIELDS] for layer in r.layers]
         for r in ck.records], dtype=np.float64
    ).reshape(len(ck.records), len(meta["layers"]), len(LAYER_FIELDS))
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def save_checkpoint(path: Path, ck: Checkpoint) -> Path:
    """Write a checkpoint atomically (temporary file + rename)."""
    atomic_write(Path(path), checkpoint_bytes(ck))
    return Path(path)


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises
    ------
    DeriveError
        When the file is missing, or is not a checkpoint of this format.

    """
    path = Path(path)
    if not path.is_file():
        raise DeriveError("there is no checkpoint to resume from.", where=str(path),
                          fix="Run without --resume first (with the same --out).")
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            if not isinstance(meta, dict):
                raise ValueError("its metadata is not a table")
            if meta.get("format") != FORMAT:
                raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT}")
            # The kernels take writable C-ordered arrays; a file may hold Fortran order.
            params = [np.require(npz[f"param_{i}"], requirements="CW")
                      for i in range(int(meta["n_params"]))]
            state = [np.require(npz[f"state_{i}"], requirements="CW")
                     for i in range(int(meta["n_state"]))]
            # Checkpoints written before these were recorded have none of them.
            best = [np.require(npz[f"best_{i}"], requirements="CW")
                    for i in range(int(meta.get("n_best", 0)))]
            normaliser = None
            if meta.get("normalisation") is not None:
                normaliser = Normaliser(str(meta["normalisation"]), npz["norm_shift"],
                                        npz["norm_scale"])
            table = npz["records"]
            # Checkpoints written before per-layer records have none.
            layer_table = (npz["layer_records"] if "layer_records" in npz.files
                           else np.empty((len(table), 0, len(LAYER_FIELDS))))
        if list(meta["fields"]) != list(FIELDS) or table.shape[1:] != (len(FIELDS),):
            raise ValueError("its history has other columns")
        records = tuple(EpochRecord(int(row[0]), *map(float, row[1:])) for row in table)
        epoch = int(meta["epoch"])
        if epoch != len(records):
            raise ValueError(f"it says {epoch} epoch(s) but its history holds {len(records)}")
        records = _with_layers(records, meta, layer_table)
        if not isinstance(meta["config"], dict):
            raise ValueError("its configuration is not a table")
        # The shuffling generator's state must be one a generator accepts, now rather
        # than in the middle of resuming.
        np.random.default_rng().bit_generator.state = meta["rng_state"]
        stopping = meta.get("early_stopping") or {}
        if not isinstance(stopping, dict):
            raise ValueError("its early-stopping counters are not a table")
        return Checkpoint(epoch, params, state, meta["rng_state"], records, meta["config"],
                          normaliser, stopping, best)
    except DeriveError:
        raise
    except (ValueError, KeyError, TypeError, OSError, EOFError, zipfile.BadZipFile,
            json.JSONDecodeError) as exc:
        raise DeriveError(f"this is not a readable derive checkpoint ({exc}).",
                          where=str(path),
                          fix="Delete it to start afresh, or point --out elsewhere.") from None


def _with_layers(records: tuple[EpochRecord, ...], meta: dict,
                 table: np.ndarray) -> tuple[EpochRecord, ...]:
    """The records with their per-layer measurements, checked against the metadata."""
    names = [str(n) for n in meta.get("layers", [])]
    if list(meta.get("layer_fields", LAYER_FIELDS)) != list(LAYER_FIELDS) \
            or table.shape != (len(records), len(names), len(LAYER_FIELDS)):
        raise ValueError("its per-layer history has other columns")
    if not names:
        return records
    return tuple(replace(r, layers=tuple(LayerRecord(n, *map(float, row))
                                         for n, row in zip(names, rows, strict=True)))
                 for r, rows in zip(records, table, strict=True))


def check_compatible(ck: Checkpoint, config: dict, params: list[np.ndarray],
                     where: str, state: list[np.ndarray] | None = None) -> None:
    """Refuse to resume a checkpoint made with other options, network or data.

    Parameters
    ----------
    ck : Checkpoint
        The loaded checkpoint.
    config : dict
        This run's configuration (the same keys :func:`fit` stores).
    params : list of ndarray
        Freshly initialised parameters of this run's network (for names/shapes/dtypes).
    where : str
        The checkpoint's path, for messages.
    state : list of ndarray, optional
        Freshly initialised optimizer state of this run (its shapes must match too).

    """
    # The network, loss and optimizer first: when they differ, that is the news, not the
    # data fingerprint or the parameter names that differ with them.
    first = (*LATER_KEYS, "param_names")
    keys = set(config) | set(ck.config)
    for key in [k for k in first if k in keys] + sorted(keys - set(first)):
        if key == "epochs":
            continue  # continuing for more epochs is what resuming is for
        if key in LATER_KEYS and key not in ck.config:
            continue
        ours, theirs = config.get(key), ck.config.get(key)
        if ours != theirs:
            raise DeriveError(
                f"the checkpoint was made with {key} = {theirs!r}, this run has {ours!r}; "
                "resuming would not continue the same run.",
                where=where,
                fix=f"Resume with the same {key}, or start a new run in another --out.",
            )
    ours = [(p.shape, str(p.dtype)) for p in params]
    theirs = [(p.shape, str(p.dtype)) for p in ck.params]
    if ours != theirs:
        raise DeriveError(
            f"the checkpoint's parameters {theirs} do not fit this network's {ours}.",
            where=where, fix="Resume with the network (and dtype) that made it.")
    if state is not None:
        ours = [(s.shape, str(s.dtype)) for s in state]
        theirs = [(s.shape, str(s.dtype)) for s in ck.state]
        if ours != theirs:
            raise DeriveError(
                f"the checkpoint's optimizer state {theirs} does not fit this network's "
                f"optimizer, whose state is {ours}.",
                where=where, fix="Resume with the optimizer that made it.")


# --- one run per folder ------------------------------------------------------------------

#: Locks this process holds, by real path → how many times entered: `derive train`
#: takes its folder's lock, then :func:`derive.train.loop.fit` takes it again.
_HELD: dict[str, int] = {}


@contextmanager
def run_lock(out_dir: Path | str) -> Iterator[Path]:
    """Hold ``out_dir``'s lock while the block runs: one training run writes a folder.

    The lock is the file :data:`LOCK`, created with ``O_EXCL`` (so two processes cannot
    both create it) and holding the process id. A lock left by a process that no longer
    runs (killed, or the machine restarted) is taken over. The same process may enter
    the lock again while it holds it.

    Parameters
    ----------
    out_dir : path
        The run's folder; created if missing.

    Yields
    ------
    Path
        The lock file.

    Raises
    ------
    DeriveError
        When another running process holds the lock, or the folder cannot be written.

    """
    folder = Path(out_dir)
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DeriveError(f"cannot create the run's folder ({exc.strerror}).",
                          where=str(folder), fix="Choose a writable --out.") from None
    path = folder / LOCK
    key = os.path.realpath(path)
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield path
        finally:
            _HELD[key] -= 1
        return
    _acquire(path, folder)
    _HELD[key] = 1
    try:
        yield path
    finally:
        del _HELD[key]
        _release(path)
        if created and not any(folder.iterdir()):
            folder.rmdir()  # a run that failed before writing leaves no empty folder


def _acquire(path: Path, folder: Path) -> None:
    for _ in range(5):  # each pass either takes the lock, refuses, or removes a stale one
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            text, pid = _read_lock(path)
            if text is None:
                continue  # removed in between: try again
            if _held_by_another(path, text, pid):
                who = f"process {pid}" if pid else "a run that is starting"
                raise DeriveError(
                    f"another training run ({who}) is writing this folder.",
                    where=str(folder),
                    fix=f"Wait for it to finish, or give another --out. If no run is "
                        f"using it, delete {path}.") from None
            _take_over(path, text)
            continue
        except OSError as exc:
            raise DeriveError(f"cannot write the run's lock file ({exc.strerror}).",
                              where=str(path), fix="Choose a writable --out.") from None
        try:
            os.write(fd, f"{os.getpid()}\n".encode())
        finally:
            os.close(fd)
        return
    raise DeriveError("cannot take the run's lock: other runs keep replacing it.",
                      where=str(path), fix="Give another --out.")


def _read_lock(path: Path) -> tuple[str | None, int | None]:
    """The lock's text (None if it is gone) and the process id in it (None if none)."""
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return None, None
    except OSError:
        return "", None
    word = text.strip()
    return text, int(word) if word.isdigit() and 0 < int(word) < 2**31 else None


def _held_by_another(path: Path, text: str, pid: int | None) -> bool:
    if not text.strip():
        # Created but not written yet (O_EXCL, then the write, are two steps): only an
        # old empty lock is stale.
        try:
            return time.time() - path.stat().st_mtime < FRESH_SECONDS
        except OSError:
            return False
    if pid is None:
        return False  # not a lock this code wrote
    if pid == os.getpid():
        return False  # not in _HELD, so left over by this process: stale
    try:
        os.kill(pid, 0)  # signal 0 checks that the process exists, sends nothing
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    except OSError:
        return False
    return True


def _take_over(path: Path, stale_text: str) -> None:
    """Remove a stale lock, unless another run replaced it since it was read."""
    aside = path.with_name(f".{path.name}.{os.getpid()}.stale")
    try:
        os.replace(path, aside)  # atomic: of two runs taking over, one moves it
    except FileNotFoundError:
        return
    except OSError as exc:
        raise DeriveError(f"cannot remove the stale lock of a finished run ({exc.strerror}).",
                          where=str(path), fix="Delete it, or give another --out.") from None
    try:
        if aside.read_text(encoding="ascii", errors="replace") != stale_text:
            # What was moved is a live run's new lock: put it back where it was (unless
            # a third run has taken the place meanwhile; that one then holds the folder).
            try:
                os.link(aside, path)
            except OSError:
                pass
    finally:
        aside.unlink(missing_ok=True)


def _release(path: Path) -> None:
    _, pid = _read_lock(path)
    if pid == os.getpid():
        path.unlink(missing_ok=True)
