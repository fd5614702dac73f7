"""The LSTM, derived through time from its declaration (issue 15).

One declaration over the whole sequence, with two carried states: the output h, read one
step back by every gate, and the cell state c, read one step back by c itself. The
recurrence pass cuts it into one step, an ordinary layer that returns h and c and takes
their previous values as inputs; the step's gradients come from the calculus, and the
generated module runs it forwards and backwards over time. Checked against
torch.nn.LSTM(batch_first=True) in float64 at 1e-9 for T = 1, 2, 50 (every output, the
input, both initial states and all four parameters), loosely in float32, against finite
differences, and with saturated gates.
"""

import numpy as np
import pytest
import sympy as sp
import torch
from oracles import RecurrentCases, oracle, reference

from derive import pipeline, registry
from derive.calculus.derivation import output_upstream
from derive.calculus.recurrence import cut_step, derive_recurrence
from derive.checks import declaration_check, finite_difference_check, load_module
from derive.cli import main
from derive.ops.layers import LSTM

NAMES = ("x", "h_0", "c_0", "W_ih", "b_ih", "W_hh", "b_hh")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """What `derive kernels lstm -o DIR` writes."""
    out = tmp_path_factory.mktemp("lstm")
    pipeline.write_targets(pipeline.catalogue_targets(["lstm"], out))
    return out


@pytest.fixture(scope="module")
def module(folder):
    return load_module(folder / "layers" / "lstm.py")


def test_lstm_is_in_the_catalogue_with_two_carried_states():
    op = registry.get("lstm")
    assert op is LSTM and op.kind == "layer" and registry.folder(op) == "layers"
    assert registry.declared_in(op) == "derive/ops/layers.py"
    assert isinstance(oracle(op), RecurrentCases)
    (h, h0), (c, c0) = op.recurrence.states
    assert (str(h), str(h0), str(c), str(c0)) == ("h", "h_0", "c", "c_0")


def test_the_gates_read_pytorchs_blocks_of_rows_in_its_order():
    """i, f, g, o read rows [0, H), [H, 2H), [2H, 3H), [3H, 4H) of one pre-activation."""
    H = sp.Symbol("H", integer=True, positive=True)
    s_step, *gates, c_step = LSTM.steps
    assert [str(t.base) for t, _ in gates] == ["i", "f", "g", "o"]
    offsets = [e.atoms(sp.Indexed).pop().indices[2] - t.indices[2] for t, e in gates]
    assert offsets == [0, H, 2 * H, 3 * H]
    assert [type(e).__name__ for _, e in gates] == ["sigmoid", "sigmoid", "tanh", "sigmoid"]
    assert LSTM.shape(s_step[0].base)[2] == 4 * H


def test_the_step_takes_both_previous_states_and_returns_the_cell_state():
    step, previous, _ = cut_step(LSTM)
    assert str(previous) == "h_prev"
    assert [str(a) for a in step.inputs] == ["x", "h_prev", "c_prev"]
    assert [str(a) for a in step.extra_outputs] == ["c"]
    assert "c_prev[n, j]*f[n, j]" in str(step.steps[-1][1])


def test_the_cell_state_path_sends_back_the_forget_gate():
    """∂E/∂c_{t−1} = ∂E/∂c_t · f_t, and ∂E/∂c_t starts from what step t + 1 sent back."""
    rd = derive_recurrence(LSTM)
    d = rd.derivation
    (_, _, h_prev), (c, _, c_prev) = rd.states
    assert str(d.gradient(c_prev).expr) == "d_c[p, q]*f[p, q]"
    assert d.gradient(c).expr.has(output_upstream(c)[sp.symbols("p q", integer=True,
                                                               nonnegative=True)])
    assert str(d.gradient(h_prev).expr) == "Sum(W_hh[j, q]*d_s[p, j], (j, 0, 4*H - 1))"


