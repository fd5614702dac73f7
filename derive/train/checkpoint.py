"""Checkpoints: everything a run needs to continue bit for bit, in one atomic ``.npz``.

A checkpoint holds the parameters, the optimizer state, the number of epochs done, the
shuffling generator's state, the history so far, and the run's configuration (so that
resuming with different options is refused rather than silently not reproducible). It is
written through :func:`derive.codegen.emit.atomic_write`: a run killed at any moment
leaves the previous checkpoint or the new one, never a truncated file.

Nothing is pickled: arrays are stored as arrays and the rest as one JSON string, and the
file is read back with ``allow_pickle=False``.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import astuple, dataclass
from pathlib import Path

import numpy as np

from derive.codegen.emit import atomic_write
from derive.errors import DeriveError
from derive.train.report import FIELDS, EpochRecord

CHECKPOINT = "checkpoint.npz"
FORMAT = 1


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

    """

    epoch: int
    params: list[np.ndarray]
    state: list[np.ndarray]
    rng_state: dict
    records: tuple[EpochRecord, ...]
    config: dict


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
    }
    arrays = {f"param_{i}": np.asarray(p) for i, p in enumerate(ck.params)}
    arrays |= {f"state_{i}": np.asarray(s) for i, s in enumerate(ck.state)}
    arrays["records"] = np.array([astuple(r) for r in ck.records], dtype=np.float64
                                 ).reshape(len(ck.records), len(FIELDS))
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
            if meta.get("format") != FORMAT:
                raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT}")
            params = [npz[f"param_{i}"] for i in range(int(meta["n_params"]))]
            state = [npz[f"state_{i}"] for i in range(int(meta["n_state"]))]
            table = npz["records"]
        if list(meta["fields"]) != list(FIELDS) or table.shape[1:] != (len(FIELDS),):
            raise ValueError("its history has other columns")
        records = tuple(EpochRecord(int(row[0]), *map(float, row[1:])) for row in table)
        return Checkpoint(int(meta["epoch"]), params, state, meta["rng_state"], records,
                          meta["config"])
    except DeriveError:
        raise
    except (ValueError, KeyError, TypeError, OSError, EOFError, zipfile.BadZipFile,
            json.JSONDecodeError) as exc:
        raise DeriveError(f"this is not a readable derive checkpoint ({exc}).",
                          where=str(path),
                          fix="Delete it to start afresh, or point --out elsewhere.") from None


def check_compatible(ck: Checkpoint, config: dict, params: list[np.ndarray],
                     where: str) -> None:
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

    """
    for key in sorted(set(config) | set(ck.config)):
        if key == "epochs":
            continue  # continuing for more epochs is what resuming is for
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
