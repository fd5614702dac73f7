"""What a student reading the activation documents found, pinned (issue 13, both languages).

The Heaviside step's jump, "increasing" where f' > 0, one meaning per symbol (σ is the
logistic sigmoid; the notes' eq. (6.5) is written with the document's own function),
identities at full size, captions that say f' = 0 where it is exactly zero, the grey
bands under the axes, and "the saturated region" when only one side saturates.
"""

from __future__ import annotations

import re
from functools import cache

import pytest

from derive import registry
from derive.calculus.derivation import derive_activation
from derive.latex.facts import activation_facts
from derive.pipeline import document_for
from derive.spec import Activation

LANGS = ("pt", "en")
FORMATS = ("article", "beamer")
ACTIVATIONS = tuple(op.name for op in registry.all_ops() if isinstance(op, Activation))


@cache
def _document(name: str, lang: str, fmt: str = "article") -> str:
    return document_for(name, lang=lang, fmt=fmt).text


def _facts(name: str):
    op = registry.get(name)
    d = derive_activation(op)
    return activation_facts(op, d.forward, d.derivative, d.kinks)


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_no_document_attributes_a_convention_to_pytorch_at_a_kink(lang, fmt):
    for name in ACTIVATIONS:
        text = _document(name, lang, fmt)
        assert "PyTorch" not in text, name


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_heaviside_derivative_holds_off_the_jump(lang, fmt):
    text = _document("heaviside", lang, fmt)
    heading = {"pt": "Pontos não deriváveis", "en": "Non-differentiable points"}[lang]
    assert heading in text
    # The boxed result says where it holds.
    assert re.search(r"0, \\quad x \\neq 0", text)
    # Not differentiable at 0, and H'(0) = 0 named a convention.
    assert {"pt": "não é derivável", "en": "not differentiable"}[lang] in text
    assert {"pt": "por convenção", "en": "by convention"}[lang] in text
    assert "H'({0}) = 0" in text
    # Zero off the jump, not "everywhere".
    assert {"pt": "nula em todo $x \\neq 0$", "en": "zero at every $x \\neq 0$"}[lang] in text
    assert {"pt": "em todo ponto", "en": "zero everywhere"}[lang] not in text


@pytest.mark.parametrize("lang", LANGS)
def test_piecewise_rule_and_kinks_state_the_convention(lang):
    text = _document("relu", lang)
    assert {"pt": "adotamos por convenção o valor do ramo que contém a fronteira",
            "en": "we adopt, by convention, the value of the branch that contains the "
                  "boundary"}[lang] in text


def test_strictly_increasing_is_a_computed_fact():
    # σ' > 0 at every sample (4·10⁻¹⁸ at x = ±40 counts); ReLU' = 0 on the left does not.
    assert _facts("sigmoid").strictly_increasing
    assert _facts("identity").strictly_increasing
    assert _facts("leaky_relu").strictly_increasing
    assert not _facts("relu").strictly_increasing
    assert not _facts("heaviside").strictly_increasing
    assert not _facts("mish").strictly_increasing


@pytest.mark.parametrize("lang", LANGS)
def test_increasing_functions_are_called_increasing(lang):
    word = {"pt": "é crescente", "en": "is increasing"}[lang]
    weak = {"pt": "não decrescente", "en": "non-decreasing"}[lang]
    sigmoid = _document("sigmoid", lang)
    assert word in sigmoid and r"\sigma'(x) > 0" in sigmoid and weak not in sigmoid
    identity = _document("identity", lang)
    assert r"\operatorname{id}'(x) = 1 > 0" in identity
    relu = _document("relu", lang)
    assert weak in relu and word not in relu


@pytest.mark.parametrize("fmt", FORMATS)
def test_english_kink_heading_names_no_undefined_symbol(fmt):
    text = _document("hard_sigmoid", "en", fmt)
    assert "Non-differentiable points" in text
    assert "Points where $f$" not in text


