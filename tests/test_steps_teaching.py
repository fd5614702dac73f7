"""The steps that teach are shown, and the trivial ones folded, in both languages.

Issue 13, item 1: sigmoid splits its fraction and recognises σ and 1 − σ; tanh is
derived from sinh/cosh to sech² and 1 − tanh²; softsign uses x·sgn(x) = |x| and is
written in terms of its output; binary cross-entropy brings its fractions to a common
denominator; "the derivative of a constant is zero" and "dx/dx = 1" are clauses of the
step that needs them, not numbered steps of their own.
"""

import re

import pytest
import sympy as sp

from derive.calculus.functions import Factors, sigmoid
from derive.calculus.steps import StepError, check_chain, derivation_steps, with_step
from derive.latex.render import render
from derive.registry import all_ops, get
from derive.spec import x

LANGS = ("pt", "en")


def article(name: str, lang: str) -> str:
    return render(get(name), "article", lang)


def derivation(text: str) -> str:
    """The step-by-step part of an activation or loss article (the first align or align*)."""
    start = re.search(r"\\begin\{align\*?\}", text)
    end = re.search(r"\\end\{align\*?\}", text[start.end():])
    return text[start.start():start.end() + end.start()]


def numbered_steps(text: str) -> int:
    """Lines of the first align: each is a numbered step."""
    return derivation(text).count(r"&=")


@pytest.mark.parametrize("lang", LANGS)
def test_sigmoid_splits_the_fraction_and_recognises_sigma_and_one_minus_sigma(lang):
    text = derivation(article("sigmoid", lang))
    split = r"\frac{1}{1 + e^{- x}} \cdot \frac{e^{- x}}{1 + e^{- x}}"
    identity = (r"1 - \sigma(x) = 1 - \frac{1}{1 + e^{- x}} = \frac{1 + e^{- x} - 1}{1 + e^{- x}}"
                r" = \frac{e^{- x}}{1 + e^{- x}}")
    assert split in text and identity in text
    assert text.index(split) < text.index(identity)
    assert r"\sigma(x) \left(1 - \sigma(x)\right)" in text
    # σ is never stated at u, the name the chain rule gave to −x
    assert r"\sigma(u)" not in text
    assert {"Reorganizando", "Rearranging"}.isdisjoint(text.split())


def test_sigmoid_chain_ends_in_the_split_product_then_the_identities():
    chain = derivation_steps(get("sigmoid")).derivative
    rules = chain.rules()
    assert rules[-4:] == ("chain_linear", "split_product", "use_identity",
                          "in_terms_of_output")
    assert chain.steps[-3].after == Factors(1 / (1 + sp.exp(-x)), sp.exp(-x) / (1 + sp.exp(-x)))
    assert chain.steps[-2].after.doit() == sigmoid(x) * (1 - sigmoid(x))
    assert "rewrite" not in rules


def test_a_wrong_identity_quoted_by_a_step_is_caught():
    chain = derivation_steps(get("sigmoid")).derivative
    i = chain.rules().index("use_identity")
    wrong = ((1 - sigmoid(x), sp.exp(x) / (1 + sp.exp(-x))),)
    with pytest.raises(StepError, match="quotes"):
        check_chain(with_step(chain, i, identities=wrong))


@pytest.mark.parametrize("lang", LANGS)
def test_tanh_is_derived_from_sinh_over_cosh_to_sech_squared(lang):
    whole = article("tanh", lang)
    shown = r"\tanh(x) = \frac{\sinh(x)}{\cosh(x)} = \frac{e^{x} - e^{- x}}{e^{x} + e^{- x}}"
    assert shown in whole
    assert r"\tanh(x) = \tanh(x)" not in whole
    text = derivation(whole)
    # (cosh² − sinh²)/cosh² = 1 − sinh²/cosh² = 1 − tanh² in one pass, each fraction
    # once; the notes' sech² is named after the result, not reached and then undone.
    assert text.count(r"\frac{\cosh^{2}(x) - \sinh^{2}(x)}{\cosh^{2}(x)}") == 1
    assert r"1 - \tanh^{2}(x)" in text
    assert r"\operatorname{sech}" not in text
    after = whole[whole.index(r"\boxed{\tanh'(x) = 1 - \tanh^{2}(x)}"):]
    assert r"\frac{1}{\cosh^{2}(x)} = \operatorname{sech}^{2}(x)" in after


