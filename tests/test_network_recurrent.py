"""Recurrent layers inside a network (issue 15): rnn and lstm, a readout of the sequence
(last state or mean over time), then a dense head.

The whole network's loss and every parameter gradient are compared with the same network
in PyTorch (torch's LSTM/RNN kernels, batch_first) in float64 at 1e-9 and with central
finite differences; every optimizer of the catalogue trains it (the loss falls over a few
steps); a spec that puts a dense layer on a sequence, or names an unknown readout, is
refused with a one-line error that says how to fix it.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import (
    REPO,
    generated,
    load_module,
    one_error_line,
    table_network_builder,
    table_spec_text,
)

from derive import registry
from derive.cli import main
from derive.network import SpecError, parse_spec

TOL = 1e-9
T, FEATURES, UNITS, CLASSES = 5, 3, 4, 3

LSTM_LAST = [{"type": "lstm", "units": UNITS}, {"type": "last_state"},
             {"type": "dense", "units": CLASSES, "activation": "softmax"}]
RNN_MEAN = [{"type": "rnn", "units": UNITS}, {"type": "time_mean"},
            {"type": "dense", "units": 2}]


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """Write, generate and import a network module once per spec."""
    return table_network_builder(tmp_path_factory.mktemp("network_recurrent"))


def torch_recurrent(kind, x, w_ih, b_ih, w_hh, b_hh):
    """Every state of torch's own recurrent kernel (its weight order: W_ih, W_hh, b_ih, b_hh)."""
    n, units = x.shape[0], w_hh.shape[1]
    zero = torch.zeros(1, n, units, dtype=torch.float64)
    weights = [w_ih, w_hh, b_ih, b_hh]
    if kind == "lstm":
        return torch._VF.lstm(x, (zero, zero), weights, True, 1, 0.0, False, False, True)[0]
    if kind == "gru":
        return torch._VF.gru(x, zero, weights, True, 1, 0.0, False, False, True)[0]
    return torch._VF.rnn_tanh(x, zero, weights, True, 1, 0.0, False, False, True)[0]


def test_lstm_last_state_network_matches_pytorch(build):
    m = build("lstm_last", [T, FEATURES], LSTM_LAST, loss="categorical_cross_entropy")
    assert m.OUTPUT_SHAPE == (CLASSES,)
    assert m.PARAM_SHAPES == ((4 * UNITS, FEATURES), (4 * UNITS,), (4 * UNITS, UNITS),
                              (4 * UNITS,), (CLASSES, UNITS), (CLASSES,))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, T, FEATURES)), rng.integers(0, CLASSES, 6)
    params = m.init_params(seed=1)
    params[1] += rng.normal(size=params[1].shape)  # biases away from 0, so they count
    params[3] += rng.normal(size=params[3].shape)
    tp = [torch.tensor(p, requires_grad=True) for p in params]
    states = torch_recurrent("lstm", torch.tensor(x), *tp[:4])
    tloss = F.cross_entropy(F.linear(states[:, -1], tp[4], tp[5]), torch.tensor(y))
    tloss.backward()
    loss, grads = m.loss_and_grad(params, x, y)
    assert loss == pytest.approx(tloss.item(), rel=TOL, abs=TOL)
    for g, t, name in zip(grads, tp, m.PARAM_NAMES, strict=True):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=TOL, atol=TOL, err_msg=name)
    probabilities = F.softmax(F.linear(states[:, -1], tp[4], tp[5]), dim=1)
    np.testing.assert_allclose(m.predict(params, x), probabilities.detach().numpy(),
                               rtol=TOL, atol=TOL)


@pytest.mark.parametrize("kind", ["rnn", "gru"])
def test_time_mean_network_matches_pytorch(build, kind):
    # The network code knows no layer by name: a GRU needs nothing an Elman layer does not.
    m = build(f"{kind}_mean", [T, FEATURES], [{**RNN_MEAN[0], "type": kind}, *RNN_MEAN[1:]])
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(5, T, FEATURES)), rng.normal(size=(5, 2))
    params = m.init_params(seed=2)
    tp = [torch.tensor(p, requires_grad=True) for p in params]
    states = torch_recurrent(kind, torch.tensor(x), *tp[:4])
    tloss = F.mse_loss(F.linear(states.mean(dim=1), tp[4], tp[5]), torch.tensor(y))
    tloss.backward()
    loss, grads = m.loss_and_grad(params, x, y)
    assert loss == pytest.approx(tloss.item(), rel=TOL, abs=TOL)
    for g, t, name in zip(grads, tp, m.PARAM_NAMES, strict=True):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=TOL, atol=TOL, err_msg=name)