@pytest.mark.parametrize("lang", LANGS)
def test_the_notes_eq_6_5_is_written_with_the_documents_own_function(lang):
    for name, own in (("tanh", r"\tanh'(x_j)"), ("mish", r"\operatorname{mish}'(x_j)")):
        text = _document(name, lang)
        assert r"\frac{\partial E}{\partial y_j}\," + own in text, name
        assert r"\frac{\partial E}{\partial y_j}\,\sigma'(x_j)" not in text, name


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_sigma_and_softplus_are_defined_where_they_are_used(lang, fmt):
    sigma = r"\sigma(u) = \frac{1}{1 + e^{- u}}"
    for name in ("silu", "mish", "softplus", "wilson_cowan"):
        assert sigma in _document(name, lang, fmt), name
    assert r"\operatorname{softplus}(u) = \ln(1 + e^{u})" in _document("mish", lang, fmt)
    # The sigmoid's own document defines σ by its equation (1), not by this sentence.
    assert sigma not in _document("sigmoid", lang, fmt)


@pytest.mark.parametrize("lang", LANGS)
def test_teaching_identities_and_the_quotient_rule_print_at_full_size(lang):
    sigmoid = _document("sigmoid", lang)
    # Two identities with fractions are displayed, one per row (a slide wrapped them).
    assert r"\\[1ex] 1 - \sigma(x) = " in sigmoid
    assert r"$\displaystyle \left(\frac{g}{h}\right)' = \frac{g'\,h - g\,h'}{h^{2}}$" in sigmoid
    # No quotient rule with fractions inside an inline fraction.
    assert r"\frac{\frac{d g}" not in sigmoid


@pytest.mark.parametrize("lang", LANGS)
def test_captions_say_zero_where_the_derivative_is_exactly_zero(lang):
    bands = {"pt": "Faixas cinza", "en": "Grey bands"}[lang]
    for name, prime in (("hard_sigmoid", r"\operatorname{hard\,\sigma}'(x) = 0"),
                        ("relu", r"\operatorname{ReLU}'(x) = 0")):
        text = _document(name, lang)
        assert bands + r": \mbox{$" + prime + "$}" in text, name
    tanh = _document("tanh", lang)
    assert bands + r": \mbox{$|\tanh'(x)| < 10^{-3}$}" in tanh


@pytest.mark.parametrize("fmt", FORMATS)
def test_grey_bands_lie_under_the_axes(fmt):
    text = _document("tanh", "pt", fmt)
    assert "set layers" in text
    assert re.search(r"\\begin\{pgfonlayer\}\{axis background\}\n\\fill\[black!12\]", text)


@pytest.mark.parametrize("lang", LANGS)
def test_one_sided_saturation_is_singular(lang):
    one = {"pt": "Na região saturada ($x \\to -\\infty$)",
           "en": "In the saturated region ($x \\to -\\infty$)"}[lang]
    both = {"pt": "Nas regiões saturadas", "en": "In the saturated regions"}[lang]
    for name in ("mish", "softplus", "elu"):
        text = _document(name, lang)
        assert one in text and both not in text, name
    assert both in _document("tanh", lang)


@pytest.mark.parametrize("lang", LANGS)
def test_kink_values_are_stated_in_the_parameters_symbols(lang):
    sep = {"pt": "{,}", "en": "."}[lang]
    leaky = _document("leaky_relu", lang)
    assert r"\operatorname{LReLU}'({0}^-) = \alpha = 0" + sep + "01" in leaky
    assert r"\operatorname{LReLU}'({0}) = \alpha = 0" + sep + "01" in leaky
    prelu = _document("prelu", lang)
    assert r"\operatorname{PReLU}'({0}^-) = \alpha = 0" + sep + "25" in prelu
    # RReLU's slope is drawn in training: its mean only in evaluation mode.
    word = {"pt": "na avaliação", "en": "in evaluation mode"}[lang]
    rrelu = _document("rrelu", lang)
    assert r"\operatorname{RReLU}'({0}^-) = r \; (= \frac{11}{48} \text{ " + word + "})" in rrelu


# --- second reading (issue 13): the leftovers of the activations reader ----------------


def _frames(text: str) -> list[str]:
    return text.split(r"\begin{frame}")[1:]


@pytest.mark.parametrize("lang", LANGS)
def test_quotient_rule_lines_follow_the_rule_as_stated(lang):
    # g′h − gh′: h·1 first, then − g·h′ (not 1 − x·h′ + |x|, which hides the rule). The
    # sum rule that drops h's constant is a clause of the same line (h′ = d/dx |x|).
    softsign = _document("softsign", lang)
    assert (r"\left(1 + \left|{x}\right|\right) - x \cdot \frac{d}{dx} \left|{x}\right|"
            in softsign)
    assert r"\frac{\left(1 + \left|{x}\right|\right) - x \operatorname{sgn}(x)}" in softsign
    silu = _document("silu", lang)
    assert r"\left(1 + e^{- x}\right) - x \cdot \frac{d}{dx} e^{- x}" in silu
    tanh = _document("tanh", lang)
    assert (r"\cosh(x) \cdot \frac{d}{dx} \sinh(x) - \sinh(x) \cdot \frac{d}{dx} "
            r"\cosh(x)") in tanh


