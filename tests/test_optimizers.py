"""Every optimizer in the registry: its generated kernel against its declared equations,
against plain-NumPy transcriptions of the notes and papers, on hand-computed numbers,
and against torch.optim. A new optimizer is tested by being declared (and given a
transcription below)."""

import os
import subprocess
import sys

import numba
import numpy as np
import pytest
import sympy as sp
import torch
from conftest import REPO, generated
from oracles import oracle

from derive.calculus.verify import verify_declaration
from derive.checks import optimizer_check
from derive.errors import DeclarationError
from derive.ops.optimizers import alpha, delta_w, lr
from derive.registry import all_ops
from derive.spec import Optimizer, Param, Slot, g, w

OPS = all_ops("optimizer")
IDS = [op.name for op in OPS]
SHAPES = [(3, 4), (5,), (2, 3, 2, 2)]


def module(op):
    return generated("optimizers", op.name)


def hyper(op, **changes):
    """The declaration's defaults with a larger learning rate, so steps are visible."""
    return {p.name: p.default for p in op.params} | {"lr": 0.05} | changes


# --- the equations as the notes and papers write them, in plain NumPy ----------------
# Each takes the weights, the gradient, a dict of its own state, the step count t
# (from 1) and the hyper-parameters, and returns the new weights.


def ref_gd(w, g, st, t, h):
    return w - h["lr"] * g


def ref_momentum(w, g, st, t, h):
    # Polyak (1964), seed 004 eq. (6.13), in positions: x(n+1) = x(n) − ε∇f + β(x(n) − x(n−1)).
    prev = st.get("prev", w)
    st["prev"] = w
    return w - h["lr"] * g + h["mu"] * (w - prev)


def ref_momentum_rumelhart(w, g, st, t, h):
    # Seed 004, Algorithm 2: Δθ ← −εg + αΔθ; θ ← θ + Δθ.
    st["dw"] = -h["lr"] * g + h["alpha"] * st.get("dw", 0.0)
    return w + st["dw"]


def ref_nesterov(w, g, st, t, h):
    # torch.optim.SGD's documented algorithm with nesterov=True, dampening 0.
    st["b"] = h["mu"] * st["b"] + g if "b" in st else g
    return w - h["lr"] * (g + h["mu"] * st["b"])


def ref_adagrad(w, g, st, t, h):
    # Duchi, Hazan and Singer (2011): the sum of squared gradients scales each coordinate.
    st["G"] = st.get("G", 0.0) + g * g
    return w - h["lr"] * g / (np.sqrt(st["G"]) + h["eps"])


def ref_rmsprop(w, g, st, t, h):
    # Tieleman and Hinton (2012), lecture 6.5: a running mean of g² instead of the sum.
    st["ms"] = h["rho"] * st.get("ms", 0.0) + (1 - h["rho"]) * g * g
    return w - h["lr"] * g / (np.sqrt(st["ms"]) + h["eps"])


def ref_adam(w, g, st, t, h):
    # Kingma and Ba (2015), Algorithm 1.
    b1, b2 = h["beta1"], h["beta2"]
    st["m"] = b1 * st.get("m", 0.0) + (1 - b1) * g
    st["v"] = b2 * st.get("v", 0.0) + (1 - b2) * g * g
    m_hat = st["m"] / (1 - b1**t)
    v_hat = st["v"] / (1 - b2**t)
    return w - h["lr"] * m_hat / (np.sqrt(v_hat) + h["eps"])


def ref_adamw(w, g, st, t, h):
    # Loshchilov and Hutter (2019), Algorithm 2 with η_t = lr as torch.optim.AdamW: the
    # weight decays by lr·λ·w outside the adaptive step.
    w = w - h["lr"] * h["weight_decay"] * w
    return ref_adam(w, g, st, t, h)


def ref_nadam(w, g, st, t, h):
    # torch.optim.NAdam's documented algorithm; the products are recomputed from scratch.
    b1, b2, psi = h["beta1"], h["beta2"], h["momentum_decay"]

    def mu(i):
        return b1 * (1 - 0.5 * 0.96 ** (i * psi))

    st["m"] = b1 * st.get("m", 0.0) + (1 - b1) * g
    st["v"] = b2 * st.get("v", 0.0) + (1 - b2) * g * g
    prod_t = np.prod([mu(i) for i in range(1, t + 1)])
    prod_next = prod_t * mu(t + 1)
    m_hat = mu(t + 1) * st["m"] / (1 - prod_next) + (1 - mu(t)) * g / (1 - prod_t)
    v_hat = st["v"] / (1 - b2**t)
    return w - h["lr"] * m_hat / (np.sqrt(v_hat) + h["eps"])


