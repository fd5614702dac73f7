"""Data sets for training: load → split → normalise → reshape, each a pure function.

Sources are named by a short string, as on the command line:

``digits``
    scikit-learn's bundled 8×8 digits (1797 images, values 0..16; no download).
``idx:DIR``
    MNIST-style IDX files in ``DIR``: ``train-images-idx3-ubyte`` and
    ``train-labels-idx1-ubyte``, optionally ``t10k-images-idx3-ubyte`` and
    ``t10k-labels-idx1-ubyte``; each may be gzipped (``.gz``), and the ``.`` spelling
    (``train-images.idx3-ubyte``) is accepted too.
``npz:FILE``
    A NumPy ``.npz`` with arrays ``x`` and ``y``, optionally ``x_test`` and ``y_test``.
``csv:FILE``
    Comma-separated numbers, one sample a row, the label in the last column; a header
    row is detected and skipped.
``adding:T=50``
    The adding problem (Hochreiter & Schmidhuber, 1997), generated: sequences of T steps
    with two channels, a value drawn uniformly from [0, 1) and a marker that is 1 at two
    steps (one in each half of the sequence) and 0 elsewhere; the target is the sum of
    the two marked values, a regression (its variance, 1/6, is the mean squared error of
    always answering the mean, 1). Options after the colon, separated by commas:
    ``T`` (the length, ≥ 2), ``n`` (training sequences, default 4000; the test set has
    a quarter as many) and ``seed`` (default 0).

The digits read as sequences: a network whose input_shape is [8, 8] reads each image as
8 time steps (its rows) of 8 pixels, as a recurrent layer wants.

Splits. A source without a test set is split once, seeded (``test_fraction`` of the
samples, chosen at random, become the test set). The validation set is, by default, the
*last* ``validation_split`` fraction of the training samples — what Keras'
``validation_split`` does — or a seeded random subset with ``shuffle_validation=True``.

Normalisation statistics come from the training samples only (never the validation or
test samples), so nothing about held-out data leaks into training:

``minmax``
    One global minimum and maximum, ``(x - min) / (max - min)``: the notes' ``/255`` for
    images, ``/16`` for digits.
``feature_minmax``
    Each feature to [0, 1] by its own minimum and maximum, ``(x - min) / (max - min)``.
``feature_minmax_signed``
    Each feature to [−1, 1]: ``2 (x - min) / (max - min) - 1``.
``pixels``
    The notes' ``x / 255`` for 8-bit pixel values (nothing is learnt; values outside
    0..255 are refused).
``zscore``
    Per-feature mean and standard deviation, ``(x - mean) / std``.

A feature that is constant in the training samples has no spread to divide by: it is
only shifted (to 0 by the min–max and z-score methods).
``l2``
    Each sample divided by its own Euclidean norm (no statistics to learn).
``none``
    Unchanged.
"""

from __future__ import annotations

import gzip
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from derive.errors import DeriveError
from derive.trainspec import NORMALISATIONS

#: Most values one loaded array may hold: 2**28 (2 GiB as float64, ~340,000 MNIST
#: images). Loading also stops earlier when the machine's available memory cannot hold
#: the array in float64 (plus its raw bytes): see :func:`check_memory`.
MAX_VALUES = 1 << 28
SOURCES = ("digits", "idx:DIR", "npz:FILE", "csv:FILE", "adding:T=50")
_SOURCE_FIX = "Use one of: digits, idx:DIR, npz:FILE, csv:FILE, adding:T=50."
#: The adding problem's options and their defaults (see the module docstring).
ADDING_OPTIONS = {"T": 50, "n": 4000, "seed": 0}
#: Most values the adding problem generates (T·n·2 for training, a quarter more for test).
_ADDING_MAX = 1 << 26