@pytest.mark.parametrize("lang", LANGS)
def test_tanh_reaches_one_minus_tanh_squared_in_one_pass(lang):
    text = _document("tanh", lang)
    # (cosh² − sinh²)/cosh² once, then 1 − sinh²/cosh², then 1 − tanh²: no detour via sech².
    assert text.count(r"\frac{\cosh^{2}(x) - \sinh^{2}(x)}{\cosh^{2}(x)}") == 1
    assert r"1 - \frac{\sinh^{2}(x)}{\cosh^{2}(x)}" in text
    box = text.index(r"\boxed{\tanh'(x) = 1 - \tanh^{2}(x)}")
    assert "sech" not in text[:box]
    assert {"pt": "Dividimos cada termo do numerador pelo denominador",
            "en": "We divide each term of the numerator by the denominator"}[lang] in text


@pytest.mark.parametrize("lang", LANGS)
def test_a_linear_inner_function_takes_one_chain_rule_line(lang):
    # d/dx e^{βx} = β e^{βx} in one line, no name v, no substitution back of it.
    softplus = _document("softplus", lang)
    assert r"\frac{d}{dx} e^{\beta x} = \beta e^{\beta x}" in softplus
    assert r"v = \beta x" not in softplus
    assert {"pt": "pela regra da cadeia", "en": "by the chain rule"}[lang] in softplus
    sigmoid = _document("sigmoid", lang)
    assert r"\frac{d}{dx} e^{- x} = - e^{- x}" in sigmoid
    assert r"u = - x" not in sigmoid


@pytest.mark.parametrize("lang", LANGS)
def test_output_forms_show_their_algebra(lang):
    softplus = _document("softplus", lang)
    assert r"e^{\beta y} = 1 + e^{\beta x}" in softplus
    assert r"\frac{e^{\beta y} - 1}{e^{\beta y}} = 1 - e^{- \beta y}" in softplus
    elu = _document("elu", lang)
    # α first, as in the output form α + y (tests/test_latex_activations2_read.py).
    assert r"\alpha e^{x} = \alpha + \alpha \left(e^{x} - 1\right)" in elu
    selu = _document("selu", lang)
    assert r"\alpha \lambda e^{x} = \alpha \lambda \left(e^{x} - 1\right) + \alpha \lambda" in selu


@pytest.mark.parametrize("lang", LANGS)
def test_the_largest_derivative_is_written_at_its_point(lang):
    sep = {"pt": "{,}", "en": "."}[lang]
    sigmoid = _document("sigmoid", lang)
    assert r"$\sigma'({0}) = 0" + sep + "25$" in sigmoid
    assert r"\sigma'(x) = 0" + sep + "25" not in sigmoid
    # SELU's largest value is the one adopted at its kink: said so.
    selu = _document("selu", lang)
    assert {"pt": "o valor adotado por convenção no ponto",
            "en": "the value adopted by convention at that point"}[lang] in selu


@pytest.mark.parametrize("lang", LANGS)
def test_a_limit_is_said_once_in_one_form(lang):
    bent = _document("bent_identity", lang)
    assert bent.count(r"x \to +\infty$, $\operatorname{bent}'(x)") == 0
    assert r"\frac{3}{2}" in bent and "1{,}5" not in bent and "1.5$" not in bent
    softplus = _document("softplus", lang)
    assert r"\operatorname{softplus}'(x) \to 1" not in softplus
    sep = {"pt": "{,}", "en": "."}[lang]
    # A limit that is a parameter: its symbol, then its declared value (not 1/100).
    leaky = _document("leaky_relu", lang)
    assert r"\operatorname{LReLU}'(x) \to \alpha = 0" + sep + "01" in leaky
    assert r"\frac{1}{100}" not in leaky
    prelu = _document("prelu", lang)
    assert r"\operatorname{PReLU}'(x) \to \alpha = 0" + sep + "25" in prelu
    assert r"\frac{1}{4}" not in prelu
    selu = _document("selu", lang)
    assert r"\operatorname{SELU}'(x) \to \lambda \approx 1" + sep + "0507" in selu


