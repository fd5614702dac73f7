"""The third reading of ELU, SELU, noisy ReLU, Wilson–Cowan, SiLU, GELU, softplus, mish and
the bent identity (issue 13), pinned in both languages.

Each test names what a student saw on the page and checks the rendered document (or the
declaration it comes from), so the defect cannot come back unnoticed.
"""

from __future__ import annotations

import re
from functools import cache

import pytest
import sympy as sp

from derive import registry
from derive.calculus.derivation import derive_activation
from derive.calculus.functions import explicit
from derive.latex.facts import activation_facts
from derive.pipeline import document_for
from derive.spec import x, y

LANGS = ("pt", "en")
FORMATS = ("article", "beamer")


@cache
def _document(name: str, lang: str, fmt: str = "article") -> str:
    return document_for(name, lang=lang, fmt=fmt).text


@pytest.mark.parametrize("name", ["elu", "selu"])
@pytest.mark.parametrize("lang", LANGS)
def test_output_identity_and_output_form_add_in_one_order(name, lang):
    # ELU read "αe^x = α(e^x − 1) + α" and then "α + y": the constant moved from the end
    # to the front between two consecutive lines. The quoted identity's last side and the
    # output form put the constant at the same end.
    text = _document(name, lang)
    identity = re.search(r"\\begin\{gathered\} (.*?) \\end\{gathered\}", text).group(1)
    last_side = identity.split(" = ")[-1]
    after = text[text.index(identity):]
    case = re.search(r"\\begin\{cases\} .*? \\\\ (.*?) & ", after)
    output = case.group(1).strip()
    # The output form is y plus a constant (α, or αλ); the constant is what is not y.
    constant = re.sub(r"^y \+ | \+ y$", "", output)
    assert y.name in output and constant in last_side, (identity, output)
    assert last_side.endswith(constant) == output.endswith(constant), (identity, output)


MINE = ("elu", "selu", "noisy_relu", "wilson_cowan", "silu", "gelu", "softplus", "mish",
        "bent_identity")


def _superscripts(text: str):
    """Every exponent group ^{...} of ``text``, braces balanced."""
    for match in re.finditer(r"\^\{", text):
        depth, i = 1, match.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        yield text[match.end():i - 1]


@pytest.mark.parametrize("name", MINE)
@pytest.mark.parametrize("lang", LANGS)
def test_no_fraction_is_set_inside_an_exponent_or_erf(name, lang):
    # GELU's e^{-x²/2} was printed e^{-\frac{x^2}{2}}: x² and 2 at half size, inside a
    # numerator smaller still. An exponent writes a short fraction with a slash.
    text = _document(name, lang)
    stacked = [s for s in _superscripts(text) if r"\frac" in s]
    assert not stacked, stacked
    # erf(√2x/2) sat in the numerators of Φ and GELU, its fraction two sizes down.
    erf = re.findall(r"\\operatorname\{erf\}\\left\((.*?)\\right\)", text)
    assert not [a for a in erf if r"\frac" in a], erf


@pytest.mark.parametrize("name", MINE)
def test_english_titles_name_the_acronym_the_portuguese_ones_do(name):
    # "Unidade linear exponencial (ELU)" but "Exponential linear unit": the English title
    # did not introduce the symbol its first sentence uses.
    named = re.search(r"\\operatorname\{([^}]*)\}\(x\)", _document(name, "pt"))
    symbol = named.group(1) if named else "S"
    titles = {lang: re.search(r"\\title\{(.*?): ", _document(name, lang)).group(1)
              for lang in LANGS}
    if any(c.isupper() for c in symbol) and f"({symbol}" in titles["pt"]:
        assert f"({symbol}" in titles["en"], titles


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_an_algebraic_maximiser_of_the_derivative_is_printed_exactly(lang, fmt):
    # GELU's largest derivative was said to be reached at x ≈ 1,4142: it is exactly √2
    # (GELU'' = φ(x)(2 − x²)). SiLU's maximiser solves a transcendental equation and stays
    # a decimal.
    gelu = _document("gelu", lang, fmt)
    assert r"\operatorname{GELU}'({\sqrt{2}}) \approx" in gelu
    assert "1{,}4142" not in gelu and "1.4142" not in gelu
    silu = _document("silu", lang, fmt)
    assert re.search(r"x \\approx 2[.{,}]+3994", silu)


def test_the_exact_maximiser_is_a_zero_of_the_second_derivative():
    # The exact location is found from the digits and then checked: f''(√2) = 0.
    op = registry.get("gelu")
    d = derive_activation(op)
    found = activation_facts(op, d.forward, d.derivative, d.kinks).dmax
    assert found.at == sp.sqrt(2)
    assert sp.simplify(sp.diff(explicit(d.derivative), x, 1).subs(x, found.at)) == 0