def test_each_gate_gets_only_its_own_rows_of_the_pre_activation_gradient():
    """The input gate reads s[n, j] for j < H only: its term of d_s is guarded there."""
    d_s = next(g for g in derive_recurrence(LSTM).derivation.intermediates
               if str(g.array) == "s").expr
    guards = {str(cond) for piece in d_s.atoms(sp.Piecewise) for _, cond in piece.args}
    assert "q <= H - 1" in guards
    unguarded = [t for t in sp.Add.make_args(d_s) if not isinstance(t, sp.Piecewise)]
    assert unguarded == []


def _torch_case(length, seed, batch=3, features=4, hidden=5, initial=True, scale=1.0,
                dtype=torch.float64):
    torch.manual_seed(seed)
    lstm = oracle(LSTM).module(features, hidden).to(dtype)
    if scale != 1.0:
        with torch.no_grad():
            for w in lstm.parameters():
                w.mul_(scale)
    x = (scale * torch.randn(batch, length, features, dtype=dtype)).requires_grad_()
    h0 = torch.randn(1, batch, hidden, dtype=dtype, requires_grad=True) if initial else None
    c0 = torch.randn(1, batch, hidden, dtype=dtype, requires_grad=True) if initial else None
    out, (h_n, c_n) = lstm(x, (h0, c0) if initial else None)
    d_out, d_h, d_c = torch.randn_like(out), torch.randn_like(h_n), torch.randn_like(c_n)
    ((out * d_out).sum() + (h_n * d_h).sum() + (c_n * d_c).sum()).backward()
    weights = [getattr(lstm, name) for name in oracle(LSTM).weights]
    arrays = [x.detach().numpy()]
    arrays += [h0.detach().numpy()[0], c0.detach().numpy()[0]] if initial else [None, None]
    arrays += [w.detach().numpy() for w in weights]
    want = [x.grad] + ([h0.grad[0], c0.grad[0]] if initial else []) + [w.grad for w in weights]
    return arrays, (out, h_n[0], c_n[0]), (d_out, d_h[0], d_c[0]), want


def _compare(module, arrays, outputs, upstream, want, names, rtol, atol):
    got = module.forward(*arrays)
    assert len(got) == 3
    for name, g, w in zip(("h", "h_last", "c_last"), got, outputs, strict=True):
        np.testing.assert_allclose(g, w.detach().numpy(), rtol=rtol, atol=atol, err_msg=name)
    grads = module.backward(*arrays, *(u.numpy() for u in upstream))
    grads = [g for g, a in zip(grads, arrays, strict=True) if a is not None]
    assert len(grads) == len(want)
    for name, g, w in zip(names, grads, want, strict=True):
        assert g.shape == tuple(w.shape), name
        assert np.all(np.isfinite(g)), name
        np.testing.assert_allclose(g, w.numpy(), rtol=rtol, atol=atol, err_msg=name)


@pytest.mark.parametrize("length", reference(LSTM).lengths)
def test_matches_torch_lstm_outputs_and_every_gradient(module, length):
    arrays, outputs, upstream, want = _torch_case(length, seed=length)
    _compare(module, arrays, outputs, upstream, want, NAMES, rtol=1e-9, atol=1e-12)


def test_missing_initial_states_are_zero(module):
    arrays, outputs, upstream, want = _torch_case(7, seed=3, initial=False)
    names = [n for n in NAMES if n not in ("h_0", "c_0")]
    _compare(module, arrays, outputs, upstream, want, names, rtol=1e-9, atol=1e-12)


def test_saturated_gates_stay_finite_and_match_torch(module):
    """Inputs and weights ×100: every gate at 0 or 1, σ' and tanh' underflow to 0."""
    arrays, outputs, upstream, want = _torch_case(20, seed=5, scale=100.0)
    s = np.einsum("ntf,gf->ntg", arrays[0], arrays[3])
    assert np.mean(np.abs(s) > 30) > 0.5  # most gates saturated
    _compare(module, arrays, outputs, upstream, want, NAMES, rtol=1e-9, atol=1e-9)