@pytest.mark.parametrize("lang", LANGS)
def test_elu_states_when_its_one_sided_derivatives_differ(lang):
    text = _document("elu", lang)
    assert r"\alpha \neq 1" in text
    assert r"\operatorname{ELU}'({0}) = \alpha$" in text
    assert {"pt": "podem diferir", "en": "may differ"}[lang] not in text


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_the_parameter_derivative_has_a_lead_in(lang, fmt):
    text = _document("prelu", lang, fmt)
    assert {"pt": r"Portanto, a derivada de $\operatorname{PReLU}$ em relação a $\alpha$ é",
            "en": r"Hence the derivative of $\operatorname{PReLU}$ with respect to $\alpha$ is"
            }[lang] in text
    assert not re.search(r"\\alpha\$: [A-Z]", text)


@pytest.mark.parametrize("lang", LANGS)
def test_noisy_relu_says_what_its_draw_does_at_the_kink(lang):
    text = _document("noisy_relu", lang)
    assert {"pt": r"dá um salto de $\epsilon \sigma_{\mathcal{N}}$",
            "en": r"jumps by $\epsilon \sigma_{\mathcal{N}}$"}[lang] in text
    assert {"pt": "O que segue vale na avaliação.",
            "en": "What follows holds in evaluation mode."}[lang] in text


@pytest.mark.parametrize("lang", LANGS)
def test_slides_by_cases_are_not_packed_and_kinks_are_items(lang):
    text = _document("hard_sigmoid", lang, "beamer")
    for frame in _frames(text):
        assert frame.count(r"\begin{cases}") <= 3
    kinks = next(f for f in _frames(text) if r"\item" in f and "{-3}" in f)
    assert kinks.count(r"\item") == 2
    assert len(_frames(_document("tanh", lang, "beamer"))) > 0


def test_english_documents_name_the_course_notes_one_way():
    for name in ACTIVATIONS:
        for fmt in FORMATS:
            assert "lecture notes" not in _document(name, "en", fmt), name


def test_gelu_has_its_usual_portuguese_name():
    assert "Unidade linear de erro gaussiano (GELU)" in _document("gelu", "pt")


@pytest.mark.parametrize("lang", LANGS)
def test_wilson_cowan_and_gelu_quote_the_algebra_they_use(lang):
    wc = _document("wilson_cowan", lang)
    assert r"\frac{1}{1 + e^{a \theta}} = \sigma(- a \theta)" in wc
    assert r"\sigma(a \left(x - \theta\right)) = y + \sigma(- a \theta)" in wc
    gelu = _document("gelu", lang)
    assert r"\frac{1}{\sqrt{2} \sqrt{\pi}} = \frac{1}{\sqrt{2 \pi}}" in gelu


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_identities_for_the_output_form_are_displayed(lang, fmt):
    # Two identities with fractions do not fit a line of text: one display, one per row.
    text = _document("softplus", lang, fmt)
    assert (r"\[ \begin{gathered} e^{\beta y} = 1 + e^{\beta x} \\[1ex] \sigma(\beta x) = "
            in text)


@pytest.mark.parametrize("lang", LANGS)
def test_a_step_quoting_several_identities_shares_its_frame_with_one_other(lang):
    text = _document("softplus", lang, "beamer")
    frame = next(f for f in _frames(text) if r"\begin{gathered}" in f)
    assert frame.count(r"\pause") <= 1


# --- third reading (issue 13): identity to RReLU -------------------------------------------


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_sum_rule_that_drops_a_constant_is_a_clause(lang, fmt):
    # d/dx[1 + e^{−x}] = d/dx e^{−x} right after the quotient rule is no step of its own.
    own = {"pt": "Pela regra da soma", "en": "By the sum rule"}[lang]
    clause = {"pt": "; a derivada de uma soma é a soma das derivadas das parcelas",
              "en": "; the derivative of a sum is the sum of the derivatives of its terms"}[lang]
    # After the piecewise step's full stop the clause opens a sentence on the branches.
    branches = {"pt": "Nos ramos, a derivada de uma soma é a soma das derivadas das parcelas",
                "en": "In the branches, the derivative of a sum is the sum of the derivatives "
                      "of its terms"}[lang]
    for name, said in (("sigmoid", clause), ("softsign", clause), ("hard_sigmoid", branches)):
        text = _document(name, lang, fmt)
        assert own not in text and said in text, name
    quotient = {"pt": "Pela regra do quociente", "en": "By the quotient rule"}[lang]
    sigmoid = _document("sigmoid", lang, fmt)
    assert sigmoid.index(clause) - sigmoid.index(quotient) < 200


