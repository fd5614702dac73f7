"""Regularisation and gradient clipping in a generated network, against PyTorch.

A small network is generated from a spec whose ``[train]`` table sets penalties, a decay
or a clip rule, and trained for several steps; after each one its parameters must equal,
in float64 to 1e-9, those of the same network trained by PyTorch the way PyTorch does it:
``loss.backward()``, then ``torch.nn.utils.clip_grad_*_``, then an optimizer whose
``weight_decay`` adds λw to the gradient (SGD, Adam) or shrinks w itself (AdamW), with the
biases in a parameter group of their own without decay. L1 has no PyTorch option: the
torch loop adds λ·sign(w) to each weight's gradient itself.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
import torch
from conftest import network_modules, tanh_mlp_spec, tanh_mlp_torch_loss

from derive import registry
from derive.calculus.regularise import gradient_used, penalty_gradient, regularised
from derive.cli import main
from derive.ops.regularisers import CLIP_NORM, ELASTIC_NET, L1, L2, REGULARISERS
from derive.spec import g, w

STEPS = 5
RTOL, ATOL = 1e-9, 1e-12
LR = 0.05

def case_spec(name: str, train: str, lr: float = LR) -> str:
    return tanh_mlp_spec(f"net_{name}", f"lr = {lr}\n{train}")

#: name → ([train] lines, how torch trains the same network: see torch_run).
CASES = {
    "sgd_l2": ('optimizer = "gd"\nl2 = 0.1', dict(opt="sgd", wd=0.1)),
    "sgd_l2_biases": ('optimizer = "gd"\nl2 = 0.1\nregularise_biases = true',
                      dict(opt="sgd", wd=0.1, biases=True)),
    "adam_l2": ('optimizer = "adam"\nl2 = 0.1', dict(opt="adam", wd=0.1)),
    "adamw": ('optimizer = "adamw"\nweight_decay = 0.2', dict(opt="adamw", wd=0.2)),
    "adamw_biases": ('optimizer = "adamw"\nweight_decay = 0.2\nregularise_biases = true',
                     dict(opt="adamw", wd=0.2, biases=True)),
    "sgd_l1": ('optimizer = "gd"\nl1 = 0.05', dict(opt="sgd", l1=0.05)),
    "adam_l1": ('optimizer = "adam"\nl1 = 0.05', dict(opt="adam", l1=0.05)),
    "elastic_net": ('optimizer = "momentum"\nl1 = 0.05\nl2 = 0.1',
                    dict(opt="momentum", l1=0.05, wd=0.1)),
    "clip_norm": ('optimizer = "gd"\nclip_norm = 0.3', dict(opt="sgd", clip_norm=0.3)),
    "clip_value": ('optimizer = "adam"\nclip_value = 0.05', dict(opt="adam", clip_value=0.05)),
    "clip_norm_l2": ('optimizer = "adam"\nclip_norm = 0.3\nl2 = 0.1',
                     dict(opt="adam", clip_norm=0.3, wd=0.1)),
    "clip_value_l1_biases": (
        'optimizer = "gd"\nclip_value = 0.05\nl1 = 0.05\nregularise_biases = true',
        dict(opt="sgd", clip_value=0.05, l1=0.05, biases=True)),
}


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    """The generated network module of a case, written and imported once."""
    return network_modules(tmp_path_factory.mktemp("regularisation"),
                           lambda name: case_spec(name, CASES[name][0]))


def batches(seed=0):
    rng = np.random.default_rng(seed)
    # Targets far from the initial outputs, so the first gradients are large enough to clip.
    return [(rng.normal(size=(8, 5)), 3.0 * rng.normal(size=(8, 3))) for _ in range(STEPS)]


def torch_optimizer(tparams, biases, opt, wd=0.0, regularise_biases=False):
    """torch.optim with weight_decay on the weights, and on the biases only if asked."""
    decayed = [t for t, b in zip(tparams, biases, strict=True) if regularise_biases or not b]
    spared = [t for t, b in zip(tparams, biases, strict=True) if b and not regularise_biases]
    groups = [{"params": decayed, "weight_decay": wd}]
    if spared:
        groups.append({"params": spared, "weight_decay": 0.0})
    if opt == "sgd":
        return torch.optim.SGD(groups, lr=LR)
    if opt == "momentum":
        # derive's momentum is Polyak's v ← μv − ηg; with a constant η that is SGD's
        # momentum buffer b ← μb + g, w ← w − ηb.
        return torch.optim.SGD(groups, lr=LR, momentum=0.9)
    if opt == "adam":
        return torch.optim.Adam(groups, lr=LR)
    return torch.optim.AdamW(groups, lr=LR)


def torch_run(module, name, params):
    """The parameters after each step of the case's PyTorch training, and the losses."""
    how = CASES[name][1]
    biases = module.BIASES
    regularise_biases = how.get("biases", False)
    tparams = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    opt = torch_optimizer(tparams, biases, how["opt"], how.get("wd", 0.0), regularise_biases)
    trajectory, norms = [], []
    for x, y in batches():
        for t in tparams:
            t.grad = None
        loss = tanh_mlp_torch_loss(tparams, x, y)
        loss.backward()
        if "clip_norm" in how:
            norms.append(float(torch.nn.utils.clip_grad_norm_(tparams, how["clip_norm"])))
        if "clip_value" in how:
            norms.append(max(float(t.grad.abs().max()) for t in tparams))
            torch.nn.utils.clip_grad_value_(tparams, how["clip_value"])
        if "l1" in how:
            with torch.no_grad():
                for t, bias in zip(tparams, biases, strict=True):
                    if regularise_biases or not bias:
                        t.grad += how["l1"] * torch.sign(t)
        opt.step()
        trajectory.append(([t.detach().numpy().copy() for t in tparams], loss.item()))
    return trajectory, norms