def test_tanh_uses_the_quotient_rule_not_a_quoted_derivative_of_tanh():
    chain = derivation_steps(get("tanh")).derivative
    assert "quotient" in chain.rules()
    quoted = [ident for s in chain.steps if s.rule == "named_function" for ident in s.identities]
    assert {type(lhs.expr) for lhs, _ in quoted} == {sp.sinh, sp.cosh}


@pytest.mark.parametrize("lang", LANGS)
def test_softsign_uses_x_sgn_x_and_is_written_in_terms_of_its_output(lang):
    whole = article("softsign", lang)
    text = derivation(whole)
    assert r"x \operatorname{sgn}(x) = \left|{x}\right|" in text
    ax = r"\left|{x}\right|"
    cancelled = rf"\frac{{\left(1 + {ax}\right) - {ax}}}{{\left(1 + {ax}\right)^{{2}}}}"
    assert cancelled in text
    assert r"\left(1 - \left|{y}\right|\right)^{2}" in text
    assert r"1 - \left|{y}\right| = 1 - \frac{\left|{x}\right|}{1 + \left|{x}\right|}" in text
    assert r"\boxed{\operatorname{softsign}'(x) = \left(1 - \left|{y}\right|\right)^{2}}" in whole
    # and the document says so where the notes say otherwise (section 7.6)
    assert "7.6" in whole[re.search(r"\\end\{align\*?\}", whole).end():]


@pytest.mark.parametrize("lang", LANGS)
def test_binary_cross_entropy_brings_its_fractions_to_a_common_denominator(lang):
    text = derivation(article("binary_cross_entropy", lang))
    # The minus sign in front and the order y/ŷ, then (1 − y)/(1 − ŷ), kept throughout.
    common = (r"- \frac{{y}_{k} \left(1 - {\hat{y}}_{k}\right) - \left(1 - {y}_{k}\right) "
              r"{\hat{y}}_{k}}{K N \left(1 - {\hat{y}}_{k}\right) {\hat{y}}_{k}}")
    expanded = (r"- \frac{{y}_{k} - {y}_{k} {\hat{y}}_{k} - {\hat{y}}_{k} + {y}_{k} {\hat{y}}_{k}}")
    result = r"\frac{{\hat{y}}_{k} - {y}_{k}}{K N \left(1 - {\hat{y}}_{k}\right) {\hat{y}}_{k}}"
    assert common in text and expanded in text
    assert text.index(common) < text.index(expanded)
    # The simplified fraction is the result, boxed once after the derivation.
    boxed = r"\boxed{\frac{\partial \operatorname{BCE}}{\partial {\hat{y}}_{k}} = " + result
    assert boxed in article("binary_cross_entropy", lang)


#: Numbered steps of each derivation, the trivial ones folded and the teaching ones
#: added (before: sigmoid 12 steps, 4 of them trivial; tanh 3, its derivative quoted;
#: softsign 7; binary cross-entropy 18, 3 trivial; its result is now boxed once after
#: the steps, not repeated as a last step, nor renamed back to the index j; its runs of
#: trivial steps — sum rule, constant factor, ∂ŷ/∂ŷ = 1 — are one step each since).
#: Sigmoid 10 → 7: d/dx e^{−x} = −e^{−x} is one chain-rule line (the inner −x has a
#: constant derivative), not a name u, the rule for e^u, ∂x/∂x = 1 and u substituted back.
#: Sigmoid and softsign 7 → 6: the sum rule that only drops h's constant is a clause of the
#: quotient rule; tanh 7 → 6: sinh' = cosh and cosh' = sinh are quoted in one step.
STEP_COUNTS = {"sigmoid": 6, "tanh": 6, "softsign": 6, "binary_cross_entropy": 9,
               "relu": 2}


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", sorted(STEP_COUNTS))
def test_trivial_steps_are_folded_into_the_step_that_needs_them(name, lang):
    assert numbered_steps(article(name, lang)) == STEP_COUNTS[name]