def test_folded_chains_are_checked_and_shorter():
    from derive.calculus.steps import derivation_steps

    rules = derivation_steps(registry.get("sigmoid")).derivative.rules()
    assert "sum" not in rules and rules[:2] == ("definition", "quotient")
    tanh = derivation_steps(registry.get("tanh")).derivative
    assert tanh.rules().count("named_function") == 1
    (quoted,) = [s for s in tanh.steps if s.rule == "named_function"]
    assert len(quoted.identities) == 2


@pytest.mark.parametrize("lang", LANGS)
def test_known_derivatives_in_a_row_are_quoted_in_one_step(lang):
    text = _document("tanh", lang)
    many = {"pt": "Usamos as derivadas conhecidas", "en": "We use the known derivatives"}[lang]
    one = {"pt": "Usamos a derivada conhecida", "en": "We use the known derivative "}[lang]
    assert text.count(many) == 1 and one not in text
    assert r"\frac{d}{dx} \cosh(x) = \sinh(x)" in text[text.index(many):]


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_displayed_identities_are_followed_by_words(lang, fmt):
    # A display, then "= …" with nothing between read as one chain (1/(1+|x|) = (1−|y|)²).
    after = {"pt": r"\end{gathered} \]" + "\na derivada fica:",
             "en": r"\end{gathered} \]" + "\nthe derivative becomes:"}[lang]
    for name in ("softsign", "sigmoid"):
        text = _document(name, lang, fmt)
        assert r"\begin{gathered}" in text and after in text, name
        assert text.count(r"\begin{gathered}") == text.count(after), name


@pytest.mark.parametrize("lang", LANGS)
def test_a_constant_derivative_is_not_repeated_as_limits(lang):
    text = _document("identity", lang)
    assert r"\operatorname{id}'(x) = 1" in text
    assert r"\operatorname{id}'(x) \to 1" not in text


@pytest.mark.parametrize("lang", LANGS)
def test_a_step_function_is_monotone_by_its_jumps(lang):
    text = _document("heaviside", lang)
    assert {"pt": "é não decrescente: é constante de cada lado do salto, e o salto é para cima",
            "en": "is non-decreasing: it is constant on each side of its jump, and the jump is "
                  "upwards"}[lang] in text
    assert r"H'(x) \geq 0" not in text
    # Nothing in H is trained; what cannot be trained is what lies before it.
    assert {"pt": "as camadas antes dela não podem ser treinadas",
            "en": "the layers before it cannot be trained"}[lang] in text
    facts = _facts("heaviside")
    assert facts.increasing and not facts.decreasing


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_rrelu_writes_its_numbers_in_one_form(lang, fmt):
    text = _document("rrelu", lang, fmt)
    assert "\t" not in text
    assert r"$l = \frac{1}{8}$" in text and r"$u = \frac{1}{3}$" in text
    assert "= 0{,}125" not in text and "= 0.125" not in text
    # The mean as it is said, (l + u)/2, with a slash in the sentence (not l/2 + u/2).
    assert r"r = \left(l + u\right) / 2" in text and r"\frac{l}{2}" not in text
    word = {"pt": "na avaliação", "en": "in evaluation mode"}[lang]
    assert text.count(r"(= \frac{11}{48} \text{ " + word + "})") >= 2


@pytest.mark.parametrize("lang", LANGS)
def test_titles_introduce_the_symbol_the_text_uses(lang):
    # "The function ReLU is defined by" under a title that never said "ReLU".
    for name, symbol in (("relu", "ReLU"), ("leaky_relu", "LReLU"), ("prelu", "PReLU"),
                         ("rrelu", "RReLU")):
        title = re.search(r"\\title\{(.*?)\}", _document(name, lang)).group(1)
        assert f"({symbol})" in title, (name, title)


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_no_property_bullet_is_empty(lang, fmt):
    # The identity's limits bullet went (its derivative is constant): no bare \item left.
    for name in ACTIVATIONS:
        text = _document(name, lang, fmt)
        assert not re.search(r"\\item\s*\n", text), name