@pytest.mark.parametrize("name", CASES)
def test_regularised_steps_match_torch(network, name):
    m = network(name)
    params = m.init_params(seed=2)
    # Biases start at 0, where L1's subgradient is 0 and decay does nothing: start them
    # elsewhere, so a penalty or decay applied to them (or wrongly not) shows.
    for p, bias in zip(params, m.BIASES, strict=True):
        if bias:
            p[:] = np.linspace(-0.5, 0.5, p.size)
    state = m.init_state(params)
    expected, norms = torch_run(m, name, params)
    for k, ((x, y), (want, tloss)) in enumerate(zip(batches(), expected, strict=True), 1):
        loss = m.train_step(params, state, x, y)
        # The reported loss is the data loss, before the step: no penalty term in it.
        assert loss == pytest.approx(tloss, rel=RTOL), f"{name}: loss at step {k}"
        for p, t, pname in zip(params, want, m.PARAM_NAMES, strict=True):
            np.testing.assert_allclose(p, t, rtol=RTOL, atol=ATOL,
                                       err_msg=f"{name}: {pname} after step {k}")
    if "clip_norm" in CASES[name][1]:
        assert max(norms) > CASES[name][1]["clip_norm"], "the norm never reached the limit"
    if "clip_value" in CASES[name][1]:
        assert max(norms) > CASES[name][1]["clip_value"], "no gradient was clipped"


def test_one_l2_step_is_the_gradient_step_plus_lambda_w(network):
    # w ← w − η(∂E/∂w + λw) from the module's own gradient, for the weights; the biases
    # take the plain step. The penalty moves the weights by a visible amount.
    m = network("sgd_l2")
    params = m.init_params(seed=3)
    x, y = batches()[0]
    _, grads = m.loss_and_grad(params, x, y)
    expected = [p - LR * (gr + (0.0 if bias else 0.1 * p))
                for p, gr, bias in zip(params, grads, m.BIASES, strict=True)]
    m.train_step(params, m.init_state(params), x, y)
    for p, want in zip(params, expected, strict=True):
        np.testing.assert_allclose(p, want, rtol=1e-12, atol=1e-15)
    assert np.abs(LR * 0.1 * params[0]).max() > 1e-4