@pytest.mark.parametrize("lang", LANGS)
def test_folded_steps_are_said_in_a_clause(lang):
    text = derivation(article("sigmoid", lang))
    constant = {"pt": "a derivada de uma constante é zero",
                "en": "the derivative of a constant is zero"}[lang]
    quotient = next(line for line in text.splitlines() if "quociente" in line or
                    "quotient" in line)
    summed = {"pt": "a derivada de uma soma é a soma das derivadas das parcelas",
              "en": "the derivative of a sum is the sum of the derivatives of its terms"}[lang]
    and_ = {"pt": " e ", "en": " and "}[lang]
    assert quotient.endswith(f"; {summed}{and_}{constant}:}}")
    # ∂x/∂x = 1 is a clause of the quotient rule that meets it (softsign's g = x).
    softsign = derivation(article("softsign", lang))
    # Kept on one line (\mbox): a break at its '=' left '1:' alone on the next line.
    assert r" \mbox{$\frac{d}{dx} x = 1$}:" in softsign


def _chains():
    for op in all_ops("activation"):
        steps = derivation_steps(op)
        yield op.name, steps.derivative
        for _, chain in steps.params:
            yield op.name, chain
    for op in all_ops("loss"):
        yield op.name, derivation_steps(op).chain


def test_no_numbered_step_of_the_catalogue_only_drops_a_constant_or_dx_dx():
    """A constant or dx/dx is a step of its own only right after a given step."""
    for name, chain in _chains():
        for i, step in enumerate(chain.steps):
            if step.rule in ("constant", "identity"):
                given = chain.steps[i - 1].rule if i else "start"
                assert given in ("definition", "constant_terms", "start"), (name, i, given)


@pytest.mark.parametrize("lang", LANGS)
def test_every_activation_and_loss_article_renders_its_folded_clauses(lang):
    for op in all_ops("activation") + all_ops("loss"):
        text = render(op, "article", lang)
        assert "folded" not in text
        assert not re.search(r";\s*:", text), op.name


@pytest.mark.parametrize("lang", LANGS)
def test_softmax_derives_its_jacobian_with_the_kronecker_delta(lang):
    text = render(get("softmax"), "article", lang)
    sm = r"{\operatorname{softmax}}"
    jacobian = (rf"\boxed{{\frac{{\partial {sm}_{{k}}}}{{\partial {{z}}_{{j}}}} = "
                rf"{sm}_{{k}} \left(\delta_{{kj}} - {sm}_{{j}}\right)}}")
    vjp = (r"\boxed{\frac{\partial E}{\partial {z}_{j}} = {\operatorname{softmax}}_{j} "
           r"\left({g}_{j} - \sum_{k=1}^{K} {g}_{k} \, {\operatorname{softmax}}_{k}\right)}")
    assert jacobian in text and vjp in text
    assert text.index(jacobian) < text.index(vjp)
    # the quotient rule and δ_kj on the way, and the kernel's product at the end
    assert text.count(r"\delta_{kj}") >= 4
    assert (r"\frac{\partial E}{\partial {z}_{n,j}} = {\operatorname{softmax}}_{n,j} "
            r"\left({g}_{n,j}") in text


