"""Early stopping, and the normalisation a checkpoint records (issue 14).

One tiny network (64 inputs → 10 softmax units on the bundled digits) is trained once
through `derive train` with a spec whose early stopping must stop it (min_delta larger
than any change of the accuracy: epoch 1 stays the best); its generated module is then
trained again through :func:`fit` with other settings. A learning rate so large that the
validation loss jumps about stops a run the natural way. Properties are asserted, not
timings: the stopping epoch is the best one plus the patience, the restored parameters
give the best epoch's validation loss again, a resumed run stops where the uninterrupted
one did, with the same parameters.
"""

import io
import math
from contextlib import redirect_stdout
from dataclasses import replace

import numpy as np
import pytest

from derive.cli import main
from derive.errors import DeriveError
from derive.network import parse_spec
from derive.train import evaluate, fit, load_checkpoint, predict
from derive.train.checkpoint import CHECKPOINT
from derive.train.data import dataset_for, load_source, split_test, split_validation
from derive.train.report import FIELDS, curves_csv, curves_png
from derive.train.stopping import EarlyStopping, Watch, early_stopping_from

SPEC = """\
[network]
name = "tiny_stop"
input_shape = [64]
loss = "categorical_cross_entropy"

[[layers]]
type = "dense"
units = 10
activation = "softmax"

[train]
optimizer = "gd"
lr = 0.05
epochs = 6
validation_split = 0.2
normalisation = "zscore"
early_stopping = {patience = 2, min_delta = 10.0, monitor = "val_accuracy"}
"""
#: A rate far past what gradient descent tolerates here: the validation loss jumps about.
WILD_LR = 20.0


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """`derive train` on SPEC: its folder, stdout, the module and the data it used."""
    from derive.checks import load_module

    folder = tmp_path_factory.mktemp("stop")
    spec = folder / "tiny_stop.toml"
    spec.write_text(SPEC)
    out = folder / "run"
    stdout = io.StringIO()
    with redirect_stdout(stdout):
        code = main(["train", str(spec), "--out", str(out), "--no-progress"])
    lines = stdout.getvalue().splitlines()
    assert code == 0, lines
    module = load_module(next(out.rglob("tiny_stop.py")))
    data = dataset_for(module, "digits", normalisation="zscore")
    return out, lines, module, data


@pytest.fixture(scope="module")
def wild(cli_run, tmp_path_factory):
    """A run with the learning rate WILD_LR, stopped the natural way (val_loss, patience 2)."""
    _, _, module, data = cli_run
    out = tmp_path_factory.mktemp("wild")
    history = fit(module, data, epochs=12, lr=WILD_LR, out_dir=out, progress=False,
                  early_stopping={"patience": 2})
    return history, out


# --- the rule ------------------------------------------------------------------------------


def test_a_loss_is_minimised_and_an_accuracy_maximised_beyond_min_delta():
    loss, acc = EarlyStopping(min_delta=0.1), EarlyStopping(monitor="val_accuracy",
                                                            min_delta=0.1)
    assert loss.improves(1.0, math.nan) and acc.improves(0.5, math.nan)
    assert loss.improves(0.85, 1.0) and not loss.improves(0.95, 1.0)
    assert acc.improves(0.65, 0.5) and not acc.improves(0.55, 0.5)
    assert not loss.improves(math.nan, 1.0) and not acc.improves(math.inf, 0.5)


def test_the_watch_stops_after_patience_epochs_without_improvement():
    watch = Watch(EarlyStopping(patience=2))
    params = [np.zeros(2)]
    stops = [watch.update(e, v, params) for e, v in enumerate([3.0, 2.0, 2.5, 1.9, 2.0, 2.1],
                                                                start=1)]
    assert stops == [False, False, False, False, False, True]
    assert (watch.best_epoch, watch.best, watch.wait) == (4, 1.9, 2)


# --- a run that must stop --------------------------------------------------------------------


def test_derive_train_stops_early_and_says_so(cli_run):
    out, lines, _, _ = cli_run
    ck = load_checkpoint(out / CHECKPOINT)
    # min_delta = 10 is more than an accuracy can change: epoch 1 stays best, and two
    # epochs without improvement stop the run at epoch 3 of 6.
    assert ck.epoch == 3
    assert ck.early_stopping == {"best_epoch": 1, "best": ck.records[0].val_accuracy,
                                 "wait": 2, "stopped": True}
    said = [line for line in lines if line.startswith("early stopping:")]
    assert len(said) == 1 and "\n" not in said[0]
    assert "stopped at epoch 3" in said[0] and "best epoch 1" in said[0]
    assert f"val_accuracy {ck.records[0].val_accuracy:.6g}" in said[0]
    assert "restored" in said[0]


def test_the_checkpoint_holds_the_best_epochs_parameters(cli_run):
    out, _, module, data = cli_run
    ck = load_checkpoint(out / CHECKPOINT)
    loss, accuracy = evaluate(module, ck.params, data.x_val, data.y_val)
    assert (loss, accuracy) == (ck.records[0].val_loss, ck.records[0].val_accuracy)
    assert loss != ck.records[-1].val_loss
    for best, saved in zip(ck.best_params, ck.params, strict=True):
        assert np.array_equal(best, saved)


