"""The GRU, derived through time from its declaration (issue 15).

One declaration over the whole sequence, with one carried state h, read one step back by
the state's part v of the pre-activations and, directly, by the output itself:
h_t = (1 − z_t) ⊙ h̃_t + z_t ⊙ h_{t−1}. The recurrence pass cuts it into one step, an
ordinary layer whose previous-state input h_prev gets both terms; the step's gradients
come from the calculus, and the generated module runs it forwards and backwards over
time. Checked against torch.nn.GRU(batch_first=True) in float64 at 1e-9 for T = 1, 2, 50
(both outputs, the input, the initial state and all four parameters), loosely in float32,
against finite differences, and with saturated gates.
"""

import numpy as np
import pytest
import sympy as sp
import torch
from oracles import RecurrentCases, oracle, reference

from derive import pipeline, registry
from derive.calculus.derivation import gradient_array
from derive.calculus.recurrence import cut_step, derive_recurrence
from derive.checks import declaration_check, finite_difference_check, load_module
from derive.cli import main
from derive.ops.layers import GRU

NAMES = ("x", "h_0", "W_ih", "b_ih", "W_hh", "b_hh")
H = sp.Symbol("H", integer=True, positive=True)
P, Q = sp.symbols("p q", integer=True, nonnegative=True)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """What `derive kernels gru -o DIR` writes."""
    out = tmp_path_factory.mktemp("gru")
    pipeline.write_targets(pipeline.catalogue_targets(["gru"], out))
    return out


@pytest.fixture(scope="module")
def module(folder):
    return load_module(folder / "layers" / "gru.py")


def test_gru_is_in_the_catalogue_with_one_carried_state():
    op = registry.get("gru")
    assert op is GRU and op.kind == "layer" and registry.folder(op) == "layers"
    assert registry.declared_in(op) == "derive/ops/layers.py"
    assert isinstance(oracle(op), RecurrentCases)
    ((h, h0),) = op.recurrence.states
    assert (str(h), str(h0)) == ("h", "h_0")
    assert [str(a) for a in op.inputs] == ["x", "h_0"]


def test_the_gates_read_pytorchs_blocks_of_rows_in_its_order():
    """r, z and the candidate read rows [0, H), [H, 2H), [2H, 3H) of both parts."""
    s_step, v_step, *gates = GRU.steps
    assert [str(t.base) for t, _ in gates] == ["r", "z", "htilde"]
    parts = {s_step[0].base, v_step[0].base}
    for (target, definition), offset in zip(gates, (0, H, 2 * H), strict=True):
        read = [a for a in definition.atoms(sp.Indexed) if a.base in parts]
        assert {a.base for a in read} == parts, target
        assert {a.indices[2] - target.indices[2] for a in read} == {offset}, target
    assert [type(e).__name__ for _, e in gates] == ["sigmoid", "sigmoid", "tanh"]
    assert GRU.shape(s_step[0].base)[2] == GRU.shape(v_step[0].base)[2] == 3 * H


def test_the_reset_gate_scales_only_the_states_part_of_the_candidate():
    """PyTorch's n_t = tanh(W_in x_t + b_in + r_t ⊙ (W_hn h_{t−1} + b_hn))."""
    (s_el, _), (v_el, _), (r_el, _), _, (_, candidate) = GRU.steps
    n, t, j = r_el.indices
    s, v, r = s_el.base, v_el.base, r_el.base
    assert candidate == sp.tanh(s[n, t, 2 * H + j] + r[n, t, j] * v[n, t, 2 * H + j])


def test_the_step_reads_the_previous_state_twice():
    """Through the state's part v (a product with W_hh), and directly, through z."""
    step, previous, _ = cut_step(GRU)
    assert str(previous) == "h_prev"
    assert [str(a) for a in step.inputs] == ["x", "h_prev"]
    assert step.extra_outputs == ()
    assert str(step.expr) == "(1 - z[n, j])*htilde[n, j] + h_prev[n, j]*z[n, j]"


def test_the_update_gate_is_the_direct_path_of_the_gradient():
    """∂E/∂h_{t−1} = ∂E/∂h_t ⊙ z_t + Σ_j W_hh[j, k] ∂E/∂v_j: z_t is the term that needs no
    weight matrix and no derivative of an activation."""
    rd = derive_recurrence(GRU)
    back = rd.derivation.gradient(rd.previous).expr
    d_h, d_v = gradient_array(GRU.recurrence.state), gradient_array(GRU.steps[1][0].base)
    z = GRU.steps[3][0].base
    direct, through = sorted(sp.Add.make_args(back), key=lambda e: isinstance(e, sp.Sum))
    assert direct == d_h[P, Q] * z[P, Q]
    assert isinstance(through, sp.Sum) and through.has(d_v)
    assert str(through) == "Sum(W_hh[j, q]*d_v[p, j], (j, 0, 3*H - 1))"


def test_each_gate_gets_only_its_own_rows_of_the_pre_activation_gradients():
    """The reset gate reads s and v at rows j < H only: its terms are guarded there."""
    rd = derive_recurrence(GRU)
    for part in ("s", "v"):
        d = next(g for g in rd.derivation.intermediates if str(g.array) == part).expr
        guards = {str(cond) for piece in d.atoms(sp.Piecewise) for _, cond in piece.args}
        assert "q <= H - 1" in guards, part
        assert [a for a in sp.Add.make_args(d) if not isinstance(a, sp.Piecewise)] == [], part


