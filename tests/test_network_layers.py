"""Every catalogue layer and activation inside a network, against PyTorch in float64.

Dropout after any layer, PReLU with its learnable α, RReLU and noisy ReLU, batch
normalisation with running statistics: each network here is generated from a spec,
and its loss and every parameter gradient are compared with the same network written
in PyTorch, in evaluation mode and in training mode. The random draws of training mode
are pure functions of (seed, position), so the PyTorch side is given the very numbers
the kernels drew.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import table_network_builder, table_spec_text

from derive.cli import main
from derive.codegen.network import stream

TOL = 1e-9


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """Write, generate and import a network module once per spec."""
    return table_network_builder(tmp_path_factory.mktemp("network_layers"))


def draws(m, seed, layer, part, shape):
    """uniform01 as the kernels drew it for layer ``layer`` (part 0: the layer, 1: its
    activation), one per element of a (N, ...) array in C order."""
    s = eval(stream(layer, part), {"seed": seed})  # the stream's formula, as generated
    return np.array([m.uniform01(s, i) for i in range(int(np.prod(shape)))]).reshape(shape)


def close(a, b):
    np.testing.assert_allclose(np.asarray(a), b.detach().numpy(), rtol=TOL, atol=TOL)


def check_grads(grads, tparams, names):
    for g, t, name in zip(grads, tparams, names, strict=True):
        assert t.grad is not None, name
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=TOL, atol=TOL, err_msg=name)


# ---- dropout after any layer ------------------------------------------------------------

DROP = [{"type": "conv2d", "filters": 2, "kernel_size": 3, "padding": 1, "activation": "tanh"},
        {"type": "dropout", "p": 0.3},
        {"type": "flatten"},
        {"type": "dense", "units": 3, "activation": "sigmoid"},
        {"type": "dropout", "p": 0.2}]


def test_dropout_after_a_convolution_matches_pytorch(build):
    m = build("drop_conv", [1, 5, 5], DROP)
    assert m.OUTPUT_SHAPE == (3,)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4, 1, 5, 5)), rng.uniform(size=(4, 3))
    params = m.init_params(seed=1)
    for training, seed in ((False, 0), (True, 7)):
        tp = [torch.tensor(p, requires_grad=True) for p in params]
        h = torch.tanh(F.conv2d(torch.tensor(x), tp[0], tp[1], padding=1))
        if training:  # the kernels' keep-masks, scaled by 1/(1 − p)
            h = h * torch.tensor((draws(m, seed, 1, 0, (4, 50)) >= 0.3) / 0.7).reshape(h.shape)
        h = torch.sigmoid(F.linear(torch.flatten(h, 1), tp[2], tp[3]))
        if training:
            h = h * torch.tensor((draws(m, seed, 4, 0, (4, 3)) >= 0.2) / 0.8)
        tloss = F.mse_loss(h, torch.tensor(y))
        tloss.backward()
        loss, grads = m.loss_and_grad(params, x, y, training=training, seed=seed)
        assert loss == pytest.approx(tloss.item(), rel=TOL, abs=TOL)
        check_grads(grads, tp, m.PARAM_NAMES)
    # Evaluation is the identity: predict equals the network without dropout.
    tp = [torch.tensor(p) for p in params]
    h = torch.tanh(F.conv2d(torch.tensor(x), tp[0], tp[1], padding=1))
    close(m.predict(params, x), torch.sigmoid(F.linear(torch.flatten(h, 1), tp[2], tp[3])))


def test_dropout_draws_differ_between_layers_and_steps(build):
    m = build("drop_conv", [1, 5, 5], DROP)
    a, b = draws(m, 3, 1, 0, (50,)), draws(m, 3, 4, 0, (50,))
    assert not np.allclose(a, b)
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(64, 1, 5, 5)), rng.uniform(size=(64, 3))
    params = m.init_params(seed=1)
    one = m.loss_and_grad(params, x, y, training=True, seed=1)[0]
    two = m.loss_and_grad(params, x, y, training=True, seed=2)[0]
    assert one != two


# ---- PReLU with its learnable α -----------------------------------------------------------

PRELU = [{"type": "conv2d", "filters": 3, "kernel_size": 3, "padding": 1,
          "activation": "prelu", "alpha_per_channel": True},
         {"type": "flatten"},
         {"type": "dense", "units": 4, "activation": "prelu"},
         {"type": "dense", "units": 3, "activation": "prelu", "alpha_per_channel": True}]


def prelu_torch(tp, x):
    h = F.prelu(F.conv2d(x, tp[0], tp[1], padding=1), tp[2])
    h = F.prelu(F.linear(torch.flatten(h, 1), tp[3], tp[4]), tp[5])
    return F.prelu(F.linear(h, tp[6], tp[7]), tp[8])


def test_prelu_learns_alpha_as_pytorch_does(build):
    m = build("prelu_net", [2, 5, 5], PRELU, train='optimizer = "momentum"\nlr = 0.1\n')
    assert m.PARAM_NAMES[2] == "conv2d0.alpha" and m.PARAM_SHAPES[2] == (3,)
    assert m.PARAM_SHAPES[5] == (1,) and m.PARAM_SHAPES[8] == (3,)
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(6, 2, 5, 5)), rng.normal(size=(6, 3))
    params = m.init_params(seed=4)
    assert all(np.all(params[k] == 0.25) for k in (2, 5, 8))  # torch.nn.PReLU's init
    params[2][:] = [0.1, -0.2, 0.3]  # distinct α per channel, so a mix-up shows
    tp = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    tloss = F.mse_loss(prelu_torch(tp, torch.tensor(x)), torch.tensor(y))
    tloss.backward()
    loss, grads = m.loss_and_grad(params, x, y)
    assert loss == pytest.approx(tloss.item(), rel=TOL)
    check_grads(grads, tp, m.PARAM_NAMES)
    # α is updated by the optimizer like every parameter: three momentum steps.
    opt = torch.optim.SGD(tp, lr=0.1, momentum=m.OPTIMIZER_PARAMS["mu"])
    state = m.init_state(params)
    for _ in range(3):
        opt.zero_grad()
        F.mse_loss(prelu_torch(tp, torch.tensor(x)), torch.tensor(y)).backward()
        opt.step()
        m.train_step(params, state, x, y, 0.1)
    for p, t, name in zip(params, tp, m.PARAM_NAMES, strict=True):
        np.testing.assert_allclose(p, t.detach().numpy(), rtol=TOL, atol=TOL, err_msg=name)
    assert not np.allclose(params[5], 0.25)
    close(m.predict(params, x), prelu_torch(tp, torch.tensor(x)))


# ---- RReLU and noisy ReLU: random in training, their mean in evaluation --------------------

RANDOM = [{"type": "dense", "units": 6, "activation": "rrelu"},
          {"type": "dense", "units": 4, "activation": "noisy_relu"},
          {"type": "dense", "units": 2}]


def random_torch(tp, x, slopes=None, noise=None):
    """RReLU then noisy ReLU; in training with the given slopes and normal draws."""
    s = F.linear(x, tp[0], tp[1])
    if slopes is None:
        h = F.rrelu(s, 1 / 8, 1 / 3, training=False)  # the mean slope, (l + u)/2
    else:
        h = torch.where(s > 0, s, torch.tensor(slopes) * s)
    s = F.linear(h, tp[2], tp[3])
    h = F.relu(s) if noise is None else torch.where(s > 0, s + torch.tensor(noise), 0 * s)
    return F.linear(h, tp[4], tp[5])


def test_rrelu_and_noisy_relu_match_pytorch_in_both_modes(build):
    m = build("random_net", [5], RANDOM)
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(7, 5)), rng.normal(size=(7, 2))
    params = m.init_params(seed=5)
    for training, seed in ((False, 0), (True, 11)):
        slopes = noise = None
        if training:  # the very draws of the kernels: r ~ U[l, u], ε ~ N(0, 1) (σ = 1)
            slopes = 1 / 8 + (1 / 3 - 1 / 8) * draws(m, seed, 0, 1, (7, 6))
            s = eval(stream(1, 1), {"seed": seed})
            noise = np.array([m.normal01(s, i) for i in range(28)]).reshape(7, 4)
        tp = [torch.tensor(p, requires_grad=True) for p in params]
        tloss = F.mse_loss(random_torch(tp, torch.tensor(x), slopes, noise), torch.tensor(y))
        tloss.backward()
        loss, grads = m.loss_and_grad(params, x, y, training=training, seed=seed)
        assert loss == pytest.approx(tloss.item(), rel=TOL)
        check_grads(grads, tp, m.PARAM_NAMES)
    close(m.predict(params, x), random_torch([torch.tensor(p) for p in params], torch.tensor(x)))


def test_random_activations_draw_what_they_declare(build):
    """Over many elements the drawn slopes are uniform on [1/8, 1/3] and the noise standard
    normal; the gradient of a training-mode loss is its finite difference, noise fixed."""
    m = build("random_net", [5], RANDOM)
    slopes = 1 / 8 + (1 / 3 - 1 / 8) * draws(m, 4, 0, 1, (20000,))
    assert slopes.min() >= 1 / 8 and slopes.max() <= 1 / 3
    assert slopes.mean() == pytest.approx((1 / 8 + 1 / 3) / 2, abs=3e-3)
    noise = np.array([m.normal01(eval(stream(1, 1), {"seed": 4}), i) for i in range(20000)])
    assert abs(noise.mean()) < 0.03 and noise.std() == pytest.approx(1, abs=0.03)
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(5, 5)), rng.normal(size=(5, 2))
    params = m.init_params(seed=2)
    _, grads = m.loss_and_grad(params, x, y, training=True, seed=9)
    h = 1e-6
    for k in range(len(params)):
        for index in list(np.ndindex(params[k].shape))[:4]:
            plus = [p.copy() for p in params]
            minus = [p.copy() for p in params]
            plus[k][index] += h
            minus[k][index] -= h
            fd = (m.loss_and_grad(plus, x, y, training=True, seed=9)[0]
                  - m.loss_and_grad(minus, x, y, training=True, seed=9)[0]) / (2 * h)
            assert grads[k][index] == pytest.approx(fd, rel=1e-5, abs=1e-8)


# ---- batch normalisation: batch statistics in training, running ones in evaluation -------

BN1D = [{"type": "dense", "units": 4},
        {"type": "batch_norm", "activation": "relu"},
        {"type": "dense", "units": 2}]
BN2D = [{"type": "conv2d", "filters": 3, "kernel_size": 3, "padding": 1},
        {"type": "batch_norm", "momentum": 0.2, "activation": "tanh"},
        {"type": "flatten"},
        {"type": "dense", "units": 2}]


def bn1d_torch(tp, x, training):
    h = F.linear(x, tp[0], tp[1])
    h = F.relu(F.batch_norm(h, tp[4], tp[5], tp[2], tp[3], training, 0.1, 1e-5))
    return F.linear(h, tp[6], tp[7])


def bn2d_torch(tp, x, training):
    h = F.conv2d(x, tp[0], tp[1], padding=1)
    h = torch.tanh(F.batch_norm(h, tp[4], tp[5], tp[2], tp[3], training, 0.2, 1e-5))
    return F.linear(torch.flatten(h, 1), tp[6], tp[7])


@pytest.mark.parametrize("name, shape, layers, forward", [
    ("bn1d", [5], BN1D, bn1d_torch), ("bn2d", [2, 4, 4], BN2D, bn2d_torch)])
def test_batch_norm_matches_pytorch_in_training_and_evaluation(build, name, shape, layers,
                                                                forward):
    m = build(name, shape, layers, train='optimizer = "momentum"\nlr = 0.1\n')
    assert m.PARAM_NAMES[2:6] == ("batch_norm1.gamma", "batch_norm1.beta",
                                  "batch_norm1.running_mean", "batch_norm1.running_var")
    assert m.TRAINABLE == (True,) * 4 + (False,) * 2 + (True,) * 2
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(6, *shape)) * 3 + 1, rng.normal(size=(6, 2))
    params = m.init_params(seed=6)
    assert np.all(params[2] == 1) and np.all(params[3] == 0)  # γ, β as torch starts them
    assert np.all(params[4] == 0) and np.all(params[5] == 1)
    params[2] += rng.normal(size=params[2].shape) * 0.1  # γ, β away from 1, 0
    params[3] += rng.normal(size=params[3].shape) * 0.1
    buffers = [torch.tensor(p.copy()) for p in params[4:6]]

    def torch_params(p):
        return [torch.tensor(a.copy(), requires_grad=True) for a in p[:4]] + buffers + [
            torch.tensor(a.copy(), requires_grad=True) for a in p[6:]]

    # Evaluation: the running statistics, nothing moves.
    tp = torch_params(params)
    tloss = F.mse_loss(forward(tp, torch.tensor(x), False), torch.tensor(y))
    tloss.backward()
    loss, grads = m.loss_and_grad(params, x, y)
    assert loss == pytest.approx(tloss.item(), rel=TOL)
    keep = [0, 1, 2, 3, 6, 7]
    check_grads([grads[k] for k in keep], [tp[k] for k in keep],
                [m.PARAM_NAMES[k] for k in keep])
    assert np.all(grads[4] == 0) and np.all(grads[5] == 0)
    # Training: the batch's statistics, and the running ones move (momentum, unbiased).
    tp = torch_params(params)
    tloss = F.mse_loss(forward(tp, torch.tensor(x), True), torch.tensor(y))
    tloss.backward()
    loss, grads = m.loss_and_grad(params, x, y, training=True)
    assert loss == pytest.approx(tloss.item(), rel=TOL)
    check_grads([grads[k] for k in keep], [tp[k] for k in keep],
                [m.PARAM_NAMES[k] for k in keep])
    close(params[4], buffers[0])
    close(params[5], buffers[1])
    # Several momentum steps: every parameter and both running statistics as PyTorch's.
    tp = torch_params(params)
    learnt = [tp[k] for k in keep]
    opt = torch.optim.SGD(learnt, lr=0.1, momentum=m.OPTIMIZER_PARAMS["mu"])
    state = m.init_state(params)
    for step in range(4):
        xb = x + step
        opt.zero_grad()
        F.mse_loss(forward(tp, torch.tensor(xb), True), torch.tensor(y)).backward()
        opt.step()
        m.train_step(params, state, xb, y, 0.1)
    for p, t, label in zip(params, tp, m.PARAM_NAMES, strict=True):
        np.testing.assert_allclose(p, t.detach().numpy(), rtol=TOL, atol=TOL, err_msg=label)
    assert not np.allclose(params[5], 1)
    close(m.predict(params, x), forward([t.detach() for t in tp], torch.tensor(x), False))


# ---- the spec keys, and a whole run ------------------------------------------------------


@pytest.mark.parametrize("layer, words", [
    ('type = "dense"\nunits = 3\nactivation = "relu"\nalpha_per_channel = true',
     ["layers[0].alpha_per_channel", "unknown key"]),
    ('type = "dense"\nunits = 3\nactivation = "prelu"\nalpha_per_channel = 1',
     ["layers[0].alpha_per_channel", "true or false"]),
    ('type = "batch_norm"\nmomentum = 1.5', ["layers[0].momentum", "[0, 1)"]),
    ('type = "batch_norm_inference"', ["layers[0].type", "not supported"]),
])
def test_layer_keys_are_checked(layer, words):
    from derive.network import SpecError, parse_spec
    with pytest.raises(SpecError) as error:
        parse_spec('[network]\nname = "keys"\ninput_shape = [4]\nloss = "mse"\n\n'
                   f'[[layers]]\n{layer}\n')
    assert all(word in str(error.value) for word in words), str(error.value)


def test_layer_shapes_come_from_the_declarations():
    from derive.network import parse_spec
    spec = parse_spec(table_spec_text("shapes", [3, 6], [
        {"type": "conv1d", "filters": 4, "padding": 1},
        {"type": "batch_norm", "activation": "prelu", "alpha_per_channel": True},
        {"type": "dropout"}, {"type": "dropout", "p": 0.1}]))
    conv, bn, drop, _ = spec.layers
    assert bn.in_shape == bn.out_shape == drop.out_shape == (4, 6)  # BatchNorm1d over (C, L)
    assert bn.activation_params == (("alpha", (4,)),)
    assert bn.buffers == (("running_mean", (4,), 0.0), ("running_var", (4,), 1.0))
    assert bn.hyper == {"eps": 1e-5, "momentum": 0.1}


EVERY = """\
[network]
name = "every_layer"
input_shape = [1, 8, 8]
loss = "categorical_cross_entropy"

