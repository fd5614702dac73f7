"""Every optimizer of the catalogue inside a generated network, step by step.

A small network is generated once per optimizer (non-default hyper-parameters from its
``[train]`` table) and trained for several steps; after each one its parameters must
equal, in float64 to 1e-9, those of the optimizer's ``torch.optim`` equivalent on the
same network built in PyTorch, and those of ``generated/optimizers/<name>.py`` applied by
hand to the network's own gradients (the only reference for an optimizer PyTorch lacks).
"""

import numpy as np
import pytest
import torch
from conftest import generated, network_modules, tanh_mlp_spec, tanh_mlp_torch_loss
from oracles import OptimizerOracle, reference

from derive import registry

OPTIMIZERS = [op.name for op in registry.all_ops("optimizer")]
STEPS = 5
RTOL, ATOL = 1e-9, 1e-12

#: Hyper-parameters away from the defaults, so a value the network ignores shows.
HYPER = {"lr": 0.03, "mu": 0.8, "alpha": 0.7, "rho": 0.9, "beta1": 0.85, "beta2": 0.99,
         "eps": 1e-7, "momentum_decay": 0.01, "weight_decay": 0.05}

#: regularise_biases = true: torch.optim applies AdamW's decay to every parameter it is
#: given, biases included, and so does the optimizer module (a network spares its biases
#: by default, which tests/test_regularisation.py checks with parameter groups).
def spec(name: str) -> str:
    lines = "\n".join(f"{k} = {v!r}" for k, v in hyper(name).items())
    return tanh_mlp_spec(f"net_{name}", f'optimizer = "{name}"\nregularise_biases = true\n{lines}')


def hyper(name):
    """The optimizer's hyper-parameters as the test sets them, by name."""
    return {p.name: HYPER.get(p.name, p.default) for p in registry.get(name, "optimizer").params}


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    """The generated network module of an optimizer, written and imported once."""
    return network_modules(tmp_path_factory.mktemp("network_optimizers"), spec)


@pytest.fixture
def float64_torch():
    """PyTorch keeps NAdam's μ product and step count in its default dtype: float64 here."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def batches(module, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(8,) + module.INPUT_SHAPE), rng.normal(size=(8, 3)))
            for _ in range(STEPS)]


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_network_state_starts_as_the_optimizer_declares(network, name):
    m = network(name)
    params = m.init_params(seed=1)
    state = m.init_state(params)
    reference = generated("optimizers", name).init_state(params)
    assert state[0].tolist() == [0] and len(state) == 1 + len(params) * len(m.SLOTS)
    slots = iter(state[1:])
    for expected in reference:
        for want in expected:
            got = next(slots)
            assert got.shape == want.shape and got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)
        assert len(expected) == len(m.SLOTS)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_network_steps_match_torch_optim(network, name, float64_torch):
    m = network(name)
    h = hyper(name)
    params = m.init_params(seed=2)
    state = m.init_state(params)
    tparams = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    oracle = reference(registry.get(name, "optimizer"))
    if isinstance(oracle, OptimizerOracle):
        cls, kwargs = oracle.make(h)
        opt = cls(tparams, **kwargs)
    else:  # no torch.optim equivalent: our own optimizer module on torch's gradients
        opt_module = generated("optimizers", name)
        shadow = [t.detach().numpy() for t in tparams]
        opt_state = opt_module.init_state(shadow)
    for k, (x, y) in enumerate(batches(m), start=1):
        loss = m.train_step(params, state, x, y, h["lr"])
        tloss = tanh_mlp_torch_loss(tparams, x, y)
        for t in tparams:
            t.grad = None
        tloss.backward()
        if isinstance(oracle, OptimizerOracle):
            opt.step()
        else:
            with torch.no_grad():
                opt_module.step(shadow, [t.grad.numpy() for t in tparams], opt_state, t=k, **h)
        assert loss == pytest.approx(tloss.item(), rel=RTOL), f"loss at step {k}"
        for p, t, pname in zip(params, tparams, m.PARAM_NAMES, strict=True):
            np.testing.assert_allclose(p, t.detach().numpy(), rtol=RTOL, atol=ATOL,
                                       err_msg=f"{name}: {pname} after step {k}")
    assert state[0][0] == STEPS


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_network_steps_match_the_optimizer_module(network, name):
    # The generated optimizer module applied by hand to the network's own gradients.
    m = network(name)
    h = hyper(name)
    params = m.init_params(seed=3)
    state = m.init_state(params)
    mine = [p.copy() for p in params]
    opt = generated("optimizers", name)
    opt_state = opt.init_state(mine)
    for k, (x, y) in enumerate(batches(m, seed=1), start=1):
        loss, grads = m.loss_and_grad(mine, x, y)
        opt.step(mine, grads, opt_state, t=k, **h)
        assert m.train_step(params, state, x, y, h["lr"]) == pytest.approx(loss, rel=RTOL)
        for p, q, pname in zip(params, mine, m.PARAM_NAMES, strict=True):
            np.testing.assert_allclose(p, q, rtol=RTOL, atol=ATOL,
                                       err_msg=f"{name}: {pname} after step {k}")
