"""Generated network modules: the spec's δ recursion against a PyTorch
reimplementation, step by step, and spec errors that name file, layer and field."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import GENERATED, generated
from torch_networks import torch_forward

from derive.cli import main
from derive.network import SpecError, parse_spec

EXAMPLES = ["mlp_notes", "cnn_small"]


def torch_optimizer(module, params):
    if module.OPTIMIZER == "gd":
        return torch.optim.SGD(params, lr=module.TRAIN["lr"])
    if module.OPTIMIZER == "momentum":
        return torch.optim.SGD(params, lr=module.TRAIN["lr"],
                               momentum=module.OPTIMIZER_PARAMS["mu"])
    raise AssertionError(module.OPTIMIZER)


@pytest.mark.parametrize("name", EXAMPLES)
def test_first_three_steps_match_pytorch(name):
    m = generated("networks", name)
    params = m.init_params(seed=3)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8,) + m.INPUT_SHAPE)
    y = rng.integers(0, m.N_CLASSES, 8)
    tparams = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    opt = torch_optimizer(m, tparams)
    state = m.init_state(params)
    loss, grads = m.loss_and_grad(params, x, y)
    tloss = F.cross_entropy(torch_forward(m, tparams, torch.tensor(x)), torch.tensor(y))
    tloss.backward()
    assert loss == pytest.approx(tloss.item(), rel=1e-12)
    for g, t in zip(grads, tparams, strict=True):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-10, atol=1e-13)
    for _ in range(3):
        loss = m.train_step(params, state, x, y, m.TRAIN["lr"])
        opt.zero_grad()
        tloss = F.cross_entropy(torch_forward(m, tparams, torch.tensor(x)), torch.tensor(y))
        tloss.backward()
        opt.step()
        assert loss == pytest.approx(tloss.item(), rel=1e-10)
        for p, t in zip(params, tparams, strict=True):
            np.testing.assert_allclose(p, t.detach().numpy(), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("name", EXAMPLES)
def test_predict_gives_probabilities_and_float32_works(name):
    m = generated("networks", name)
    params = m.init_params(seed=1, dtype=np.float32)
    x = np.random.default_rng(2).normal(size=(5,) + m.INPUT_SHAPE).astype(np.float32)
    p = m.predict(params, x)
    assert p.dtype == np.float32 and p.shape == (5, m.N_CLASSES)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-5)
    state = m.init_state(params)
    y = np.arange(5) % m.N_CLASSES
    first = m.train_step(params, state, x, y, 0.05)
    for _ in range(20):
        last = m.train_step(params, state, x, y, 0.05)
    assert last < first


SPEC = """
[network]
name = "t"
input_shape = [4]
loss = "mse"

[[layers]]
type = "dense"
units = 3
"""


@pytest.mark.parametrize(("text", "message"), [
    ("[network\nname=1", "not valid TOML"),
    (SPEC.replace('"dense"', '"dens"'),
     "layers[0].type: unknown layer type 'dens'. Did you mean dense?"),
    (SPEC.replace("units = 3", "units = 0"), "units must be an integer"),
    (SPEC.replace("[4]", "[1, 5, 5]"), "layers[0]: dense needs a flat input"),
    (SPEC.replace('"mse"', '"mse2"'), "network.loss: unknown loss"),
    (SPEC.replace("units = 3", "units = 3\nactivation = \"rleu\""), "Did you mean relu"),
    (SPEC + "\n[train]\noptimizer = \"adamm\"", "Did you mean adam"),
])
def test_spec_errors_name_the_file_layer_and_field(text, message):
    with pytest.raises(SpecError) as err:
        parse_spec(text, "net.toml")
    assert message in err.value.message and "net.toml" in err.value.message


def test_kernels_from_a_spec_file(tmp_path, capsys):
    spec = tmp_path / "tiny.toml"
    spec.write_text(SPEC)
    assert main(["kernels", str(spec), "-o", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "networks" / "t.py").exists()
    bad = tmp_path / "bad.toml"
    bad.write_text(SPEC.replace("units = 3", "units = -1"))
    assert main(["kernels", str(bad), "-o", str(tmp_path / "out2")]) == 2
    assert "layers[0]" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()


def test_generated_networks_exist_for_every_example():
    for name in EXAMPLES:
        assert (GENERATED / "networks" / f"{name}.py").exists()


TINY_CNN = """
[network]
name = "tiny_cnn"
input_shape = [1, 6, 6]
loss = "categorical_cross_entropy"

[[layers]]
type = "conv2d"
filters = 2
kernel_size = 3
padding = 1
activation = "relu"

[[layers]]
type = "flatten"

