"""The layer documents as a student reads them (issue 13, the reader's findings on layers).

Each test pins one defect a reader found on the rendered pages: program names on the
page, a wrong statement, a symbol used before it is defined, a library named as the
reason for a convention, a word that is not the subject's term.
"""

from __future__ import annotations

import functools
import re

import pytest

from derive.calculus.steps import derivation_steps
from derive.latex.render import render
from derive.registry import get

LANGS = ("pt", "en")
FORMATS = ("article", "beamer")
LAYERS = ("dense", "conv2d", "avg_pool2d", "global_avg_pool2d", "flatten", "max_pool2d",
          "batch_norm", "batch_norm_inference", "layer_norm", "dropout", "conv1d")


@functools.cache
def document(name: str, lang: str, fmt: str = "article") -> str:
    return render(get(name), fmt, lang)


def body(text: str) -> str:
    """The document from \\begin{document} on (the preamble holds no student text)."""
    return text[text.index(r"\begin{document}"):]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("lang", LANGS)
def test_layer_norm_prints_no_program_names_for_its_gradients(lang, fmt):
    """One example at a time, ∂E/∂μ and ∂E/∂σ² are derivatives, not d_μ and d_{var}."""
    text = body(document("layer_norm", lang, fmt))
    assert "d_{" not in text and "d_{var}" not in text
    single = text[text.index("N = 1"):]
    assert r"\frac{\partial E}{\partial \mu}" in single
    assert r"\frac{\partial E}{\partial \sigma^{2}}" in single


@pytest.mark.parametrize("lang", LANGS)
def test_layer_norm_statistics_are_per_example_and_batch_norm_per_batch(lang):
    """Layer norm's μ_n, σ²_n are one example's: the batch's statistics are batch norm's."""
    batch = "lote inteiro" if lang == "pt" else "whole batch"
    example = "exemplo inteiro" if lang == "pt" else "whole example"
    layer = body(document("layer_norm", lang))
    assert batch not in layer and example in layer
    norm = body(document("batch_norm", lang))
    assert batch in norm and example not in norm


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("lang", LANGS)
def test_max_pool_names_the_row_and_column_of_the_maximum_before_using_them(lang, fmt):
    """r*, u* are defined (as an arg max, and in words) before the formulas use them.

    No flat index in a subscript of a subscript (⌊a/k⌋, a mod k), and the reason the
    position is held fixed when differentiating is given.
    """
    text = body(document("max_pool2d", lang, fmt))
    assert r"\bmod" not in text and "{a}_{" not in text
    definition = text.index(r"\left(r^{*}, u^{*}\right)")
    words = text.index("a linha e a coluna do máximo" if lang == "pt"
                       else "the row and the column of the maximum")
    first_use = text.index(r"\left[r = r^{*}\right]")
    assert definition < first_use and words < first_use
    assert "x}_{n,c,r^{*},u^{*}}" in text
    assert ("constante por partes" if lang == "pt" else "piecewise constant") in text


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("lang", LANGS)
def test_flatten_shows_the_flat_index(lang, fmt):
    """The definition reads y_{n,i} = x_{n,c,h,w}, with i written from c, h, w from 1."""
    text = body(document("flatten", lang, fmt))
    assert re.search(r"\{y\}_\{n,i\} = .*\{x\}_\{n,c,h,w\}", text)
    assert r"i = \left(c - 1\right) H W + \left(h - 1\right) W + w" in text


def test_flatten_closes_its_gradient_without_a_step_for_dx_dx():
    """∂x/∂x = 1 is a clause of the substitution, not a line of its own."""
    (g,) = derivation_steps(get("flatten")).gradients
    assert "identity" not in g.chain.rules()
    assert any(rule == "identity" for rule, _ in g.chain.steps[-1].folded)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("lang", LANGS)
def test_dropout_defines_its_draw_and_sets_the_scale_at_full_size(lang, fmt):
    """u_{n,k} is said to be a uniform draw; 1/(1 − p) in the cases is not script size."""
    text = body(document("dropout", lang, fmt))
    assert "u_{n,k}" in text
    said = "sorteado uniformemente" if lang == "pt" else "drawn uniformly"
    assert said in text
    assert text.index(said) < text.index(r"\section" if fmt == "article" else "frame}{",
                                         text.index(said))
    assert r"\displaystyle \frac{1}{1 - p}" in text


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", LAYERS)
def test_layer_documents_name_no_library_and_say_example(name, lang, fmt):
    """No "PyTorch" as the reason for a convention; en says "example", not "case"."""
    text = body(document(name, lang, fmt))
    assert "PyTorch" not in text
    if lang == "en":
        assert not re.search(r"\bcases?\b(?! contr)", re.sub(r"\\(begin|end)\{d?cases\}", "",
                                                              text))
    else:
        assert "eles ficam" not in text and "Um caso de cada vez" not in text


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", ("dense", "conv2d", "dropout"))
def test_delta_is_defined_once(name, lang):
    """δ = ∂E/∂y is defined where the gradients start, not again in every subsection."""
    text = body(document(name, lang))
    upstream = re.search(r"\{\\delta\}_\{[^}]*\} = \\frac\{\\partial E\}", text).group(0)
    assert text.count(upstream) == 1


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", ("conv2d", "conv1d"))
def test_padding_is_said_in_one_parenthesis_for_the_right_input(name, lang):
    """"(zeros …; default 0)", a sequence for conv1d, an image for conv2d."""
    text = body(document(name, lang))
    assert ") (padrão" not in text and ") (default" not in text
    sequence = "sequência" if lang == "pt" else "sequence"
    image = "imagem" if lang == "pt" else "image"
    said = re.search(r"\(zeros [^)]*\)", text).group(0)
    assert (sequence in said) == (name == "conv1d") and (image in said) == (name == "conv2d")


@pytest.mark.parametrize("lang", LANGS)
def test_conv_says_the_cropped_gradient_goes_down(lang):
    """∂E/∂x̃ is the padded input's; cropped, it is what the layer below receives."""
    text = body(document("conv2d", lang))
    assert ("recortado ao formato de $x$" if lang == "pt" else "cropped to the shape of $x$"
            ) in text


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", ("dense", "conv1d", "avg_pool2d"))
def test_beamer_result_frames_do_not_open_with_hence(name, lang):
    """A result frame states the result: "Hence" would dangle from the previous frame."""
    text = body(document(name, lang, "beamer"))
    heading = "Resultado" if lang == "pt" else "Result"
    frames = re.findall(r"\\begin\{frame\}\{" + heading + r"\}\s*(\S+)", text)
    assert frames
    assert not any(f.startswith(("Portanto", "Hence")) for f in frames)


@pytest.mark.parametrize("lang", LANGS)
def test_a_continuation_line_opens_with_a_spaced_operator(lang):
    """A broken formula's next line reads "{}+ K…": the plus keeps its binary spacing."""
    text = body(document("conv2d", lang))
    assert re.search(r"&\\quad (\\left\. )*\{\}[+-]", text)
    assert not re.search(r"&\\quad (\\left\. )*[+-]", text)
