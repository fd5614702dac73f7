"""Recorded derivations: every step follows from the one before, over the whole catalogue."""

import pytest
import sympy as sp

from derive.calculus import steps as steps_module
from derive.calculus.derivation import derive_activation
from derive.calculus.functions import Terms, sigmoid
from derive.calculus.steps import (
    RULES,
    StepError,
    check_chain,
    derivation_steps,
    record_derivative,
    recording,
    with_step,
)
from derive.errors import DeriveError
from derive.registry import all_ops, get
from derive.spec import x, y

ACTIVATIONS = all_ops("activation")
IDS = [op.name for op in ACTIVATIONS]
LOSSES = all_ops("loss")
LAYERS = all_ops("layer")
a = sp.Symbol("a", positive=True)

#: Formulas that exercise the rules the catalogue does not need.
EXTRA = {
    "power": x**3 + 2 * x,
    "power_as_exp": 2**x,
    "log": sp.log(1 + x**2),
    "product": x * sp.exp(x) * sp.sin(x),
    "sign": x * sp.sign(x),
    "abs": sp.Abs(x**2 - 1),
    "named_function": sp.atan(x) + sp.cosh(2 * x),
    "chain": sp.sqrt(1 + x**2),
}


@pytest.mark.parametrize("op", ACTIVATIONS, ids=IDS)
def test_every_step_equals_its_predecessor(op):
    chain = derivation_steps(op).derivative
    check_chain(chain)  # record_derivative already did; the chain must stay valid
    exprs = [chain.start] + [s.after for s in chain.steps]
    for i, step in enumerate(chain.steps):
        assert step.before == exprs[i]
        assert step.rule in RULES


@pytest.mark.parametrize("op", ACTIVATIONS, ids=IDS)
def test_chain_starts_from_the_definition_and_ends_with_the_engine(op):
    derivation = derive_activation(op)
    chain = derivation_steps(op).derivative
    assert chain.steps[0].rule == "definition"
    assert chain.start == sp.Derivative(sp.Function("f", real=True)(x), x, evaluate=False)
    rules = chain.rules()
    if rules[-1] == "in_terms_of_output":
        # the engine's derivative, or the same written factor by factor (σ(x)(1 − σ(x)))
        assert chain.steps[-1].before.doit() == derivation.derivative
        assert x not in chain.result.free_symbols or chain.result.has(sp.Piecewise)
        assert y in chain.result.free_symbols
    else:
        assert chain.result.doit() == derivation.derivative
    assert not any(s.after.has(sp.DiracDelta) for s in chain.steps)


@pytest.mark.parametrize("op", [o for o in ACTIVATIONS if o.learnable], ids=lambda o: o.name)
def test_learnable_parameters_get_their_own_chain(op):
    grads = dict(derive_activation(op).param_grads)
    for param, chain in derivation_steps(op).params:
        assert chain.var == param.symbol
        assert chain.result == grads[param]


def test_sigmoid_reaches_sigma_times_one_minus_sigma():
    chain = derivation_steps(get("sigmoid")).derivative
    rules = chain.rules()
    assert rules[0] == "definition" and "quotient" in rules and "chain_linear" in rules
    assert chain.steps[-2].after.doit() == sigmoid(x) * (1 - sigmoid(x))
    assert chain.steps[-1].rule == "in_terms_of_output"
    assert chain.result == y * (1 - y)
    # d/dx e^{−x} = −e^{−x} in one line: the inner −x has a constant derivative, so no
    # name u is introduced (and none is left to be confused with σ's argument).
    chain_step = chain.steps[rules.index("chain_linear")]
    assert chain_step.quote == (-x, -1)
    assert not any(step.inner for step in chain.steps[1:-1])


def test_chain_rule_names_an_inner_function_and_substitutes_it_back():
    chain = record_derivative(sp.tanh(a * x**2), x)
    assert chain.rules() == ("chain", "named_function", "constant_factor", "power",
                             "substitute_back")
    u = sp.Symbol("u", real=True)
    assert chain.steps[0].inner == ((u, a * x**2),)
    assert chain.steps[0].after == sp.Derivative(sp.tanh(u), u, evaluate=False) * \
        sp.Derivative(a * x**2, x, evaluate=False)
    assert not chain.result.has(u)


def test_an_inner_function_with_a_constant_derivative_takes_one_line():
    chain = record_derivative(sp.tanh(a * x), x)
    assert chain.rules() == ("chain_linear",)
    assert chain.steps[0].quote == (a * x, a)
    assert chain.result == a * (1 - sp.tanh(a * x) ** 2)


