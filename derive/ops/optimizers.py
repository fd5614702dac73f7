"""Every optimizer of the course notes, declared as its update equations.

One declaration per optimizer: an ordered tuple of assignments for one element of a
parameter array, read like statements (a symbol assigned earlier means its new value
afterwards) — state first, the weight last. The fused kernel, its generated module and
the tests follow from it. Defaults are PyTorch's where PyTorch has the optimizer, so
``derive`` and ``torch.optim`` compare one to one.
"""

from __future__ import annotations

import sympy as sp
from sympy import Rational, sqrt

from derive.registry import register
from derive.spec import Optimizer, Param, Slot, g, lr, t, w

# Hyper-parameters. The learning rate lr comes with the records (derive.spec).
mu = sp.Symbol("mu", nonnegative=True)
alpha = sp.Symbol("alpha", nonnegative=True)
rho = sp.Symbol("rho", nonnegative=True)
beta1 = sp.Symbol("beta1", nonnegative=True)
beta2 = sp.Symbol("beta2", nonnegative=True)
eps = sp.Symbol("eps", positive=True)
psi = sp.Symbol("momentum_decay", nonnegative=True)

# State slots and named intermediates.
v = sp.Symbol("v", real=True)  # Polyak's velocity, in weight units
delta_w = sp.Symbol("delta_w", real=True)  # Rumelhart's previous change Δw(t−1)
buf = sp.Symbol("buf", real=True)  # PyTorch's momentum buffer, in gradient units
m = sp.Symbol("m", real=True)  # first moment (running mean of g)
s = sp.Symbol("s", real=True)  # second moment or sum of g²
m_hat = sp.Symbol("m_hat", real=True)
s_hat = sp.Symbol("s_hat", real=True)
denom = sp.Symbol("denom", positive=True)
mu_t = sp.Symbol("mu_t", positive=True)
mu_next = sp.Symbol("mu_next", positive=True)
mu_product = sp.Symbol("mu_product", positive=True)


def _lr(default: float, latex: str = r"\eta") -> Param:
    return Param(lr, default, latex=latex)


GD = register(Optimizer(
    name="gd", title="Gradient descent", latex=r"\mathrm{GD}",
    params=(_lr(1e-3),),
    updates=((w, w - lr * g),),
    reference="w ← w − η g (Cauchy; seed 003, Definition 2.1). torch.optim.SGD with "
              "momentum=0 computes the same, and lr defaults to its 1e-3."))

MOMENTUM = register(Optimizer(
    name="momentum", title="Gradient descent with momentum (Polyak's heavy ball)",
    latex=r"\mathrm{GD}_{\mu}",
    params=(_lr(1e-3), Param(mu, 0.9, latex=r"\mu")),
    state=(Slot(v, latex="v"),),
    updates=((v, mu * v - lr * g), (w, w + v)),
    reference="Polyak (1964), seed 004 eq. (6.13): w(n+1) = w(n) − η ∇f(w(n)) + μ(w(n) − "
              "w(n−1)), written with the velocity v = w(n+1) − w(n). The learning rate is "
              "inside v, so a scheduled η scales only new gradients. torch.optim.SGD"
              "(momentum=μ) keeps b ← μb + g and steps w ← w − η b instead: with a constant "
              "η it is the same trajectory (v = −η b), under a schedule it is not. μ = 0.9 "
              "by default (PyTorch's 0 would be plain gradient descent)."))

MOMENTUM_RUMELHART = register(Optimizer(
    name="momentum_rumelhart", title="Momentum as in Rumelhart, Hinton and Williams (1986)",
    latex=r"\mathrm{GD}_{\alpha}",
    params=(_lr(1e-3, latex=r"\epsilon"), Param(alpha, 0.9, latex=r"\alpha")),
    state=(Slot(delta_w, latex=r"\Delta w"),),
    updates=((delta_w, -lr * g + alpha * delta_w), (w, w + delta_w)),
    reference="Rumelhart, Hinton and Williams (1986): Δw(t) = −ε ∂E/∂w(t) + α Δw(t−1), "
              "seed 004 Algorithm 2 (its eq. (6.14) drops the minus sign; the algorithm and "
              "the paper have it). As arithmetic this is Polyak's recurrence with μ = α and "
              "v = Δw — the two give bit-identical trajectories. They differ in lineage, not "
              "in the update: Polyak chooses β = ((√M − √m)/(√M + √m))² and the step from the "
              "Hessian's extreme eigenvalues, Rumelhart et al. treat α as a free constant "
              "(0.9) applied to the whole-training-set gradient."))

NESTEROV = register(Optimizer(
    name="nesterov", title="Nesterov accelerated gradient (in the form of Bengio et al., 2013)",
    latex=r"\mathrm{NAG}",
    params=(_lr(1e-3), Param(mu, 0.9, latex=r"\mu")),
    state=(Slot(buf, latex="b"),),
    updates=((buf, mu * buf + g), (w, w - lr * (g + mu * buf))),
    reference="torch.optim.SGD(momentum=μ, nesterov=True, dampening=0): b ← μb + g; "
              "w ← w − η(g + μb). This is Sutskever et al. (2013)'s v ← μv − η∇f(w + μv), "
              "w ← w + v after the change of variables w' = w + μv (Bengio et al., 2013), so "
              "the gradient is taken at the stored weights, not at a look-ahead point."))

