"""No lost runs: `derive train` never replaces, mixes up or shares a run's folder.

A folder holding a checkpoint is continued with --resume or left alone; --resume with
another network, loss or optimizer is refused; two runs cannot write one folder (its lock
file); values no run can use are refused before anything is written. Issue 11, point 12.
"""

import os
import shutil
import subprocess
import sys
import time

import pytest
from conftest import cli_train as train
from conftest import one_error_line

from derive.errors import DeriveError
from derive.train import checkpoint
from derive.train.checkpoint import CHECKPOINT, load_checkpoint

LOCK = "train.lock"  # checkpoint.LOCK; spelt out so that this file runs against old code
SPEC = """\
[network]
name = "tiny"
input_shape = [64]
loss = "categorical_cross_entropy"

[[layers]]
type = "dense"
units = 10
activation = "softmax"

[train]
optimizer = "momentum"
lr = 0.05
epochs = 1
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A spec and the folder of its finished one-epoch run."""
    folder = tmp_path_factory.mktemp("finished")
    spec = folder / "tiny.toml"
    spec.write_text(SPEC)
    out = folder / "run"
    assert train(spec, out) == 0
    assert load_checkpoint(out / CHECKPOINT).epoch == 1
    return spec, out


@pytest.fixture
def run(finished, tmp_path):
    """A copy of the finished run's folder, and its spec."""
    spec, out = finished
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    return spec, copy


# --- a checkpoint is never replaced -------------------------------------------------------


def test_a_folder_holding_a_checkpoint_is_not_replaced(run, capsys):
    spec, out = run
    before = (out / CHECKPOINT).read_bytes()
    assert train(spec, out, "--epochs", "1") == 2
    err = one_error_line(capsys)
    assert "1 epoch" in err and "--resume" in err and "another --out" in err
    assert (out / CHECKPOINT).read_bytes() == before
    assert not (out / LOCK).exists()


def test_resuming_continues_the_run(run):
    spec, out = run
    assert train(spec, out, "--resume", "--epochs", "2") == 0
    ck = load_checkpoint(out / CHECKPOINT)
    assert ck.epoch == 2 and len(ck.records) == 2
    assert not (out / LOCK).exists()


# (id, change to the spec, extra options, the word the refusal names)
OTHER_RUNS = [
    ("activation", ('"softmax"', '"sigmoid"'), [], "network"),
    ("extra layer", ('[[layers]]\ntype = "dense"\nunits = 10',
                     '[[layers]]\ntype = "dense"\nunits = 10\n\n'
                     '[[layers]]\ntype = "dense"\nunits = 10'), [], "network"),
    ("loss", ('"categorical_cross_entropy"', '"sparse_categorical_cross_entropy"'), [], "loss"),
    # nesterov keeps momentum's state shapes: only the recorded optimizer tells them apart
    ("optimizer, same state", None, ["--optimizer", "nesterov"], "optimizer"),
    ("optimizer, other state", None, ["--optimizer", "adam"], "optimizer"),
    ("optimizer hyper-parameter", ("epochs = 1", "epochs = 1\nmu = 0.5"), [], "optimizer"),
]


@pytest.mark.parametrize(("change", "options", "word"), [c[1:] for c in OTHER_RUNS],
                         ids=[c[0] for c in OTHER_RUNS])
def test_resume_refuses_another_network_loss_or_optimizer(run, tmp_path, capsys, change,
                                                         options, word):
    spec, out = run
    if change is not None:
        text = spec.read_text()
        assert change[0] in text
        spec = tmp_path / "tiny.toml"
        spec.write_text(text.replace(change[0], change[1], 1))
    before = (out / CHECKPOINT).read_bytes()
    assert train(spec, out, "--resume", "--epochs", "2", *options) == 2
    err = one_error_line(capsys)
    assert f"made with {word} = " in err and "another --out" in err
    assert (out / CHECKPOINT).read_bytes() == before
    assert not (out / LOCK).exists()


# --- one run per folder ---------------------------------------------------------------------

