"""The training runtime on a stand-in network module (plain NumPy, the generated API)."""

import io
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from derive import files
from derive.checks import load_module
from derive.errors import DeriveError, OutputError
from derive.train.checkpoint import CHECKPOINT, load_checkpoint
from derive.train.data import Dataset, Normaliser, dataset_for, prepare
from derive.train.loop import evaluate, fit, gradient_norm, lr_schedule
from derive.train.progress import Progress
from derive.train.report import EpochRecord, curves_csv, diagnose

REPO = Path(__file__).resolve().parent.parent

#: A 1-hidden-layer MLP with Polyak momentum exposing the generated modules' interface.
STANDIN = '''
import numpy as np

PARAM_NAMES = ["W1", "b1", "W2", "b2"]
INPUT_SHAPE = {input_shape!r}
N_CLASSES = 10
LOSS = "softmax_cross_entropy"
TRAIN = {train!r}
HIDDEN = 32
BETA = 0.9


def init_params(seed, dtype):
    rng = np.random.default_rng(seed)
    n_in = int(np.prod(INPUT_SHAPE))

    def glorot(o, i):
        a = np.sqrt(6 / (i + o))
        return rng.uniform(-a, a, (o, i)).astype(dtype)

    return [glorot(HIDDEN, n_in), np.zeros(HIDDEN, dtype), glorot(N_CLASSES, HIDDEN),
            np.zeros(N_CLASSES, dtype)]


def init_state(params):
    return [np.zeros_like(p) for p in params]


def _forward(params, x):
    W1, b1, W2, b2 = params
    x = x.reshape(len(x), -1)
    s1 = x @ W1.T + b1
    h = np.maximum(s1, 0)
    z = h @ W2.T + b2
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    return x, s1, h, p


def predict(params, x):
    return _forward(params, x)[3]


def loss_and_grad(params, x, y):
    W1, b1, W2, b2 = params
    xf, s1, h, p = _forward(params, x)
    rows = np.arange(len(x))
    loss = -np.mean(np.log(p[rows, y]))
    d = p.copy()
    d[rows, y] -= 1
    d /= len(x)
    dh = (d @ W2) * (s1 > 0)
    return float(loss), [dh.T @ xf, dh.sum(0), d.T @ h, d.sum(0)]


def train_step(params, state, x, y, lr):
    loss, grads = loss_and_grad(params, x, y)
    for p, v, g in zip(params, state, grads):
        v *= BETA
        v -= lr * g
        p += v
    return loss
'''

TRAIN = {"optimizer": "momentum", "lr": 0.05, "batch_size": 32, "epochs": 10,
         "validation_split": 0.1, "seed": 0}


def make_module(directory: Path, name="standin", input_shape=(64,), **train):
    path = Path(directory) / f"{name}.py"
    path.write_text(STANDIN.format(input_shape=input_shape, train={**TRAIN, **train}))
    return load_module(path)


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    return make_module(tmp_path_factory.mktemp("standin"))


@pytest.fixture(scope="module")
def digits(mlp):
    return dataset_for(mlp, "digits")


def small(data: Dataset, n=300) -> Dataset:
    """The first n training samples: fast enough for tests that train several times."""
    return Dataset(data.name, data.x_train[:n], data.y_train[:n], data.x_val, data.y_val,
                   data.x_test, data.y_test, data.normaliser, data.n_classes)


def record(epoch, train_loss, val_loss=math.nan, lr=0.01):
    return EpochRecord(epoch, lr, train_loss, math.nan, val_loss, math.nan, 1.0, 0.1)


def history(train, val=None):
    val = val or [math.nan] * len(train)
    return [record(i + 1, t, v) for i, (t, v) in enumerate(zip(train, val, strict=True))]


# --- training ---------------------------------------------------------------------------


