"""Data loading: IDX/npz/csv files made here (never downloaded), splits, normalisation."""

import gzip
import struct

import numpy as np
import pytest

from derive.errors import DeriveError
from derive.train.data import (
    Source,
    fit_normaliser,
    load_source,
    normalise,
    prepare,
    read_idx,
    split_test,
    split_validation,
    to_input_shape,
)


def idx_bytes(array: np.ndarray, type_byte: int = 0x08) -> bytes:
    dtype = {0x08: ">u1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[type_byte]
    header = bytes([0, 0, type_byte, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=dtype).tobytes()


def write_mnist(directory, n_train=30, n_test=10, gz=False, size=4, seed=0, test=True):
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    sets = {"train": n_train, "t10k": n_test} if test else {"train": n_train}
    arrays = {}
    for prefix, n in sets.items():
        images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        arrays[prefix] = (images, labels)
        for kind, arr in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
            data = idx_bytes(arr)
            name = f"{prefix}-{kind}"
            if gz:
                (directory / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (directory / name).write_bytes(data)
    return arrays


# --- IDX --------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_idx_directory_loads_train_and_test(tmp_path, gz):
    arrays = write_mnist(tmp_path / "mnist", gz=gz)
    src = load_source(f"idx:{tmp_path / 'mnist'}")
    assert src.x.shape == (30, 4, 4) and src.x.dtype == np.float64
    np.testing.assert_array_equal(src.x, arrays["train"][0])
    np.testing.assert_array_equal(src.y, arrays["train"][1])
    assert src.y.dtype == np.int64
    np.testing.assert_array_equal(src.x_test, arrays["t10k"][0])
    np.testing.assert_array_equal(src.y_test, arrays["t10k"][1])


def test_idx_dotted_names_and_missing_test_set(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    images = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    (d / "train-images.idx3-ubyte").write_bytes(idx_bytes(images))
    (d / "train-labels.idx1-ubyte").write_bytes(idx_bytes(np.array([1, 7], np.uint8)))
    src = load_source(f"idx:{d}")
    np.testing.assert_array_equal(src.x, images)
    assert src.x_test is None and list(src.y) == [1, 7]


def test_idx_other_types_are_read_big_endian(tmp_path):
    values = np.array([[1.5, -2.25], [1e10, 0.0]])
    path = tmp_path / "f.idx"
    path.write_bytes(idx_bytes(values, 0x0E))
    out = read_idx(path)
    np.testing.assert_array_equal(out, values)
    assert out.dtype == np.float64 and out.dtype.isnative
    path.write_bytes(idx_bytes(np.array([-3, 1000, 70000]), 0x0C))
    assert list(read_idx(path)) == [-3, 1000, 70000]


def _corrupt(tmp_path, data: bytes, name="train-images-idx3-ubyte"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


GOOD = idx_bytes(np.zeros((3, 2, 2), np.uint8))


@pytest.mark.parametrize("data, words", [
    (b"", "shorter than an IDX header"),
    (b"\x00\x00", "shorter than an IDX header"),
    (b"\x1f\x8b\x08\x03" + GOOD[4:], "magic number starts with 1f8b"),
    (b"\x00\x00\x42\x03" + GOOD[4:], "unknown IDX data type 0x42"),
    (b"\x00\x00\x08\x00", "zero dimensions"),
    (b"\x00\x00\x08\x03\x00\x00\x00\x03", "ends before their sizes"),
    (GOOD[:-1], "truncated"),
    (GOOD + b"\x00", "more data follows"),
    (b"\x00\x00\x08\x04" + b"\xff" * 16, "more than derive loads"),
], ids=["empty", "short", "magic", "type", "ndim0", "dims", "truncated", "trailing", "huge"])
def test_corrupted_idx_gives_a_clear_error_naming_the_file(tmp_path, data, words):
    path = _corrupt(tmp_path, data)
    with pytest.raises(DeriveError) as err:
        read_idx(path)
    assert words in err.value.message
    assert str(path) in err.value.message


def test_corrupted_gzip_is_a_clear_error(tmp_path):
    path = _corrupt(tmp_path, gzip.compress(GOOD)[:-12], "train-images-idx3-ubyte.gz")
    with pytest.raises(DeriveError, match="cannot be read|truncated") as err:
        read_idx(path)
    assert str(path) in err.value.message
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DeriveError, match="cannot be read"):
        read_idx(path)


def test_gzip_bomb_is_not_inflated_beyond_the_header(tmp_path):
    # A header promising 4 bytes, followed by 50 MB of zeros: only 5 bytes are read.
    data = b"\x00\x00\x08\x01\x00\x00\x00\x04" + bytes(50_000_000)
    path = _corrupt(tmp_path, gzip.compress(data), "x.gz")
    with pytest.raises(DeriveError, match="more data follows"):
        read_idx(path)


def test_idx_images_and_labels_must_agree(tmp_path):
    d = tmp_path / "m"
    write_mnist(d, test=False)
    (d / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(29, np.uint8)))
    with pytest.raises(DeriveError, match="30 images but 29 labels"):
        load_source(f"idx:{d}")
    (d / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(DeriveError, match="train-labels-idx1-ubyte .*missing"):
        load_source(f"idx:{d}")


def test_idx_missing_directory_or_files(tmp_path):
    with pytest.raises(DeriveError, match="does not exist"):
        load_source(f"idx:{tmp_path / 'nope'}")
    with pytest.raises(DeriveError, match="no train-images"):
        load_source(f"idx:{tmp_path}")


# --- npz and csv ------------------------------------------------------------------------


def test_npz_with_and_without_test_arrays(tmp_path):
    x = np.arange(20.0).reshape(10, 2)
    y = np.arange(10) % 3
    np.savez(tmp_path / "a.npz", x=x, y=y)
    src = load_source(f"npz:{tmp_path / 'a.npz'}")
    np.testing.assert_array_equal(src.x, x)
    assert src.y.dtype == np.int64 and src.x_test is None
    np.savez(tmp_path / "b.npz", x=x, y=y, x_test=x[:2], y_test=y[:2])
    src = load_source(f"npz:{tmp_path / 'b.npz'}")
    assert src.x_test.shape == (2, 2)


def test_npz_one_hot_targets_become_labels_and_float_targets_stay(tmp_path):
    x = np.zeros((3, 2))
    np.savez(tmp_path / "a.npz", x=x, y=np.eye(3)[[2, 0, 1]])
    assert list(load_source(f"npz:{tmp_path / 'a.npz'}").y) == [2, 0, 1]
    np.savez(tmp_path / "b.npz", x=x, y=np.array([0.5, 1.0, -2.0]))
    assert load_source(f"npz:{tmp_path / 'b.npz'}").y.dtype == np.float64


@pytest.mark.parametrize("arrays, words", [
    ({"x": np.zeros((3, 2))}, "no array named y"),
    ({"x": np.zeros((3, 2)), "y": np.zeros(2)}, "3 samples but its targets 2"),
    ({"x": np.array([[np.nan, 1.0]]), "y": np.zeros(1)}, "NaN or infinite"),
    ({"x": np.zeros((2, 2)), "y": np.zeros(2), "x_test": np.zeros((1, 2))}, "come together"),
    ({"x": np.zeros((2, 2)), "y": np.zeros(2), "x_test": np.zeros((1, 3)),
      "y_test": np.zeros(1)}, "test samples have shape"),
    ({"x": np.array(["a", "b"]), "y": np.zeros(2)}, "not numbers"),
])
def test_npz_errors(tmp_path, arrays, words):
    np.savez(tmp_path / "a.npz", **arrays)
    with pytest.raises(DeriveError, match=words):
        load_source(f"npz:{tmp_path / 'a.npz'}")


def test_npz_never_unpickles(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.array([object(), 1], dtype=object), y=np.zeros(2))
    with pytest.raises(DeriveError, match="not a readable .npz"):
        load_source(f"npz:{tmp_path / 'a.npz'}")
    (tmp_path / "b.npz").write_bytes(b"garbage")
    with pytest.raises(DeriveError, match="not a readable .npz"):
        load_source(f"npz:{tmp_path / 'b.npz'}")


@pytest.mark.parametrize("header", ["", "f1,f2,label\n"])
def test_csv_with_or_without_header(tmp_path, header):
    path = tmp_path / "d.csv"
    path.write_text(header + "0.5,1,2\n1.5,2,0\n2.5,3,1\n")
    src = load_source(f"csv:{path}")
    np.testing.assert_array_equal(src.x, [[0.5, 1], [1.5, 2], [2.5, 3]])
    assert list(src.y) == [2, 0, 1] and src.y.dtype == np.int64


def test_csv_errors(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("1,2,3\n4,oops,6\n")
    with pytest.raises(DeriveError, match="not a table of numbers") as err:
        load_source(f"csv:{path}")
    assert str(path) in err.value.message
    path.write_text("a,b\n")
    with pytest.raises(DeriveError, match="no data rows"):
        load_source(f"csv:{path}")
    path.write_text("1\n2\n")
    with pytest.raises(DeriveError, match="at least one feature"):
        load_source(f"csv:{path}")
    with pytest.raises(DeriveError, match="does not exist"):
        load_source(f"csv:{tmp_path / 'missing.csv'}")


@pytest.mark.parametrize("spec, words", [
    ("mnist", "unknown data source"), ("npz:", "names no path"), ("digits:x", "unknown"),
])
def test_bad_source_strings(spec, words):
    with pytest.raises(DeriveError, match=words):
        load_source(spec)


def test_digits_is_bundled():
    src = load_source("digits")
    assert src.x.shape == (1797, 8, 8) and set(src.y) == set(range(10))
    assert src.x.min() == 0 and src.x.max() == 16


# --- splits ---------------------------------------------------------------------------------


def _source(n=100, d=3):
    x = np.arange(n * d, dtype=float).reshape(n, d)
    return Source("toy", x, np.arange(n) % 5)


def test_test_split_is_seeded_disjoint_and_complete():
    a, b, c = (split_test(_source(), 0.2, seed) for seed in (1, 1, 2))
    assert len(a.x_test) == 20 and len(a.x) == 80
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.x_test, c.x_test)
    rows = sorted(map(tuple, np.concatenate([a.x, a.x_test])))
    assert rows == sorted(map(tuple, _source().x))


def test_source_with_its_own_test_set_is_not_split():
    src = Source("toy", np.zeros((4, 2)), np.zeros(4, int), np.ones((2, 2)), np.zeros(2, int))
    assert split_test(src, 0.5) is src


def test_validation_split_takes_the_last_fraction_like_keras():
    x, y = np.arange(20.0).reshape(10, 2), np.arange(10)
    x_tr, y_tr, x_val, y_val = split_validation(x, y, 0.2)
    assert list(y_tr) == list(range(8)) and list(y_val) == [8, 9]
    _, _, _, y_val2 = split_validation(x, y, 0.3, shuffle=True, seed=3)
    _, _, _, y_val3 = split_validation(x, y, 0.3, shuffle=True, seed=3)
    assert list(y_val2) == list(y_val3) and list(y_val2) != [7, 8, 9]
    assert len(split_validation(x, y, 0.0)[2]) == 0


@pytest.mark.parametrize("fraction", [1.0, -0.1, 0.01, float("nan")])
def test_bad_validation_split(fraction):
    with pytest.raises(DeriveError, match="validation"):
        split_validation(np.zeros((10, 2)), np.zeros(10), fraction)


# --- normalisation ----------------------------------------------------------------------------


def test_normalisation_statistics_come_from_the_training_part_only():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 10, (100, 4))
    x[80:] *= 1000  # the last 20 rows (validation) are on another scale
    src = Source("toy", x, np.zeros(100, int), rng.uniform(-5e4, 5e4, (30, 4)),
                 np.zeros(30, int))
    for method in ("minmax", "zscore"):
        ds = prepare(src, (4,), validation_split=0.2, normalisation=method)
        train = x[:80]
        if method == "minmax":
            assert ds.normaliser.shift.flat[0] == train.min()
            assert ds.normaliser.scale.flat[0] == train.max() - train.min()
            assert ds.x_train.min() == 0 and ds.x_train.max() == 1
        else:
            np.testing.assert_allclose(ds.normaliser.shift, train.mean(axis=0))
            np.testing.assert_allclose(ds.x_train.mean(axis=0), 0, atol=1e-12)
            np.testing.assert_allclose(ds.x_train.std(axis=0), 1)
        # Held-out data is transformed with the training statistics, not its own.
        np.testing.assert_allclose(ds.x_val, normalise(ds.normaliser, x[80:]))
        assert abs(ds.x_val).max() > 10 and abs(ds.x_test).max() > 10


def test_l2_normalises_each_sample_and_constant_features_do_not_divide_by_zero():
    x = np.array([[3.0, 4.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    out = normalise(fit_normaliser(x, "l2"), x)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1)
    z = normalise(fit_normaliser(x, "zscore"), x)
    assert np.isfinite(z).all() and (z[:, 2] == 0).all()
    const = np.ones((3, 2))
    assert np.isfinite(normalise(fit_normaliser(const, "minmax"), const)).all()
    with pytest.raises(DeriveError, match="unknown normalisation"):
        fit_normaliser(x, "max")


#: Per-feature min–max methods and the range each maps the training samples onto.
FEATURE_RANGES = {"feature_minmax": (0.0, 1.0), "feature_minmax_signed": (-1.0, 1.0)}


@pytest.mark.parametrize("method", FEATURE_RANGES)
def test_per_feature_minmax_maps_each_training_feature_onto_its_range(method):
    lo, hi = FEATURE_RANGES[method]
    rng = np.random.default_rng(1)
    # Features on very different scales, one constant, one negative.
    x = np.column_stack([rng.uniform(0, 1e-3, 120), rng.uniform(-50, 200, 120),
                         np.full(120, 7.5), rng.normal(-1e4, 10, 120)])
    x[100:] *= 3  # validation rows, outside the training range
    ds = prepare(Source("toy", x, np.zeros(120, int), x[:10] * 0.5, np.zeros(10, int)),
                 (4,), validation_split=1 / 6, normalisation=method)
    moving = ds.x_train[:, [0, 1, 3]]
    np.testing.assert_allclose(moving.min(axis=0), lo, atol=1e-12)
    np.testing.assert_allclose(moving.max(axis=0), hi, atol=1e-12)
    # The constant feature is only shifted (to 0), never divided by its zero spread.
    assert np.isfinite(ds.x_train).all() and (ds.x_train[:, 2] == 0).all()
    # Independently: the textbook formula with the training rows' own min and max.
    train = x[:100]
    tmin, tmax = train.min(axis=0), train.max(axis=0)
    unit = (x[100:] - tmin) / np.where(tmax > tmin, tmax - tmin, 1)
    want = unit if lo == 0 else 2 * unit - 1
    want[:, 2] = x[100:, 2] - 7.5  # shifted by the training value, scale 1
    np.testing.assert_allclose(ds.x_val, want, rtol=1e-12, atol=1e-12)
    assert ds.x_val.max() > hi  # held-out data keeps the training statistics


def test_pixels_divide_by_255_and_refuse_other_values():
    x = np.array([[0.0, 255.0, 51.0], [255.0, 0.0, 102.0]])
    norm = fit_normaliser(x, "pixels")
    np.testing.assert_array_equal(normalise(norm, x), x / 255)
    np.testing.assert_array_equal(normalise(norm, np.array([[510.0, 0, 0]])), [[2.0, 0, 0]])
    with pytest.raises(DeriveError, match="0 to 255, but these inputs range from -1 to 3"):
        fit_normaliser(np.array([[-1.0, 3.0]]), "pixels")
    with pytest.raises(DeriveError, match="range from 0 to 300"):
        fit_normaliser(np.array([[0.0, 300.0]]), "pixels")


@pytest.mark.parametrize("method", ["minmax", "feature_minmax", "feature_minmax_signed",
                                    "pixels", "zscore", "l2", "none"])
def test_every_normalisation_is_a_spec_word_and_survives_constant_data(method):
    from derive.trainspec import NORMALISATIONS

    assert method in NORMALISATIONS
    for const in (np.zeros((4, 3)), np.full((4, 3), 9.0)):
        out = normalise(fit_normaliser(const, method), const)
        assert np.isfinite(out).all()


def test_prepare_digits_with_each_scaling():
    for method, (lo, hi) in {"pixels": (0, 16 / 255), "feature_minmax_signed": (-1, 1),
                             "feature_minmax": (0, 1)}.items():
        ds = prepare("digits", (64,), n_classes=10, normalisation=method)
        assert ds.x_train.min() == pytest.approx(lo) and ds.x_train.max() == pytest.approx(hi)


def test_reshape_to_the_networks_input_shape():
    x = np.arange(2 * 64.0).reshape(2, 8, 8)
    assert to_input_shape(x, (64,)).shape == (2, 64)
    flat = to_input_shape(x, (1, 8, 8))
    assert flat.shape == (2, 1, 8, 8) and flat.flags.c_contiguous
    assert to_input_shape(x, (64,), dtype=np.float32).dtype == np.float32
    with pytest.raises(DeriveError, match=r"64 values .* expects 785"):
        to_input_shape(x, (785,))
    with pytest.raises(DeriveError, match=r"64 values .* expects 784"):
        to_input_shape(x.reshape(2, 64), (784,))  # flat samples are not images to resample
    # Square images meet a network built for other square images by resampling (the
    # bundled 8×8 digits on the notes' 784-input MLP).
    big = to_input_shape(x, (784,))
    assert big.shape == (2, 784) and big.min() >= x.min() and big.max() <= x.max()


def test_prepare_digits_for_a_network():
    ds = prepare("digits", (1, 8, 8), n_classes=10, validation_split=0.1, seed=0,
                 dtype=np.float32)
    assert ds.x_train.shape[1:] == (1, 8, 8) and ds.x_train.dtype == np.float32
    assert len(ds.x_train) + len(ds.x_val) + len(ds.x_test) == 1797
    assert len(ds.x_test) == 359 and len(ds.x_val) == 143
    assert ds.x_train.min() == 0 and ds.x_train.max() == 1
    with pytest.raises(DeriveError, match="labels go up to 9 but the network has 5"):
        prepare("digits", (64,), n_classes=5)


@pytest.mark.parametrize("method", ["feature_minmax", "feature_minmax_signed", "pixels"])
def test_a_spec_may_name_each_new_normalisation(method):
    from derive.network import TRAIN_DEFAULTS, check_train

    check_train(TRAIN_DEFAULTS | {"normalisation": method})  # accepted: no error
    with pytest.raises(DeriveError, match="unknown normalisation"):
        check_train(TRAIN_DEFAULTS | {"normalisation": method + "s"})