@dataclass(frozen=True, eq=False)
class Source:
    """Samples as loaded, before any split or normalisation.

    Attributes
    ----------
    name : str
        The source string it was loaded from.
    x, y : ndarray
        Training samples (float64, batch first, any sample shape) and targets: int64
        class labels when every target is a non-negative integer, float64 otherwise.
    x_test, y_test : ndarray or None
        The source's own test set, when it has one.

    """

    name: str
    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class Normaliser:
    """An input normalisation fitted on training samples: ``(x - shift) / scale``.

    Attributes
    ----------
    method : str
        One of :data:`NORMALISATIONS`.
    shift, scale : ndarray
        Statistics of the training samples, broadcastable to one sample (unused for
        ``l2`` and ``none``).

    """

    method: str
    shift: np.ndarray
    scale: np.ndarray


@dataclass(frozen=True, eq=False)
class Dataset:
    """Training, validation and test arrays, normalised and shaped for a network.

    Attributes
    ----------
    name : str
        The source string.
    x_train, y_train, x_val, y_val, x_test, y_test : ndarray
        Inputs of shape ``(N, *input_shape)`` in the chosen dtype and their targets. The
        validation arrays may be empty (zero rows).
    normaliser : Normaliser
        Fitted on ``x_train``; apply it to any new input with :func:`normalise`.
    n_classes : int or None
        Number of classes for classification, None for regression targets.

    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    normaliser: Normaliser
    n_classes: int | None


# --- loading ----------------------------------------------------------------------------


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation now (Linux), or None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(values: int, itemsize: int, where: str, what: str) -> None:
    """Refuse an array of ``values`` elements before reading it, when it cannot fit.

    The bound is :data:`MAX_VALUES`, and the memory available now for the array as
    read (``itemsize`` bytes each) plus its float64 copy.

    Raises
    ------
    DeriveError
        Naming the file, its declared size and the bound it exceeds.

    """
    need = values * (itemsize + 8)
    free = available_memory()
    if values > MAX_VALUES:
        raise DeriveError(f"{what} declares {values:,} values, more than derive loads "
                          f"({MAX_VALUES:,}).", where=where,
                          fix="Use a smaller data set, or a subset of this one.")
    if free is not None and need > free:
        raise DeriveError(f"{what} needs {need / 2**30:.1f} GiB of memory to load; "
                          f"{free / 2**30:.1f} GiB are available.", where=where,
                          fix="Free some memory, or use a subset of the data.")


def load_source(spec: str) -> Source:
    """Load the samples a source string names.

    Parameters
    ----------
    spec : str
        ``digits``, ``idx:DIR``, ``npz:FILE`` or ``csv:FILE``.

    Returns
    -------
    Source

    Raises
    ------
    DeriveError
        For an unknown source, a missing file, or a file that is not what it claims.

    """
    kind, sep, arg = str(spec).partition(":")
    kind = kind.strip().lower()
    if kind == "digits" and not sep:
        return _load_digits()
    if kind == "adding":
        return adding_problem(**_adding_options(arg, spec))
    loaders = {"idx": _load_idx_dir, "npz": _load_npz, "csv": _load_csv}
    if kind not in loaders:
        raise DeriveError(f"unknown data source {spec!r}.", where="--data", fix=_SOURCE_FIX)
    if not arg:
        raise DeriveError(f"the data source {spec!r} names no path.", where="--data",
                          fix=f"Write it as {kind}:PATH.")
    source = loaders[kind](Path(arg).expanduser(), spec)
    _check_pairs(source)
    return source


def _load_digits() -> Source:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return Source("digits", bunch.images.astype(np.float64), _targets(bunch.target, "digits"))


def _adding_options(text: str, spec: str) -> dict:
    """``T=50,n=4000,seed=0`` → the adding problem's keyword arguments, checked."""
    options = dict(ADDING_OPTIONS)
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if key not in options or not eq:
            raise DeriveError(f"{item!r} is not an option of the adding problem.",
                              where=f"--data {spec}",
                              fix="Write e.g. adding:T=50 or adding:T=50,n=4000,seed=0 "
                                  f"(options: {', '.join(ADDING_OPTIONS)}).")
        low = {"T": 2, "n": 1, "seed": 0}[key]
        try:
            number = int(value)
        except ValueError:
            number = None
        if number is None or number < low:
            raise DeriveError(f"{key} must be an integer ≥ {low}, got {value.strip()!r}.",
                              where=f"--data {spec}", fix=f"Write e.g. adding:{key}="
                              f"{ADDING_OPTIONS[key]}.")
        options[key] = number
    if options["T"] * options["n"] * 2 > _ADDING_MAX:
        raise DeriveError(f"T × n = {options['T'] * options['n']:,} steps is more than the "
                          "adding problem generates.", where=f"--data {spec}",
                          fix="Use fewer or shorter sequences.")
    return options