def test_fit_reaches_high_accuracy_on_digits(mlp, digits, tmp_path):
    # How fast is benchmarks/bench_network.py's question, not a unit test's: a loaded or
    # slower machine must not fail it.
    h = fit(mlp, digits, progress=False, out_dir=tmp_path)
    loss, acc = evaluate(mlp, h.params, digits.x_test, digits.y_test)
    assert acc >= 0.95, acc
    assert len(h.records) == 10 and h.records[-1].val_accuracy > 0.93
    assert h.records[-1].train_loss < h.records[0].train_loss / 5
    assert h.diagnoses == ()
    names = {p.name for p in h.files}
    assert names == {CHECKPOINT, "curves.csv", "curves.png"}
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = (tmp_path / "curves.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,lr,train_loss,train_accuracy,val_loss,val_accuracy")
    assert len(rows) == 11
    assert float(rows[-1].split(",")[2]) == h.records[-1].train_loss
    # No temporary files are left behind by the atomic writes.
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_every_sample_is_seen_once_per_epoch_last_partial_batch_included(mlp, digits):
    seen = []

    class Counting:
        def __getattr__(self, name):
            return getattr(mlp, name)

        def train_step(self, params, state, x, y, lr):
            seen.append(len(x))
            return mlp.train_step(params, state, x, y, lr)

    data = small(digits, 100)
    fit(Counting(), data, epochs=2, batch_size=32, progress=False)
    assert seen == [32, 32, 32, 4] * 2


def test_shuffling_is_seeded_and_differs_between_epochs(mlp, digits):
    batches = []

    class Recording:
        def __getattr__(self, name):
            return getattr(mlp, name)

        def train_step(self, params, state, x, y, lr):
            batches.append(y.copy())
            return mlp.train_step(params, state, x, y, lr)

    data = small(digits, 64)
    fit(Recording(), data, epochs=2, batch_size=64, seed=5, progress=False)
    fit(Recording(), data, epochs=1, batch_size=64, seed=5, progress=False)
    assert not np.array_equal(batches[0], batches[1])  # a new order every epoch
    np.testing.assert_array_equal(batches[0], batches[2])  # the same seed, the same order
    assert sorted(batches[0]) == sorted(data.y_train)


def test_parameters_follow_the_data_dtype(mlp, digits):
    data = dataset_for(mlp, "digits", dtype=np.float32)
    h = fit(mlp, small(data, 64), epochs=1, progress=False)
    assert all(p.dtype == np.float32 for p in h.params)


def test_evaluate_is_batch_size_independent(mlp, digits):
    params = mlp.init_params(0, np.float64)
    whole = mlp.loss_and_grad(params, digits.x_test, digits.y_test)[0]
    loss, acc = evaluate(mlp, params, digits.x_test, digits.y_test, batch_size=7)
    assert loss == pytest.approx(whole, rel=1e-12)
    expected = np.mean(np.argmax(mlp.predict(params, digits.x_test), 1) == digits.y_test)
    assert acc == expected
    assert all(map(math.isnan, evaluate(mlp, params, digits.x_test[:0], digits.y_test[:0])))


def test_gradient_norm_is_the_global_norm(mlp, digits):
    params = mlp.init_params(0, np.float64)
    _, grads = mlp.loss_and_grad(params, digits.x_train[:50], digits.y_train[:50])
    expected = np.sqrt(sum((g**2).sum() for g in grads))
    assert gradient_norm(mlp, params, digits.x_train[:50], digits.y_train[:50]) == \
        pytest.approx(expected, rel=1e-12)


def test_validation_split_given_to_fit(mlp, digits):
    data = prepare("digits", (64,), n_classes=10, validation_split=0.0)
    h = fit(mlp, small(data, 200), epochs=1, validation_split=0.25, progress=False)
    assert not math.isnan(h.records[0].val_loss)
    with pytest.raises(DeriveError, match="already holds"):
        fit(mlp, digits, epochs=1, validation_split=0.2, progress=False)


# --- resuming -----------------------------------------------------------------------------


def _same(a, b):
    assert len(a.params) == len(b.params)
    for p, q in zip(a.params + a.state, b.params + b.state, strict=True):
        assert p.dtype == q.dtype and np.array_equal(p, q)
    fields = ["train_loss", "train_accuracy", "val_loss", "val_accuracy", "grad_norm", "lr"]
    for f in fields:
        np.testing.assert_array_equal(a.column(f), b.column(f))