def test_softmax_jacobian_is_checked_on_and_off_the_diagonal():
    steps = derivation_steps(get("softmax"))
    assert steps.jacobian.rules()[:3] == ("definition", "quotient", "delta")
    assert steps.vjp.rules()[-2:] == ("delta_sum", "common_factor")
    i = len(steps.jacobian.steps) - 1
    last = steps.jacobian.steps[i].after
    k, j = sp.symbols("k j", integer=True, nonnegative=True)
    wrong = last.xreplace({sp.KroneckerDelta(k, j): sp.Integer(0)})  # right only for k ≠ j
    off = with_step(steps.jacobian, i, after=wrong)
    check_chain(off)  # the instance k = 2, j = 1 cannot tell
    diagonal = dict(off.instance) | {k: 1}
    from dataclasses import replace
    with pytest.raises(StepError, match="common_factor"):
        check_chain(replace(off, instance=tuple(diagonal.items())))


@pytest.mark.parametrize("lang", LANGS)
def test_log_softmax_derives_its_jacobian_and_names_the_softmax(lang):
    text = render(get("log_softmax"), "article", lang)
    ls, sm = r"{\log\operatorname{softmax}}", r"{\operatorname{softmax}}"
    jacobian = (rf"\boxed{{\frac{{\partial {ls}_{{k}}}}{{\partial {{z}}_{{j}}}} = "
                rf"\delta_{{kj}} - {sm}_{{j}}}}")
    # the softmax appears as the fraction, and as what the output of the forward pass gives
    named = rf"= e^{{{ls}_{{j}}}} \]"
    vjp = rf"\boxed{{\frac{{\partial E}}{{\partial {{z}}_{{j}}}} = {{g}}_{{j}} - {sm}_{{j}} \sum_"
    for piece in (jacobian, named, vjp):
        assert piece in text
    assert text.index(named) < text.index(jacobian) < text.index(vjp)
    # ∂z_k/∂z_j = δ_kj and the chain rule through the logarithm of the row sum
    assert r"\frac{\partial {z}_{k}}{\partial {z}_{j}} = \delta_{kj}" in text
    assert r"u = \sum_" in text


def test_log_softmax_steps_are_checked_on_and_off_the_diagonal():
    from dataclasses import replace

    steps = derivation_steps(get("log_softmax"))
    # (the sum rule has no line of its own: the δ_kj step takes the terms one by one)
    assert steps.jacobian.rules() == ("definition", "delta", "chain", "constant_terms",
                                      "name_softmax")
    assert steps.vjp.rules()[-1] == "delta_sum"
    i = len(steps.jacobian.steps) - 1
    k, j = sp.symbols("k j", integer=True, nonnegative=True)
    wrong = steps.jacobian.steps[i].after.xreplace({sp.KroneckerDelta(k, j): sp.Integer(0)})
    off = with_step(steps.jacobian, i, after=wrong)
    check_chain(off)  # k = 2, j = 1 cannot tell
    with pytest.raises(StepError, match="name_softmax"):
        check_chain(replace(off, instance=tuple((dict(off.instance) | {k: 1}).items())))