def test_the_quotient_rule_keeps_the_order_it_is_stated_in():
    # (g′h − gh′)/h² with g = x, h = 1 + |x|: h·1 first, then − x·h′.
    chain = record_derivative(x / (1 + sp.Abs(x)), x)
    first = chain.steps[0]
    assert first.rule == "quotient"
    numerator = [f for f in sp.Mul.make_args(first.after) if isinstance(f, Terms)]
    assert len(numerator) == 1
    assert numerator[0].args[0] == 1 + sp.Abs(x)
    assert numerator[0].args[1] == -x * sp.Derivative(1 + sp.Abs(x), x, evaluate=False)
    # 1′·h − 1·h′ with 1′ = 0 leaves −h′, not 0 − h′.
    sig = record_derivative(1 / (1 + sp.exp(-x)), x)
    assert not any(isinstance(t, Terms) and 0 in t.args
                   for step in sig.steps for t in sp.preorder_traversal(step.after))


def test_inner_names_avoid_symbols_already_in_use():
    uu = sp.Symbol("u", real=True)
    chain = record_derivative(sp.exp(uu * x**2), x)
    assert chain.steps[0].inner[0][0].name == "v"
    assert record_derivative(sp.exp(2 * x**2), x, avoid={"u"}).steps[0].inner[0][0].name == "v"


def test_constant_terms_are_dropped_in_one_step():
    chain = record_derivative(x**2 + a + 3, x)
    # folded into the sum rule's step: the derivative of a constant is not a step of its own
    assert chain.rules() == ("sum", "power")
    assert chain.steps[0].after == sp.Derivative(x**2, x, evaluate=False)
    assert [rule for rule, _ in chain.steps[0].folded] == ["constant"]


def test_a_trivial_derivative_left_by_a_given_step_is_a_step_of_its_own():
    chain = record_derivative(x, x, function=sp.Function("f", real=True)(x))
    assert chain.rules() == ("definition", "identity")


@pytest.mark.parametrize("rule", sorted(EXTRA))
def test_rules_beyond_the_catalogue(rule):
    chain = record_derivative(EXTRA[rule], x)
    assert rule in chain.rules()
    gap = (chain.result - sp.diff(EXTRA[rule], x)).subs(x, sp.Float("0.37")).evalf(30)
    assert float(gap) == pytest.approx(0, abs=1e-20)


def test_every_rule_is_exercised():
    """A rule no derivation reaches is a rule nobody has checked (UFL's lesson)."""
    seen = {"in_terms_of_output", "rewrite"}

    def see(chain):
        seen.update(chain.rules())
        seen.update(rule for step in chain.steps for rule, _ in step.folded)

    for op in ACTIVATIONS:
        see(derivation_steps(op).derivative)
    for expr in EXTRA.values():
        see(record_derivative(expr, x))
    for op in LOSSES:
        see(derivation_steps(op).chain)
    for op in LAYERS:
        layer = derivation_steps(op)
        # Intermediate arrays (batch norm's x̂, σ², μ) carry chains of their own.
        for g in (*layer.gradients, *layer.intermediates):
            if g.chain is not None:
                see(g.chain)
    for op in all_ops("vector"):
        if op.jacobian:
            steps = derivation_steps(op)
            see(steps.jacobian)
            see(steps.vjp)
    assert seen == set(RULES)


def test_planted_wrong_step_is_caught():
    chain = derivation_steps(get("sigmoid")).derivative
    i = chain.rules().index("chain_linear")
    bad = with_step(chain, i, after=chain.steps[i].after * 2)
    with pytest.raises(StepError, match=rf"step {i + 1} \(chain_linear\) does not follow"):
        check_chain(bad)


def test_planted_wrong_sign_in_the_final_form_is_caught():
    chain = derivation_steps(get("tanh")).derivative
    last = len(chain.steps) - 2  # 1 − tanh², before the form in y
    assert chain.steps[last].after == 1 - sp.tanh(x) ** 2
    bad = with_step(chain, last, after=1 + sp.tanh(x) ** 2)
    with pytest.raises(StepError, match="use_identity"):
        check_chain(bad)


def test_a_wrong_rule_fails_the_recording(monkeypatch):
    real = steps_module.apply_rule

    def sloppy(expr, names, **options):
        step = real(expr, names, **options)
        if step.rule == "exp":  # pretend d/du e^u = 2 e^u
            return steps_module.Step(step.rule, step.before, step.after * 2, step.focus,
                                     step.result * 2)
        return step

    # record_derivative calls the rule table through the module that records.
    monkeypatch.setattr(recording, "apply_rule", sloppy)
    with pytest.raises(StepError, match=r"\(exp\) does not follow"):
        record_derivative(sp.exp(3 * x**2), x)