@pytest.mark.parametrize("schedule", [None, {"name": "step", "gamma": 0.5, "step_size": 1}])
def test_resume_equals_straight_bit_for_bit(mlp, digits, tmp_path, schedule):
    data = small(digits, 400)
    straight = fit(mlp, data, epochs=4, out_dir=tmp_path / "a", progress=False,
                   schedule=schedule)
    first = fit(mlp, data, epochs=2, out_dir=tmp_path / "b", progress=False, schedule=schedule)
    assert load_checkpoint(tmp_path / "b" / CHECKPOINT).epoch == 2
    resumed = fit(mlp, data, epochs=4, out_dir=tmp_path / "b", resume=True, progress=False,
                  schedule=schedule)
    assert resumed.resumed_from == 2 and len(first.records) == 2
    _same(straight, resumed)
    assert not np.array_equal(first.params[0], resumed.params[0])


def test_cosine_schedule_cannot_be_stretched_on_resume(mlp, digits, tmp_path):
    # Cosine's rates depend on the run's length: 2 epochs of a 2-epoch cosine are not the
    # first 2 epochs of a 4-epoch one, so extending it is refused rather than inexact.
    data = small(digits, 100)
    fit(mlp, data, epochs=2, out_dir=tmp_path, progress=False, schedule="cosine")
    with pytest.raises(DeriveError, match="schedule"):
        fit(mlp, data, epochs=4, out_dir=tmp_path, resume=True, progress=False,
            schedule="cosine")


def test_an_interrupted_run_resumes_from_its_last_checkpoint(mlp, digits, tmp_path):
    data = small(digits, 200)
    calls = []

    class Interrupted:
        def __getattr__(self, name):
            return getattr(mlp, name)

        def train_step(self, params, state, x, y, lr):
            calls.append(1)
            if len(calls) == 2 * 7 + 3:  # in the middle of epoch 3 (7 batches an epoch)
                raise KeyboardInterrupt
            return mlp.train_step(params, state, x, y, lr)

    with pytest.raises(KeyboardInterrupt):
        fit(Interrupted(), data, epochs=4, out_dir=tmp_path / "b", progress=False,
            schedule="cosine")
    assert load_checkpoint(tmp_path / "b" / CHECKPOINT).epoch == 2
    resumed = fit(mlp, data, epochs=4, out_dir=tmp_path / "b", resume=True, progress=False,
                  schedule="cosine")
    straight = fit(mlp, data, epochs=4, out_dir=tmp_path / "a", progress=False,
                   schedule="cosine")
    _same(straight, resumed)


def test_resume_refuses_other_options_or_no_checkpoint(mlp, digits, tmp_path):
    data = small(digits, 100)
    with pytest.raises(DeriveError, match="no checkpoint to resume from"):
        fit(mlp, data, epochs=2, out_dir=tmp_path, resume=True, progress=False)
    with pytest.raises(DeriveError, match="needs the directory"):
        fit(mlp, data, epochs=2, resume=True, progress=False)
    fit(mlp, data, epochs=1, out_dir=tmp_path, progress=False)
    with pytest.raises(DeriveError, match="batch_size = 32, this run has 16"):
        fit(mlp, data, epochs=2, batch_size=16, out_dir=tmp_path, resume=True, progress=False)
    with pytest.raises(DeriveError, match="data"):
        fit(mlp, small(digits, 90), epochs=2, out_dir=tmp_path, resume=True, progress=False)
    (tmp_path / CHECKPOINT).write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DeriveError, match="not a readable derive checkpoint"):
        fit(mlp, data, epochs=2, out_dir=tmp_path, resume=True, progress=False)


def test_resume_of_a_finished_run_trains_no_more(mlp, digits, tmp_path):
    data = small(digits, 100)
    done = fit(mlp, data, epochs=2, out_dir=tmp_path, progress=False)
    again = fit(mlp, data, epochs=2, out_dir=tmp_path, resume=True, progress=False)
    _same(done, again)


# --- atomic writes -------------------------------------------------------------------------


