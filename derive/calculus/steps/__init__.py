"""Recorded derivations: the rules applied one at a time, each step checked.

A derivation is a chain of expressions. The first is d/dx f(x); each later one comes
from its predecessor by one rule applied to one unevaluated ``sympy.Derivative`` node
(the sum rule, the chain rule with a named inner function u, ...), in the style of the
course notes (seed 004, section 6.2). Once no derivative is left, the inner functions
are substituted back, the result is rearranged into the engine's derivative
(:func:`derive.calculus.derivation.derive_activation`) and, where one exists, written
in terms of the output y = f(x).

Every step is checked to equal its predecessor at seeded random points before the chain
is returned, so a wrong rule cannot reach a printed page. ``simplify`` is never used.

The package is split by what changes for different reasons:

``records``
    Step, StepChain and what each kind of declaration yields (ActivationSteps, ...).
``rules``
    Every rule of differentiation, one handler per expression type (:func:`rule_for`).
``checking``
    One way to check: materialise each expression and compare at seeded points.
``recording``
    :func:`record_derivative`, :class:`Recorder` and :func:`derivation_steps`, which
    dispatches a declaration to its kind's script:
``activation``, ``loss``, ``layer``, ``vector``
    The scripts, one per kind of declaration; a loss names its recipe
    (:attr:`derive.spec.Loss.recipe`).
"""

from derive.calculus.steps.activation import function_symbol
from derive.calculus.steps.checking import (
    check_chain,
    check_equal,
    check_identities,
    check_points,
    indexed_points,
    materialise,
    materialise_indexed,
    plain_sums,
)
from derive.calculus.steps.layer import (
    LAYER_SIZES,
    PRINTED_INDEX,
    layer_index_names,
    layer_instance,
)
from derive.calculus.steps.loss import (
    CASE,
    LOSS_INSTANCE,
    OPEN_SUM_OPS,
    RECIPES,
    ROW,
    loss_indices,
    loss_script,
    prediction_first,
    printed_term,
)
from derive.calculus.steps.recording import Recorder, derivation_steps, record_derivative
from derive.calculus.steps.records import (
    CHECK_POINTS,
    CHECK_TOLERANCE,
    INNER_NAMES,
    LOSS_NAME,
    RULES,
    ActivationSteps,
    D,
    GradientSteps,
    LayerSteps,
    LossSteps,
    NameSupply,
    NoRuleError,
    OpenSum,
    Rewrite,
    Step,
    StepChain,
    StepError,
    VectorSteps,
    sympified,
    with_step,
)
from derive.calculus.steps.rules import (
    SWEEPING,
    apply_rule,
    depends,
    fold_trivial,
    function_rule,
    local_rule,
    named_identities,
    rule_for,
    trivial_rule,
)
from derive.calculus.steps.vector import VECTOR_INSTANCE

__all__ = [
    "CASE", "CHECK_POINTS", "CHECK_TOLERANCE", "INNER_NAMES", "LAYER_SIZES", "LOSS_INSTANCE",
    "LOSS_NAME", "OPEN_SUM_OPS", "PRINTED_INDEX", "RECIPES", "ROW", "RULES", "SWEEPING",
    "VECTOR_INSTANCE", "ActivationSteps", "D", "GradientSteps", "LayerSteps", "LossSteps",
    "NameSupply", "NoRuleError", "OpenSum", "Recorder", "Rewrite", "Step", "StepChain",
    "StepError", "VectorSteps", "apply_rule", "check_chain", "check_equal",
    "check_identities", "check_points", "depends", "derivation_steps", "fold_trivial",
    "function_rule", "function_symbol", "indexed_points", "layer_index_names",
    "layer_instance", "local_rule", "loss_indices", "loss_script", "materialise",
    "materialise_indexed", "named_identities", "plain_sums", "prediction_first",
    "printed_term",
    "record_derivative", "rule_for", "sympified", "trivial_rule", "with_step",
]
