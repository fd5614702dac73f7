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
    assert r"$\displaystyle 1 - \sigma(x) = " in sigmoid
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