REFERENCE = {name[4:]: f for name, f in dict(globals()).items() if name.startswith("ref_")}

def problem(seed=0, steps=5, shapes=SHAPES, dtype=np.float64):
    """Seeded weights and a fixed sequence of gradients for each of them."""
    rng = np.random.default_rng(seed)
    params = [rng.uniform(-1, 1, s).astype(dtype) for s in shapes]
    grads = [[rng.normal(size=s).astype(dtype) for s in shapes] for _ in range(steps)]
    return params, grads


def run(op, params, grads, **h):
    m = module(op)
    params = [p.copy() for p in params]
    state = m.init_state(params)
    for k, gs in enumerate(grads, start=1):
        m.step(params, gs, state, t=k, **h)
    return params, state


@pytest.fixture
def torch_float64():
    # torch keeps NAdam's mu_product in its default dtype (float32 unless changed).
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def transcription(op):
    """The op's NumPy transcription, or skip: the test below names the missing one."""
    if op.name not in REFERENCE:
        pytest.skip(f"no NumPy transcription for {op.name!r}")
    return REFERENCE[op.name]


def test_every_optimizer_has_a_transcription():
    missing = [name for name in IDS if name not in REFERENCE]
    assert not missing, (f"no NumPy transcription for {', '.join(map(repr, missing))}: add a "
                         "ref_<name> function to tests/test_optimizers.py")


@pytest.mark.parametrize("op", OPS, ids=IDS)
def test_kernel_follows_its_declared_equations(op):
    assert all(r.passed for r in optimizer_check(op, module(op), seed=1))


@pytest.mark.parametrize("op", OPS, ids=IDS)
def test_matches_the_papers_equations_in_numpy(op):
    reference = transcription(op)
    h = hyper(op)
    params, grads = problem(seed=2)
    got, _ = run(op, params, grads, **h)
    for i, w0 in enumerate(params):
        w, st = w0.copy(), {}
        for k, gs in enumerate(grads, start=1):
            w = reference(w, gs[i], st, k, h)
        np.testing.assert_allclose(got[i], w, rtol=1e-12, atol=1e-14)


#: Gradient descent on the notes' f(w) = w1² + w2² from (10, 10) with lr = 0.01
#: (f = 192.08 and w = [9.8 9.8] after the first step), worked by hand:
#:   gd:        w ← w − 0.01·2w = 0.98 w.
#:   momentum:  v₁ = −0.2, w₁ = 9.8; v₂ = 0.9(−0.2) − 0.196 = −0.376, w₂ = 9.424;
#:              v₃ = 0.9(−0.376) − 0.18848 = −0.52688, w₃ = 8.89712.
#:   nesterov:  b₁ = 20, w₁ = 10 − 0.01(20 + 18) = 9.62; b₂ = 18 + 19.24 = 37.24,
#:              w₂ = 9.62 − 0.01(19.24 + 33.516) = 9.09244.
HAND = {
    "gd": [9.8, 9.604, 9.41192],
    "momentum": [9.8, 9.424, 8.89712],
    "momentum_rumelhart": [9.8, 9.424, 8.89712],
    "nesterov": [9.62, 9.09244],
}


@pytest.mark.parametrize("name", sorted(HAND))
def test_hand_computed_steps_on_the_notes_quadratic(name):
    m = generated("optimizers", name)
    w_ = np.array([10.0, 10.0])
    state = m.init_state([w_])
    for k, want in enumerate(HAND[name], start=1):
        m.step([w_], [2 * w_], state, lr=0.01, t=k)
        np.testing.assert_allclose(w_, [want, want], rtol=1e-14)
    if name == "gd":
        assert np.sum(np.array([9.8, 9.8]) ** 2) == pytest.approx(192.08)


def _nadam_first_factor(b1=0.9, psi=0.004):
    # (1 − μ₁)/(1 − μ₁)·g + μ₂/(1 − μ₁μ₂)·(1 − β₁)g: the gradient term plus the momentum's.
    mu1, mu2 = (b1 * (1 - 0.5 * 0.96 ** (k * psi)) for k in (1, 2))
    return 1 + mu2 * (1 - b1) / (1 - mu1 * mu2)