def test_the_module_records_the_settings(network):
    m = network("clip_norm_l2")
    assert m.TRAIN["clip_norm"] == 0.3 and m.TRAIN["l2"] == 0.1
    assert m.OPTIMIZER_PARAMS == {p.name: p.default
                                  for p in registry.get("adam", "optimizer").params}


def test_biases_are_not_penalised_by_default(network):
    # A zero loss gradient (targets equal to the outputs) leaves only the penalty: the
    # weights shrink by ηλw, the biases stay.
    m = network("sgd_l2")
    params = m.init_params(seed=4)
    params[1][:] = 0.3
    before = [p.copy() for p in params]
    x = np.random.default_rng(0).normal(size=(4, 5))
    y = m.predict(params, x)
    m.train_step(params, m.init_state(params), x, y)
    np.testing.assert_allclose(params[0], before[0] * (1 - LR * 0.1), rtol=1e-12)
    np.testing.assert_array_equal(params[1], before[1])


# ---- the declarations -------------------------------------------------------------------


@pytest.mark.parametrize("reg", REGULARISERS, ids=lambda r: r.name)
def test_the_penalty_gradient_matches_finite_differences(reg):
    values = {p.symbol: 0.1 * (i + 1) for i, p in enumerate(reg.strengths)}
    penalty = sp.lambdify(w, reg.penalty.xreplace(values))
    grad = sp.lambdify(w, penalty_gradient(reg).xreplace(values))
    h = 1e-6
    for point in np.random.default_rng(0).uniform(-2, 2, 20):
        if abs(point) < 1e-3:  # the kink of |w|
            continue
        fd = (penalty(point + h) - penalty(point - h)) / (2 * h)
        assert grad(point) == pytest.approx(fd, rel=1e-7, abs=1e-10), (reg.name, point)


def test_the_gradients_are_the_conventions_the_docs_state():
    lam = L2.strengths[0].symbol
    assert penalty_gradient(L2) == lam * w  # the ½ convention: PyTorch's weight_decay
    assert penalty_gradient(L1).subs(w, 0) == 0  # sign(0) = 0
    assert penalty_gradient(ELASTIC_NET) == penalty_gradient(L1) + penalty_gradient(L2)


def test_a_clipped_penalised_optimizer_reads_the_new_gradient_first():
    op = regularised(registry.get("gd", "optimizer"), L2, CLIP_NORM)
    assert op.updates[0] == (g, gradient_used(L2, CLIP_NORM))
    assert [p.name for p in op.params] == ["lr", "l2", "clip_norm", "grad_norm"]
    assert regularised(registry.get("gd", "optimizer")) is registry.get("gd", "optimizer")


# ---- spec errors at the command line ------------------------------------------------------


@pytest.mark.parametrize(("train", "words"), [
    ('optimizer = "gd"\nl2 = -0.1', ["train.l2", "≥ 0"]),
    ('optimizer = "gd"\nl1 = "big"', ["train.l1", "≥ 0"]),
    ('optimizer = "gd"\nweight_decay = 0.1', ["train.weight_decay", "adamw", "l2"]),
    ('optimizer = "gd"\nclip_norm = 0', ["train.clip_norm", "> 0"]),
    ('optimizer = "gd"\nclip_value = -1.0', ["train.clip_value", "> 0"]),
    ('optimizer = "gd"\nregularise_biases = 1', ["train.regularise_biases", "true or false"]),
    ('optimizer = "gd"\nclip_nrom = 1.0', ["train.clip_nrom", "clip_norm"]),
])
def test_a_wrong_setting_exits_2_with_one_line(train, words, tmp_path, capsys):
    spec = tmp_path / "net.toml"
    spec.write_text(case_spec("bad", train))
    assert main(["kernels", str(spec), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("derive: error: ") and err.count("\n") == 1, err
    for word in words:
        assert word in err, f"{word!r} not in {err!r}"
    assert not (tmp_path / "out" / "networks").exists()
