"""Seeing each layer: per-layer gradient norms, update ratios, dead and saturated units.

The two example networks of the vanishing gradient (examples/deep_sigmoid.toml and
examples/deep_relu.toml, eight hidden layers on the 8×8 digits) are generated once and
trained briefly; the measurements are checked against values computed here independently
(NumPy norms of the module's own gradients, a NumPy forward pass of the dense layers).
"""

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from derive import pipeline
from derive.checks import load_module
from derive.cli import main
from derive.network import load_spec
from derive.train.checkpoint import CHECKPOINT, load_checkpoint
from derive.train.data import dataset_for
from derive.train.loop import fit, layer_groups, measure_layers, unit_fractions
from derive.train.progress import epoch_line
from derive.train.report import (
    FIELDS,
    LAYER_FIELDS,
    SATURATED_SLOPE,
    EpochRecord,
    LayerRecord,
    curves_csv,
    diagnose,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
GENERATED = EXAMPLES.parent / "generated"


@pytest.fixture(scope="module")
def deep(tmp_path_factory):
    """The generated deep_sigmoid and deep_relu modules, by activation.

    The committed modules when they are current (their Numba cache on disk then spares
    the compilation, most of this file's time), else freshly generated ones.
    """
    out = tmp_path_factory.mktemp("deep")
    modules = {}
    for act in ("sigmoid", "relu"):
        spec = EXAMPLES / f"deep_{act}.toml"
        committed = pipeline.network_target(spec, GENERATED)
        if committed.path.is_file() and committed.path.read_text() == committed.text:
            modules[act] = load_module(committed.path)
            continue
        fresh = pipeline.spec_target(load_spec(spec), out, "test")
        pipeline.write_targets([fresh])
        modules[act] = load_module(fresh.path)
    return modules


@pytest.fixture(scope="module")
def digits(deep):
    data = dataset_for(deep["sigmoid"], "digits", normalisation="zscore")
    # A small training set keeps the runs short; validation and test stay whole.
    return replace(data, x_train=data.x_train[:480], y_train=data.y_train[:480])


@pytest.fixture(scope="module")
def runs(deep, digits, tmp_path_factory):
    """Each network trained for three epochs, its folder holding curves and checkpoint."""
    done = {}
    for act, module in deep.items():
        out = tmp_path_factory.mktemp(f"run_{act}")
        done[act] = (fit(module, digits, epochs=3, out_dir=out, progress=False), out)
    return done


def numpy_forward(module, params, x):
    """Every hidden layer's s = x Wᵀ + b and output, for dense networks (NumPy, float64)."""
    sigma = {"sigmoid": lambda s: 1 / (1 + np.exp(-s)), "relu": lambda s: np.maximum(s, 0)}
    slope = {"sigmoid": lambda s: sigma["sigmoid"](s) * (1 - sigma["sigmoid"](s)),
             "relu": lambda s: (s > 0).astype(float)}
    out, slopes = np.asarray(x, float), []
    for i, (_, act, _) in enumerate(module.LAYERS[:-1]):
        W, b = (params[2 * i].astype(float), params[2 * i + 1].astype(float))
        s = out @ W.T + b
        slopes.append(slope[act](s))
        out = sigma[act](s)
    return slopes


# --- the measurements against independent computations ---------------------------------


def test_layers_are_named_after_the_parameters(deep):
    groups = layer_groups(deep["relu"])
    assert [name for name, _, _ in groups] == [f"dense{i}" for i in range(9)]
    names = deep["relu"].PARAM_NAMES
    for name, own, index in groups:
        assert [names[j] for j in own] == [f"{name}.W", f"{name}.b"]
        assert index == int(name.removeprefix("dense"))


def test_per_layer_gradient_norms_are_the_norms_of_the_modules_gradients(deep, digits):
    module = deep["sigmoid"]
    params = module.init_params(3, np.float64)
    x, y = digits.x_train[:64].astype(np.float64), digits.y_train[:64]
    _, grads = module.loss_and_grad(params, x, y)
    moved = [p + 0.01 * (j + 1) for j, p in enumerate(params)]
    layers = measure_layers(module, moved, params, grads, None)
    for i, layer in enumerate(layers):
        W, b = grads[2 * i], grads[2 * i + 1]
        assert layer.grad_norm == pytest.approx(
            np.sqrt(np.sum(W ** 2) + np.sum(b ** 2)), rel=1e-12)
        change = np.sqrt(np.sum((moved[2 * i] - params[2 * i]) ** 2)
                         + np.sum((moved[2 * i + 1] - params[2 * i + 1]) ** 2))
        size = np.linalg.norm(params[2 * i])  # the biases start at zero
        assert layer.update_ratio == pytest.approx(change / size, rel=1e-12)
        assert math.isnan(layer.dead) and math.isnan(layer.saturated)  # no batch given


def test_activation_slopes_are_the_derivative_at_each_unit(deep, digits):
    x = digits.x_train[:50].astype(np.float64)
    for module in deep.values():
        params = module.init_params(1, np.float64)
        slopes = module.activation_slopes(params, x)
        assert slopes[-1] is None  # softmax is fused into the loss
        for got, want in zip(slopes[:-1], numpy_forward(module, params, x), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_dead_units_on_a_constructed_case(deep, digits):
    module = deep["relu"]
    params = module.init_params(0, np.float64)
    params[5][:8] = -1e3  # dense2: its first 8 of 32 units never fire
    x = digits.x_train[:100].astype(np.float64)
    layers = measure_layers(module, params, params, [np.zeros_like(p) for p in params], x)
    assert layers[2].dead >= 8 / 32  # and any unit the initial weights left dead
    expected = [float(np.mean(np.all(s == 0, axis=0))) for s in numpy_forward(module, params, x)]
    assert [layer.dead for layer in layers[:-1]] == expected
    assert all(layer.saturated == 0 for layer in layers[:-1])  # ReLU' is 0 or 1
    assert math.isnan(layers[-1].dead)


def test_saturated_units_on_a_constructed_case(deep, digits):
    module = deep["sigmoid"]
    params = module.init_params(0, np.float64)
    params[0] *= 40.0  # dense0: large weights push s far into the sigmoid's tails
    x = digits.x_train[:100].astype(np.float64)
    layers = measure_layers(module, params, params, [np.zeros_like(p) for p in params], x)
    slope = numpy_forward(module, params, x)[0]
    expected = float(np.mean((slope > 0) & (slope < SATURATED_SLOPE)))
    assert layers[0].saturated == pytest.approx(expected, abs=1e-12)
    assert layers[0].saturated > 0.5
    assert layers[0].dead == 0


def test_unit_fractions_count_channels_and_values():
    slope = np.ones((4, 3, 2, 2))
    slope[:, 1] = 0.0  # channel 1 dead everywhere
    slope[0, 2, 0, 0] = 0.0  # channel 2 zero once only: alive
    slope[1, 0] = 0.004  # 4 values of channel 0 saturated
    dead, saturated = unit_fractions(slope)
    assert dead == pytest.approx(1 / 3)
    assert saturated == pytest.approx(4 / slope.size)
    assert all(map(math.isnan, unit_fractions(None)))


# --- the vanishing gradient, seen in a short run ----------------------------------------


def test_the_sigmoid_networks_first_layers_gradient_vanishes_and_the_relus_does_not(runs):
    ratios = {}
    for act, (history, _) in runs.items():
        last = history.records[-1].layers
        ratios[act] = last[0].grad_norm / last[-1].grad_norm
    assert ratios["sigmoid"] < 1e-2
    assert ratios["relu"] > 1e-1
    assert ratios["sigmoid"] < 1e-2 * ratios["relu"]
    kinds = {act: [d.kind for d in h.diagnoses] for act, (h, _) in runs.items()}
    assert "vanishing" in kinds["sigmoid"] and "vanishing" not in kinds["relu"]


def test_curves_csv_keeps_the_old_columns_and_adds_each_layers(runs):
    history, out = runs["sigmoid"]
    lines = (out / "curves.csv").read_text().splitlines()
    header = lines[0].split(",")
    layer_columns = [f"dense{i}.{m}" for i in range(9) for m in LAYER_FIELDS]
    assert header == [*FIELDS, *layer_columns]
    assert len(lines) == 1 + len(history.records)
    row = dict(zip(header, lines[-1].split(","), strict=True))
    assert float(row["dense0.grad_norm"]) == history.records[-1].layers[0].grad_norm
    assert (out / "curves.png").stat().st_size > 0


def test_the_checkpoint_keeps_the_per_layer_history(runs):
    history, out = runs["relu"]
    loaded = load_checkpoint(out / CHECKPOINT).records
    # Compared as text, where NaN (no activation of its own) equals NaN.
    assert curves_csv(loaded) == curves_csv(history.records)
    assert [r.layers[0] for r in loaded] == [r.layers[0] for r in history.records]


def test_the_progress_line_shows_the_layers_compactly(runs):
    record = runs["sigmoid"][0].records[-1]
    line = epoch_line(record, 3)
    first, last = record.layers[0].grad_norm, record.layers[-1].grad_norm
    assert f"|grad| {record.grad_norm:.3g} (layers {first:.1e}→{last:.1e})" in line
    assert "Δθ/θ ≤" in line


# --- the diagnosis, in both languages ---------------------------------------------------


def layered(norms, dead=math.nan, saturated=math.nan):
    layers = tuple(LayerRecord(f"dense{i}", n, 1e-3, dead, saturated)
                   for i, n in enumerate(norms))
    return [EpochRecord(1, 0.1, 1.0, math.nan, math.nan, math.nan, 1.0, 0.1, layers)]


def test_vanishing_gradient_is_diagnosed_in_english_and_portuguese():
    (d,) = diagnose(layered([1e-6, 1e-4, 1e-1]))
    assert d.kind == "vanishing"
    assert "the gradient vanishes" in d.text("en") and "5 orders of magnitude" in d.text("en")
    assert "o gradiente desvanece" in d.text("pt") and "5 ordens de grandeza" in d.text("pt")
    assert "Retropropagação em Redes Neurais" in d.text("pt")
    assert diagnose(layered([0.5, 0.3, 1.0])) == ()


def test_dead_and_saturated_layers_are_diagnosed():
    (dead,) = diagnose(layered([1.0, 1.0], dead=0.75))
    assert dead.kind == "dead" and "75% of the units of dense0" in dead.text("en")
    assert "75% das unidades de dense0 estão mortas" in dead.text("pt")
    (sat,) = diagnose(layered([1.0, 1.0], saturated=0.9))
    assert sat.kind == "saturated" and "unidades saturadas" in sat.text("pt")
    assert diagnose(layered([1.0, 1.0], dead=0.1, saturated=0.2)) == ()
    with pytest.raises(ValueError, match="lang"):
        dead.text("de")


def test_curves_csv_without_layers_is_unchanged():
    record = EpochRecord(1, 0.1, 1.0, 0.5, 1.1, 0.4, 2.0, 0.3)
    assert curves_csv([record]).splitlines()[0] == ",".join(FIELDS)


TINY = """\
[network]
name = "tiny_pt"
input_shape = [64]
loss = "categorical_cross_entropy"

[[layers]]
type = "dense"
units = 10
activation = "softmax"

[train]
optimizer = "gd"
lr = 1e-9
epochs = 3
"""


def test_derive_train_writes_the_diagnosis_in_the_chosen_language(tmp_path, capsys):
    spec = tmp_path / "tiny.toml"
    spec.write_text(TINY)  # a rate of 1e-9 leaves the loss where it started
    assert main(["train", str(spec), "--out", str(tmp_path / "run"), "--no-progress",
                 "--lang", "pt"]) == 0
    printed = capsys.readouterr().out
    assert "diagnóstico: a perda de treino estagna" in printed
    assert "diagnosis" not in printed


def test_a_checkpoint_from_before_per_layer_records_still_loads(runs, tmp_path):
    import json

    _, out = runs["relu"]
    with np.load(out / CHECKPOINT, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files if k != "layer_records"}
    meta = json.loads(str(arrays["meta"]))
    del meta["layers"], meta["layer_fields"]
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(tmp_path / CHECKPOINT, **arrays)
    loaded = load_checkpoint(tmp_path / CHECKPOINT)
    assert loaded.epoch == 3 and all(r.layers == () for r in loaded.records)