def test_float32_follows_the_input_and_matches_torch_loosely(module):
    arrays, outputs, upstream, want = _torch_case(30, seed=7, dtype=torch.float32)
    assert arrays[0].dtype == np.float32
    got = module.forward(*arrays)
    assert all(g.dtype == np.float32 for g in got)
    grads = module.backward(*arrays, *(u.numpy() for u in upstream))
    assert all(g.dtype == np.float32 for g in grads)
    _compare(module, arrays, outputs, upstream, want, NAMES, rtol=1e-4, atol=1e-5)


def test_finite_differences_through_time(module):
    rng = np.random.default_rng(0)
    N, T, F, H = 2, 5, 3, 2
    shapes = ((N, T, F), (N, H), (N, H), (4 * H, F), (4 * H,), (4 * H, H), (4 * H,))
    arrays = [rng.normal(size=s) * 0.7 for s in shapes]
    d_h, d_h_last, d_c_last = (rng.normal(size=s) for s in ((N, T, H), (N, H), (N, H)))

    def energy(values):
        h, h_last, c_last = module.forward(*values)
        return np.sum(d_h * h) + np.sum(d_h_last * h_last) + np.sum(d_c_last * c_last)

    grads = module.backward(*arrays, d_h, d_h_last, d_c_last)
    for k, array in enumerate(arrays):
        numeric = np.empty_like(array)
        for index in np.ndindex(array.shape):
            step = 1e-6 * max(1.0, abs(array[index]))
            up, down = [a.copy() for a in arrays], [a.copy() for a in arrays]
            up[k][index] += step
            down[k][index] -= step
            numeric[index] = (energy(up) - energy(down)) / (2 * step)
        np.testing.assert_allclose(grads[k], numeric, rtol=1e-6, atol=1e-8, err_msg=NAMES[k])


def test_the_checks_see_the_last_cell_state(module):
    """A backward that ignores d_c_last fails the finite differences of c_0."""
    assert all(r.passed for r in declaration_check(LSTM, module))

    class NoLastCellGradient:
        forward = staticmethod(module.forward)

        @staticmethod
        def backward(*args):
            return module.backward(*args[:-1])

    failed = {r.quantity for r in finite_difference_check(LSTM, NoLastCellGradient)
              if not r.passed}
    assert "d_c_0" in failed


def test_derive_check_runs_every_output_through_finite_differences(folder, capsys):
    assert main(["check", "lstm", "-o", str(folder)]) == 0
    table = capsys.readouterr().out
    for quantity in ("forward = declaration", *(f"d_{n}" for n in NAMES)):
        assert f"lstm  {quantity} " in table, quantity
    assert "8 passed, 0 failed" in table


def test_the_module_runs_the_step_over_time_and_holds_no_derivative(folder):
    text = (folder / "layers" / "lstm.py").read_text(encoding="utf-8")
    assert "the declaration 'lstm' in derive/ops/layers.py" in text
    loops = text[text.index("def _sequence("):]
    kernels = text[:text.index("def _sequence(")]
    assert "sigmoid" not in loops and "tanh" not in loops and "np.dot" not in loops
    # The step reads the input's part W_ih x + b_ih + b_hh, computed for every t at once
    # before the loop, and backward reads the gates forward kept instead of recomputing.
    assert "def _backward(s_in, h_prev, c_prev, W_hh, c, s, i, f, g, o, d_h, d_c_out," in kernels
    assert "def _input_forward(x, W_ih, b_ih, b_hh, s_in):" in kernels
    assert "_input_forward(x.reshape((-1,) + x.shape[2:])" in loops
    assert "d_h_t[:] = d_h[:, t]\n        d_h_t += carried\n" in loops
    assert "d_h_t, carried_c, d_s_in_t" in loops
    assert "d_h_0 = carried" in loops and "d_c_0 = carried_c" in loops
    assert "forward(x, h_0, c_0, W_ih, b_ih, W_hh, b_hh) -> (h, h_last, c_last)" in text