[[layers]]
type = "conv2d"
filters = 4
padding = 1

[[layers]]
type = "batch_norm"
activation = "prelu"
alpha_per_channel = true

[[layers]]
type = "dropout"
p = 0.1

[[layers]]
type = "flatten"

[[layers]]
type = "dense"
units = 16
activation = "rrelu"

[[layers]]
type = "batch_norm"
activation = "noisy_relu"

[[layers]]
type = "dense"
units = 10
activation = "softmax"

[train]
optimizer = "adam"
lr = 0.01
epochs = 1
"""


def test_derive_train_runs_a_spec_with_every_new_layer(tmp_path):
    from derive.train.checkpoint import CHECKPOINT, load_checkpoint
    spec = tmp_path / "every_layer.toml"
    spec.write_text(EVERY)
    out = tmp_path / "run"
    assert main(["train", str(spec), "--data", "digits", "--out", str(out),
                 "--no-progress"]) == 0
    ck = load_checkpoint(out / CHECKPOINT)
    # conv2d0 K, b; batch_norm1 γ, β, α, running mean and variance; dense4 W, b;
    # batch_norm5 γ, β, running mean and variance; dense6 W, b.
    assert [p.shape for p in ck.params[2:7]] == [(4,)] * 5
    assert len(ck.params) == 15
    assert not np.allclose(ck.params[6], 1)  # the running variance moved, and is kept
    assert not np.allclose(ck.params[4], 0.25)  # α learnt
    assert np.all(np.isfinite(np.concatenate([p.ravel() for p in ck.params])))