ADAGRAD = register(Optimizer(
    name="adagrad", title="AdaGrad", latex=r"\mathrm{AdaGrad}",
    params=(_lr(1e-2), Param(eps, 1e-10, latex=r"\varepsilon")),
    state=(Slot(s, latex="s"),),
    updates=((s, s + g**2), (w, w - lr * g / (sqrt(s) + eps))),
    reference="Duchi, Hazan and Singer (2011); torch.optim.Adagrad with lr_decay=0 and "
              "initial_accumulator_value=0 (learning-rate decay belongs to a schedule)."))

RMSPROP = register(Optimizer(
    name="rmsprop", title="RMSProp", latex=r"\mathrm{RMSProp}",
    params=(_lr(1e-2), Param(rho, 0.99, latex=r"\rho"), Param(eps, 1e-8, latex=r"\varepsilon")),
    state=(Slot(s, latex="s"),),
    updates=((s, rho * s + (1 - rho) * g**2), (w, w - lr * g / (sqrt(s) + eps))),
    reference="Tieleman and Hinton (2012); torch.optim.RMSprop (uncentred, no momentum), "
              "whose decay ρ is called alpha there."))

ADAM = register(Optimizer(
    name="adam", title="Adam (bias-corrected)", latex=r"\mathrm{Adam}",
    params=(_lr(1e-3), Param(beta1, 0.9, latex=r"\beta_1"),
            Param(beta2, 0.999, latex=r"\beta_2"), Param(eps, 1e-8, latex=r"\varepsilon")),
    state=(Slot(m, latex="m"), Slot(s, latex="s")),
    updates=(
        (m, beta1 * m + (1 - beta1) * g),
        (s, beta2 * s + (1 - beta2) * g**2),
        (m_hat, m / (1 - beta1**t)),
        (s_hat, s / (1 - beta2**t)),
        (w, w - lr * m_hat / (sqrt(s_hat) + eps)),
    ),
    reference="Kingma and Ba (2015), Algorithm 1, with ε added to √ŝ as torch.optim.Adam "
              "does; t counts updates from 1."))

NADAM = register(Optimizer(
    name="nadam", title="Nadam (Adam with Nesterov momentum, Dozat, 2016)",
    latex=r"\mathrm{Nadam}",
    params=(_lr(2e-3), Param(beta1, 0.9, latex=r"\beta_1"),
            Param(beta2, 0.999, latex=r"\beta_2"), Param(eps, 1e-8, latex=r"\varepsilon"),
            Param(psi, 4e-3, latex=r"\psi")),
    state=(Slot(m, latex="m"), Slot(s, latex="s"),
           Slot(mu_product, latex=r"\bar{\mu}", init=1.0, per_step=True)),
    updates=(
        # The momentum schedule μ_t = β₁(1 − ½·0.96^{tψ}) of Dozat (2016), ψ = 1/250.
        (mu_t, beta1 * (1 - Rational(1, 2) * Rational(24, 25) ** (t * psi))),
        (mu_next, beta1 * (1 - Rational(1, 2) * Rational(24, 25) ** ((t + 1) * psi))),
        (mu_product, mu_product * mu_t),
        (m, beta1 * m + (1 - beta1) * g),
        (s, beta2 * s + (1 - beta2) * g**2),
        (s_hat, s / (1 - beta2**t)),
        (denom, sqrt(s_hat) + eps),
        (w, w - lr * (1 - mu_t) / (1 - mu_product) * g / denom
            - lr * mu_next / (1 - mu_product * mu_next) * m / denom),
    ),
    reference="torch.optim.NAdam (Dozat, 2016, with the momentum schedule μ_t = "
              "β₁(1 − ½·0.96^{tψ}), ψ = momentum_decay = 0.004): the gradient is bias-"
              "corrected by Π_{i≤t} μ_i and the first moment by Π_{i≤t+1} μ_i. The product "
              "is state, one value per parameter array (PyTorch keeps it in float32 unless "
              "its default dtype is float64; here it is always float64)."))

weight_decay = sp.Symbol("weight_decay", nonnegative=True)

# The decay shrinks w towards 0 whatever the gradient: declared, so that the check
# "a zero gradient leaves w alone" becomes "moves it by exactly this".
_decoupled_decay = -lr * weight_decay * w
_adam_step = ADAM.updates[-1]

ADAMW = register(Optimizer(
    name="adamw", title="AdamW (Adam with decoupled weight decay)", latex=r"\mathrm{AdamW}",
    # Adam's hyper-parameters, state and moments; only the last update gains the decay.
    params=(*ADAM.params, Param(weight_decay, 1e-2, latex=r"\lambda")),
    state=ADAM.state,
    updates=(*ADAM.updates[:-1], (_adam_step[0], _adam_step[1] + _decoupled_decay)),
    decay=_decoupled_decay,
    reference="Loshchilov and Hutter (2019), as torch.optim.AdamW computes it: w is first "
              "shrunk by the factor 1 − ηλ, then takes Adam's bias-corrected step. Unlike "
              "an L2 penalty added to the gradient, the decay is not divided by √ŝ, so "
              "every weight decays at the same rate. λ = 0.01 by default, as in PyTorch."))