#: The first step from a fresh state, by hand: the adaptive methods divide g by |g|.
FIRST_STEP = {
    "adagrad": lambda g_, e: -0.01 * g_ / (np.abs(g_) + e),  # s = g²
    "rmsprop": lambda g_, e: -0.01 * g_ / (0.1 * np.abs(g_) + e),  # s = (1 − 0.99) g²
    "adam": lambda g_, e: -0.01 * g_ / (np.abs(g_) + e),  # m̂ = g, ŝ = g²
    "nadam": lambda g_, e: -0.01 * _nadam_first_factor() * g_ / (np.abs(g_) + e),
}


@pytest.mark.parametrize("name", sorted(FIRST_STEP))
def test_first_adaptive_step_is_normalised(name):
    """About lr (times a constant) per coordinate, whatever the gradient's scale."""
    m = generated("optimizers", name)
    g_ = np.array([1e-3, -2.0, 50.0])
    w_ = np.zeros(3)
    m.step([w_], [g_], m.init_state([w_]), lr=0.01, t=1)
    np.testing.assert_allclose(w_, FIRST_STEP[name](g_, m.PARAMS["eps"]), rtol=1e-13)


@pytest.mark.parametrize("op", OPS, ids=IDS)
def test_matches_torch_optim(op, torch_float64):
    reference = oracle(op)
    h = hyper(op)
    shapes = SHAPES + [(600, 450)]  # 270 000 elements: the parallel kernel
    params, grads = problem(seed=3, steps=5, shapes=shapes)
    cls, kwargs = reference.make(h)
    tensors = [torch.tensor(p, requires_grad=True) for p in params]
    opt = cls(tensors, **kwargs)
    mine = [p.copy() for p in params]
    m = module(op)
    assert mine[-1].size >= m.PARALLEL_MIN_SIZE
    state = m.init_state(mine)
    for k, gs in enumerate(grads, start=1):
        for tensor, g_ in zip(tensors, gs, strict=True):
            tensor.grad = torch.tensor(g_)
        opt.step()
        m.step(mine, gs, state, t=k, **h)
        for ours, theirs in zip(mine, tensors, strict=True):
            np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-12, atol=1e-15)
    for slot, (key, factor) in reference.state.items():
        index = module(op).SLOTS.index(slot)
        for ours, tensor in zip(state, tensors, strict=True):
            theirs = opt.state[tensor][key].numpy()
            np.testing.assert_allclose(factor * ours[index], theirs, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("op", OPS, ids=IDS)
def test_float32_agrees_with_float64(op):
    h = hyper(op)
    params, grads = problem(seed=4, dtype=np.float32)
    got32, state32 = run(op, params, grads, **h)
    wide = [[g_.astype(np.float64) for g_ in gs] for gs in grads]
    got64, _ = run(op, [p.astype(np.float64) for p in params], wide, **h)
    for a, b in zip(got32, got64, strict=True):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-6)
    for slots in state32:
        for name, a in zip(module(op).SLOTS, slots, strict=True):
            assert a.dtype == (np.float64 if name == "mu_product" else np.float32)


@pytest.mark.parametrize("op", OPS, ids=IDS)
def test_params_and_state_are_updated_in_place(op):
    m = module(op)
    params, grads = problem(seed=5, steps=1)
    before = [p.copy() for p in params]
    state = m.init_state(params)
    arrays = [list(slots) for slots in state]
    originals = [[a.copy() for a in slots] for slots in state]
    ids = [id(p) for p in params]
    m.step(params, grads[0], state, t=1)
    assert [id(p) for p in params] == ids
    for p, b in zip(params, before, strict=True):
        assert not np.array_equal(p, b)
    for slots, kept, old in zip(state, arrays, originals, strict=True):
        for a, same, o in zip(slots, kept, old, strict=True):
            assert a is same and not np.array_equal(a, o)


@pytest.mark.parametrize("op", OPS, ids=IDS)
def test_init_state_shapes_dtypes_and_dicts(op):
    m = module(op)
    params = {"W": np.ones((3, 2), np.float32), "b": np.ones(3, np.float32)}
    state = m.init_state(params)
    assert list(state) == ["W", "b"]
    for key, slots in state.items():
        assert len(slots) == len(op.state) == len(m.SLOTS)
        for slot, a in zip(op.state, slots, strict=True):
            if slot.per_step:
                assert a.shape == (1,) and a.dtype == np.float64
            else:
                assert a.shape == params[key].shape and a.dtype == np.float32
            assert np.all(a == slot.init)
    grads = {k: np.full_like(v, 0.5) for k, v in params.items()}
    m.step(params, grads, state, t=1)
    assert np.all(params["W"] < 1) and np.all(params["b"] < 1)