def test_a_write_that_fails_midway_leaves_the_previous_checkpoint(mlp, digits, tmp_path,
                                                                  monkeypatch):
    data = small(digits, 100)
    fit(mlp, data, epochs=1, out_dir=tmp_path, progress=False)
    before = (tmp_path / CHECKPOINT).read_bytes()
    real_fdopen = os.fdopen

    class HalfWriter:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fdopen", lambda fd, mode: HalfWriter(real_fdopen(fd, mode)))
    with pytest.raises(OutputError, match="No space left"):
        fit(mlp, data, epochs=2, out_dir=tmp_path, resume=True, progress=False)
    monkeypatch.undo()
    assert (tmp_path / CHECKPOINT).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT, "curves.csv",
                                                          "curves.png"]
    assert load_checkpoint(tmp_path / CHECKPOINT).epoch == 1


KILL_SCRIPT = textwrap.dedent("""
    import sys
    from derive.checks import load_module
    from derive.train import dataset_for, fit
    module = load_module(sys.argv[1])
    data = dataset_for(module, "digits")
    print("ready", flush=True)
    fit(module, data, epochs=1000, out_dir=sys.argv[2], progress=False)
""")


def test_killing_a_run_leaves_complete_files_and_it_resumes(mlp, digits, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT)
    out = tmp_path / "out"
    rng = np.random.default_rng()
    proc = subprocess.Popen([sys.executable, str(script), mlp.__file__, str(out)],
                            stdout=subprocess.PIPE, cwd=REPO, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 60
        while not (out / CHECKPOINT).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.5))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    ck = load_checkpoint(out / CHECKPOINT)  # complete, whatever the moment of the kill
    assert ck.epoch >= 1 and len(ck.records) == ck.epoch
    csv = (out / "curves.csv").read_text()
    assert csv.endswith("\n") and len(csv.splitlines()) >= 2
    resumed = fit(mlp, digits, epochs=ck.epoch + 1, out_dir=out, resume=True, progress=False)
    assert resumed.resumed_from == ck.epoch and len(resumed.records) == ck.epoch + 1
    # The temporaries a kill can strand are cleaned up by the next run.
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


# --- schedules, progress, options ---------------------------------------------------------


def test_schedules_follow_the_notes_formulas():
    step = lr_schedule({"name": "step", "gamma": 0.5, "step_size": 2}, 0.1, 10)
    assert [step(t) for t in range(5)] == [0.1, 0.1, 0.05, 0.05, 0.025]
    exp = lr_schedule({"name": "exponential", "k": 0.5}, 0.1, 10)
    assert exp(2) == pytest.approx(0.1 * math.exp(-1))
    cos = lr_schedule("cosine", 0.1, 10)
    assert cos(0) == 0.1 and cos(5) == pytest.approx(0.05) and cos(10) == pytest.approx(0)
    assert lr_schedule(None, 0.3, 5)(4) == 0.3
    assert lr_schedule(lambda t, lr: lr / (t + 1), 1.0, 5)(3) == 0.25
    for bad, words in [("warmup", "unknown learning-rate schedule"),
                       ({"name": "step", "gama": 2}, "no parameter gama"),
                       ({"gamma": 2}, "with a name"),
                       ({"name": "step", "step_size": -1}, "positive number")]:
        with pytest.raises(DeriveError, match=words):
            lr_schedule(bad, 0.1, 10)


def test_fit_records_the_scheduled_rate(mlp, digits):
    h = fit(mlp, small(digits, 64), epochs=3, lr=0.1, progress=False,
            schedule={"name": "step", "gamma": 0.1, "step_size": 1})
    np.testing.assert_allclose(h.column("lr"), [0.1, 0.01, 0.001])


@pytest.mark.parametrize("option, value", [
    ("epochs", -1), ("batch_size", 0), ("lr", 0.0), ("lr", math.inf), ("seed", 1.5),
    ("batch_size", True),
])
def test_bad_options_are_clear_errors(mlp, digits, option, value):
    with pytest.raises(DeriveError, match=option):
        fit(mlp, digits, progress=False, **{option: value})


def test_something_that_is_not_a_network_module_is_refused(digits):
    with pytest.raises(DeriveError, match="not a network module: it has no .*train_step"):
        fit(object(), digits, progress=False)


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_only_on_a_terminal(mlp, digits):
    data = small(digits, 100)
    tty, log = FakeTTY(), io.StringIO()
    fit(mlp, data, epochs=2, progress=True, stream=tty)
    fit(mlp, data, epochs=2, progress=True, stream=log)
    assert "\r" in tty.getvalue() and "[" in tty.getvalue()
    assert "\r" not in log.getvalue()
    lines = log.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("epoch 1/2  loss ")
    assert "val_acc" in lines[0] and "|grad|" in lines[0]
    quiet = FakeTTY()
    fit(mlp, data, epochs=1, progress=False, stream=quiet)
    assert quiet.getvalue() == ""