# --- fourth reading (issue 13): one form per line, the notes' order ----------------------


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_the_quotient_rule_line_is_one_fraction_like_the_next(lang, fmt):
    # 1/cosh²(x) (cosh · d/dx sinh − …) and then (cosh² − sinh²)/cosh² on the next line:
    # two forms for one quotient. Now one fraction, its d/dx at full size (display style).
    for name, numerator, denominator in (
            ("tanh", r"\cosh(x) \cdot \frac{d}{dx} \sinh(x) - \sinh(x) \cdot \frac{d}{dx} "
                     r"\cosh(x)", r"\cosh^{2}(x)"),
            ("softsign", r"\left(1 + \left|{x}\right|\right) - x \cdot \frac{d}{dx} "
                         r"\left|{x}\right|", r"\left(1 + \left|{x}\right|\right)^{2}"),
            ("silu", r"\left(1 + e^{- x}\right) - x \cdot \frac{d}{dx} e^{- x}",
             r"\left(1 + e^{- x}\right)^{2}")):
        text = _document(name, lang, fmt)
        assert (r"\frac{\displaystyle " + numerator + "}{" + denominator + "}") in text, name
        assert r"\frac{1}{" + denominator + r"} \left(" not in text, name
    # 1/g's rule, −h′/h², too (σ printed −1/(1 + e^{−x})² · d/dx e^{−x}, then e^{−x}/(…)²);
    # ln's 1/u · u′ is no quotient rule and keeps its form.
    sigmoid = _document("sigmoid", lang, fmt)
    assert (r"-\frac{\displaystyle \frac{d}{dx} e^{- x}}{\left(1 + e^{- x}\right)^{2}}"
            in sigmoid)
    log_softmax = _document("log_softmax", lang, fmt)
    assert r"\frac{1}{\sum_{i=1}^{K} e^{{z}_{i}}} \cdot \frac{\partial}" in log_softmax


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_the_sech_squared_remark_is_displayed(lang, fmt):
    # An inline \displaystyle fraction wrapped at the start of a slide line.
    text = _document("tanh", lang, fmt)
    assert r"\[ \frac{1}{\cosh^{2}(x)} = \operatorname{sech}^{2}(x), \]" in text
    assert r"$\displaystyle \frac{1}{\cosh^{2}(x)}" not in text


def test_a_function_comes_before_the_sum_that_holds_it():
    # σ′ printed (1 − σ(x)) σ(x) in the network documents (SymPy's order); the notes write
    # σ(1 − σ). A sum without the function keeps SymPy's order: (1 − y) ln(1 − ŷ).
    import sympy as sp

    from derive.calculus.functions import sigmoid
    from derive.latex.context import printer_for
    from derive.latex.render import language
    from derive.spec import x

    printer = printer_for(registry.get("sigmoid"), language("en"))
    assert printer.doprint(sigmoid(x) * (1 - sigmoid(x))) == (
        r"\sigma(x) \left(1 - \sigma(x)\right)")
    assert printer.doprint(-sigmoid(x) * (1 - sigmoid(x))) == (
        r"-\sigma(x) \left(1 - \sigma(x)\right)")
    y_, p = sp.symbols("y p")
    assert printer.doprint((1 - y_) * sp.log(1 - p)) == r"\left(1 - y\right) \ln(1 - p)"


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_split_product_is_dotted_throughout(lang, fmt):
    # x 1/(1+e^{−x}) · e^{−x}/(1+e^{−x}): a dot between the fractions, none after x.
    silu = _document("silu", lang, fmt)
    assert r"x \cdot \frac{1}{1 + e^{- x}} \cdot \frac{e^{- x}}{1 + e^{- x}}" in silu
    assert r"x \frac{1}{1 + e^{- x}}" not in silu
    wc = _document("wilson_cowan", lang, fmt)
    assert r"a \cdot \frac{1}{1 + e^{- a \left(x - \theta\right)}} \cdot \frac{" in wc
    # The σ(1 − σ) products have no fraction: no dots.
    assert r"\sigma(x) \left(1 + x \left(1 - \sigma(x)\right)\right)" in silu


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_gelu_writes_x_over_root_two(lang, fmt):
    # SymPy rationalises x/√2 to √2 x/2; the papers, and Φ's usual form, write x/√2.
    text = _document("gelu", lang, fmt)
    assert r"\operatorname{erf}\left(x / \sqrt{2}\right)" in text
    assert r"\operatorname{erf}\left(u / \sqrt{2}\right)" in text
    assert r"\sqrt{2} x" not in text and r"\frac{\sqrt{2}}{2}" not in text