def adding_problem(T: int = 50, n: int = 4000, seed: int = 0) -> Source:
    """The adding problem: ``n`` training and ``n // 4`` test sequences of ``T`` steps.

    Parameters
    ----------
    T : int
        Sequence length (≥ 2): the marked values lie up to T − 1 steps apart.
    n : int
        Training sequences.
    seed : int
        Seeds the draw, so a source string always gives the same sequences.

    Returns
    -------
    Source
        x of shape (N, T, 2) (value, marker) and float targets of shape (N,).
    """
    rng = np.random.default_rng(seed)

    def draw(count):
        values = rng.uniform(0.0, 1.0, size=(count, T))
        markers = np.zeros((count, T))
        rows = np.arange(count)
        half = T // 2
        first, second = rng.integers(0, half, count), rng.integers(half, T, count)
        markers[rows, first] = markers[rows, second] = 1.0
        return (np.stack([values, markers], axis=2),
                values[rows, first] + values[rows, second])

    x, y = draw(n)
    x_test, y_test = draw(max(1, n // 4))
    return Source(f"adding:T={T}", x, y, x_test, y_test)


#: IDX type byte → big-endian dtype.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (optionally gzipped), checking its header strictly.

    The header is two zero bytes, a type byte, the number of dimensions, then each
    dimension as a big-endian 32-bit integer; the data must fill the rest of the file
    exactly. Only as many bytes as the header promises (plus one, to detect trailing
    data) are ever read, so a hostile ``.gz`` cannot inflate without bound.

    Parameters
    ----------
    path : Path
        The file.

    Returns
    -------
    ndarray
        Its array, in native byte order.

    Raises
    ------
    DeriveError
        Naming the file and what is wrong with it.

    """
    path = Path(path)

    def bad(what: str, fix: str = "") -> DeriveError:
        return DeriveError(what, where=str(path),
                           fix=fix or "Re-download the file; it is not a valid IDX file.")

    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            magic = f.read(4)
            if len(magic) < 4:
                raise bad(f"the file is {len(magic)} bytes long, shorter than an IDX header.")
            if magic[0] != 0 or magic[1] != 0:
                raise bad(f"the magic number starts with {magic[:2].hex()}, not 0000 "
                          "(is this an IDX file?).")
            if magic[2] not in _IDX_TYPES:
                raise bad(f"unknown IDX data type 0x{magic[2]:02x}.")
            ndim = magic[3]
            if ndim == 0:
                raise bad("the header declares zero dimensions.")
            raw_dims = f.read(4 * ndim)
            if len(raw_dims) < 4 * ndim:
                raise bad(f"the header declares {ndim} dimensions but the file ends before "
                          "their sizes.")
            dims = tuple(int(d) for d in np.frombuffer(raw_dims, ">u4"))
            dtype = np.dtype(_IDX_TYPES[magic[2]])
            values = int(np.prod(dims, dtype=object))
            # Bounded before reading: a gzip bomb inflates no further than the header's
            # dimensions (plus one byte, to see trailing data), and those are bounded.
            check_memory(values, dtype.itemsize, str(path), f"the header's {dims}")
            expected = values * dtype.itemsize
            data = f.read(expected + 1)
    except DeriveError:
        raise
    except FileNotFoundError:
        raise DeriveError("the file does not exist.", where=str(path)) from None
    except (OSError, EOFError, zlib.error) as exc:
        raise bad(f"the file cannot be read ({exc}).") from None
    if len(data) < expected:
        raise bad(f"the header declares dimensions {dims} ({expected} bytes of data) but "
                  f"only {len(data)} bytes follow: the file is truncated.")
    if len(data) > expected:
        raise bad(f"the header declares dimensions {dims} but more data follows than "
                  "they hold.")
    return np.frombuffer(data, dtype).reshape(dims).astype(dtype.newbyteorder("="))


def _find_idx(directory: Path, stem: str, kind: str) -> Path | None:
    """``stem-kind`` or ``stem.kind`` (both spellings circulate), optionally ``.gz``."""
    for name in (f"{stem}-{kind}", f"{stem}.{kind}"):
        for candidate in (directory / name, directory / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _load_idx_pair(directory: Path, prefix: str) -> tuple[np.ndarray, np.ndarray] | None:
    images = _find_idx(directory, f"{prefix}-images", "idx3-ubyte")
    labels = _find_idx(directory, f"{prefix}-labels", "idx1-ubyte")
    if images is None and labels is None:
        return None
    if images is None or labels is None:
        missing = f"{prefix}-images-idx3-ubyte" if images is None else \
            f"{prefix}-labels-idx1-ubyte"
        raise DeriveError(f"{missing} (or .gz) is missing.", where=str(directory),
                          fix="Put the images and labels files side by side.")
    x, y = read_idx(images), read_idx(labels)
    if x.ndim < 2:
        raise DeriveError(f"an images file needs at least 2 dimensions, this has {x.ndim}.",
                          where=str(images))
    if y.ndim != 1:
        raise DeriveError(f"a labels file has 1 dimension, this has {y.ndim}.",
                          where=str(labels))
    if len(x) != len(y):
        raise DeriveError(f"{len(x)} images but {len(y)} labels.",
                          where=f"{images.name} / {labels.name}",
                          fix="Use the images and labels files of the same set.")
    return x.astype(np.float64), _targets(y, str(labels))


def _load_idx_dir(directory: Path, spec: str) -> Source:
    if not directory.is_dir():
        raise DeriveError("the directory does not exist.", where=str(directory),
                          fix="Give the folder holding train-images-idx3-ubyte(.gz) etc.")
    train = _load_idx_pair(directory, "train")
    if train is None:
        raise DeriveError("no train-images-idx3-ubyte(.gz) in this directory.",
                          where=str(directory),
                          fix="Give the folder holding the MNIST IDX files.")
    test = _load_idx_pair(directory, "t10k")
    return Source(spec, *train, *(test or (None, None)))


def _need_file(path: Path) -> None:
    """Refuse a path that is missing or is not a regular file (a FIFO would block)."""
    if not path.is_file():
        what = "is not a regular file" if path.exists() else "does not exist"
        raise DeriveError(f"the file {what}.", where=str(path))


def _load_npz(path: Path, spec: str) -> Source:
    _need_file(path)
    if not zipfile.is_zipfile(path):  # np.load would return a .npy file's one array
        raise DeriveError("this is not a readable .npz file (not a zip archive of arrays).",
                          where=str(path), fix="Save it with numpy.savez(path, x=..., y=...).")
    try:
        _check_npz_sizes(path)
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files if k in ("x", "y", "x_test", "y_test")}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, KeyError, zlib.error) as exc:
        raise DeriveError(f"this is not a readable .npz file ({exc}).", where=str(path),
                          fix="Save it with numpy.savez(path, x=..., y=...).") from None
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise DeriveError(f"the file has no array named {' or '.join(missing)}.",
                          where=str(path), fix="Save it with numpy.savez(path, x=..., y=...).")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DeriveError("x_test and y_test come together; the file has only one of them.",
                          where=str(path))
    out = {}
    for key, value in arrays.items():
        where = f"{path} [{key}]"
        if key.startswith("x"):
            out[key] = _features(value, where)
        else:
            out[key] = _targets(value, where)
    return Source(spec, out["x"], out["y"], out.get("x_test"), out.get("y_test"))


def _check_npz_sizes(path: Path) -> None:
    """Read each array's header (not its data) and refuse sizes that cannot be loaded.

    ``np.load`` would allocate the declared shape and inflate the member into it: a
    small, highly compressed file could ask for any amount of memory.
    """
    if not zipfile.is_zipfile(path):
        return  # np.load reports what the file is not
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if info.filename.removesuffix(".npy") not in ("x", "y", "x_test", "y_test"):
                continue
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(member)
            values = int(np.prod(shape, dtype=object))
            check_memory(values, max(dtype.itemsize, 1), f"{path} [{info.filename}]",
                         f"the array of shape {shape}")


def _load_csv(path: Path, spec: str) -> Source:
    _need_file(path)
    try:
        # utf-8-sig: a byte-order mark (Excel writes one) would make the first row
        # look like a header, and that sample would be dropped in silence.
        with open(path, encoding="utf-8-sig") as f:
            first = f.readline()
    except (OSError, UnicodeDecodeError) as exc:
        raise DeriveError(f"the file cannot be read as text ({exc}).", where=str(path)) \
            from None
    # A table of numbers takes at least two characters a value ("1,"): its float64 array
    # is at most four times the file's size.
    check_memory(path.stat().st_size // 2, 0, str(path), "the file")
    header = 0
    try:
        [float(cell) for cell in first.strip().split(",")]
    except ValueError:
        header = 1  # the first row is not numbers: a header
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "no data" is reported below, as an error
            table = np.loadtxt(path, delimiter=",", skiprows=header, ndmin=2,
                               dtype=np.float64, encoding="utf-8-sig")
    except (ValueError, UnicodeDecodeError) as exc:
        raise DeriveError(f"the file is not a table of numbers ({exc}).", where=str(path),
                          fix="One sample a row, comma-separated, the label last; an "
                              "optional header row.") from None
    if table.shape[0] == 0:
        raise DeriveError("the file has no data rows.", where=str(path))
    if table.shape[1] < 2:
        raise DeriveError("each row needs at least one feature and the label.",
                          where=str(path))
    return Source(spec, _features(table[:, :-1], str(path)),
                  _targets(table[:, -1], f"{path} (last column)"))


def _features(x: np.ndarray, where: str) -> np.ndarray:
    if x.dtype.kind not in "biuf":
        raise DeriveError(f"the inputs are of type {x.dtype}, not numbers.", where=where)
    if x.ndim < 2 or x.shape[0] == 0:
        raise DeriveError(f"the inputs have shape {x.shape}; expected (samples, features...).",
                          where=where)
    x = np.ascontiguousarray(x, dtype=np.float64)
    if not np.isfinite(x).all():
        raise DeriveError("the inputs contain NaN or infinite values.", where=where,
                          fix="Clean or impute the data first.")
    return x


def _targets(y: np.ndarray, where: str) -> np.ndarray:
    """Integer class labels when the targets are, float targets otherwise.

    One-hot rows (a single 1 in each row of zeros) become labels too.
    """
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise DeriveError(f"the targets are of type {y.dtype}, not numbers.", where=where)
    if y.ndim == 0 or y.shape[0] == 0:
        raise DeriveError(f"the targets have shape {y.shape}; expected one a sample.",
                          where=where)
    y = y.astype(np.float64)
    if not np.isfinite(y).all():
        raise DeriveError("the targets contain NaN or infinite values.", where=where)
    if y.ndim == 2 and y.shape[1] > 1 and np.isin(y, (0.0, 1.0)).all() \
            and (y.sum(axis=1) == 1).all():
        return np.argmax(y, axis=1).astype(np.int64)
    # Below 2**53 every integer is exact in float64 and fits int64; past it the cast
    # wraps (2**64 - 1 became -2**63) and such a number is no class label anyway.
    if y.ndim == 1 and (y == np.round(y)).all() and (y >= 0).all() and (y < 2**53).all():
        return y.astype(np.int64)
    return np.ascontiguousarray(y)


def _check_pairs(source: Source) -> None:
    pairs = [("x", source.x, source.y)]
    if source.x_test is not None:
        pairs.append(("x_test", source.x_test, source.y_test))
        if source.x_test.shape[1:] != source.x.shape[1:]:
            raise DeriveError(f"test samples have shape {source.x_test.shape[1:]} but training "
                              f"samples {source.x.shape[1:]}.", where=source.name)
    for name, x, y in pairs:
        if len(x) != len(y):
            raise DeriveError(f"{name} has {len(x)} samples but its targets {len(y)}.",
                              where=source.name)


# --- splitting --------------------------------------------------------------------------


def split_test(source: Source, fraction: float = 0.2, seed: int = 0) -> Source:
    """Give a source without a test set one: a seeded random ``fraction`` of its samples.

    A source that has a test set is returned unchanged.
    """
    if source.x_test is not None:
        return source
    _check_fraction(fraction, "test fraction", allow_zero=False)
    n = len(source.x)
    n_test = int(round(n * fraction))
    if n_test < 1 or n_test >= n:
        raise DeriveError(f"{n} samples are too few to hold out a test set of {fraction:g}.",
                          where=source.name, fix="Use more samples.")
    order = np.random.default_rng(seed).permutation(n)
    train, test = order[:-n_test], order[-n_test:]
    return Source(source.name, source.x[train], source.y[train], source.x[test],
                  source.y[test])


def split_validation(x: np.ndarray, y: np.ndarray, fraction: float, *, shuffle: bool = False,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Hold out a validation set: the last ``fraction`` (Keras) or a seeded random subset.

    Returns
    -------
    x_train, y_train, x_val, y_val : ndarray
        The validation arrays have zero rows when ``fraction`` is 0.

    """
    _check_fraction(fraction, "validation split", allow_zero=True)
    n = len(x)
    n_val = int(n * fraction)  # Keras rounds the split point down the same way
    if fraction > 0 and (n_val < 1 or n_val >= n):
        raise DeriveError(f"{n} training samples are too few for a validation split of "
                          f"{fraction:g}.", where="validation_split",
                          fix="Use a larger split, more data, or 0 for none.")
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    train, val = order[: n - n_val], order[n - n_val:]
    return x[train], y[train], x[val], y[val]


def _check_fraction(fraction: float, name: str, *, allow_zero: bool) -> None:
    ok = 0 <= fraction < 1 if allow_zero else 0 < fraction < 1
    if not (isinstance(fraction, int | float) and ok):
        bound = "0 ≤ f < 1" if allow_zero else "0 < f < 1"
        raise DeriveError(f"the {name} {fraction!r} is not a fraction {bound}.", where=name)


# --- normalising and shaping ------------------------------------------------------------


#: The notes' pixel scale: 8-bit grey levels 0..255 divided by 255 land in [0, 1].
PIXEL_MAX = 255.0


def _spread(span: np.ndarray) -> np.ndarray:
    # A constant feature has no spread; dividing by it would give 0/0. Its scale is left
    # at 1, so it is only shifted (to 0, the middle of a [-1, 1] range, or its mean).
    return np.where(span > 0, span, 1.0)


def _global_minmax(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = float(x.min()), float(x.max())
    return np.full(x.shape[1:], lo), np.full(x.shape[1:], hi - lo or 1.0)


def _feature_minmax(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = x.min(axis=0), x.max(axis=0)
    return lo, _spread(hi - lo)


def _feature_minmax_signed(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # 2(x − min)/(max − min) − 1 = (x − mid)/half, with mid the range's middle.
    lo, hi = x.min(axis=0), x.max(axis=0)
    return (lo + hi) / 2, _spread((hi - lo) / 2)


def _zscore(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x.mean(axis=0), _spread(x.std(axis=0))


def _pixels(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > PIXEL_MAX:
        raise DeriveError(
            f"x/255 is for 8-bit pixel values from 0 to 255, but these inputs range from "
            f"{lo:g} to {hi:g}.", where="normalisation pixels",
            fix="Use minmax (divides by the data's own range) or feature_minmax.")
    return np.zeros(x.shape[1:]), np.full(x.shape[1:], PIXEL_MAX)


def _no_statistics(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(x.shape[1:]), np.ones(x.shape[1:])


#: Each normalisation's statistics, learnt from the training samples as (shift, scale):
#: the samples become (x − shift) / scale.
_FIT = {
    "minmax": _global_minmax,
    "feature_minmax": _feature_minmax,
    "feature_minmax_signed": _feature_minmax_signed,
    "pixels": _pixels,
    "zscore": _zscore,
    "l2": _no_statistics,
    "none": _no_statistics,
}


def _unit_norm(normaliser: Normaliser, x: np.ndarray) -> np.ndarray:
    flat = x.reshape(len(x), -1)
    norms = np.linalg.norm(flat, axis=1)
    return (flat / np.where(norms > 0, norms, 1.0)[:, None]).reshape(x.shape)


def _affine(normaliser: Normaliser, x: np.ndarray) -> np.ndarray:
    return (x - normaliser.shift) / normaliser.scale


#: How each normalisation transforms samples; the others are affine with their statistics.
_APPLY = {"l2": _unit_norm, "none": lambda normaliser, x: x}


def fit_normaliser(x_train: np.ndarray, method: str = "minmax") -> Normaliser:
    """Learn a normalisation's statistics from the training samples (only).

    Parameters
    ----------
    x_train : ndarray
        Training samples, batch first.
    method : str
        One of :data:`NORMALISATIONS`.

    Returns
    -------
    Normaliser

    Raises
    ------
    DeriveError
        For an unknown method, or ``pixels`` on values outside 0..255.

    """
    if method not in NORMALISATIONS or method not in _FIT:
        raise DeriveError(f"unknown normalisation {method!r}.", where="normalisation",
                          fix=f"Use one of: {', '.join(NORMALISATIONS)}.")
    shift, scale = _FIT[method](np.asarray(x_train, dtype=np.float64))
    return Normaliser(method, shift, scale)


def normalise(normaliser: Normaliser, x: np.ndarray) -> np.ndarray:
    """Apply a fitted normalisation to samples (training, validation, test or new).

    Held-out samples use the training statistics, so they may fall outside the range
    the training samples were mapped to (a test pixel brighter than any training one).
    """
    return _APPLY.get(normaliser.method, _affine)(normaliser, x)


def _square_side(size: int) -> int | None:
    """The side of a square grey image with ``size`` pixels, if there is one."""
    side = int(round(size ** 0.5))
    return side if side * side == size and side > 1 else None


def resize_images(images: np.ndarray, side: int) -> np.ndarray:
    """Resample square images to ``side`` × ``side`` pixels (bilinear).

    This is how the bundled 8×8 digits meet a network built for 28×28 MNIST images,
    such as the notes' 784-input MLP: the same digits, drawn on MNIST's grid.
    """
    from scipy.ndimage import zoom

    factor = side / images.shape[-1]
    resized = zoom(np.asarray(images, dtype=np.float64), (1, factor, factor), order=1)
    return np.clip(resized, images.min(), images.max())


def to_input_shape(x: np.ndarray, input_shape: tuple[int, ...], where: str = "data",
                   dtype=np.float64) -> np.ndarray:
    """Reshape samples to a network's input shape (e.g. 28×28 → 784 or 1×28×28).

    Raises
    ------
    DeriveError
        When the samples do not hold as many values as the network's input.

    """
    shape = tuple(int(d) for d in input_shape)
    size, expected = int(np.prod(x.shape[1:])), int(np.prod(shape))
    side = _square_side(expected)
    if size != expected and x.ndim >= 3 and x.shape[-1] == x.shape[-2] and side:
        x = resize_images(x.reshape(len(x), x.shape[-2], x.shape[-1]), side)
        size = int(np.prod(x.shape[1:]))
    if size != expected:
        raise DeriveError(
            f"each sample has {size} values (shape {tuple(x.shape[1:])}) but the network "
            f"expects {expected} (INPUT_SHAPE {shape}).",
            where=where, fix="Use a data set that matches the network's input, or change the "
                             "spec's input shape.")
    return np.ascontiguousarray(x.reshape((len(x), *shape)), dtype=dtype)


def _check_labels(y: np.ndarray, n_classes: int | None, where: str) -> None:
    if n_classes is None:
        return
    if y.dtype.kind != "i" or y.ndim != 1:
        raise DeriveError(f"the targets are not class labels (dtype {y.dtype}, shape "
                          f"{y.shape}) but the network classifies into {n_classes} classes.",
                          where=where, fix="Give integer labels 0..N_CLASSES-1.")
    if len(y) and int(y.max()) >= n_classes:
        raise DeriveError(f"labels go up to {int(y.max())} but the network has {n_classes} "
                          "classes.", where=where,
                          fix="Use a network whose last layer has one output per class.")


def prepare(spec: str | Source, input_shape: tuple[int, ...], *,
            n_classes: int | None = None, validation_split: float = 0.0,
            normalisation: str = "minmax", test_fraction: float = 0.2, seed: int = 0,
            shuffle_validation: bool = False, dtype=np.float64) -> Dataset:
    """Load, split, normalise and reshape a data set for a network, in that order.

    Parameters
    ----------
    spec : str or Source
        A source string (see the module docstring) or an already loaded source.
    input_shape : tuple of int
        The network's ``INPUT_SHAPE`` (without the batch dimension).
    n_classes : int, optional
        The network's ``N_CLASSES``; labels are checked against it.
    validation_split : float
        Fraction of the training samples held out for validation (0: none).
    normalisation : str
        One of :data:`NORMALISATIONS`; its statistics come from the training part only.
    test_fraction : float
        Fraction held out as the test set when the source has none.
    seed : int
        Seeds the test split (and the validation split when shuffled).
    shuffle_validation : bool
        Take a random validation subset instead of the last fraction (Keras' way).
    dtype : numpy dtype
        float64 or float32; the network's parameters follow it.

    Returns
    -------
    Dataset

    """
    source = spec if isinstance(spec, Source) else load_source(spec)
    source = split_test(source, test_fraction, seed)
    x_tr, y_tr, x_val, y_val = split_validation(source.x, source.y, validation_split,
                                                shuffle=shuffle_validation, seed=seed)
    for y, part in ((y_tr, "training"), (y_val, "validation"), (source.y_test, "test")):
        _check_labels(y, n_classes, f"{source.name} ({part} targets)")
    norm = fit_normaliser(x_tr, normalisation)

    def shaped(x):
        return to_input_shape(normalise(norm, x), input_shape, source.name, dtype)

    return Dataset(source.name, shaped(x_tr), y_tr, shaped(x_val), y_val,
                   shaped(source.x_test), source.y_test, norm, n_classes)


def dataset_for(module, spec: str | Source = "digits", **options) -> Dataset:
    """:func:`prepare` for a generated network module, defaults from its ``TRAIN`` table.

    ``validation_split`` and ``seed`` default to the module's ``TRAIN`` values, the input
    shape and number of classes to its ``INPUT_SHAPE`` and ``N_CLASSES``; ``options``
    override any of :func:`prepare`'s keywords.
    """
    train = dict(getattr(module, "TRAIN", {}) or {})
    defaults = {
        "n_classes": getattr(module, "N_CLASSES", None),
        "validation_split": float(train.get("validation_split", 0.0)),
        "seed": int(train.get("seed", 0)),
    }
    data = prepare(spec, tuple(module.INPUT_SHAPE), **{**defaults, **options})
    check = getattr(module, "check_data", None)  # modules generated before it lack it
    for part, x, y in (("training", data.x_train, data.y_train),
                       ("validation", data.x_val, data.y_val),
                       ("test", data.x_test, data.y_test)):
        if check is None or not len(x):
            continue
        try:
            check(x, y)
        except (TypeError, ValueError) as error:
            raise DeriveError(f"the network cannot train on these data: {error}.",
                              where=f"{data.name} ({part} set)",
                              fix="Choose a loss for these targets in the spec (e.g. "
                                  "a cross-entropy for class labels), or other data."
                              ) from None
    return data