def test_a_step_that_does_not_start_where_the_last_ended_is_caught():
    chain = record_derivative(x**2 + x, x)
    steps = list(chain.steps)
    steps[1] = steps_module.Step(steps[1].rule, x, steps[1].after)
    with pytest.raises(StepError, match="does not start where"):
        check_chain(steps_module.StepChain(x, chain.start, tuple(steps), chain.definitions))


def test_unknown_expression_type_names_the_gap():
    class Mystery(sp.Function):
        nargs = 2

    with pytest.raises(StepError, match="no derivation rule for Mystery"):
        record_derivative(Mystery(x, x), x)


def test_declarations_without_steps_say_so():
    with pytest.raises(DeriveError, match="not available yet"):
        derivation_steps(object())


def test_step_error_is_a_user_facing_error():
    assert issubclass(StepError, DeriveError)


# --- losses and layers: derivations over indexed sums ------------------------------------

yhat, yt, z = (sp.IndexedBase(name, real=True) for name in ("yhat", "y", "z"))
c, j, k = steps_module.CASE, sp.Symbol("j", integer=True, nonnegative=True), \
    sp.Symbol("k", integer=True, nonnegative=True)
Nn, Kk = sp.Symbol("N", integer=True, positive=True), sp.Symbol("K", integer=True, positive=True)


@pytest.mark.parametrize("op", LOSSES, ids=lambda o: o.name)
def test_every_loss_chain_is_checked_and_ends_in_the_engine_gradient(op):
    from derive.calculus.derivation import derive_loss

    steps = derivation_steps(op)
    chain = steps.chain
    check_chain(chain)
    rules = chain.rules()
    # The chain ends at the output k it was taken for: no renaming to j afterwards.
    assert rules[0] == "definition" and "back_to_index" not in rules
    assert rules.index("drop_cases") < rules.index("constant_terms")
    # The last line is the engine's gradient (the kernel's), with the printed indices.
    steps_module.check_equal(chain.result, steps.engine, chain, op.name)
    assert any(v.encoding == "dense" for v in derive_loss(op).variants) or "index" in op.targets


def test_half_sum_of_squares_takes_the_notes_steps_in_order():
    chain = derivation_steps(get("sse_half")).chain
    rules = chain.rules()
    order = ["definition", "drop_cases", "open_sum", "constant_terms", "chain", "power",
             "substitute_back"]
    assert [r for r in rules if r in order] == order
    (u, inner), = chain.steps[rules.index("chain")].inner
    assert u.name == "u" and inner == yhat[c, k] - yt[c, k]
    assert chain.steps[rules.index("substitute_back")].after == yhat[c, k] - yt[c, k]
    assert chain.result == yhat[c, k] - yt[c, k]


def test_mse_ends_in_twice_the_error_over_the_number_of_elements():
    chain = derivation_steps(get("mse")).chain
    assert sp.expand(chain.result - 2 * (yhat[c, k] - yt[c, k]) / (Nn * Kk)) == 0
    assert isinstance(chain.result, sp.Mul) and 2 in chain.result.args  # printed 2(ŷ − y)/(NK)


def test_softmax_cross_entropy_uses_one_hot_targets_and_ends_in_yhat_minus_y():
    chain = derivation_steps(get("softmax_cross_entropy")).chain
    rules = chain.rules()
    one_hot = chain.steps[rules.index("one_hot")]
    (lhs, rhs), = one_hot.identities
    assert lhs == sp.Sum(yt[c, j], (j, 0, Kk - 1)) and rhs == 1
    assert rules.index("log_quotient") < rules.index("drop_cases") < rules.index("one_hot") \
        < rules.index("name_output")
    assert chain.result == (yhat[c, k] - yt[c, k]) / Nn
    # The one-hot step holds only for targets whose rows sum to one: the check knows it.
    assert dict(chain.samples) == {yt: "rows"}


def test_binary_cross_entropy_with_logits_ends_in_sigma_minus_y():
    chain = derivation_steps(get("binary_cross_entropy_with_logits")).chain
    assert "log_sigmoid" in chain.rules()
    assert chain.result == (sigmoid(z[c, k]) - yt[c, k]) / (Nn * Kk)