@pytest.mark.parametrize("lang", LANGS)
def test_network_documents_write_sigma_prime_as_the_notes_do(lang):
    from pathlib import Path

    spec = Path(__file__).resolve().parent.parent / "examples" / "sigmoid_sse.toml"
    text = document_for(str(spec), lang=lang, fmt="article").text
    assert r"\sigma'(x) = \sigma(x) \left(1 - \sigma(x)\right)" in text
    assert r"\left(1 - \sigma(x)\right) \sigma(x)" not in text


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_the_chain_rule_clause_prints_its_fraction_at_full_size(lang, fmt):
    # d/dx erf(x/√2) = √2 e^{−x²/2}/√π in a text-style fraction: an exponent inside a
    # numerator, both script size, unreadable on a slide. Displayed, as the identities
    # (it was display style inline until the clause was displayed, below).
    text = _document("gelu", lang, fmt)
    said = {"pt": "pela regra da cadeia,", "en": "by the chain rule,"}[lang]
    clause = text[text.index(said):][:200]
    assert (r"\[ \frac{d}{dx} \operatorname{erf}\left(x / \sqrt{2}\right) = "
            r"\frac{\sqrt{2} e^{- x^{2} / 2}}{\sqrt{\pi}} \]") in clause


CHAIN_LINEAR = ("sigmoid", "wilson_cowan", "silu", "gelu", "softplus")


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_the_chain_rule_clause_displays_its_identity(lang, fmt):
    # Inline, sigmoid's d/dx e^{−x} = −e^{−x} sat alone at the start of a slide line after
    # "...; by the chain rule,". Displayed like the quoted identities, and followed by a
    # lead-in so that the next line's '=' is not read as part of the identity.
    said = {"pt": "pela regra da cadeia,", "en": "by the chain rule,"}[lang]
    then = {"pt": "e a derivada fica:", "en": "and the derivative becomes:"}[lang]
    for name in CHAIN_LINEAR:
        text = _document(name, lang, fmt)
        assert re.search(re.escape(said) + r"\n\\\[ [^\n]* = [^\n]* \\\]\n" + re.escape(then),
                         text), name
        assert said + r" \mbox" not in text, name


@pytest.mark.parametrize("lang", LANGS)
def test_a_displayed_chain_clause_weighs_more_on_a_slide(lang):
    # The displayed identity is taller: with it, a frame holds at most two steps more.
    text = _document("sigmoid", lang, "beamer")
    said = {"pt": "pela regra da cadeia,", "en": "by the chain rule,"}[lang]
    frame = next(f for f in text.split(r"\begin{frame}") if said in f)
    assert frame.count(r"\pause") <= 1


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_lone_folded_identity_reads_as_part_of_the_sentence(lang, fmt):
    # "A constant factor comes out of the derivative; d/dx x = 1:" and a piecewise step
    # ending "...contains the boundary; d/dx x = 1." read terse. One folded rule joins with
    # "and"; after a full stop the clause is a sentence of its own, said of the branches.
    d1 = r"\mbox{$\frac{d}{dx} x = 1$}"
    factor = {"pt": "Um fator constante sai da derivada, e " + d1 + ":",
              "en": "A constant factor comes out of the derivative, and " + d1 + ":"}[lang]
    branches = {"pt": "contém a fronteira. Nos ramos, " + d1 + ".",
                "en": "contains the boundary. In the branches, " + d1 + "."}[lang]
    for name in ("leaky_relu", "prelu", "rrelu"):
        text = _document(name, lang, fmt)
        assert factor in text and branches in text, name
        assert "; " + d1 not in text, name
    # Several folded rules stay a list after a semicolon; after the piecewise step's full
    # stop they open the sentence about the branches.
    constant = {"pt": "Nos ramos, a derivada de uma constante é zero e " + d1 + ".",
                "en": "In the branches, the derivative of a constant is zero and " + d1 + "."}
    assert constant[lang] in _document("relu", lang, fmt)