@pytest.mark.parametrize("name, layers, loss", [
    ("lstm_last", LSTM_LAST, "categorical_cross_entropy"), ("rnn_mean", RNN_MEAN, "mse")])
def test_network_gradient_matches_finite_differences(build, name, layers, loss):
    m = build(name, [T, FEATURES], layers, loss=loss)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, T, FEATURES))
    y = rng.integers(0, CLASSES, 4) if m.N_CLASSES else rng.normal(size=(4, 2))
    params = m.init_params(seed=4)
    _, grads = m.loss_and_grad(params, x, y)
    for k, (p, g) in enumerate(zip(params, grads, strict=True)):
        for index in list(np.ndindex(p.shape))[::max(1, p.size // 7)]:
            saved, step = p[index], 1e-6
            p[index] = saved + step
            up = m.loss_and_grad(params, x, y)[0]
            p[index] = saved - step
            down = m.loss_and_grad(params, x, y)[0]
            p[index] = saved
            assert g[index] == pytest.approx((up - down) / (2 * step), rel=1e-5, abs=1e-8), \
                (m.PARAM_NAMES[k], index)


OPTIMIZERS = [op.name for op in registry.all_ops("optimizer")]


@pytest.fixture
def one_thread():
    """One Numba thread: a step of 32 sequences is too small to share, and on a busy
    machine the threads of every parallel loop wait for one another."""
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(before)



@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_trains_a_recurrent_network(build, one_thread, optimizer):
    lr = {"gd": 0.3, "momentum": 0.1, "nesterov": 0.1, "momentum_rumelhart": 0.1}.get(
        optimizer, 0.02)
    m = build(f"rnn_{optimizer}", [T, FEATURES], RNN_MEAN, train=f'optimizer = "{optimizer}"\n')
    rng = np.random.default_rng(5)
    x = rng.normal(size=(16, T, FEATURES))
    y = np.stack([x[:, :, 0].mean(axis=1), x[:, -1, 1]], axis=1)
    params = m.init_params(seed=0)
    state = m.init_state(params)
    before = m.loss_and_grad(params, x, y)[0]
    for _ in range(15):
        m.train_step(params, state, x, y, lr)
    after = m.loss_and_grad(params, x, y)[0]
    assert after < 0.9 * before, (optimizer, before, after)


def spec_error(layers, shape=(T, FEATURES)) -> str:
    with pytest.raises(SpecError) as error:
        parse_spec(table_spec_text("bad", shape, layers, loss="mse"), "bad.toml")
    return str(error.value)


def test_a_dense_layer_on_a_sequence_is_told_to_reduce_time():
    message = spec_error([{"type": "lstm", "units": 4}, {"type": "dense", "units": 2}])
    assert "layers[1]" in message and "last_state" in message and "time_mean" in message


def test_an_unknown_readout_is_named_with_the_close_one():
    message = spec_error([{"type": "lstm", "units": 4}, {"type": "last_states"},
                          {"type": "dense", "units": 2}])
    assert "layers[1].type" in message and "last_state" in message


def test_units_is_required():
    message = spec_error([{"type": "rnn"}, {"type": "last_state"}, {"type": "dense", "units": 2}])
    assert "layers[0]" in message and "units" in message


def test_the_cli_refuses_a_dense_layer_on_a_sequence(tmp_path, capsys):
    spec = tmp_path / "bad.toml"
    spec.write_text(table_spec_text("bad", (T, FEATURES), [{"type": "rnn", "units": 4},
                                                            {"type": "dense", "units": 2}]))
    assert main(["kernels", str(spec), "-o", str(tmp_path)]) == 2
    line = one_error_line(capsys)
    assert "layers[1]" in line and "last_state" in line


# ---- the adding problem: a plain RNN fails where an LSTM learns ---------------------------

#: The adding problem's targets have variance 1/6: always answering the mean scores it.
BASELINE = 1 / 6
ADDING_T, ADDING_STEPS = 50, 1500


def adding_layers(kind):
    return [{"type": kind, "units": 32}, {"type": "last_state"}, {"type": "dense", "units": 1}]


def test_an_lstm_learns_the_adding_problem_and_a_plain_rnn_does_not(build, one_thread,
                                                                     tmp_path):
    from derive.train.data import adding_problem
    from derive.train.sequences import plot_state_gradients, state_gradient_norms

    data = adding_problem(T=ADDING_T, n=4000, seed=0)
    assert data.y.var() == pytest.approx(BASELINE, rel=0.1)
    losses, curves = {}, {}
    for kind in ("rnn", "lstm"):
        m = build(f"adding_{kind}", [ADDING_T, 2], adding_layers(kind),
                  train='optimizer = "adam"\n')
        params = m.init_params(seed=0)
        state = m.init_state(params)
        rng = np.random.default_rng(0)
        for _ in range(ADDING_STEPS):
            batch = rng.integers(0, len(data.x), 32)
            m.train_step(params, state, data.x[batch], data.y[batch], 0.01)
        losses[kind] = m.loss_and_grad(params, data.x_test, data.y_test)[0]
        # dE/dh_t of the trained layer, for a loss read from the last state.
        curves[kind] = state_gradient_norms(generated("layers", kind), data.x_test[:64],
                                            params[:4])
    # The LSTM finds the two marked values (here its test loss falls below 0.003 after
    # about 1000 steps); the RNN stays at the mean's loss, the targets' variance.
    assert losses["lstm"] < 0.2 * BASELINE, losses
    assert losses["rnn"] > 0.7 * BASELINE, losses
    assert all(np.isfinite(c).all() and len(c) == ADDING_T for c in curves.values())
    # Why: from the last state back to the first, the trained RNN's ||dE/dh_t|| falls by
    # about 1e-5 (a product of 49 Jacobians), the trained LSTM's by about 1e-2 and then
    # stays level (measured 2.3e-5 against 0.045 at t = 0, both 5.66 at t = 49).
    assert curves["lstm"][0] > 100 * curves["rnn"][0], curves
    png = plot_state_gradients(curves, tmp_path / "gradients.png", "adding, T = 50")
    assert png.stat().st_size > 1000


# ---- the digits as sequences, and the command line -------------------------------------


def test_lstm_digits_example_reaches_90_percent(tmp_path, one_thread):
    from derive.train.data import dataset_for
    from derive.train.loop import evaluate, fit

    assert main(["kernels", str(REPO / "examples" / "lstm_digits.toml"), "-o",
                 str(tmp_path)]) == 0
    m = load_module(tmp_path / "networks" / "lstm_digits.py")
    assert m.INPUT_SHAPE == (8, 8)  # each image read as 8 rows of 8 pixels
    data = dataset_for(m, "digits")
    history = fit(m, data, progress=False)
    _, accuracy = evaluate(m, history.params, data.x_test, data.y_test)
    assert accuracy >= 0.9


def test_the_cli_refuses_a_bad_adding_length(tmp_path, capsys):
    spec = REPO / "examples" / "lstm_digits.toml"
    assert main(["train", str(spec), "--data", "adding:T=abc", "--out", str(tmp_path / "r"),
                 "--no-progress"]) == 2
    line = one_error_line(capsys)
    assert "adding:T=abc" in line and "T must be an integer" in line
    assert not (tmp_path / "r" / "networks").exists()  # nothing written


def test_latex_of_a_recurrent_network_is_one_line(capsys):
    assert main(["latex", str(REPO / "examples" / "lstm_digits.toml")]) == 2
    line = one_error_line(capsys)
    assert "layers[0] (lstm) is recurrent" in line and "derive latex lstm" in line


@pytest.mark.parametrize("path, step", [
    ("generated/layers/lstm.py", "_forward"), ("generated/layers/rnn.py", "_forward"),
    ("generated/layers/gru.py", "_forward"),
    ("generated/networks/lstm_digits.py", "_lstm_step_forward")])
def test_a_time_steps_kernels_are_serial(path, step):
    """The step runs T times inside one sequential loop: its kernels must not open a
    parallel region each (Numba's spinning threads starved BLAS's: 400 ms a step)."""
    from pathlib import Path

    from derive.codegen.compiled import parallel_kernels

    text = (Path(__file__).parent.parent / path).read_text()
    assert f"def {step}(" in text
    # A layer module holds only the step's kernels; a network also its other layers'.
    steps = [name for name in parallel_kernels(text)
             if "networks/" not in path or "_step_" in name]
    assert not steps, f"{path}: {steps} compiled parallel=True"