#: Issue 13, item 1: activations whose rules end in a fraction show the algebra that
#: reaches the printed derivative (no unexplained "rewriting" jump).
ACTIVATION_ALGEBRA = {
    "silu": (r"\frac{1}{1 + e^{- x}} + x \cdot \frac{1}{1 + e^{- x}} \cdot "
             r"\frac{e^{- x}}{1 + e^{- x}}",
             r"\sigma(x) + x \sigma(x) \left(1 - \sigma(x)\right)",
             r"\sigma(x) \left(1 + x \left(1 - \sigma(x)\right)\right)"),
    "wilson_cowan": (r"1 - \sigma(a \left(x - \theta\right)) = "
                     r"\frac{e^{- a \left(x - \theta\right)}}{1 + e^{- a \left(x - \theta\right)}}",
                     r"a \sigma(a \left(x - \theta\right)) "
                     r"\left(1 - \sigma(a \left(x - \theta\right))\right)"),
    "softplus": (r"\frac{e^{\beta x}}{1 + e^{\beta x}} = \frac{1}{1 + e^{- \beta x}} = "
                 r"\sigma(\beta x)",),
    "gelu": (r"\Phi(x) = \frac{1}{2} + \frac{\operatorname{erf}",
             r"x \frac{e^{- x^{2} / 2}}{\sqrt{2 \pi}} + \Phi(x)"),
}


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", sorted(ACTIVATION_ALGEBRA))
def test_activation_shows_the_algebra_to_its_derivative(name, lang):
    text = article(name, lang)
    pieces = ACTIVATION_ALGEBRA[name]
    for piece in pieces:
        assert piece in text, piece
    positions = [text.index(piece) for piece in pieces]
    assert positions == sorted(positions)
    assert "rewrite" not in derivation_steps(get(name)).derivative.rules()


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", ["batch_norm", "layer_norm"])
def test_normalisation_weights_are_derived_step_by_step(name, lang):
    """γ and β are read by the output only, so their chains are written out (issue 13)."""
    steps = derivation_steps(get(name))
    chained = {g.array.label.name: g for g in steps.gradients if g.chain is not None}
    assert set(chained) == {"x", "gamma", "beta"}
    assert chained["gamma"].chain.rules()[:3] == ("chain_layer", "connected", "definition")
    text = article(name, lang)
    gamma, xhat = r"{\gamma}", r"{\hat{x}}"
    # the output's definition differentiated by γ, then the boxed Σ δ x̂
    assert rf"\frac{{\partial}}{{\partial {gamma}_" in text
    assert rf"\left[{gamma}_" in text and rf"{xhat}_" in text
    box = text.index(rf"\boxed{{\frac{{\partial E}}{{\partial {gamma}_")
    assert text.index(rf"\left[{gamma}_") < box
    assert rf"{xhat}_" in text[box:text.index(r"\end{equation}", box)]



def _box(text: str, lhs: str) -> str:
    """The boxed result whose left-hand side starts with ``lhs``."""
    start = text.index(rf"\boxed{{\frac{{\partial E}}{{\partial {lhs}")
    return text[start:text.index(r"\end{equation}", start)]


@pytest.mark.parametrize("lang", LANGS)
def test_batch_norm_derives_every_gradient_through_its_steps(lang):
    """x̂, σ², μ and x step by step (issue 13): (σ² + ε)^{3/2}, Σ(x − μ) = 0 dropped, m."""
    steps = derivation_steps(get("batch_norm"))
    for g in steps.intermediates + steps.gradients:
        assert g.chain is not None, g.array
    rules = {g.array.label.name: g.chain.rules() for g in steps.intermediates + steps.gradients}
    assert rules["var"][:2] == rules["mu"][:2] == rules["x"][:2] == ("chain_steps",
                                                                      "definition")
    assert rules["mu"][-1] == "zero_sum" and "zero_sum" not in rules["var"] + rules["x"]
    text = article("batch_norm", lang)
    var, mu = r"\sigma^{2}_{c}", r"{\mu}_{c}"
    # ∂E/∂σ² = −1/(2 (σ² + ε)^{3/2}) Σ (x − μ) ∂E/∂x̂, without the expanded denominator
    assert r"2 \left(\sigma^{2}_{c} + \varepsilon\right)^{\frac{3}{2}}" in _box(text, var)
    assert r"2 \varepsilon \sqrt{" not in text
    # the deviations from the mean add up to zero, said and shown before ∂E/∂μ's box
    zero = (r"\left({x}_{n,c,h,w} - {\mu}_{c}\right) = \sum_{n=1}^{N} \sum_{h=1}^{H} "
            r"\sum_{w=1}^{W} {x}_{n,c,h,w} - m {\mu}_{c} = 0")
    assert zero in text
    assert ("somam zero" if lang == "pt" else "add up to zero") in text
    assert text.index(zero) < text.index(_box(text, mu))
    # so ∂E/∂μ has no ∂E/∂σ² term; the count is m = N·H·W, never a product H N W
    assert r"\partial \sigma^{2}" not in _box(text, mu)
    assert r"m = N \cdot H \cdot W" in text
    assert "H N W" not in text and r"\frac{1}{m}" in text
    # ∂E/∂x: the three steps that read x, each with its gradient
    box = _box(text, "{x}")
    for part in (r"\frac{\partial E}{\partial \mu_{c}}",
                 r"\frac{\partial E}{\partial \sigma^{2}_{c}}",
                 r"\frac{\partial E}{\partial \hat{x}_{n,c,h,w}}"):
        assert part in box