HOLDER = """
import sys, time
from derive.train.checkpoint import run_lock
with run_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_a_run_in_progress_keeps_a_second_one_out_until_it_dies(run, capsys):
    spec, out = run
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        before = (out / CHECKPOINT).read_bytes()
        for options in ([], ["--resume", "--epochs", "2"]):
            assert train(spec, out, *options) == 2
            err = one_error_line(capsys)
            assert f"another training run (process {holder.pid})" in err and str(out) in err
        assert (out / CHECKPOINT).read_bytes() == before
    finally:
        holder.kill()  # SIGKILL: no chance to remove its lock
        holder.wait()
    assert (out / LOCK).read_text().strip() == str(holder.pid)
    assert train(spec, out, "--resume") == 0  # the dead run's lock is taken over
    assert not (out / LOCK).exists()


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_lock_holds_the_pid_and_is_released(tmp_path):
    out = tmp_path / "new" / "run"
    with checkpoint.run_lock(out) as lock:
        assert lock == out / LOCK and lock.read_text() == f"{os.getpid()}\n"
        with checkpoint.run_lock(out):  # `derive train` holds it, then fit takes it again
            assert lock.exists()
        assert lock.exists()
    assert not lock.exists()
    with pytest.raises(RuntimeError), checkpoint.run_lock(out):
        raise RuntimeError
    assert not lock.exists()


@pytest.mark.parametrize("content", ["dead", "garbage", "empty and old", "ours"])
def test_a_stale_lock_is_taken_over(tmp_path, content):
    lock = tmp_path / LOCK
    lock.write_text({"dead": f"{dead_pid()}\n", "garbage": "not a pid\n", "empty and old": "",
                     "ours": f"{os.getpid()}\n"}[content])
    if content == "empty and old":
        os.utime(lock, (time.time() - 3600,) * 2)
    with checkpoint.run_lock(tmp_path):
        assert lock.read_text() == f"{os.getpid()}\n"
    assert not lock.exists()


@pytest.mark.parametrize("content", ["live", "being written"])
def test_a_live_lock_is_respected(tmp_path, content):
    lock = tmp_path / LOCK
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        lock.write_text(f"{live.pid}\n" if content == "live" else "")
        with pytest.raises(DeriveError) as error, checkpoint.run_lock(tmp_path):
            pass
    finally:
        live.kill()
        live.wait()
    message = error.value.message
    assert "another training run" in message and str(tmp_path) in message
    assert "another --out" in message and str(lock) in message
    assert lock.read_text() == (f"{live.pid}\n" if content == "live" else "")


# --- values no run can use ------------------------------------------------------------------

BAD_OPTIONS = [
    ["--seed", "-1"], ["--seed", str(2**64)], ["--epochs", "0"], ["--epochs", "-2"],
    ["--batch-size", "0"], ["--batch-size", "-1"], ["--lr", "nan"], ["--lr", "inf"],
    ["--lr", "0"], ["--lr", "-0.1"],
]


@pytest.mark.parametrize("options", BAD_OPTIONS, ids=" ".join)
def test_options_no_run_can_use_are_refused_before_any_work(tmp_path, capsys, options):
    spec = tmp_path / "tiny.toml"
    spec.write_text(SPEC)
    out = tmp_path / "run"
    assert train(spec, out, *options) == 2
    err = one_error_line(capsys)
    assert options[0] in err
    assert not out.exists()


def test_optimizer_override_must_fit_the_spec_hyper_parameters(tmp_path, capsys):
    # --optimizer replaces the spec's optimizer; the spec's mu then means nothing.
    spec = tmp_path / "tiny.toml"
    spec.write_text(SPEC + "mu = 0.8\n")
    out = tmp_path / "run"
    assert train(spec, out, "--optimizer", "adam") == 2
    err = one_error_line(capsys)
    assert "train.mu" in err and "not of adam" in err and not out.exists()


# --- checkpoints that are not what they claim ------------------------------------------------


def _meta(**changes):
    """A change to the checkpoint's metadata (the JSON string in its 'meta' array)."""
    def change(arrays):
        import json

        import numpy as np
        meta = json.loads(str(arrays["meta"]))
        meta.update(changes)
        arrays["meta"] = np.array(json.dumps(meta))
    return change


def _array(key, make):
    def change(arrays):
        arrays[key] = make(arrays[key])
    return change


def _replace_meta(text):
    def change(arrays):
        import numpy as np
        arrays["meta"] = np.array(text)
    return change


# (id, change to the checkpoint's arrays, words the refusal holds). Each ended in an
# internal error (exit 3), or resumed a history that is not the run's, before.
BAD_CHECKPOINTS = [
    ("metadata null", _replace_meta("null"), ["metadata is not a table"]),
    ("metadata a list", _replace_meta("[1, 2]"), ["metadata is not a table"]),
    ("configuration an int", _meta(config=5), ["configuration is not a table"]),
    ("configuration a list", _meta(config=[1]), ["configuration is not a table"]),
    ("generator state a string", _meta(rng_state="abc"), ["state must be a dict"]),
    ("generator of another kind",
     _meta(rng_state={"bit_generator": "MT19937", "state": {"key": [1], "pos": 0}}),
     ["PCG64"]),
    ("generator state garbled", _meta(rng_state={"bit_generator": "PCG64", "state": "x"}),
     ["not a readable derive checkpoint"]),
    ("history longer than its epochs",
     _array("records", lambda r: __import__("numpy").zeros((50, r.shape[1]))),
     ["1 epoch(s)", "holds 50"]),
]


@pytest.mark.parametrize(("change", "words"), [c[1:] for c in BAD_CHECKPOINTS],
                         ids=[c[0] for c in BAD_CHECKPOINTS])
def test_a_checkpoint_that_is_not_one_is_refused_in_one_line(run, capsys, change, words):
    import numpy as np

    spec, out = run
    with np.load(out / CHECKPOINT, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    change(arrays)
    np.savez(out / CHECKPOINT, **arrays)
    before = (out / CHECKPOINT).read_bytes()
    for options in (["--resume", "--epochs", "2"], []):
        assert train(spec, out, *options) == 2
        err = one_error_line(capsys)
        assert str(out / CHECKPOINT) in err and all(w in err for w in words), err
    assert (out / CHECKPOINT).read_bytes() == before
    assert not (out / LOCK).exists()


def test_a_checkpoint_in_fortran_order_resumes(run):
    # np.save keeps an array's memory order; the kernels need C order.
    import numpy as np

    spec, out = run
    with np.load(out / CHECKPOINT, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["param_0"] = np.asfortranarray(arrays["param_0"])
    np.savez(out / CHECKPOINT, **arrays)
    assert train(spec, out, "--resume", "--epochs", "2") == 0
    assert load_checkpoint(out / CHECKPOINT).epoch == 2