def test_curves_csv_marks_the_best_epoch(cli_run):
    out, _, _, _ = cli_run
    rows = [line.split(",") for line in (out / "curves.csv").read_text().splitlines()]
    header = rows[0]
    assert header[:len(FIELDS)] == list(FIELDS) and header[len(FIELDS)] == "best"
    marks = [row[header.index("best")] for row in rows[1:]]
    assert marks == ["1", "0", "0"]
    assert (out / "curves.png").stat().st_size > 0


def test_curves_png_draws_the_marker(cli_run):
    out, _, _, _ = cli_run
    records = load_checkpoint(out / CHECKPOINT).records
    assert curves_png(records, best=1) != curves_png(records)
    assert curves_csv(records) == curves_csv(records, None)  # no column without it
    assert "best" not in curves_csv(records).splitlines()[0].split(",")


def test_a_wild_learning_rate_stops_at_the_best_epoch_plus_patience(wild):
    history, _ = wild
    val = history.column("val_loss")
    assert history.stopped.startswith("early stopping:")
    assert len(history.records) < 12
    assert history.best_epoch == int(np.argmin(val)) + 1
    assert len(history.records) == history.best_epoch + 2


def test_restored_parameters_give_the_best_validation_loss(wild, cli_run):
    history, out = wild
    _, _, module, data = cli_run
    best = history.records[history.best_epoch - 1]
    assert evaluate(module, history.params, data.x_val, data.y_val)[0] == best.val_loss
    ck = load_checkpoint(out / CHECKPOINT)
    for mine, saved in zip(history.params, ck.params, strict=True):
        assert np.array_equal(mine, saved)


def test_without_restore_best_the_last_parameters_stay(cli_run, tmp_path):
    _, _, module, data = cli_run
    history = fit(module, data, epochs=12, lr=WILD_LR, progress=False,
                  early_stopping={"patience": 2, "restore_best": False})
    assert history.best_epoch < len(history.records)
    last = history.records[-1].val_loss
    assert evaluate(module, history.params, data.x_val, data.y_val)[0] == last
    assert "restored" not in history.stopped


def test_accuracy_is_watched_as_a_maximum(cli_run):
    _, _, module, data = cli_run
    history = fit(module, data, epochs=12, lr=WILD_LR, progress=False,
                  early_stopping={"patience": 2, "monitor": "val_accuracy"})
    accuracy = history.column("val_accuracy")
    assert history.best_epoch == int(np.argmax(accuracy)) + 1


def test_the_stopped_line_speaks_portuguese(cli_run):
    _, _, module, data = cli_run
    history = fit(module, data, epochs=12, lr=WILD_LR, progress=False, lang="pt",
                  early_stopping={"patience": 2})
    assert history.stopped.startswith("parada antecipada:")
    assert f"melhor foi a época {history.best_epoch}" in history.stopped


# --- resuming ---------------------------------------------------------------------------------


def test_a_resumed_run_stops_where_the_uninterrupted_one_did(wild, cli_run, tmp_path):
    history, _ = wild
    _, _, module, data = cli_run
    options = {"lr": WILD_LR, "progress": False, "early_stopping": {"patience": 2},
               "out_dir": tmp_path}
    # Interrupted after the best epoch, with one epoch waited: the counters must come back.
    cut = len(history.records) - 1
    first = fit(module, data, epochs=cut, **options)
    assert not first.stopped
    assert load_checkpoint(tmp_path / CHECKPOINT).early_stopping["wait"] == 1
    resumed = fit(module, data, epochs=12, resume=True, **options)
    assert resumed.best_epoch == history.best_epoch
    assert len(resumed.records) == len(history.records)
    for a, b in zip(resumed.params, history.params, strict=True):
        assert np.array_equal(a, b)
    with pytest.raises(DeriveError, match="nothing to continue"):
        fit(module, data, epochs=20, resume=True, **options)


def test_resuming_with_other_early_stopping_is_refused(wild, cli_run, tmp_path):
    _, _, module, data = cli_run
    options = {"lr": WILD_LR, "progress": False, "out_dir": tmp_path}
    fit(module, data, epochs=1, early_stopping={"patience": 2}, **options)
    with pytest.raises(DeriveError, match="early_stopping"):
        fit(module, data, epochs=3, resume=True, early_stopping={"patience": 3}, **options)


# --- refused settings ---------------------------------------------------------------------------


def test_early_stopping_without_validation_samples_is_refused_by_fit(cli_run):
    _, _, module, data = cli_run
    bare = replace(data, x_val=data.x_val[:0], y_val=data.y_val[:0])
    with pytest.raises(DeriveError, match="no validation samples"):
        fit(module, bare, epochs=1, progress=False, early_stopping=True)


