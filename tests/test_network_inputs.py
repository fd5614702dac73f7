"""A generated network module's Python API against hostile inputs, and specs that begin
with (or hold only) layers without parameters.

The kernels index without bounds checks, so every entry point must refuse what does not
fit the spec with a one-line error naming the argument, what was expected and what came
— before anything runs or changes. Targets outside a loss's domain are refused where the
loss is undefined for them. What is valid in an unusual form gives the right result.
"""

import numpy as np
import pytest

from derive.checks import load_module
from derive.cli import main

#: name → (input shape, layers as TOML, loss, optimizer)
NETWORKS = {
    # Each layer without parameters comes first in one of them.
    "regression": ([1, 4, 4], [{"type": "flatten"}, {"type": "dense", "units": 3}],
                   "mse", "momentum"),
    "labels": ([1, 4, 4], [{"type": "max_pool2d", "kernel_size": 2}, {"type": "flatten"},
                           {"type": "dense", "units": 3, "activation": "softmax"}],
               "categorical_cross_entropy", "adam"),
    "onehot": ([1, 4, 4], [{"type": "avg_pool2d", "kernel_size": 2}, {"type": "flatten"},
                           {"type": "dense", "units": 3, "activation": "sigmoid"}],
               "categorical_cross_entropy", "gd"),
    "bce": ([2, 4, 4], [{"type": "global_avg_pool2d"},
                        {"type": "dense", "units": 2, "activation": "sigmoid"}],
            "binary_cross_entropy", "nadam"),
    "hinge": ([5], [{"type": "dropout", "p": 0.2}, {"type": "dense", "units": 1}],
              "hinge", "rmsprop"),
    # Only layers without parameters: nothing to learn, but every entry point works.
    "frozen": ([2, 4, 4], [{"type": "avg_pool2d", "kernel_size": 2},
                           {"type": "max_pool2d", "kernel_size": 2}, {"type": "flatten"},
                           {"type": "dropout", "p": 0.5}], "mse", "adam"),
    "pooled": ([3, 4, 4], [{"type": "global_avg_pool2d", "activation": "tanh"}], "mse",
               "nadam"),
}


def spec_text(name):
    shape, layers, loss, optimizer = NETWORKS[name]
    text = f'[network]\nname = "{name}"\ninput_shape = {shape}\nloss = "{loss}"\n'
    for layer in layers:
        text += "\n[[layers]]\n" + "".join(
            f"{k} = {v!r}\n".replace("'", '"') for k, v in layer.items())
    return text + f'\n[train]\noptimizer = "{optimizer}"\nlr = 0.05\n'


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    """The generated module of a network of NETWORKS, written and imported once."""
    folder = tmp_path_factory.mktemp("network_inputs")
    modules = {}

    def get(name):
        if name not in modules:
            spec = folder / f"{name}.toml"
            spec.write_text(spec_text(name))
            assert main(["kernels", str(spec), "-o", str(folder)]) == 0
            modules[name] = load_module(folder / "networks" / f"{name}.py")
        return modules[name]

    return get


