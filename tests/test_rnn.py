"""The Elman RNN, derived through time from its declaration (issue 15).

The declaration reads the state one step back, h[n, t − 1, k]; the recurrence pass cuts
it into one step (an ordinary layer with h_prev as an input), derives the step in delta
form, and the generated module runs the step forwards and backwards over time. Checked
against torch.nn.RNN(batch_first=True, nonlinearity="tanh" and "relu": the declarations
rnn and rnn_relu) in float64 at 1e-9 for T = 1, 2, 50, and against finite differences.
"""

import dataclasses

import numpy as np
import pytest
import sympy as sp
import torch
from oracles import RecurrentCases, oracle, reference

from derive import pipeline, registry
from derive.calculus.recurrence import cut_step, derive_recurrence
from derive.checks import declaration_check, finite_difference_check, load_module
from derive.cli import main
from derive.codegen.recurrent import render_recurrent
from derive.ops.layers import RNN, RNN_RELU

#: Every Elman layer of the catalogue (one per activation PyTorch offers): a recurrence
#: that carries its output alone (the LSTM, which carries a cell state too, has
#: tests/test_lstm.py).
RECURRENT = [op for op in registry.all_ops("layer")
             if op.recurrence is not None and len(op.recurrence.states) == 1]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The catalogue's path: what `derive kernels rnn rnn_relu -o DIR` writes."""
    out = tmp_path_factory.mktemp("rnn")
    pipeline.write_targets(pipeline.catalogue_targets([op.name for op in RECURRENT], out))
    return out


@pytest.fixture(scope="module")
def module(folder):
    return load_module(folder / "layers" / "rnn.py")


def test_rnn_is_in_the_catalogue_as_a_layer_with_a_recurrence():
    op = registry.get("rnn")
    assert op is RNN and op.kind == "layer" and op.recurrence is not None
    assert registry.folder(op) == "layers" and op in registry.module_ops()
    assert registry.declared_in(op) == "derive/ops/layers.py"
    assert isinstance(oracle(op), RecurrentCases)


def test_the_catalogue_module_is_the_recurrent_one(folder):
    text = (folder / "layers" / "rnn.py").read_text(encoding="utf-8")
    assert "the declaration 'rnn' in derive/ops/layers.py" in text
    assert "derive kernels rnn  (or: derive kernels --all)" in text
    assert "def _sequence(" in text and "d_h_0 = carried" in text


def test_derive_check_runs_both_outputs_through_finite_differences(folder, capsys):
    assert main(["check", "rnn", "-o", str(folder)]) == 0
    table = capsys.readouterr().out
    for quantity in ("forward = declaration", "d_x", "d_h_0", "d_W_ih", "d_b_ih", "d_W_hh",
                     "d_b_hh"):
        assert f"rnn  {quantity} " in table, quantity
    assert "7 passed, 0 failed" in table


def test_the_checks_see_the_last_state(module):
    """A module whose last state is wrong fails the declaration check; one whose backward
    ignores d_h_last fails the finite differences of h_0 and W_hh."""
    assert all(r.passed for r in declaration_check(RNN, module))

    class WrongLast:
        @staticmethod
        def forward(*args):
            states, last = module.forward(*args)
            return states, last * 1.01

        backward = staticmethod(module.backward)

    assert not declaration_check(RNN, WrongLast)[0].passed

    class NoLastGradient:
        forward = staticmethod(module.forward)

        @staticmethod
        def backward(*args):
            return module.backward(*args[:-1])

    failed = {r.quantity for r in finite_difference_check(RNN, NoLastGradient) if not r.passed}
    assert {"d_h_0", "d_W_hh"} <= failed


def test_the_step_reads_the_previous_state_as_an_input():
    step, previous, axes = cut_step(RNN)
    assert str(previous) == "h_prev" and previous in step.inputs
    assert RNN.recurrence.initial not in dict(step.arrays)
    assert dict(step.arrays)[previous] == RNN.shape(RNN.recurrence.initial)
    assert str(step.out) == "h[n, o]"
    assert "W_hh[o, k]*h_prev[n, k]" in str(step.steps[0][1])
    assert axes[RNN.recurrence.state] == 1