def test_progress_survives_a_closed_stream():
    stream = io.StringIO()
    p = Progress(2, stream)
    stream.close()
    p.epoch_done(record(1, 0.5))  # must not raise: output is not worth stopping training


# --- diagnosis ---------------------------------------------------------------------------


def test_exploding_loss_is_diagnosed_in_a_real_run(mlp, digits, tmp_path):
    data = small(digits, 200)
    h = fit(mlp, data, epochs=5, lr=50.0, out_dir=tmp_path, progress=False, stream=None)
    assert [d.kind for d in h.diagnoses] == ["exploding"]
    assert "learning rate" in h.diagnoses[0].message and "too high" in h.diagnoses[0].message
    assert h.stopped and len(h.records) < 5
    # The last checkpoint holds the last finite epoch (or none was written).
    if (tmp_path / CHECKPOINT).exists():
        ck = load_checkpoint(tmp_path / CHECKPOINT)
        assert all(np.isfinite(p).all() for p in ck.params)


def test_diagnosis_is_printed(mlp, digits):
    log = io.StringIO()
    fit(mlp, small(digits, 100), epochs=3, lr=50.0, progress=True, stream=log)
    assert "diagnosis: the training loss" in log.getvalue()


@pytest.mark.parametrize("train, val, kind", [
    ([2.3, 1.0, float("nan")], None, "exploding"),
    ([2.3, 5.0, 40.0, 900.0], None, "exploding"),
    ([2.30, 2.299, 2.298, 2.2985, 2.297], None, "stagnating"),
    ([2.3, 1.5, 1.25, 1.19, 1.189, 1.1885, 1.188, 1.1878], None, "stagnating"),
    ([2.3, 1.2, 1.6, 0.9, 1.4, 0.8, 1.3], None, "oscillating"),
    ([2.0, 1.0, 0.6, 0.4, 0.3, 0.2], [2.1, 1.2, 0.9, 1.0, 1.2, 1.5], "overfitting"),
], ids=["nan", "growing", "flat", "plateau", "zigzag", "overfit"])
def test_diagnosis_table_rows(train, val, kind):
    found = diagnose(history(train, val))
    assert [d.kind for d in found] == [kind]
    d = found[0]
    assert d.message and d.message_pt
    if kind == "overfitting":
        assert d.epoch == 3 and "stop at epoch 3" in d.message


@pytest.mark.parametrize("train, val", [
    ([2.3, 0.9, 0.5, 0.3, 0.2, 0.15], [2.2, 1.0, 0.6, 0.45, 0.4, 0.38]),
    ([2.3, 0.5, 0.1, 0.1, 0.1, 0.1], None),  # converged, not stagnating
    ([2.3, 1.0], None),
], ids=["healthy", "converged", "short"])
def test_healthy_runs_get_no_diagnosis(train, val):
    assert diagnose(history(train, val)) == ()


def test_curves_csv_round_trips_full_precision():
    recs = history([1 / 3, 2 / 7])
    rows = curves_csv(recs).splitlines()
    assert float(rows[1].split(",")[2]) == 1 / 3
    assert rows[1].split(",")[3] == "nan"


def test_regression_module_gets_nan_accuracy(mlp):
    class Regression:
        def __getattr__(self, name):
            return getattr(mlp, name)

        N_CLASSES = None

    data = Dataset("toy", np.zeros((4, 64)), np.zeros(4, dtype=np.int64), np.zeros((0, 64)),
                   np.zeros(0, dtype=np.int64), np.zeros((1, 64)), np.zeros(1, np.int64),
                   Normaliser("none", np.zeros(64), np.ones(64)), None)
    h = fit(Regression(), data, epochs=1, progress=False)
    assert math.isnan(h.records[0].train_accuracy) and math.isnan(h.records[0].val_loss)