@numba.njit
def _train_step(update, W, dW, args):
    # What a generated network's jitted train_step does for each parameter.
    update(W.reshape(-1), dW.reshape(-1), *args)


@pytest.mark.parametrize("op", OPS, ids=IDS)
def test_update_is_callable_from_jitted_code(op):
    m = module(op)
    params, grads = problem(seed=6, steps=2, shapes=[(4, 3)])
    W = params[0].copy()
    flat = tuple(a.reshape(-1) for a in m.init_state([W])[0])
    for k, gs in enumerate(grads, start=1):
        args = (*flat, *m.PARAMS.values()) + ((k,) if m.USES_STEP else ())
        _train_step(m.update, W, gs[0], args)
    want, _ = run(op, params, grads)
    np.testing.assert_array_equal(W, want[0])


def test_polyak_and_rumelhart_are_the_same_arithmetic():
    """Same recurrence, different names: bit-identical trajectories for μ = α."""
    params, grads = problem(seed=7, steps=6)
    polyak, _ = run(OPS[IDS.index("momentum")], params, grads, lr=0.05, mu=0.8)
    rumelhart, _ = run(OPS[IDS.index("momentum_rumelhart")], params, grads, lr=0.05, alpha=0.8)
    for a, b in zip(polyak, rumelhart, strict=True):
        np.testing.assert_array_equal(a, b)


def test_momentum_under_a_schedule_differs_from_torch_sgd():
    """Polyak's v carries the lr it was made with; torch's buffer is rescaled by the new lr."""
    m = generated("optimizers", "momentum")
    params, grads = problem(seed=8, steps=4, shapes=[(6,)])
    rates = [0.1, 0.05, 0.025, 0.0125]
    ours = [params[0].copy()]
    state = m.init_state(ours)
    hand, v = params[0].copy(), 0.0
    tensor = torch.tensor(params[0], requires_grad=True)
    opt = torch.optim.SGD([tensor], lr=rates[0], momentum=0.9)
    for rate, gs in zip(rates, grads, strict=True):
        m.step(ours, gs, state, lr=rate)
        v = 0.9 * v - rate * gs[0]
        hand = hand + v
        opt.param_groups[0]["lr"] = rate
        tensor.grad = torch.tensor(gs[0])
        opt.step()
    np.testing.assert_allclose(ours[0], hand, rtol=1e-14)
    assert not np.allclose(ours[0], tensor.detach().numpy(), rtol=1e-6)


def test_nesterov_iterates_are_sutskevers_look_ahead_points():
    """PyTorch's form is Sutskever et al.'s v ← μv − η∇f(w + μv), w ← w + v in the
    variable w + μv: on a quadratic the two agree step for step."""
    m = generated("optimizers", "nesterov")
    A = np.array([3.0, 0.5, 1.5])  # f(w) = ½ Σ A w²,  ∇f = A w

    def grad(x):
        return A * x

    lr_, mu_ = 0.1, 0.9
    theta, v = np.array([1.0, -2.0, 0.5]), np.zeros(3)
    ours = [theta.copy()]
    state = m.init_state(ours)
    for _ in range(8):
        v = mu_ * v - lr_ * grad(theta + mu_ * v)
        theta = theta + v
        m.step(ours, [grad(ours[0])], state, lr=lr_, mu=mu_)
        np.testing.assert_allclose(ours[0], theta + mu_ * v, rtol=1e-12, atol=1e-15)


def test_step_count_is_required_where_it_is_used():
    adam = generated("optimizers", "adam")
    w_ = [np.zeros(2)]
    with pytest.raises(ValueError, match="step count"):
        adam.step(w_, [np.ones(2)], adam.init_state(w_))
    gd = generated("optimizers", "gd")
    gd.step(w_, [np.ones(2)], gd.init_state(w_))  # t is ignored where unused
    assert np.all(w_[0] < 0)


@pytest.mark.parametrize("bad", [
    lambda w_, s: ([w_], [np.ones(3, np.float32)], s),  # dtype differs
    lambda w_, s: ([w_], [np.ones(4)], s),  # shape differs
    lambda w_, s: ([w_], [np.ones(3)], [[]]),  # state from elsewhere
    lambda w_, s: ([w_, w_], [np.ones(3)], s),  # counts differ
    lambda w_, s: ([w_[::2]], [np.ones(2)], s),  # not contiguous: cannot update in place
])
def test_bad_arguments_are_refused_before_anything_changes(bad):
    adam = generated("optimizers", "adam")
    w_ = np.zeros(3)
    state = adam.init_state([w_])
    with pytest.raises((ValueError, TypeError)):
        adam.step(*bad(w_, state), t=1)
    assert np.all(w_ == 0) and all(np.all(a == 0) for a in state[0])