def test_the_step_gradient_sent_back_is_w_hh_transposed_times_the_local_delta():
    d = derive_recurrence(RNN).derivation
    previous = derive_recurrence(RNN).previous
    assert str(d.gradient(previous).expr) == "Sum(W_hh[o, q]*d_s[p, o], (o, 0, H - 1))"
    # tanh' comes from differentiating the declaration, not from a table entry here.
    assert str(d.intermediates[0].expr) == "-tanh(s[p, q])**2*d_h[p, q] + d_h[p, q]"


def test_a_state_read_two_steps_back_is_refused():
    t = RNN.recurrence.time
    h = RNN.recurrence.state
    bad = RNN.expr + h[RNN.out.indices[0], t - 2, RNN.out.indices[2]]
    with pytest.raises(ValueError, match="only at the previous time"):
        cut_step(dataclasses.replace(RNN, expr=bad))


def _torch_case(length, seed, batch=3, features=4, hidden=5, h0=True, op=RNN):
    torch.manual_seed(seed)
    entry = oracle(op)
    rnn = entry.module(features, hidden)
    x = torch.randn(batch, length, features, dtype=torch.float64, requires_grad=True)
    h_0 = torch.randn(1, batch, hidden, dtype=torch.float64, requires_grad=True) if h0 else None
    out, h_n = rnn(x, h_0)
    d_out, d_last = torch.randn_like(out), torch.randn_like(h_n)
    ((out * d_out).sum() + (h_n * d_last).sum()).backward()
    weights = tuple(getattr(rnn, name) for name in entry.weights)
    return rnn, x, h_0, out, h_n, d_out, d_last, weights


def test_the_activation_is_a_parameter_of_the_declaration():
    assert {op.name for op in RECURRENT} >= {"rnn", "rnn_relu"}
    assert RNN.expr.has(sp.tanh) and not RNN_RELU.expr.has(sp.tanh)
    assert isinstance(RNN_RELU.expr, sp.Piecewise)
    assert RNN.steps == RNN_RELU.steps and RNN.arrays == RNN_RELU.arrays


@pytest.mark.parametrize("op", RECURRENT, ids=lambda op: op.name)
@pytest.mark.parametrize("length", reference(RNN).lengths)
def test_matches_torch_rnn_states_and_every_gradient(folder, op, length):
    module = load_module(folder / "layers" / f"{op.name}.py")
    _, x, h_0, out, h_n, d_out, d_last, weights = _torch_case(length, seed=length, op=op)
    arrays = [x.detach().numpy(), h_0.detach().numpy()[0]]
    arrays += [w.detach().numpy() for w in weights]
    h, last = module.forward(*arrays)
    np.testing.assert_allclose(h, out.detach().numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(last, h_n.detach().numpy()[0], rtol=1e-9, atol=1e-12)
    grads = module.backward(*arrays, d_out.numpy(), d_last.numpy()[0])
    want = [x.grad, h_0.grad[0]] + [w.grad for w in weights]
    assert len(grads) == len(want)
    for name, g, w in zip(("x", "h_0", "W_ih", "b_ih", "W_hh", "b_hh"), grads, want,
                          strict=True):
        assert g.shape == tuple(w.shape), name
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)


