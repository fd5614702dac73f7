"""Network documents, slides and optimizer boxes a lecturer hands out unchanged (issue 13).

Titles read inside sentences without nested parentheses, one symbol for the input
(x⁽⁰⁾), every symbol of a forward pass defined where it is used (the padded input x̃,
a pooling window's arg-max a), the activation's derivative in terms of the layer's
output (not y, the target), an opening frame in every set of slides, and an optimizer's
algorithm box that fits its frame at a readable size.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest

from derive import registry
from derive.network import parse_spec
from derive.pipeline import document_for

LANGS = ("pt", "en")
HERE = Path(__file__).resolve().parent.parent
NETWORKS = ("examples/mlp_notes.toml", "examples/cnn_small.toml", "examples/sigmoid_sse.toml")
needs_tex = pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed")
_MATH = re.compile(r"\$[^$]*\$|\\\[.*?\\\]|\\begin\{(align\*?|equation\*?|center)\}.*?"
                   r"\\end\{\1\}", re.S)


@cache
def _document(target: str, lang: str, fmt: str = "article") -> str:
    if target.endswith(".toml"):
        target = str(HERE / target)
    return document_for(target, lang=lang, fmt=fmt).text


def _text(tex: str) -> str:
    """The running text: the body without its mathematics."""
    body = tex.split(r"\begin{document}", 1)[-1]
    body = re.sub(r"(?<!\\)%.*", "", body)
    return _MATH.sub(" ", body)


def _nesting(text: str) -> int:
    """The deepest nesting of round parentheses in ``text``."""
    depth = deepest = 0
    for c in text:
        depth += (c == "(") - (c == ")")
        deepest = max(deepest, depth)
    return deepest


def _with_loss(loss: str, activation: str) -> str:
    return (f'[network]\nname = "t"\ninput_shape = [4]\nloss = "{loss}"\n'
            f'[[layers]]\ntype = "dense"\nunits = 3\nactivation = "{activation}"\n')


#: Every loss whose title carries a parenthesis, with an output activation it takes.
PARENTHESISED = [(loss.name, "softmax" if "categorical" in loss.name else "sigmoid")
                 for loss in registry.all_ops("loss") if "(" in loss.title]


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("loss, activation", PARENTHESISED + [("softmax_cross_entropy",
                                                               "softmax")])
def test_a_loss_title_in_a_sentence_opens_no_parenthesis_inside_another(loss, activation,
                                                                        lang, tmp_path):
    spec = tmp_path / "t.toml"
    spec.write_text(_with_loss(loss, activation))
    try:
        parse_spec(spec.read_text(), str(spec))
    except Exception:  # noqa: BLE001 — a pairing the networks refuse is not typeset
        pytest.skip(f"{loss} with {activation} is not a network")
    text = _text(document_for(str(spec), lang=lang, fmt="article").text)
    for paragraph in text.split("\n\n"):
        assert _nesting(paragraph) <= 1, paragraph
    assert "((" not in text and ") )" not in text and "))" not in text


@pytest.mark.parametrize("lang", LANGS)
def test_the_fused_loss_is_named_in_its_own_sentence(lang):
    text = _text(_document("examples/mlp_notes.toml", lang))
    named = ("a entropia cruzada da softmax (sobre logits). O seu gradiente" if lang == "pt"
             else "the softmax cross-entropy (on logits). Its gradient")
    assert named in " ".join(text.split())


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("target", ("examples/mlp_notes.toml", "examples/sigmoid_sse.toml"))
def test_the_input_is_x0_in_the_text_and_in_every_formula(target, lang):
    tex = _document(target, lang)
    explicit = tex[tex.index(r"\begin{align}"):]
    # the first layer's weight gradient ends with the input, transposed, named as the text
    assert r"\left(x^{(0)}\right)^{T}" in explicit
    assert not re.search(r"(?<![\\\w{])x\^\{T\}", explicit)
    assert "$x^{(0)}$" in tex


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", ("article", "beamer"))
def test_the_padded_input_and_the_window_arg_max_are_defined(lang, fmt):
    tex = _document("examples/cnn_small.toml", lang, fmt)
    body = tex.split(r"\begin{document}", 1)[-1]
    padded = r"\tilde{x}^{(0)}"
    defined = body.index(rf"${padded}$ " + ("é a entrada" if lang == "pt" else "is the input"))
    assert r"1 \times 30 \times 30" in body[defined:defined + 400]
    # defined before any gradient: in the article under the forward pass that uses it, on
    # slides on a frame before the first one that uses it (not two frames after)
    first = body.index(padded + "_{")
    assert max(first, defined) < body.index(r"\frac{\partial E}")
    if fmt == "beamer":
        assert defined < first
        assert body.rfind(r"\begin{frame}", 0, defined) < body.rfind(r"\begin{frame}", 0, first)
    else:
        assert first < defined
    # the pooling layer's arg max is an equation of the forward pass, its row and column
    # named (no subscript inside a subscript) and said in words with the window, from 1
    assert re.search(r"\\left\(r\^\{\*\}, u\^\{\*\}\\right\) (&= \\deriveFit\S*\{|= )"
                     r"\\operatorname\{arg", body)
    assert r"x^{(1)}_{n,c,r^{*},u^{*}}" in body and r"\rfloor" not in body
    assert ("$r^{*}$ e $u^{*}$ são a linha e a coluna" if lang == "pt"
            else "$r^{*}$ and $u^{*}$ are the row and the column") in body
    assert r"$2 h - 1 \leq r \leq 2 h$" in body
    # the bracket of the pooling gradient is explained in words
    assert ("um colchete $[P]$ vale $1$" if lang == "pt" else "a bracket $[P]$ is $1$") in body


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", ("article", "beamer"))
def test_the_cnn_counts_indices_from_one_as_the_notes(lang, fmt):
    body = _document("examples/cnn_small.toml", lang, fmt).split(r"\begin{document}", 1)[-1]
    # every sum from 1, the padded input read one place back (h + i − 1), no library named
    assert not re.search(r"\\sum_\{\w+=0\}", body) and r"\sum_{w=1}^{28}" in body
    assert r"\tilde{x}^{(0)}_{n,c,h + i - 1,w + j - 1}" in body  # the number last
    # the one input channel is no sum: Σ_{c=1}^{1} K x̃ is the term at c = 1
    assert r"\sum_{c=1}^{1}" not in body
    assert r"K^{(1)}_{f,1,i,j} \tilde{x}^{(0)}_{n,1,h + i - 1,w + j - 1}" in body
    assert "PyTorch" not in _text(body)
    # the flattened gradient's place, with this network's sizes and no W (the weights')
    assert (r"${i = \left(c - 1\right) \cdot 14 \cdot 14 + \left(h - 1\right) \cdot 14 + w}$"
            in body)
    assert "H + h) W" not in body


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", ("article", "beamer"))
def test_the_layer_table_shows_the_skip_connections(lang, fmt):
    tex = _document("examples/residual_mlp.toml", lang, fmt)
    table = tex[tex.index(r"\begin{tabular}"):tex.index(r"\end{tabular}")]
    rows = [r for r in table.split("\\\\") if r.strip().startswith("$")]
    skips = {row.split("&")[0].strip(): row for row in rows if r"$+\," in row}
    assert set(skips) == {"$4$", "$6$", "$8$"}
    assert r"$32$ ($+\,x^{(2)}$)" in skips["$4$"] and r"$+\,x^{(6)}$" in skips["$8$"]
    said = "conexão residual" if lang == "pt" else "skip connection"
    assert said in tex[:tex.index(r"\begin{tabular}")]  # the table's '+ x' is explained


@pytest.mark.parametrize("lang", LANGS)
def test_the_derivative_in_terms_of_the_output_does_not_reuse_the_target_y(lang):
    tex = _document("examples/sigmoid_sse.toml", lang)
    item = tex[tex.index(r"\item $\sigma'(x)"):]
    item = item[:item.index("\n")]
    assert r"x^{(l)} \left(1 - x^{(l)}\right)" in item
    assert "y" not in item.replace("layer", "").replace("camada", "")


def _frames(tex: str) -> list[str]:
    return re.findall(r"\\begin\{frame\}(.*?)\\end\{frame\}", tex, re.S)


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", ("batch_norm", "dense", "conv2d", "max_pool2d"))
def test_layer_slides_say_what_the_gradients_are_before_the_first_derivation(name, lang):
    """Like the article: what backpropagation delivers and what the layer returns."""
    frames = _frames(_document(name, lang, "beamer"))
    said = "A retropropagação entrega" if lang == "pt" else "Backpropagation delivers"
    opening = next(i for i, f in enumerate(frames) if said in f)
    # The first frame after the definition that prints a step (one or two to a frame).
    first_step = next(i for i, f in enumerate(frames)
                      if i > 1 and (r"\pause" in f or r"\deriveFit" in f))
    assert 1 < opening < first_step or opening == 2, (opening, first_step)
    assert r"\frac{\partial" not in frames[opening].split("}", 1)[1].replace(
        r"\frac{\partial E}", "")


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("target", NETWORKS)
def test_network_slides_open_the_gradients_and_close_the_explicit_formulas(target, lang):
    tex = _document(target, lang, "beamer")
    gradients = ("Camada por camada, da saída para baixo" if lang == "pt"
                 else "Layer by layer, from the output down")
    assert gradients in tex
    if r"\frac{\partial E}{\partial W^{(1)}}" in tex:  # the explicit formulas are shown
        last = _frames(tex)[-1]
        assert ("fator" if lang == "pt" else "factor") in last


def _algorithm_sizes(log: str) -> tuple[str, list[float]]:
    """The font and (box width, box height, line width, text height) the log states."""
    joined = log.replace("\n", "")
    match = re.search(r"derive-algorithm: (.*?), ([0-9.]+)pt, ([0-9.]+)pt; ([0-9.]+)pt, "
                      r"([0-9.]+)pt", joined)
    assert match, "the algorithm frame does not state its size"
    return match.group(1), [float(v) for v in match.groups()[1:]]


@needs_tex
@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", [o.name for o in registry.all_ops("optimizer")])
def test_the_optimizer_algorithm_fits_its_frame_at_a_readable_size(name, lang, tmp_path):
    tex = _document(name, lang, "beamer")
    frame = tex[tex.index("derive-algorithm"):]
    assert "adjustbox" not in frame[:frame.index(r"\end{frame}")]
    (tmp_path / "doc.tex").write_text(tex)
    subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
                   cwd=tmp_path, capture_output=True, timeout=300, check=False)
    log = (tmp_path / "doc.log").read_text(errors="replace")
    font, (width, height, line, text) = _algorithm_sizes(log)
    assert font.split(",")[0] in ("small", "footnotesize"), font
    assert width <= line + 0.01 and height <= 0.9 * text, (width, height, line, text)
    assert "Overfull \\vbox" not in log
    # the short algorithms keep the article's size
    if tex.count(r"\\") < 20:
        assert font == "small", font


@pytest.mark.parametrize("lang", LANGS)
def test_the_markdown_lists_one_layer_a_line_and_defines_the_window(lang):
    residual = _document("examples/residual_mlp.toml", lang, "markdown")
    items = [line for line in residual.splitlines() if line.startswith("- $")]
    assert len(items) == 9 and sum(r"($+\," in line for line in items) == 3
    cnn = _document("examples/cnn_small.toml", lang, "markdown")
    assert ("$r^{*}$ e $u^{*}$ são a linha e a coluna" if lang == "pt"
            else "$r^{*}$ and $u^{*}$ are the row and the column") in cnn


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize(("target", "alone"), [("examples/deep_sigmoid.toml", True),
                                               ("examples/residual_mlp.toml", True),
                                               ("examples/cnn_small.toml", False)])
def test_a_long_layer_table_gets_a_frame_of_its_own(target, alone, lang):
    # Nine two-line rows under the network's introduction ran off the bottom of the slide.
    body = _document(target, lang, "beamer").split(r"\begin{document}", 1)[-1]
    table = body.index(r"\begin{tabular}")
    frame = body[body.rfind(r"\begin{frame}", 0, table):table]
    intro = "A rede tem" if lang == "pt" else "The network has"
    assert (intro not in frame) is alone


@pytest.mark.parametrize("lang", LANGS)
def test_the_period_after_the_skip_equation_follows_the_formula(lang):
    # The identity path's label is wider than its fraction: in a box of its own width it
    # pushed the period a label's width away from the formula.
    body = _document("examples/residual_mlp.toml", lang).split(r"\begin{document}", 1)[-1]
    label = "caminho identidade" if lang == "pt" else "identity path"
    assert rf"}}_{{\makebox[0pt]{{$\scriptstyle \text{{{label}}}$}}}}." in body


@pytest.mark.parametrize("lang", LANGS)
def test_a_layer_s_forward_equations_share_a_slide(lang):
    # Cut by count, the CNN's last forward slide held x⁽⁴⁾ = softmax(s⁽⁴⁾) without s⁽⁴⁾.
    body = _document("examples/cnn_small.toml", lang, "beamer").split(r"\begin{document}", 1)[-1]
    frame = next(f for f in body.split(r"\begin{frame}")
                 if r"{x^{(4)} = \operatorname{softmax}" in f)
    assert r"{s^{(4)}_{n,j} = " in frame
