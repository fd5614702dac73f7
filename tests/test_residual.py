"""Skip connections (residual networks): x⁽ˡ⁾ = f(s⁽ˡ⁾) + x⁽ᵏ⁾ from a spec.

The generated module's loss and gradients are compared with the same network in PyTorch
(float64, 1e-9) and with central finite differences of the whole network's loss; its
training steps with PyTorch's SGD and Adam, and with every optimizer of the catalogue
applied by hand to its own gradients. The identity path is checked for what it is for:
the first layers of a deep sigmoid network keep their gradient. Spec mistakes are one
line naming the layer; the document shows the sum and derives the δ through it.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812  (the name PyTorch documents)
from conftest import generated, table_network_builder, table_spec_text
from torch_networks import torch_forward

from derive import registry
from derive.cli import main
from derive.latex.context import document_view
from derive.latex.render import language
from derive.network import SpecError, parse_spec

TOL = 1e-9
STEPS = 5
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "residual_mlp.toml"

#: A skip from the input, a two-layer block whose last layer has no activation, a
#: one-layer block, and an output (the stem's) that two sums add.
LAYERS = [
    {"type": "dense", "units": 4, "activation": "tanh", "name": "stem", "skip_from": "input"},
    {"type": "dense", "units": 4, "activation": "sigmoid"},
    {"type": "dense", "units": 4, "name": "block1", "skip_from": "stem"},
    {"type": "dense", "units": 4, "activation": "tanh", "skip_from": "block1"},
    {"type": "dense", "units": 4, "activation": "sigmoid", "skip_from": "stem"},
    {"type": "dense", "units": 3},
]

#: Convolutions with padding: the block's first layer crops its input's gradient before
#: the identity path adds to it.
CONV = [
    {"type": "conv2d", "filters": 2, "kernel_size": 3, "padding": 1, "activation": "tanh",
     "name": "c1"},
    {"type": "conv2d", "filters": 2, "kernel_size": 3, "padding": 1, "activation": "sigmoid"},
    {"type": "conv2d", "filters": 2, "kernel_size": 3, "padding": 1, "activation": "tanh",
     "skip_from": "c1"},
    {"type": "flatten"},
    {"type": "dense", "units": 3},
]

@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """Write, generate and import a network module once per name."""
    return table_network_builder(tmp_path_factory.mktemp("residual"))


def data(module, seed=0, n=6):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n,) + module.INPUT_SHAPE), rng.normal(size=(n, 3))


def torch_loss(module, tparams, x, y):
    return F.mse_loss(torch_forward(module, tparams, torch.from_numpy(x)), torch.from_numpy(y))


@pytest.mark.parametrize(("name", "shape", "layers"), [
    ("res_dense", [4], LAYERS), ("res_conv", [2, 5, 5], CONV)])
def test_loss_and_gradients_match_pytorch(build, name, shape, layers):
    m = build(name, shape, layers)
    params = m.init_params(seed=1)
    x, y = data(m)
    loss, grads = m.loss_and_grad(params, x, y)
    tparams = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    tloss = torch_loss(m, tparams, x, y)
    tloss.backward()
    assert loss == pytest.approx(tloss.item(), rel=TOL)
    for g, t, pname in zip(grads, tparams, m.PARAM_NAMES, strict=True):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=TOL, atol=TOL, err_msg=pname)
    # Without the skips the network computes something else: the sums are not a no-op.
    plain = [(kind, act, {k: v for k, v in hyper.items() if k != "skip_from"})
             for kind, act, hyper in m.LAYERS]
    no_skips = type("Plain", (), {"LAYERS": plain})
    assert abs(torch_loss(no_skips, tparams, x, y).item() - loss) > 1e-3


def test_gradients_match_finite_differences_of_the_whole_loss(build):
    m = build("res_dense", [4], LAYERS)
    params = m.init_params(seed=2)
    x, y = data(m, seed=3)
    _, grads = m.loss_and_grad(params, x, y)
    h = 1e-6
    for p, g, pname in zip(params, grads, m.PARAM_NAMES, strict=True):
        fd = np.empty_like(p)
        for i in np.ndindex(p.shape):
            keep = p[i]
            p[i] = keep + h
            up = m.loss_and_grad(params, x, y)[0]
            p[i] = keep - h
            down = m.loss_and_grad(params, x, y)[0]
            p[i] = keep
            fd[i] = (up - down) / (2 * h)
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8, err_msg=pname)


@pytest.fixture
def float64_torch():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.mark.parametrize(("optimizer", "make"), [
    ("gd", lambda ps: torch.optim.SGD(ps, lr=0.05)),
    ("adam", lambda ps: torch.optim.Adam(ps, lr=0.05, betas=(0.9, 0.999), eps=1e-8)),
])
def test_sgd_and_adam_steps_match_pytorch(build, float64_torch, optimizer, make):
    m = build(f"res_{optimizer}", [4], LAYERS, train=f'optimizer = "{optimizer}"\nlr = 0.05\n')
    params = m.init_params(seed=4)
    state = m.init_state(params)
    tparams = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    opt = make(tparams)
    for step in range(1, STEPS + 1):
        x, y = data(m, seed=step)
        loss = m.train_step(params, state, x, y, 0.05)
        opt.zero_grad()
        tloss = torch_loss(m, tparams, x, y)
        tloss.backward()
        opt.step()
        assert loss == pytest.approx(tloss.item(), rel=TOL), f"loss at step {step}"
        for p, t, pname in zip(params, tparams, m.PARAM_NAMES, strict=True):
            np.testing.assert_allclose(p, t.detach().numpy(), rtol=TOL, atol=1e-12,
                                       err_msg=f"{pname} after step {step}")


@pytest.mark.parametrize("optimizer", [op.name for op in registry.all_ops("optimizer")])
def test_every_optimizer_trains_a_residual_network(build, optimizer):
    # Each step equals the optimizer's own generated module applied to the network's
    # gradients (PyTorch's optimizers are compared above and in test_network_optimizers).
    m = build(f"res_opt_{optimizer}", [4], LAYERS[:4],
              train=f'optimizer = "{optimizer}"\nlr = 0.02\nregularise_biases = true\n')
    opt = generated("optimizers", optimizer)
    params = m.init_params(seed=5)
    mine = [p.copy() for p in params]
    state, opt_state = m.init_state(params), opt.init_state(mine)
    x, y = data(m, seed=6, n=8)
    y = y[:, :1].repeat(4, axis=1)  # the four outputs of LAYERS[:4]
    losses = []
    for step in range(1, 31):
        loss, grads = m.loss_and_grad(mine, x, y)
        opt.step(mine, grads, opt_state, t=step, lr=0.02,
                 **{k: v for k, v in m.OPTIMIZER_PARAMS.items() if k != "lr"})
        losses.append(m.train_step(params, state, x, y, 0.02))
        assert losses[-1] == pytest.approx(loss, rel=TOL)
        for p, q, pname in zip(params, mine, m.PARAM_NAMES, strict=True):
            np.testing.assert_allclose(p, q, rtol=TOL, atol=1e-12,
                                       err_msg=f"{pname} after step {step}")
    assert losses[-1] < losses[0]


def deep(skips: bool) -> list[dict]:
    """Eight sigmoid layers of 16 units; with skips, three blocks of two after two layers."""
    layers = [{"type": "dense", "units": 16, "activation": "sigmoid"} for _ in range(8)]
    if skips:
        layers[1]["name"] = "stem"
        for top, source in ((3, "stem"), (5, "b1"), (7, "b2")):
            layers[top]["skip_from"] = source
        layers[3]["name"], layers[5]["name"] = "b1", "b2"
    return [*layers, {"type": "dense", "units": 3}]


def test_skips_keep_the_first_layers_gradient(build):
    # The vanishing gradient of deep_sigmoid.toml, and the identity paths that undo it:
    # the first layer's weight gradient against the last's.
    ratios = {}
    for skips in (False, True):
        m = build(f"deep_{'res' if skips else 'plain'}", [4], deep(skips))
        params = m.init_params(seed=0)
        x, y = data(m, seed=7, n=32)
        _, grads = m.loss_and_grad(params, x, y)
        ratios[skips] = np.linalg.norm(grads[0]) / np.linalg.norm(grads[-2])
    assert ratios[False] < 1e-3
    assert ratios[True] > 30 * ratios[False]


# ---- the spec ---------------------------------------------------------------------------


def two(extra_first="", extra_second="", units=4):
    layers = [{"type": "dense", "units": 4}, {"type": "dense", "units": units}]
    text = table_spec_text("t", [4], layers)
    return text.replace('units = 4\n', 'units = 4\n' + extra_first, 1).replace(
        f'units = {units}\n\n[train]', f'units = {units}\n{extra_second}\n[train]')


@pytest.mark.parametrize(("text", "message"), [
    (two('name = "a"\n', 'skip_from = "a"\n', units=3),
     "layers[1].skip_from: layers[1] (dense) outputs shape (3,) but layer 'a' (layers[0])"
     " has shape (4,); a skip connection adds two outputs of the same shape."),
    (table_spec_text("t", [5], [{"type": "dense", "units": 4, "skip_from": "input"}]),
     "layers[0] (dense) outputs shape (4,) but the network's input has shape (5,)"),
    (two('name = "a"\n', 'skip_from = "b"\n'), "no earlier layer is named 'b'."),
    (two('skip_from = "a"\n', 'name = "a"\n'), "'a' is layers[1], above this one"),
    (two('name = "a"\nskip_from = "a"\n'), "'a' is layers[0], this layer itself"),
    (two('name = "a"\n', 'name = "a"\n'), "layers[1].name: layers[0] is already named 'a'."),
    (two('name = "input"\n'), "'input' names the network's input in skip_from"),
    (two('name = "a"\n', "skip_from = 0\n"), "skip_from must be the name of an earlier layer"),
    (two("name = 3\n"), "a layer's name must be a non-empty string"),
    (table_spec_text("t", [4], [{"type": "dense", "units": 4, "activation": "tanh", "name": "a"},
                          {"type": "dense", "units": 4, "activation": "softmax",
                           "skip_from": "a"}], loss="categorical_cross_entropy"),
     "layers[1].skip_from: the last layer's softmax is computed inside the loss"),
])
def test_spec_mistakes_name_the_layer(text, message):
    with pytest.raises(SpecError) as err:
        parse_spec(text, "net.toml")
    assert message in err.value.message and "net.toml" in err.value.message
    assert "\n" not in err.value.message


def test_a_shape_mismatch_is_one_line_and_exit_code_2(tmp_path, capsys):
    spec = tmp_path / "bad.toml"
    spec.write_text(two('name = "a"\n', 'skip_from = "a"\n', units=3))
    assert main(["kernels", str(spec), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "(3,)" in err and "(4,)" in err and "layers[1]" in err


def test_the_plan_knows_every_reader_of_an_output():
    spec = parse_spec(table_spec_text("t", [4], LAYERS))
    plan = spec.plan
    assert [layer.spec.skip_from for layer in plan.skips] == [-1, 0, 2, 0]
    assert [layer.spec.index for layer in plan.skips_into(0)] == [2, 4]
    assert plan.skips_into(1) == ()


# ---- the document -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def residual_view():
    return {lang: document_view(parse_spec(table_spec_text("t", [4], LAYERS)), language(lang))
            for lang in ("en", "pt")}


def test_the_forward_pass_shows_the_sum(residual_view):
    forward = dict(residual_view["en"].forward)
    assert forward["x^{(1)}"] == r"\tanh\left(s^{(1)}\right) + x^{(0)}"
    assert forward["x^{(3)}"] == "s^{(3)} + x^{(1)}"
    assert forward["x^{(5)}"] == r"\sigma\left(s^{(5)}\right) + x^{(1)}"
    assert forward["x^{(2)}"] == r"\sigma\left(s^{(2)}\right)"
    assert [(v.number, v.skip) for v in residual_view["en"].skips] == [
        (1, "x^{(0)}"), (3, "x^{(1)}"), (4, "x^{(3)}"), (5, "x^{(1)}")]
    # No explicit matrix formulas: they multiply one factor per layer, a sum is not one.
    assert residual_view["en"].explicit == ()


def test_the_delta_through_the_sum_is_derived(residual_view):
    formulas = residual_view["en"].backward
    kinds = [(f.kind, f.layer) for f in formulas if f.kind.startswith("skip")]
    # x^(1) is read by layer 2 and by the sums of layers 3 and 5; x^(3) by layer 4 and
    # its sum. x^(0), the input, needs no gradient.
    assert kinds == [("skip_paths", 4), ("skip_identity", 4),
                     ("skip_paths", 2), ("skip_identity", 2)]
    paths, identity = (f for f in formulas if f.layer == 2 and f.kind.startswith("skip"))
    assert paths.sums == (3, 5) and paths.array == "x^{(1)}"
    # In the letters of layer 1's output (n,j, as its δ⁽¹⁾). First the chain rule with
    # the sum's derivative written, then its value, 1.
    assert r"\frac{\partial x^{(3)}_{n,j}}{\partial x^{(1)}_{n,j}}" in paths.rhs
    assert r"\frac{\partial x^{(5)}_{n,j}}{\partial x^{(1)}_{n,j}}" in paths.rhs
    block = paths.rhs.split(" + ")[0]
    assert identity.rhs == (block + r" + \frac{\partial E}{\partial x^{(3)}_{n,j}}"
                            r" + \frac{\partial E}{\partial x^{(5)}_{n,j}}")
    assert identity.lhs == paths.lhs == r"\frac{\partial E}{\partial x^{(1)}_{n,j}}"
    # The plain "input" formula is replaced where skips read the array, kept elsewhere.
    assert [f.layer for f in formulas if f.kind == "input"] == [6, 5, 3]


def test_a_padded_block_crops_before_the_identity_path():
    # Layer 2 reads x^(1) zero-padded: what comes back through the block is the padded
    # input's gradient inside the border, and the identity path adds ∂E/∂x^(3).
    view = document_view(parse_spec(table_spec_text("c", [2, 5, 5], CONV)), language("en"))
    paths, identity = (f for f in view.backward if f.kind.startswith("skip"))
    assert paths.lhs == r"\frac{\partial E}{\partial x^{(1)}_{n,c,r,u}}"
    block = r"\frac{\partial E}{\partial \tilde{x}^{(1)}_{n,c,r + 1,u + 1}}"
    assert identity.rhs == block + r" + \frac{\partial E}{\partial x^{(3)}_{n,c,r,u}}"
    assert paths.rhs.startswith(block + " + ") and paths.sums == (3,)


@pytest.mark.parametrize("lang", ["en", "pt"])
@pytest.mark.parametrize("fmt", ["article", "beamer", "markdown"])
def test_the_document_explains_the_identity_path(tmp_path, lang, fmt):
    spec = tmp_path / "res.toml"
    spec.write_text(table_spec_text("res", [4], LAYERS))
    out = tmp_path / f"res.{'md' if fmt == 'markdown' else 'tex'}"
    assert main(["latex", str(spec), "--lang", lang, "--format", fmt, "-o", str(out)]) == 0
    text = out.read_text()
    words = {"en": ("Skip connections", "identity path", "vanishing gradient"),
             "pt": ("Conexões residuais", "caminho identidade", "desaparecimento do gradiente")}
    for word in words[lang]:
        assert word in text
    assert r"\frac{\partial E}{\partial x^{(k)}} = \underbrace" in text
    assert r"+ x^{(1)}" in text


def test_the_example_document_compiles(tmp_path):
    out = tmp_path / "residual_mlp.tex"
    assert main(["latex", str(EXAMPLE), "--lang", "pt", "--format", "beamer",
                 "-o", str(out), "--pdf"]) == 0
    assert out.with_suffix(".pdf").stat().st_size > 10_000