def test_a_single_array_must_be_wrapped():
    gd = generated("optimizers", "gd")
    with pytest.raises(TypeError, match="wrap one array"):
        gd.init_state(np.zeros(3))


def _declaration(**changes):
    fields = dict(
        name="test_rumelhart", title="t", latex="t",
        params=(Param(lr, 0.01), Param(alpha, 0.9)),
        state=(Slot(delta_w),),
        updates=((delta_w, -lr * g + alpha * delta_w), (w, w + delta_w)),
    )
    return Optimizer(**(fields | changes))


def test_verification_accepts_the_algorithm_and_refuses_the_sign_slip():
    verify_declaration(_declaration())
    # Seed 004's eq. (6.14) as printed, Δw(t) = ε∇f + αΔw(t−1), goes uphill.
    slip = _declaration(updates=((delta_w, lr * g + alpha * delta_w), (w, w + delta_w)))
    with pytest.raises(DeclarationError, match="downhill"):
        verify_declaration(slip)


def test_a_decoupled_decay_is_declared_and_checked():
    decay = Param(sp.Symbol("weight_decay", nonnegative=True), 0.1)
    lam = decay.symbol
    fields = dict(params=(Param(lr, 0.01), Param(alpha, 0.9), decay),
                  updates=((delta_w, -lr * g + alpha * delta_w),
                           (w, w - lr * lam * w + delta_w)))
    verify_declaration(_declaration(**fields, decay=-lr * lam * w))
    # Undeclared, the hint says what to declare, not to check the signs.
    with pytest.raises(DeclarationError, match=r"decay=") as undeclared:
        verify_declaration(_declaration(**fields))
    assert "signs" not in str(undeclared.value)
    # A declared decay must be the update's: a constant is not a decay proportional to w.
    with pytest.raises(DeclarationError, match="declared decay"):
        verify_declaration(_declaration(**fields, decay=-lr * lam * sp.Rational(1, 2)))
    with pytest.raises(DeclarationError, match="only on w and the parameters"):
        verify_declaration(_declaration(**fields, decay=-lr * lam * w * g))


def test_a_failed_catalogue_import_raises_its_own_error_again(tmp_path):
    """Not "'x' is declared twice": the declarations before the failure are the same
    declarations when the module is imported again."""
    (tmp_path / "probe_catalogue.py").write_text(
        "from derive.registry import register\n"
        "from derive.spec import Optimizer, Param, g, w\n"
        "from derive.ops.optimizers import lr\n"
        "register(Optimizer(name='probe_gd', title='t', latex='t', params=(Param(lr, 0.1),),\n"
        "                   updates=((w, w - lr * g),)))\n"
        "register(Optimizer(name='probe_uphill', title='t', latex='t',\n"
        "                   params=(Param(lr, 0.1),), updates=((w, w + lr * g),)))\n")
    script = (
        "import sys\n"
        "from derive.errors import DeclarationError\n"
        "for attempt in range(2):\n"
        "    try:\n"
        "        import probe_catalogue\n"
        "    except DeclarationError as error:\n"
        "        print(type(error).__name__, 'downhill' in str(error))\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       cwd=tmp_path, timeout=120,
                       env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["DeclarationError True"] * 2


@pytest.mark.parametrize("changes, message", [
    ({"updates": ((delta_w, -lr * g + alpha * delta_w),)}, "last update"),
    ({"params": (Param(lr, 0.01),)}, "alpha"),
    ({"state": (Slot(delta_w), Slot(w.func("unused")))}, "no update assigns"),
    ({"params": (Param(alpha, 0.9), Param(lr, 0.01))}, "learning rate"),
    ({"updates": ((delta_w, -lr * g), (delta_w, delta_w), (w, w + delta_w))}, "more than once"),
])
def test_verification_names_what_is_wrong(changes, message):
    with pytest.raises(DeclarationError, match=message):
        verify_declaration(_declaration(**changes))


def test_generated_optimizers_are_current():
    r = subprocess.run([sys.executable, "cli.py", "kernels", *IDS, "--check"],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