[[layers]]
type = "dense"
units = 3
activation = "softmax"
"""

CALL = """
import importlib.util, sys
import numpy as np
spec = importlib.util.spec_from_file_location("tiny_cnn", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules["tiny_cnn"] = module
spec.loader.exec_module(module)
params = module.init_params(0)
x = np.random.default_rng(0).standard_normal((4, 1, 6, 6))
y = np.arange(4) % 3
if sys.argv[2] == "train":
    print(module.train_step(params, module.init_state(params), x, y, 0.1))
else:
    print(module.loss_and_grad(params, x, y)[0])
"""


def test_a_cached_network_with_parallel_kernels_runs_in_a_fresh_process(tmp_path):
    # Numba forgets to start its thread pool when it loads a cached function that calls a
    # parallel one and was compiled against callees that came from the cache. The order
    # below builds exactly that cache: a train step compiles and caches every layer
    # kernel, the next process compiles _loss_and_grad against them, the third loads it.
    import os
    import subprocess
    import sys

    spec = tmp_path / "tiny.toml"
    spec.write_text(TINY_CNN)
    assert main(["kernels", str(spec), "-o", str(tmp_path)]) == 0
    module = tmp_path / "networks" / "tiny_cnn.py"
    assert "parallel=True" in module.read_text()
    env = os.environ | {"DERIVE_JIT": "1"}
    outputs = []
    for what in ("train", "loss", "loss"):
        run = subprocess.run([sys.executable, "-c", CALL, str(module), what], env=env,
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, f"{what}: exit {run.returncode}\n{run.stderr[-2000:]}"
        outputs.append(float(run.stdout))
    assert outputs[1] == outputs[2] and np.isfinite(outputs[1])


@pytest.mark.parametrize("name", EXAMPLES)
def test_predict_applies_the_declared_output_activation(name):
    # The loss takes the softmax in (its declaration's `fused`); predict applies the
    # derived softmax kernel to the logits, which PyTorch computes here from the same
    # parameters.
    m = generated("networks", name)
    params = m.init_params(seed=4)
    x = np.random.default_rng(5).normal(size=(7,) + m.INPUT_SHAPE)
    logits = torch_forward(m, [torch.tensor(p) for p in params], torch.tensor(x))
    np.testing.assert_allclose(m.predict(params, x), torch.softmax(logits, 1).numpy(),
                               rtol=1e-12, atol=1e-15)
    assert m.COMPUTED_LOSS == "softmax_cross_entropy"


def test_every_declared_fusion_makes_a_network_computing_the_fused_loss():
    from derive import registry
    from derive.codegen.network import summary_lines

    fusions = [(act, loss.name, fused) for loss in registry.all_ops("loss")
               for act, fused in loss.fused]
    assert fusions, "no loss declares an output activation it is computed with"
    for act, loss, fused in fusions:
        spec = parse_spec(SPEC.replace('"mse"', f'"{loss}"')
                          .replace("units = 3", f'units = 3\nactivation = "{act}"'), "f.toml")
        assert spec.plan.computed_loss.name == fused
        assert spec.plan.output_activation.name == act
        assert spec.plan.activations == ()  # computed inside the loss, not after the layer
        computed = f", computed as {fused} on the logits" if fused != loss else ""
        assert summary_lines(spec)[-1] == f"loss: {loss}{computed}"


def test_a_layer_declaration_gives_its_network_shapes_without_network_code():
    # A 1-D convolution declared here (never registered): its spec keys and shapes in a
    # network follow from the declaration alone.
    import sympy as sp
    from sympy import IndexedBase, Sum

    from derive.spec import Layer, Param, SpecKey

    N, C, L, F, KL, LP, OL, S = sp.symbols("N C L F KL LP OL S", integer=True, positive=True)
    P = sp.Symbol("P", integer=True, nonnegative=True)
    n, c, f, l_, i = sp.symbols("n c f l i", integer=True, nonnegative=True)
    x, xp, K, b, y = (IndexedBase(a, real=True) for a in ("x", "x_pad", "K", "b", "y"))
    conv1d = Layer(
        name="conv1d_test", title="1-D convolution", latex="", out=y[n, f, l_],
        expr=Sum(K[f, c, i] * xp[n, c, S * l_ + i], (c, 0, C - 1), (i, 0, KL - 1)) + b[f],
        arrays=((x, (N, C, L)), (xp, (N, C, LP)), (K, (F, C, KL)), (b, (F,)),
                (y, (N, F, OL))),
        inputs=(xp,), weights=(K, b),
        hyper=(Param(S, 1, keyword="stride"), Param(P, 0, keyword="padding")),
        sizes=((LP, L + 2 * P), (OL, (LP - KL) // S + 1)), padding=(xp, x, P),
        spec_keys=(SpecKey("filters", (F,)), SpecKey("kernel_size", (KL,), default=3)))
    keys = conv1d.network_keys()
    assert [k.name for k in keys] == ["filters", "kernel_size", "stride", "padding"]
    assert [k.default for k in keys] == [None, 3, 1, 0]
    assert conv1d.shape(conv1d.source) == (N, C, L)
    out, weights = conv1d.network_shapes({C: 2, L: 10, F: 4, KL: 3, S: 2, P: 1})
    assert out == (4, 5)  # (10 + 2 − 3) // 2 + 1
    assert weights == (("K", (4, 2, 3)), ("b", (4,)))
    with pytest.raises(ValueError, match="nothing sets the size F"):
        conv1d.network_shapes({C: 2, L: 10, KL: 3, S: 1, P: 0})


def test_pooling_stride_defaults_to_the_window_from_the_declaration():
    text = SPEC.replace("[4]", "[1, 6, 6]").replace(
        'type = "dense"\nunits = 3',
        'type = "max_pool2d"\nkernel_size = 3\n\n[[layers]]\ntype = "flatten"')
    pool, flat = parse_spec(text, "p.toml").layers
    assert pool.hyper == {"kernel_size": 3, "stride": 3} and pool.out_shape == (1, 2, 2)
    assert flat.out_shape == (4,)


def test_reading_a_spec_loads_no_training_code():
    import subprocess
    import sys

    code = ("import sys, derive.network\n"
            "print(sorted(m for m in sys.modules if m.split('.')[:2] == ['derive', 'train']))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, cwd=GENERATED.parent)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[]"