def _torch_case(length, seed, batch=3, features=4, hidden=5, initial=True, scale=1.0,
                dtype=torch.float64):
    torch.manual_seed(seed)
    gru = oracle(GRU).module(features, hidden).to(dtype)
    if scale != 1.0:
        with torch.no_grad():
            for w in gru.parameters():
                w.mul_(scale)
    x = (scale * torch.randn(batch, length, features, dtype=dtype)).requires_grad_()
    h0 = torch.randn(1, batch, hidden, dtype=dtype, requires_grad=True) if initial else None
    out, h_n = gru(x, h0)
    d_out, d_h = torch.randn_like(out), torch.randn_like(h_n)
    ((out * d_out).sum() + (h_n * d_h).sum()).backward()
    weights = [getattr(gru, name) for name in oracle(GRU).weights]
    arrays = [x.detach().numpy(), h0.detach().numpy()[0] if initial else None]
    arrays += [w.detach().numpy() for w in weights]
    want = [x.grad] + ([h0.grad[0]] if initial else []) + [w.grad for w in weights]
    return arrays, (out, h_n[0]), (d_out, d_h[0]), want


def _compare(module, arrays, outputs, upstream, want, names, rtol, atol):
    got = module.forward(*arrays)
    assert len(got) == 2
    for name, g, w in zip(("h", "h_last"), got, outputs, strict=True):
        np.testing.assert_allclose(g, w.detach().numpy(), rtol=rtol, atol=atol, err_msg=name)
    grads = module.backward(*arrays, *(u.numpy() for u in upstream))
    grads = [g for g, a in zip(grads, arrays, strict=True) if a is not None]
    assert len(grads) == len(want)
    for name, g, w in zip(names, grads, want, strict=True):
        assert g.shape == tuple(w.shape), name
        assert np.all(np.isfinite(g)), name
        np.testing.assert_allclose(g, w.numpy(), rtol=rtol, atol=atol, err_msg=name)


@pytest.mark.parametrize("length", reference(GRU).lengths)
def test_matches_torch_gru_outputs_and_every_gradient(module, length):
    arrays, outputs, upstream, want = _torch_case(length, seed=length)
    _compare(module, arrays, outputs, upstream, want, NAMES, rtol=1e-9, atol=1e-12)


def test_a_missing_initial_state_is_zero(module):
    arrays, outputs, upstream, want = _torch_case(7, seed=3, initial=False)
    names = [n for n in NAMES if n != "h_0"]
    _compare(module, arrays, outputs, upstream, want, names, rtol=1e-9, atol=1e-12)


def test_saturated_gates_stay_finite_and_match_torch(module):
    """Inputs and weights ×100: every gate at 0 or 1, σ' and tanh' underflow to 0."""
    arrays, outputs, upstream, want = _torch_case(20, seed=5, scale=100.0)
    s = np.einsum("ntf,gf->ntg", arrays[0], arrays[2])
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
    N, T, F, H_ = 2, 5, 3, 2
    shapes = ((N, T, F), (N, H_), (3 * H_, F), (3 * H_,), (3 * H_, H_), (3 * H_,))
    arrays = [rng.normal(size=s) * 0.7 for s in shapes]
    d_h, d_h_last = rng.normal(size=(N, T, H_)), rng.normal(size=(N, H_))

    def energy(values):
        h, h_last = module.forward(*values)
        return np.sum(d_h * h) + np.sum(d_h_last * h_last)

    grads = module.backward(*arrays, d_h, d_h_last)
    for k, array in enumerate(arrays):
        numeric = np.empty_like(array)
        for index in np.ndindex(array.shape):
            step = 1e-6 * max(1.0, abs(array[index]))
            up, down = [a.copy() for a in arrays], [a.copy() for a in arrays]
            up[k][index] += step
            down[k][index] -= step
            numeric[index] = (energy(up) - energy(down)) / (2 * step)
        np.testing.assert_allclose(grads[k], numeric, rtol=1e-6, atol=1e-8, err_msg=NAMES[k])


def test_the_checks_see_the_last_state(module):
    """A backward that ignores d_h_last fails the finite differences of h_0."""
    assert all(r.passed for r in declaration_check(GRU, module))

    class NoLastStateGradient:
        forward = staticmethod(module.forward)

        @staticmethod
        def backward(*args):
            return module.backward(*args[:-1])

    failed = {r.quantity for r in finite_difference_check(GRU, NoLastStateGradient)
              if not r.passed}
    assert "d_h_0" in failed


def test_derive_check_runs_every_output_through_finite_differences(folder, capsys):
    assert main(["check", "gru", "-o", str(folder)]) == 0
    table = capsys.readouterr().out
    for quantity in ("forward = declaration", *(f"d_{n}" for n in NAMES)):
        assert f"gru  {quantity} " in table, quantity
    assert "7 passed, 0 failed" in table


def test_the_module_runs_the_step_over_time_and_holds_no_derivative(folder):
    text = (folder / "layers" / "gru.py").read_text(encoding="utf-8")
    assert "the declaration 'gru' in derive/ops/layers.py" in text
    loops = text[text.index("def _sequence("):]
    kernels = text[:text.index("def _sequence(")]
    assert "sigmoid" not in loops and "tanh" not in loops and "np.dot" not in loops
    assert "def _backward(s, h_prev, W_hh, b_hh, v, r, z, htilde, d_h," in kernels
    assert "d_h_t[:] = d_h[:, t]\n        d_h_t += carried\n" in loops
    assert "d_h_0 = carried" in loops
    assert "forward(x, h_0, W_ih, b_ih, W_hh, b_hh) -> (h, h_last)" in text