def test_batch_norm_zero_sum_is_checked_with_mu_the_mean():
    """Σ(x − μ) = 0 passes because μ is valued as the mean; a sum that is not zero fails."""
    steps = derivation_steps(get("batch_norm"))
    intermediates = {g.array.label.name: g for g in steps.intermediates}
    chain = intermediates["mu"].chain
    check_chain(chain)
    (identity,) = chain.steps[-1].identities
    assert identity[-1] == 0
    # Σ (x − μ) ∂E/∂x̂ (the sum in ∂E/∂σ²) is not zero: quoting it as zero is caught
    not_zero = next(iter(intermediates["var"].result.atoms(sp.Sum)))
    with pytest.raises(StepError, match="quotes"):
        check_chain(with_step(chain, len(chain.steps) - 1, identities=((not_zero, sp.S.Zero),)))


@pytest.mark.parametrize("lang", LANGS)
def test_max_pool_routes_delta_to_the_arg_max_step_by_step(lang):
    """The maximum's row and column r*, u* are explained and δ is routed there (issue 13)."""
    (g,) = derivation_steps(get("max_pool2d")).gradients
    assert g.route == "routed"
    assert g.chain.rules() == ("chain_layer", "connected", "definition", "kronecker")
    text = article("max_pool2d", lang)
    assert r"\left(r^{*}, u^{*}\right) &= " in text and r"\operatorname{arg\,max}" in text
    box = _box(text, "{x}")
    assert r"\left[r = r^{*}\right]" in box and r"\left[u = u^{*}\right]" in box
    assert ("a linha e a coluna do máximo" if lang == "pt"
            else "the row and the column of the maximum") in text


def test_max_pool_check_uses_the_arg_max_of_the_window():
    """The check values a as each window's arg-max: δ sent one row too high is caught."""
    chain = derivation_steps(get("max_pool2d")).gradients[0].chain
    check_chain(chain)
    last = chain.steps[-1].after
    r = sp.Symbol("r", integer=True, nonnegative=True)
    shifted = last.xreplace({r: r - 1})
    assert shifted != last
    with pytest.raises(StepError):
        check_chain(with_step(chain, len(chain.steps) - 1, after=shifted))


@pytest.mark.parametrize("lang", LANGS)
def test_batch_norm_folds_its_regrouping_steps(lang):
    """∂E/∂x and ∂E/∂μ in at most 8 steps: constant factors, sum rules and the second of
    two alike sums are clauses of the step before them, every step still checked."""
    steps = derivation_steps(get("batch_norm"))
    chains = {g.array.label.name: g.chain for g in steps.intermediates + steps.gradients}
    for name in ("x", "mu", "var"):
        rules = chains[name].rules()
        assert len(rules) <= 8, (name, rules)
        assert "constant_factor" not in rules and rules.count("open_sum") <= 1, rules
        check_chain(chains[name])
    # what was folded is said: the power step of ∂E/∂x names the sum rule and ∂x/∂x = 1
    power = next(s for s in chains["x"].steps if s.rule == "power")
    assert [rule for rule, _ in power.folded][-1] == "identity"
    assert "sum" in dict(power.folded)
    text = article("batch_norm", lang)
    said = ("os fatores constantes saem das derivadas" if lang == "pt"
            else "constant factors come out of the derivatives")
    assert said in text
