"""Learning-rate schedules against torch.optim.lr_scheduler, and initialisers against
torch.nn.init's formulas (fans, gains, bounds, deviations) — not its random streams."""

import math
import warnings

import numpy as np
import pytest
import torch

from derive.errors import DeriveError
from derive.train import init
from derive.train.schedules import (
    Constant,
    CosineAnnealing,
    ExponentialDecay,
    LinearWarmup,
    StepDecay,
    from_spec,
    lr_at,
)

LR = 0.1


def torch_rates(make, count, lr=LR):
    """The rate PyTorch's scheduler gives at counts 0 .. count − 1."""
    w = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([w], lr=lr)
    scheduler = make(opt)
    rates = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()"
        for _ in range(count):
            rates.append(opt.param_groups[0]["lr"])
            opt.step()
            scheduler.step()
    return np.array(rates)


SCHEDULERS = [
    ("constant", Constant(LR), lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda e: 1.0)),
    ("step", StepDecay(LR, step_size=3, gamma=0.5),
     lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5)),
    ("step default gamma", StepDecay(LR, step_size=2),
     lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=2)),
    ("exponential", ExponentialDecay(LR, gamma=0.9),
     lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.9)),
    ("cosine", CosineAnnealing(LR, t_max=10),
     lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10)),
    ("cosine with floor", CosineAnnealing(LR, t_max=7, eta_min=0.01),
     lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=7, eta_min=0.01)),
    ("linear warmup", LinearWarmup(Constant(LR), warmup=4, start_factor=0.25),
     lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=0.25, total_iters=4)),
    ("warmup then step", LinearWarmup(StepDecay(LR, 3, 0.5), warmup=4),
     lambda o: torch.optim.lr_scheduler.SequentialLR(o, [
         torch.optim.lr_scheduler.LinearLR(o, start_factor=1 / 3, total_iters=4),
         torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5)], milestones=[4])),
]


@pytest.mark.parametrize("name, schedule, make", SCHEDULERS, ids=[s[0] for s in SCHEDULERS])
def test_schedule_matches_torch(name, schedule, make):
    count = 25  # past cosine's T: both keep following the cosine back up
    ours = np.array([lr_at(schedule, t) for t in range(count)])
    np.testing.assert_allclose(ours, torch_rates(make, count), rtol=1e-12, atol=1e-15 * LR)


def test_the_notes_formulas():
    """Seed 003 §9.1: α₀γ^⌊t/s⌋ and α₀e^(−kt); cosine starts at α₀, halves at T/2, ends at 0."""
    assert lr_at(StepDecay(1.0, 10, 0.5), 25) == 0.25
    assert lr_at(ExponentialDecay.from_rate(2.0, k=0.3), 4) == pytest.approx(2 * math.exp(-1.2),
                                                                             rel=1e-15)
    cosine = CosineAnnealing(1.0, t_max=8)
    assert [lr_at(cosine, t) for t in (0, 4, 8)] == pytest.approx([1.0, 0.5, 0.0], abs=1e-16)
    assert all(lr_at(cosine, t) >= 0 for t in range(30))  # never negative, unlike α₀cos(πt/T)


def test_from_spec():
    assert from_spec(None, 0.1, 20) == Constant(0.1)
    assert from_spec("cosine", 0.1, 20) == CosineAnnealing(0.1, 20)
    assert from_spec({"name": "step", "step_size": 5, "gamma": 0.5}, 0.1, 20) == StepDecay(
        0.1, 5, 0.5)
    assert from_spec({"name": "exponential", "k": 0.1}, 1.0, 5).gamma == math.exp(-0.1)
    warm = from_spec({"name": "cosine", "warmup": 3}, 0.1, 20)
    assert warm == LinearWarmup(CosineAnnealing(0.1, 20), 3)
    with pytest.raises(DeriveError, match="cosine"):
        from_spec("cosin", 0.1, 20)
    with pytest.raises(DeriveError, match="no parameter"):
        from_spec({"name": "step", "size": 3}, 0.1, 20)
    with pytest.raises(DeriveError, match="positive"):
        StepDecay(0.1, step_size=0)


def test_unknown_schedule_type_is_named():
    with pytest.raises(TypeError, match="no learning-rate rule for str"):
        lr_at("cosine", 3)


# --- initialisers ----------------------------------------------------------------------