@pytest.mark.parametrize(("table", "key", "words"), [
    ("{patiance = 3}", "patiance", "Did you mean 'patience'"),
    ("{patience = 0}", "patience", "integer"),
    ("{patience = 2.5}", "patience", "integer"),
    ("{patience = true}", "patience", "integer"),
    ('{patience = "5"}', "patience", "integer"),
    ("{min_delta = -0.1}", "min_delta", "≥ 0"),
    ('{min_delta = "x"}', "min_delta", "≥ 0"),
    ('{monitor = "val_los"}', "monitor", "val_loss"),
    ('{monitor = "train_loss"}', "monitor", "val_accuracy"),
    ("{restore_best = 1}", "restore_best", "true or false"),
])
def test_a_wrong_key_is_one_line_naming_it_and_writes_nothing(tmp_path, capsys, table, key,
                                                              words):
    spec = tmp_path / "bad.toml"
    spec.write_text(SPEC.replace(
        'early_stopping = {patience = 2, min_delta = 10.0, monitor = "val_accuracy"}',
        f"early_stopping = {table}"))
    out = tmp_path / "run"
    assert main(["train", str(spec), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("derive: error: ") and err.count("\n") == 1, err
    assert f"train.early_stopping.{key}" in err and words in err
    assert not out.exists()


def test_a_table_is_required():
    with pytest.raises(DeriveError, match="train.early_stopping: must be a table"):
        parse_spec(SPEC.replace('{patience = 2, min_delta = 10.0, monitor = "val_accuracy"}',
                                "5"))


def test_true_is_the_defaults_and_false_is_none():
    on = parse_spec(SPEC.replace('{patience = 2, min_delta = 10.0, monitor = "val_accuracy"}',
                                 "true"))
    assert early_stopping_from(on.train["early_stopping"]) == EarlyStopping(
        patience=5, min_delta=0.0, monitor="val_loss", restore_best=True)
    off = SPEC.replace('{patience = 2, min_delta = 10.0, monitor = "val_accuracy"}', "false")
    assert early_stopping_from(parse_spec(off).train["early_stopping"]) is None
    # Off needs no validation samples.
    parse_spec(off.replace("validation_split = 0.2", "validation_split = 0"))


def test_without_a_validation_split_the_error_says_why():
    text = SPEC.replace("validation_split = 0.2", "validation_split = 0")
    with pytest.raises(DeriveError) as error:
        parse_spec(text)
    message = error.value.message
    assert "train.early_stopping" in message and "validation" in message
    assert "validation_split" in message and "never say when to stop" in message


def test_accuracy_of_a_regression_is_refused():
    text = SPEC.replace('loss = "categorical_cross_entropy"', 'loss = "mse"').replace(
        'activation = "softmax"', 'activation = "identity"')
    with pytest.raises(DeriveError, match="train.early_stopping.monitor"):
        parse_spec(text)
    parse_spec(text.replace('monitor = "val_accuracy"', 'monitor = "val_loss"'))


# --- the normalisation a checkpoint records -------------------------------------------------------


def raw_parts(data, seed=0):
    """The digits' raw training and test samples, split as dataset_for splits them."""
    source = split_test(load_source("digits"), 0.2, seed)
    x_tr, _, _, _ = split_validation(source.x, source.y, 0.2, shuffle=False, seed=seed)
    return x_tr, source.x_test


def test_the_checkpoint_records_the_zscore_statistics(cli_run):
    out, _, _, data = cli_run
    ck = load_checkpoint(out / CHECKPOINT)
    x_train, _ = raw_parts(data)
    assert ck.normaliser.method == "zscore"
    flat = x_train.reshape(len(x_train), -1).astype(np.float64)
    assert np.allclose(ck.normaliser.shift.reshape(-1), flat.mean(axis=0), atol=1e-12)
    spread = flat.std(axis=0)
    used = ck.normaliser.scale.reshape(-1)
    assert np.allclose(used[spread > 0], spread[spread > 0], atol=1e-12)


def test_predict_scales_raw_samples_as_the_run_did(cli_run):
    out, _, module, data = cli_run
    _, x_test = raw_parts(data)
    ck = load_checkpoint(out / CHECKPOINT)
    got = predict(module, x_test, out / CHECKPOINT)
    assert np.array_equal(got, np.asarray(module.predict(ck.params, data.x_test)))


def test_resuming_with_another_normalisation_is_refused(cli_run, tmp_path):
    _, _, module, data = cli_run
    fit(module, data, epochs=1, out_dir=tmp_path, progress=False, early_stopping=False)
    minmax = dataset_for(module, "digits", normalisation="feature_minmax")
    with pytest.raises(DeriveError, match="normalisation = 'zscore'"):
        fit(module, minmax, epochs=2, out_dir=tmp_path, progress=False, resume=True,
            early_stopping=False)


def test_a_checkpoint_without_normalisation_cannot_predict(cli_run, tmp_path):
    out, _, module, _ = cli_run
    ck = replace(load_checkpoint(out / CHECKPOINT), normaliser=None)
    with pytest.raises(DeriveError, match="normalisation"):
        predict(module, np.zeros((2, 64)), ck)