@pytest.mark.parametrize("op", LOSSES, ids=lambda o: o.name)
def test_every_loss_names_a_recipe_with_a_script(op):
    assert op.recipe in steps_module.RECIPES


def test_the_recipe_field_not_the_name_chooses_the_script():
    from dataclasses import replace

    # The same softmax cross-entropy under another name keeps its own steps ...
    renamed = replace(get("softmax_cross_entropy"), name="renamed_softmax_ce")
    assert "one_hot" in derivation_steps(renamed).chain.rules()
    # ... and a recipe without a script is refused, naming the choices.
    unknown = replace(get("mse"), recipe="no_such_recipe")
    with pytest.raises(DeriveError, match="no_such_recipe.*no script"):
        derivation_steps(unknown)


def test_a_planted_wrong_step_in_a_loss_is_caught():
    chain = derivation_steps(get("mse")).chain
    i = chain.rules().index("constant_terms")
    # Keep the wrong term of the opened sum: ŷ_0 instead of ŷ_k.
    wrong = chain.steps[i].after.xreplace({yhat[c, k]: yhat[c, 0], yt[c, k]: yt[c, 0]})
    with pytest.raises(StepError, match=rf"step {i + 1} \(constant_terms\) does not follow"):
        check_chain(with_step(chain, i, after=wrong))


def test_the_one_hot_step_is_checked_with_rows_that_sum_to_one():
    from dataclasses import replace

    chain = derivation_steps(get("softmax_cross_entropy")).chain
    with pytest.raises(StepError, match="one_hot"):
        check_chain(replace(chain, samples=()))  # without the identity it is not an equality


def test_dense_layer_gradients_are_the_notes_formulas():
    steps = derivation_steps(get("dense"))
    W, xb, b, ds = (sp.IndexedBase(n_, real=True) for n_ in ("W", "x", "b", "d_s"))
    i, n, jj = (sp.Symbol(s_, integer=True, nonnegative=True) for s_ in ("i", "n", "j"))
    outputs = sp.Symbol("O", integer=True, positive=True)
    got = {g.array.label.name: (g.element, g.result, g.route) for g in steps.gradients}
    assert got["W"] == (W[jj, i], sp.Sum(ds[n, jj] * xb[n, i], (n, 0, Nn - 1)), "rules")
    assert got["b"] == (b[jj], sp.Sum(ds[n, jj], (n, 0, Nn - 1)), "rules")
    assert got["x"] == (xb[n, i], sp.Sum(W[jj, i] * ds[n, jj], (jj, 0, outputs - 1)), "rules")
    rules = steps.gradients[1].chain.rules()
    assert rules[:3] == ("chain_layer", "connected", "definition")
    # the bias's derivative (a constant) is dropped with the sum rule, then the sum opened
    folded = steps.gradients[1].chain.steps[rules.index("sum")].folded
    assert [rule for rule, _ in folded] == ["constant"]
    assert rules.index("sum") < rules.index("open_sum") < rules.index("constant_terms")


@pytest.mark.parametrize("op", LAYERS, ids=lambda o: o.name)
def test_every_layer_gradient_is_checked_against_the_engine(op):
    steps = derivation_steps(op)
    assert len(steps.gradients) == len(op.inputs) + len(op.weights)
    for g in steps.gradients:
        if g.chain is not None:
            check_chain(g.chain)
            steps_module.check_equal(g.chain.result, g.result, g.chain, f"{op.name} {g.element}")


def test_convolution_input_gradient_goes_through_kronecker_deltas():
    steps = derivation_steps(get("conv2d"))
    routes = {g.array.label.name: g.route for g in steps.gradients}
    assert routes == {"x_pad": "kronecker", "K": "rules", "b": "rules"}
    chain = next(g.chain for g in steps.gradients if g.route == "kronecker")
    assert chain.steps[-2].after.has(sp.KroneckerDelta)
    assert not chain.result.has(sp.KroneckerDelta)


def test_a_planted_wrong_step_in_a_layer_is_caught():
    steps = derivation_steps(get("dense"))
    chain = steps.gradients[1].chain  # ∂E/∂W
    i = chain.rules().index("connected")
    wrong = chain.steps[i].after * 2
    with pytest.raises(StepError, match=rf"step {i + 1} \(connected\) does not follow"):
        check_chain(with_step(chain, i, after=wrong))


def test_the_recorder_refuses_unknown_rules():
    rec = steps_module.Recorder(sp.Derivative(x**2, x), x)
    with pytest.raises(ValueError, match="unknown rule"):
        rec.step("magic", 2 * x)