SHAPES = [(10, 7), (16, 3, 3, 3), (8, 4, 5), (1, 1), (32, 1, 5, 5)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_fans_are_pytorchs(shape):
    want = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
    assert init.fan_in_and_fan_out(shape) == want


def test_fans_need_two_dimensions():
    with pytest.raises(ValueError, match="at least 2"):
        init.fan_in_and_fan_out((5,))


@pytest.mark.parametrize("nonlinearity, param", [
    ("linear", None), ("conv2d", None), ("sigmoid", None), ("tanh", None), ("relu", None),
    ("leaky_relu", None), ("leaky_relu", 0.2), ("selu", None),
])
def test_gains_are_pytorchs(nonlinearity, param):
    assert init.calculate_gain(nonlinearity, param) == pytest.approx(
        torch.nn.init.calculate_gain(nonlinearity, param), rel=1e-15)


def _same_draws(torch_init, ours_kind, parameter, shape):
    """PyTorch's initialiser and a plain uniform_/normal_ with our bound or deviation,
    from one seeded generator, give the same tensor exactly when the two agree."""
    a, b = torch.empty(shape), torch.empty(shape)
    torch_init(a, torch.Generator().manual_seed(0))
    draw = b.uniform_ if ours_kind == "uniform" else b.normal_
    if ours_kind == "uniform":
        draw(-parameter, parameter, generator=torch.Generator().manual_seed(0))
    else:
        draw(0.0, parameter, generator=torch.Generator().manual_seed(0))
    return torch.equal(a, b)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_bounds_and_deviations_are_pytorchs(shape):
    nn = torch.nn.init
    cases = [
        (lambda t, gen: nn.xavier_uniform_(t, gain=1.5, generator=gen), "uniform",
         init.xavier_bound(shape, 1.5)),
        (lambda t, gen: nn.xavier_normal_(t, generator=gen), "normal", init.xavier_std(shape)),
        (lambda t, gen: nn.kaiming_uniform_(t, generator=gen), "uniform",
         math.sqrt(3) * init.kaiming_std(shape)),
        (lambda t, gen: nn.kaiming_normal_(t, mode="fan_out", nonlinearity="relu",
                                           generator=gen), "normal",
         init.kaiming_std(shape, mode="fan_out", nonlinearity="relu")),
        (lambda t, gen: nn.kaiming_uniform_(t, a=0.2, generator=gen), "uniform",
         math.sqrt(3) * init.kaiming_std(shape, a=0.2)),
    ]
    for torch_init, kind, parameter in cases:
        assert _same_draws(torch_init, kind, parameter, shape)


def test_xavier_uniform_is_the_notes_bound():
    # Seed 003 §9.2: U(−√(6/(n_in + n_out)), +√(6/(n_in + n_out))) for a (128, 784) layer.
    assert init.xavier_bound((128, 784)) == math.sqrt(6 / (784 + 128))


#: name → (options, "uniform" bound or "normal" deviation, the expected value).
DISTRIBUTIONS = {
    "xavier_uniform": ({}, "uniform", math.sqrt(6 / (300 + 200))),
    "glorot_uniform": ({"gain": 2.0}, "uniform", 2 * math.sqrt(6 / (300 + 200))),
    "xavier_normal": ({}, "normal", math.sqrt(2 / (300 + 200))),
    "he_uniform": ({}, "uniform", math.sqrt(6 / 200)),
    "he_normal": ({}, "normal", math.sqrt(2 / 200)),
    "kaiming_normal": ({"mode": "fan_out"}, "normal", math.sqrt(2 / 300)),
    "normal": ({"std": 0.05}, "normal", 0.05),
}


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_draws_have_the_stated_distribution(name):
    options, kind, value = DISTRIBUTIONS[name]
    W = init.initialise(name, (300, 200), np.random.default_rng(0), **options)
    assert W.shape == (300, 200) and W.dtype == np.float64
    assert abs(W.mean()) < 4 * W.std() / math.sqrt(W.size)
    if kind == "uniform":
        assert np.abs(W).max() <= value
        assert np.abs(W).max() > 0.999 * value
        assert W.std() == pytest.approx(value / math.sqrt(3), rel=0.01)
    else:
        assert W.std() == pytest.approx(value, rel=0.01)


def test_conv_kernels_use_the_receptive_field():
    W = init.kaiming_normal((64, 3, 5, 5), 1)
    assert W.std() == pytest.approx(math.sqrt(2 / 75), rel=0.02)


def test_seeding_and_dtypes():
    a = init.xavier_uniform((4, 3), 7)
    b = init.xavier_uniform((4, 3), np.random.default_rng(7))
    c = init.xavier_uniform((4, 3), 7, dtype=np.float32)
    np.testing.assert_array_equal(a, b)
    assert c.dtype == np.float32
    np.testing.assert_array_equal(c, a.astype(np.float32))
    rng = np.random.default_rng(3)
    assert not np.array_equal(init.normal((3,), rng), init.normal((3,), rng))
    with pytest.raises(TypeError, match="Generator or an int seed"):
        init.normal((3,), 0.5)


def test_unknown_names_suggest():
    with pytest.raises(DeriveError, match="xavier_uniform"):
        init.initialise("xavier_uniformm", (3, 2), 0)
    with pytest.raises(DeriveError, match="relu"):
        init.calculate_gain("rellu")
    assert init.initialise("zeros", (2, 2), None).sum() == 0
