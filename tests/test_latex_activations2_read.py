"""The third reading of ELU, SELU, noisy ReLU, Wilson–Cowan, SiLU, GELU, softplus, mish and
the bent identity (issue 13), pinned in both languages.

Each test names what a student saw on the page and checks the rendered document (or the
declaration it comes from), so the defect cannot come back unnoticed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache

import pytest
import sympy as sp

from derive import registry
from derive.calculus.derivation import derive_activation
from derive.calculus.functions import explicit
from derive.latex.facts import activation_facts
from derive.pipeline import document_for
from derive.spec import Activation, x, y

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


# --- sixth reading ----------------------------------------------------------------------


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_sentence_quotes_gelus_inner_function_with_a_slash(lang, fmt):
    # "The inner function x/√2 has a constant derivative, 1/√2" set both as inline
    # \frac: an x over a √2, each at script size. A formula a sentence quotes writes a
    # fraction over one factor with a slash (DerivePrinter.inline).
    text = _document("gelu", lang, fmt)
    sentence = re.search(r"(The inner function|A função interna) \$(.*?)\$.*?\$(.*?)\$", text)
    assert sentence.group(2) == r"x / \sqrt{2}", sentence.group(0)
    assert sentence.group(3) == r"1 / \sqrt{2}", sentence.group(0)


def test_inline_folds_only_a_denominator_of_one_factor():
    # a / K N would read (a/K)·N: a denominator of several factors stays stacked.
    from derive.latex.printer import WORDS, DerivePrinter

    a, k, n = sp.symbols("a K N", positive=True)
    printer = DerivePrinter({"words": {w: w for w in WORDS}})
    assert printer.inline(sp.sqrt(2) * x / 2) == r"x / \sqrt{2}"
    assert printer.inline(x**2 / 2) == r"x^{2} / 2"
    assert printer.inline(a / (k * n)) == printer.doprint(a / (k * n))
    assert r"\frac" in printer.inline(a / (k * n))
    assert r"\frac" in printer.inline(1 / (1 + sp.exp(-x)))


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "softsign"])
@pytest.mark.parametrize("lang", LANGS)
def test_the_saturation_note_names_the_threshold_where_it_stands(name, lang):
    # On a slide the note followed the properties frame and still said "the t above"
    # ("o t acima"), which was no longer on the screen: it names the threshold of the
    # properties, which come before it in the article and in the slides.
    for fmt in FORMATS:
        text = _document(name, lang, fmt)
        assert "$t$ above" not in text and "$t$ acima" not in text
        pattern = {"pt": r"limiar( \$t\$)? das propriedades",
                   "en": r"threshold( \$t\$)? of the properties"}[lang]
        note = re.search(pattern, text).start()
        properties = re.search(r"t \\approx [0-9]", text).start()
        assert properties < note
    softsign = _document("softsign", lang)
    assert r"\frac{1}{121}" not in softsign and "$1/121" in softsign


ACTIVATIONS = tuple(op.name for op in registry.all_ops() if isinstance(op, Activation))
HEADINGS = {"pt": ("Gráficos", "Propriedades"), "en": ("Graphs", "Properties")}


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("lang", LANGS)
def test_text_follows_the_graphs(name, lang):
    # Placed last, the graphs of ELU, SELU, softplus, Wilson–Cowan and PReLU did not fit at
    # the foot of page 2 and took page 3 for themselves, heading, figure and caption
    # alone. They come before the properties, so that text always follows them.
    text = _document(name, lang)
    plots, properties = (text.index(rf"\section{{{h}}}") for h in HEADINGS[lang])
    figure = text.index(r"\end{figure}")
    assert plots < figure < properties


def _pages(tex: str, tmp) -> list[str]:
    (tmp / "doc.tex").write_text(tex)
    for _ in range(2):
        subprocess.run(["pdflatex", "-interaction=nonstopmode", "doc.tex"], cwd=tmp,
                       capture_output=True, timeout=300, check=False)
    text = subprocess.run(["pdftotext", "doc.pdf", "-"], cwd=tmp, capture_output=True,
                          text=True, check=True).stdout
    return [page for page in text.split("\f") if page.strip()]


@pytest.mark.skipif(shutil.which("pdflatex") is None or shutil.which("pdftotext") is None,
                    reason="pdflatex or pdftotext not installed")
@pytest.mark.parametrize("name", ["elu", "softplus"])
@pytest.mark.parametrize("lang", LANGS)
def test_no_page_holds_the_graphs_alone(name, lang, tmp_path):
    # Compiled: the page with the figure's caption also holds the properties' heading.
    pages = _pages(_document(name, lang), tmp_path)
    caption = {"pt": "Figura 1", "en": "Figure 1"}[lang]
    (page,) = [p for p in pages if caption in p]
    assert HEADINGS[lang][1] in page or pages.index(page) < len(pages) - 1, page


@pytest.mark.parametrize("lang", LANGS)
def test_the_mean_of_rrelus_draw_is_quoted_with_a_slash(lang):
    # "in evaluation the mean value r = (l+u)/2 is used" set l + u over 2 at script size.
    text = _document("rrelu", lang)
    assert r"r = \left(l + u\right) / 2$" in text
    assert r"\frac{l + u}{2}" not in text


@pytest.mark.parametrize("lang", LANGS)
def test_a_rule_quoted_in_a_sentence_writes_its_fraction_with_a_slash(lang):
    # "The derivative of the natural logarithm is the reciprocal of its argument,
    # d/du ln(u) = 1/u": the 1/u was a \frac at script size in the sentence.
    text = _document("softplus", lang)
    assert r"\ln(u) = 1 / u$" in text
    assert r"\ln(u) = \frac{1}{u}" not in text