def test_a_missing_initial_state_is_zero(module):
    _, x, _, out, h_n, d_out, d_last, weights = _torch_case(7, seed=3, h0=False)
    arrays = [x.detach().numpy(), None] + [w.detach().numpy() for w in weights]
    h, last = module.forward(*arrays)
    np.testing.assert_allclose(h, out.detach().numpy(), rtol=1e-9, atol=1e-12)
    grads = module.backward(*arrays, d_out.numpy(), d_last.numpy()[0])
    np.testing.assert_allclose(grads[0], x.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(grads[4], weights[2].grad.numpy(), rtol=1e-9, atol=1e-12)


def test_finite_differences_through_time(module):
    rng = np.random.default_rng(0)
    N, T, I, H = 2, 6, 3, 4
    arrays = [rng.normal(size=s) * 0.7 for s in ((N, T, I), (N, H), (H, I), (H,), (H, H), (H,))]
    d_h, d_last = rng.normal(size=(N, T, H)), rng.normal(size=(N, H))

    def energy(values):
        h, last = module.forward(*values)
        return np.sum(d_h * h) + np.sum(d_last * last)

    grads = module.backward(*arrays, d_h, d_last)
    for k, array in enumerate(arrays):
        numeric = np.empty_like(array)
        for index in np.ndindex(array.shape):
            step = 1e-6 * max(1.0, abs(array[index]))
            up, down = [a.copy() for a in arrays], [a.copy() for a in arrays]
            up[k][index] += step
            down[k][index] -= step
            numeric[index] = (energy(up) - energy(down)) / (2 * step)
        np.testing.assert_allclose(grads[k], numeric, rtol=1e-6, atol=1e-8)


def test_float32_follows_the_input(module):
    rng = np.random.default_rng(1)
    arrays = [rng.normal(size=s).astype(np.float32)
              for s in ((2, 5, 3), (2, 4), (4, 3), (4,), (4, 4), (4,))]
    h, last = module.forward(*arrays)
    assert h.dtype == np.float32 and last.dtype == np.float32
    h64, _ = module.forward(*[a.astype(np.float64) for a in arrays])
    np.testing.assert_allclose(h, h64, rtol=1e-5, atol=1e-5)
    grads = module.backward(*arrays, np.ones_like(h))
    assert all(g.dtype == np.float32 for g in grads)


@pytest.mark.parametrize("op", RECURRENT, ids=lambda op: op.name)
def test_float32_matches_torch_loosely(folder, op):
    module = load_module(folder / "layers" / f"{op.name}.py")
    torch.manual_seed(11)
    entry = oracle(op)
    rnn = entry.module(4, 5).float()
    x = torch.randn(3, 30, 4, requires_grad=True)
    h_0 = torch.randn(1, 3, 5, requires_grad=True)
    out, h_n = rnn(x, h_0)
    d_out, d_last = torch.randn_like(out), torch.randn_like(h_n)
    ((out * d_out).sum() + (h_n * d_last).sum()).backward()
    weights = [getattr(rnn, name) for name in entry.weights]
    arrays = [x.detach().numpy(), h_0.detach().numpy()[0]] + [w.detach().numpy()
                                                               for w in weights]
    h, last = module.forward(*arrays)
    assert h.dtype == np.float32
    np.testing.assert_allclose(h, out.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(last, h_n.detach().numpy()[0], rtol=1e-4, atol=1e-5)
    grads = module.backward(*arrays, d_out.numpy(), d_last.numpy()[0])
    for g, w in zip(grads, [x.grad, h_0.grad[0]] + [w.grad for w in weights], strict=True):
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-4, atol=1e-4)


def test_the_declaration_is_over_the_whole_sequence():
    t = RNN.recurrence.time
    assert RNN.out.indices[1] == t
    assert RNN.steps[0][1].has(RNN.recurrence.state[RNN.out.indices[0], t - 1,
                                                     sp.Symbol("k", integer=True,
                                                               nonnegative=True)])


def test_the_loops_over_time_hold_no_derivative():
    """BPTT's maths is in the step's generated kernels; the loops only order the calls."""
    text = render_recurrent(derive_recurrence(RNN), "the declaration 'rnn'", "derive kernels rnn")
    assert text == render_recurrent(derive_recurrence(RNN), "the declaration 'rnn'",
                                    "derive kernels rnn")
    loops = text[text.index("def _sequence("):]
    assert "tanh" not in loops and "W_hh.T" not in loops and "np.dot" not in loops
    assert "math.tanh(s[p, q])" in text[:text.index("def _sequence(")]
    assert "d_h_t[:] = d_h[:, t]\n        d_h_t += carried\n" in loops
    assert "d_W_hh += d_W_hh_t" in loops and "d_h_0 = carried" in loops


def test_the_relu_step_masks_where_s_is_not_positive(folder):
    text = (folder / "layers" / "rnn_relu.py").read_text(encoding="utf-8")
    kernels = text[:text.index("def _sequence(")]
    assert "tanh" not in kernels and "> 0" in kernels
    module = load_module(folder / "layers" / "rnn_relu.py")
    results = declaration_check(RNN_RELU, module) + finite_difference_check(RNN_RELU, module)
    assert len(results) == 7 and all(r.passed for r in results), results