def batch(m, n=6, seed=0):
    """Valid (x, y) for a network: y as its loss wants it."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n,) + m.INPUT_SHAPE)
    if m.TARGETS == "index" or m.N_CLASSES:
        y = rng.integers(0, m.N_CLASSES, n)
    elif m.TARGET_VALUES is not None:
        y = rng.choice(m.TARGET_VALUES, (n,) + m.OUTPUT_SHAPE)
    elif m.TARGET_RANGE is not None:
        y = rng.uniform(*m.TARGET_RANGE, (n,) + m.OUTPUT_SHAPE)
    else:
        y = rng.normal(size=(n,) + m.OUTPUT_SHAPE)
    return x, y


# ---- specs that begin with, or hold only, layers without parameters ------------------------


@pytest.mark.parametrize("name", NETWORKS)
def test_every_spec_writes_a_module_that_imports_and_trains(net, name):
    m = net(name)
    params = m.init_params(seed=1)
    state = m.init_state(params)
    x, y = batch(m, n=16)
    first, _ = m.loss_and_grad(params, x, y)
    losses = [m.train_step(params, state, x, y, 0.05) for _ in range(30)]
    assert all(np.isfinite(losses)) and state[0][0] == 30
    after, _ = m.loss_and_grad(params, x, y)
    if params:
        assert after < first
    else:
        assert after == first and m.PARAM_NAMES == ()
    assert m.predict(params, x).shape == (16,) + m.OUTPUT_SHAPE


@pytest.mark.parametrize("name", [n for n in NETWORKS if n not in ("frozen", "pooled")])
def test_gradients_after_layers_without_parameters_match_finite_differences(net, name):
    m = net(name)
    params = m.init_params(seed=2)
    x, y = batch(m, n=5, seed=3)
    _, grads = m.loss_and_grad(params, x, y)
    h = 1e-6
    for p, g in zip(params, grads, strict=True):
        numeric = np.empty_like(p)
        for index in np.ndindex(p.shape):
            keep = p[index]
            p[index] = keep + h
            up = m.loss_and_grad(params, x, y)[0]
            p[index] = keep - h
            down = m.loss_and_grad(params, x, y)[0]
            p[index] = keep
            numeric[index] = (up - down) / (2 * h)
        np.testing.assert_allclose(g, numeric, rtol=1e-6, atol=1e-8)


def test_a_network_without_parameters_follows_the_input_dtype(net):
    m = net("frozen")
    x, y = batch(m)
    for dtype in (np.float32, np.float64):
        out = m.predict([], x.astype(dtype))
        assert out.dtype == dtype
        np.testing.assert_allclose(out, x.reshape(6, 2, 2, 2, 2, 2).mean(axis=(3, 5))
                                   .max(axis=(2, 3)), rtol=1e-6)
    assert m.loss_and_grad([], x, y)[1] == []


def test_the_cli_writes_and_imports_a_flatten_first_spec(tmp_path):
    spec = tmp_path / "flat.toml"
    spec.write_text(spec_text("regression"))
    assert main(["kernels", str(spec), "-o", str(tmp_path)]) == 0
    text = (tmp_path / "networks" / "regression.py").read_text()
    compile(text, "regression.py", "exec")  # no empty function bodies
    assert "_flatten_backward" not in text  # nothing before the dense layer needs gradients


# ---- hostile arguments -----------------------------------------------------------------------


def _params(m, change):
    params = m.init_params(seed=0)
    change(params)
    return params


def _set(i, value):
    def change(params):
        params[i] = value(params[i]) if callable(value) else value
    return change


#: (network, entry point, arguments from the module, error type, words the message holds)
HOSTILE = [
    # x
    ("regression", "loss", lambda m: (m.init_params(), np.zeros((6, 16)), np.zeros((6, 3))),
     ValueError, "x must have shape (N, 1, 4, 4), got (6, 16)"),
    ("regression", "loss", lambda m: (m.init_params(), np.zeros((4, 4, 1, 6)),
                                      np.zeros((6, 3))), ValueError, "x must have shape"),
    ("regression", "predict", lambda m: (m.init_params(), np.zeros(16)), ValueError,
     "got (16,)"),
    ("regression", "predict", lambda m: (m.init_params(), np.zeros((2, 1, 4, 4), complex)),
     TypeError, "x must hold real numbers (float32 or float64), got complex128"),
    ("regression", "predict", lambda m: (m.init_params(), np.full((2, 1, 4, 4), "a")),
     TypeError, "x must hold real numbers"),
    ("regression", "predict", lambda m: (m.init_params(), None), TypeError, "got object"),
    ("regression", "predict", lambda m: (m.init_params(), [[1.0], [1.0, 2.0]]), TypeError,
     "x must be an array, got a list"),
    ("regression", "loss", lambda m: (m.init_params(), np.zeros((0, 1, 4, 4)),
                                      np.zeros((0, 3))), ValueError, "at least one example"),
    ("regression", "train", lambda m: (np.zeros((0, 1, 4, 4)), np.zeros((0, 3))), ValueError,
     "at least one example"),
    # y of a regression
    ("regression", "loss", lambda m: (m.init_params(), np.zeros((6, 1, 4, 4)),
                                      np.arange(6)), ValueError,
     "y must have shape (6, 3), got int64 of shape (6,)"),
    ("regression", "train", lambda m: (np.zeros((6, 1, 4, 4)), np.zeros((3, 6))), ValueError,
     "y must have shape (6, 3), got float64 of shape (3, 6)"),
    ("regression", "train", lambda m: (np.zeros((6, 1, 4, 4)), np.zeros((5, 3))), ValueError,
     "y must have shape (6, 3)"),
    ("regression", "train", lambda m: (np.zeros((6, 1, 4, 4)), np.zeros((6, 3, 1))),
     ValueError, "y must have shape (6, 3)"),
    ("regression", "train", lambda m: (np.zeros((6, 1, 4, 4)), np.zeros((6, 3), complex)),
     TypeError, "y must hold real numbers, got complex128"),
    # parameters
    ("regression", "loss", lambda m: (_params(m, _set(1, np.zeros(1))), np.zeros((6, 1, 4, 4)),
                                      np.zeros((6, 3))), ValueError,
     "params[1] (dense1.b) must have shape (3,), got (1,)"),
    ("regression", "predict", lambda m: (_params(m, _set(0, np.transpose)),
                                         np.zeros((6, 1, 4, 4))), ValueError,
     "params[0] (dense1.W) must have shape (3, 16), got (16, 3)"),
    ("regression", "predict", lambda m: (m.init_params()[:1], np.zeros((6, 1, 4, 4))),
     ValueError, "params must hold 2 arrays ('dense1.W', 'dense1.b'), got 1"),
    ("regression", "predict", lambda m: (np.zeros((3, 16)), np.zeros((6, 1, 4, 4))),
     TypeError, "params must be the list init_params returns, got a float64 array of shape "
     "(3, 16)"),
    ("regression", "predict", lambda m: (dict(enumerate(m.init_params())),
                                         np.zeros((6, 1, 4, 4))), TypeError, "got a dict"),
    ("regression", "predict", lambda m: (_params(m, _set(0, lambda p: p.astype(int))),
                                         np.zeros((6, 1, 4, 4))), TypeError,
     "params[0] (dense1.W) must be a float32 or float64 array, got a int64 array"),
    ("regression", "predict", lambda m: (_params(m, _set(1, lambda p: p.astype(np.float32))),
                                         np.zeros((6, 1, 4, 4))), TypeError,
     "params[1] (dense1.b) must be a float64 array, got a float32 array of shape (3,)"),
    ("regression", "predict", lambda m: (_params(m, _set(0, np.asfortranarray)),
                                         np.zeros((6, 1, 4, 4))), ValueError, "C-contiguous"),
    ("regression", "predict", lambda m: (_params(m, _set(1, [0.0, 0.0, 0.0])),
                                         np.zeros((6, 1, 4, 4))), TypeError,
     "params[1] (dense1.b) must be a float64 array, got a list"),
    # lr, batch_size, init_params
    ("regression", "train_lr", lambda m: float("nan"), ValueError,
     "lr must be a finite number >= 0, got nan"),
    ("regression", "train_lr", lambda m: float("inf"), ValueError, "got inf"),
    ("regression", "train_lr", lambda m: -0.1, ValueError, "got -0.1"),
    ("regression", "train_lr", lambda m: "0.1", TypeError, "lr must be a number, got a str"),
    ("regression", "train_lr", lambda m: True, TypeError, "got a bool"),
    ("regression", "train_lr", lambda m: np.array([0.1]), TypeError, "got a float64 array"),
    ("regression", "batch_size", lambda m: 0, ValueError, "batch_size must be at least 1"),
    ("regression", "batch_size", lambda m: -5, ValueError, "got -5"),
    ("regression", "batch_size", lambda m: 2.5, TypeError, "batch_size must be an integer"),
    ("regression", "batch_size", lambda m: None, TypeError, "got a NoneType"),
    ("regression", "init", lambda m: {"dtype": np.int32}, TypeError,
     "dtype must be float32 or float64, got int32"),
    ("regression", "init", lambda m: {"dtype": np.complex128}, TypeError, "got complex128"),
    ("regression", "init", lambda m: {"dtype": "float16"}, TypeError, "got float16"),
    ("regression", "init", lambda m: {"dtype": bool}, TypeError, "got bool"),
    ("regression", "init", lambda m: {"dtype": "nonsense"}, TypeError, "got 'nonsense'"),
    ("regression", "init", lambda m: {"seed": -1}, ValueError,
     "seed must be a non-negative integer, got -1"),
    ("regression", "init", lambda m: {"seed": "a"}, ValueError, "got 'a'"),
    # class labels
    ("labels", "train", lambda m: (np.zeros((6, 1, 4, 4)), np.arange(6) % 3 + 0.0), TypeError,
     "y must be integer class labels, got float64"),
    ("labels", "train", lambda m: (np.zeros((6, 1, 4, 4)), np.arange(6)), ValueError,
     "y must be class labels in 0..2, got labels from 0 to 5"),
    ("labels", "train", lambda m: (np.zeros((6, 1, 4, 4)), np.arange(6) % 3 - 1), ValueError,
     "got labels from -1 to 1"),
    ("labels", "train", lambda m: (np.zeros((6, 1, 4, 4)), np.eye(3)[np.arange(6) % 3]),
     TypeError, "integer class labels"),
    ("labels", "train", lambda m: (np.zeros((6, 1, 4, 4)), np.zeros((6, 1), int)), ValueError,
     "y must have shape (6,), a class label per example, got (6, 1)"),
    ("labels", "loss", lambda m: (m.init_params(), np.zeros((6, 1, 4, 4)), np.ones(6, bool)),
     TypeError, "got bool"),
    ("labels", "loss", lambda m: (m.init_params(), np.zeros((6, 1, 4, 4)),
                                  np.full(6, 2**40, np.uint64)), ValueError, "0..2"),
    ("onehot", "train", lambda m: (np.zeros((6, 1, 4, 4)), np.arange(6) % 3 + 0.0), ValueError,
     "y must have shape (6, 3) or integer class labels of shape (6,), got float64 of shape (6,)"),
    ("onehot", "train", lambda m: (np.zeros((6, 1, 4, 4)), np.arange(6)), ValueError,
     "class labels in 0..2"),
    ("onehot", "train", lambda m: (np.zeros((6, 1, 4, 4)), np.full((6, 3), 2.0)), ValueError,
     "y must hold categorical_cross_entropy targets in [0.0, 1.0], got values from 2.0"),
    # targets outside the loss's domain
    ("bce", "train", lambda m: (np.zeros((6, 2, 4, 4)), np.arange(12).reshape(6, 2) % 10),
     ValueError, "y must hold binary_cross_entropy targets in [0.0, 1.0], got values from 0 "
     "to 9"),
    ("bce", "train", lambda m: (np.zeros((6, 2, 4, 4)), np.full((6, 2), np.nan)), ValueError,
     "targets in [0.0, 1.0]"),
    ("bce", "train", lambda m: (np.zeros((6, 2, 4, 4)), -np.ones((6, 2))), ValueError,
     "got values from -1.0"),
    ("hinge", "train", lambda m: (np.zeros((6, 5)), np.arange(6) % 2), ValueError,
     "y must hold hinge targets -1.0 or 1.0 only, got 0"),
    ("hinge", "train", lambda m: (np.zeros((6, 5)), np.arange(6)), ValueError,
     "hinge targets -1.0 or 1.0"),
    ("hinge", "train", lambda m: (np.zeros((6, 5)), np.full((6, 1), 0.5)), ValueError,
     "got 0.5"),
]


def _call(m, entry, args):
    if entry == "loss":
        return m.loss_and_grad(*args)
    if entry == "predict":
        return m.predict(*args)
    if entry == "batch_size":
        return m.predict(m.init_params(), np.zeros((2,) + m.INPUT_SHAPE), batch_size=args)
    if entry == "init":
        return m.init_params(**args)
    params = m.init_params()
    state = m.init_state(params)
    if entry == "train_lr":
        x, y = batch(m)
        before = [p.copy() for p in params]
        try:
            return m.train_step(params, state, x, y, args)
        finally:  # refused before anything changed
            assert all(np.array_equal(a, b) for a, b in zip(params, before, strict=True))
    before = [p.copy() for p in params]
    try:
        return m.train_step(params, state, *args, 0.1)
    finally:
        assert all(np.array_equal(a, b) for a, b in zip(params, before, strict=True))
        assert state[0][0] == 0


@pytest.mark.parametrize(("name", "entry", "make", "error", "words"), HOSTILE,
                         ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(HOSTILE)])
def test_hostile_arguments_get_a_one_line_error(net, name, entry, make, error, words):
    m = net(name)
    with pytest.raises(error) as caught:
        _call(m, entry, make(m))
    message = str(caught.value)
    assert words in message and "\n" not in message


STATE = [
    (lambda s: s[:-1], ValueError, "state must be the list of 3 arrays init_state(params) "
     "returns, got 2"),
    (lambda s: "state", ValueError, "got a str"),
    (lambda s: [s[0].astype(float), *s[1:]], TypeError,
     "state[0] (the step count) must be a int64 array, got a float64 array of shape (1,)"),
    (lambda s: [np.zeros(2, np.int64), *s[1:]], ValueError,
     "state[0] (the step count) must have shape (1,), got (2,)"),
    (lambda s: [s[0], s[1].astype(np.float32), *s[2:]], TypeError,
     "state[1] (dense1.W v) must be a float64 array, got a float32 array"),
    (lambda s: [s[0], s[1].T, *s[2:]], ValueError,
     "state[1] (dense1.W v) must have shape (3, 16), got (16, 3)"),
    (lambda s: [s[0], s[1], s[2][:1]], ValueError,
     "state[2] (dense1.b v) must have shape (3,), got (1,)"),
    (lambda s: [s[0], s[1], np.broadcast_to(s[2], (3,))], ValueError, "writable"),
]


@pytest.mark.parametrize(("change", "error", "words"), STATE)
def test_hostile_optimizer_state_gets_a_one_line_error(net, change, error, words):
    m = net("regression")  # momentum: one slot per parameter
    params = m.init_params()
    state = change(m.init_state(params))
    x, y = batch(m)
    with pytest.raises(error) as caught:
        m.train_step(params, state, x, y)
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_read_only_parameters_are_refused_by_train_step_only(net):
    m = net("regression")
    params = m.init_params()
    params[0].flags.writeable = False
    x, y = batch(m)
    m.loss_and_grad(params, x, y)
    m.predict(params, x)
    with pytest.raises(ValueError, match=r"params\[0\] \(dense1.W\) must be a writable"):
        m.train_step(params, m.init_state(params), x, y)


def test_nadam_per_step_state_is_checked(net):
    m = net("bce")
    params = m.init_params()
    state = m.init_state(params)
    index = 1 + m.SLOTS.index("mu_product")
    assert state[index].tolist() == [1.0]
    state[index] = np.ones(1, np.float32)
    x, y = batch(m)
    with pytest.raises(TypeError, match=r"state\[3\] \(dense1.W mu_product\) must be a "
                                        "float64 array"):
        m.train_step(params, state, x, y)


# ---- unusual but valid arguments give the right result ------------------------------------


def test_valid_variants_agree(net):
    m = net("regression")
    params = m.init_params(seed=4)
    x, y = batch(m)
    loss, grads = m.loss_and_grad(params, x, y)
    for x2, y2 in [(x.tolist(), y.tolist()), (np.asfortranarray(x), y),
                   (np.repeat(x, 2, axis=0)[::2], np.repeat(y, 2, axis=0)[::2])]:
        loss2, grads2 = m.loss_and_grad(params, x2, y2)
        assert loss2 == loss
        for a, b in zip(grads, grads2, strict=True):
            np.testing.assert_array_equal(a, b)
    # float32 inputs are cast to the parameters' dtype
    assert m.loss_and_grad(params, x.astype(np.float32), y)[0] == pytest.approx(loss, rel=1e-6)
    out = m.predict(params, x, batch_size=np.int64(4))
    np.testing.assert_allclose(out, m.predict(params, x, batch_size=100), rtol=1e-12)
    assert m.predict(params, np.zeros((0,) + m.INPUT_SHAPE)).shape == (0, 3)
    assert m.init_params(dtype="float32")[0].dtype == np.float32
    state = m.init_state(params)
    assert m.train_step(params, state, x, y, 0) == loss  # lr 0 is allowed
    assert m.train_step(params, state, x, y, np.float32(0.01)) == loss


def test_integer_labels_equal_one_hot_rows(net):
    m = net("onehot")
    params = m.init_params(seed=5)
    x, y = batch(m)
    loss, grads = m.loss_and_grad(params, x, y)
    loss2, grads2 = m.loss_and_grad(params, x, np.eye(3)[y])
    assert loss == loss2
    for a, b in zip(grads, grads2, strict=True):
        np.testing.assert_array_equal(a, b)


def test_targets_inside_the_domain_are_taken(net):
    m = net("hinge")
    params = m.init_params()
    x, _ = batch(m)
    signs = np.array([1, -1, 1, 1, -1, -1])
    loss = m.loss_and_grad(params, x, signs)[0]
    assert m.loss_and_grad(params, x, signs.reshape(6, 1).astype(float))[0] == loss
    b = net("bce")
    params = b.init_params()
    x, _ = batch(b)
    assert np.isfinite(b.loss_and_grad(params, x, np.eye(2, dtype=bool)[np.arange(6) % 2])[0])
    assert np.isfinite(b.loss_and_grad(params, x, np.full((6, 2), 0.5))[0])
