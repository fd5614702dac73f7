"""Regularisation and gradient clipping, declared as equations.

A regulariser is a penalty R(w) on one element of a weight array: training minimises the
data loss E plus Σ R(w), so every regularised weight's gradient gains ∂R/∂w, which is
derived from the penalty (:func:`derive.calculus.regularise.penalty_gradient`). A clip
rule limits the gradient of E first. A training step therefore uses, in PyTorch's order,

    g ← clip(∂E/∂w) + ∂R/∂w,   then the optimizer's update with that g,

which is what ``loss.backward()``, ``torch.nn.utils.clip_grad_*_`` and an optimizer with
``weight_decay`` (which adds λw to the gradient inside ``step()``) compute together.

A spec selects the regulariser whose strengths are exactly the ``[train]`` keys it sets
(``l2``, ``l1``, or both: elastic net), and a clip rule by its key (``clip_value``,
``clip_norm``). Biases (1-D parameters) are left unpenalised unless
``regularise_biases = true``.
"""

from __future__ import annotations

import sympy as sp

from derive.registry import register
from derive.spec import Clip, Param, Regulariser, g, grad_norm, grad_total, w

l1 = sp.Symbol("l1", nonnegative=True)
l2 = sp.Symbol("l2", nonnegative=True)
clip_value = sp.Symbol("clip_value", positive=True)
clip_norm = sp.Symbol("clip_norm", positive=True)

#: torch.nn.utils.clip_grad_norm_ adds this to the norm before dividing by it.
NORM_EPS = sp.Rational(1, 10**6)

L2 = register(Regulariser(
    name="l2", title="L2 penalty (weight decay coupled to the gradient)", latex=r"L_2",
    penalty=l2 / 2 * w**2,
    strengths=(Param(l2, 0.0, latex=r"\lambda"),),
    reference="R(w) = (λ/2) w², so ∂R/∂w = λw: the factor ½ makes λ PyTorch's "
              "weight_decay of torch.optim.SGD and torch.optim.Adam, which add λw to the "
              "gradient inside step()."))

L1 = register(Regulariser(
    name="l1", title="L1 penalty", latex=r"L_1",
    penalty=l1 * sp.Abs(w),
    strengths=(Param(l1, 0.0, latex=r"\lambda"),),
    reference="R(w) = λ|w|, so ∂R/∂w = λ sign(w), with sign(0) = 0 (the subgradient "
              "torch.abs's backward uses). PyTorch has no optimizer option for it: a "
              "training loop adds λ·sign(w) to each gradient."))

ELASTIC_NET = register(Regulariser(
    name="elastic_net", title="Elastic net (L1 and L2 penalties together)",
    latex=r"L_1 + L_2",
    penalty=L1.penalty + L2.penalty,
    strengths=(Param(l1, 0.0, latex=r"\lambda_1"), Param(l2, 0.0, latex=r"\lambda_2")),
    reference="Zou and Hastie (2005): R(w) = λ₁|w| + (λ₂/2) w², the two penalties with "
              "their own strengths, set by l1 and l2 together."))

#: Every regulariser, in the order a spec's keys are matched against their strengths.
REGULARISERS = (L2, L1, ELASTIC_NET)

CLIP_VALUE = Clip(
    name="clip_value", title="Gradient clipping by value", latex=r"\operatorname{clip}",
    threshold=Param(clip_value, 1.0, latex="c"),
    clipped=sp.Min(sp.Max(g, -clip_value), clip_value),
    reference="Each element of each gradient clamped to [−c, c], as "
              "torch.nn.utils.clip_grad_value_.")

CLIP_NORM = Clip(
    name="clip_norm", title="Gradient clipping by global norm", latex=r"\operatorname{clip}",
    threshold=Param(clip_norm, 1.0, latex="c"),
    clipped=g * sp.Min(clip_norm / (grad_norm + NORM_EPS), 1),
    summand=g**2,
    statistic=(grad_norm, sp.sqrt(grad_total)),
    reference="Every gradient scaled by min(c / (‖g‖ + 10⁻⁶), 1), ‖g‖ the L2 norm of all "
              "the gradients of the step together, as torch.nn.utils.clip_grad_norm_.")

#: Every clip rule, by its [train] key.
CLIPS = (CLIP_VALUE, CLIP_NORM)


def regulariser_for(keys) -> Regulariser | None:
    """The regulariser whose strengths are exactly ``keys``, or None for no keys.

    Parameters
    ----------
    keys : iterable of str
        The strength keys a spec sets to a value above 0 (``{"l1", "l2"}``).

    Raises
    ------
    KeyError
        When no declaration has exactly these strengths.
    """
    keys = frozenset(keys)
    if not keys:
        return None
    for reg in REGULARISERS:
        if frozenset(p.name for p in reg.strengths) == keys:
            return reg
    raise KeyError(f"no regulariser has the strengths {', '.join(sorted(keys))}")


def strength_keys() -> tuple[str, ...]:
    """Every ``[train]`` key that sets a regulariser's strength, each once."""
    return tuple(dict.fromkeys(p.name for reg in REGULARISERS for p in reg.strengths))
