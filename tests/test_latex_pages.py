"""The pages as a student sees them: formulas readable, numbered only where it matters,
indices counted as the notes count them, every gradient of a network captioned.

Issue 13's points that the layout (not the words) can show, in both languages: no
formula shrunk below 80 % (pdflatex logs the scale of every formula it has to shrink),
wide formulas broken over lines instead, derivation lines unnumbered, indices from 1
(ŷ₁ … ŷ_K) wherever a formula does not depend on where counting starts, and the
captions and descriptions of the network documents.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest

from derive import registry
from derive.errors import DeriveError
from derive.latex.lines import LINE, aligned, fit, split, width
from derive.pipeline import document_for

LANGS = ("pt", "en")
HERE = Path(__file__).resolve().parent.parent
NETWORKS = ("examples/mlp_notes.toml", "examples/cnn_small.toml", "examples/sigmoid_sse.toml")
HAVE_TEX = shutil.which("pdflatex") is not None
needs_tex = pytest.mark.skipif(not HAVE_TEX, reason="pdflatex not installed")


@cache
def _document(target: str, lang: str, fmt: str = "article") -> str:
    if target.endswith(".toml"):
        target = str(HERE / target)
    return document_for(target, lang=lang, fmt=fmt).text


def _scales(tex: str, tmp: Path) -> list[float]:
    """The scale of every formula pdflatex had to shrink (1.0 when none)."""
    (tmp / "doc.tex").write_text(tex)
    subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
                   cwd=tmp, capture_output=True, timeout=300, check=False)
    log = (tmp / "doc.log").read_text(errors="replace")
    assert (tmp / "doc.pdf").exists(), log[-2000:]
    return [float(v) for v in re.findall(r"derive-fit: ([0-9.]+)", log)]


# --- wide formulas ---------------------------------------------------------------------


#: The documents whose formulas were printed at a few points (issue 13), and the widest.
WIDE = ("binary_cross_entropy", "conv2d", "batch_norm", "huber", "sse_half",
        "examples/sigmoid_sse.toml", "examples/cnn_small.toml")


@needs_tex
@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", ("article", "beamer"))
@pytest.mark.parametrize("target", WIDE)
def test_no_formula_is_shrunk_below_80_percent(target, lang, fmt, tmp_path):
    scales = _scales(_document(target, lang, fmt), tmp_path)
    # \deriveFit never shrinks below 0.8; a formula that would need more says so in the
    # log with the floor, and a broken version should have been offered instead.
    assert all(s > 0.8 for s in scales), (target, lang, fmt, scales)


def test_a_long_sum_is_broken_at_its_terms_with_balanced_delimiters():
    terms = [rf"\left(- \left(1 - y_{{{i}}}\right) \ln(1 - \hat{{y}}_{{{i}}})\right)"
             for i in range(1, 6)]
    tex = r"\frac{\partial}{\partial \hat{y}_{k}}\left[" + " + ".join(terms) + r"\right]"
    pieces = split(tex)
    assert len(pieces) > 1
    assert all(width(p) <= LINE for p in pieces[1:-1])
    assert all(p.startswith("+ ") for p in pieces[1:])
    block = aligned(pieces)
    for line in block.split(r"\\"):
        assert line.count(r"\left") == line.count(r"\right"), line
    # A fraction, a subscript or a cases block is never cut.
    assert split(r"\frac{" + " + ".join(["a_{1}"] * 40) + "}{2}") == [
        r"\frac{" + " + ".join(["a_{1}"] * 40) + "}{2}"]
    short = fit("a + b", r"0.8\linewidth")
    assert short == r"\deriveFit[0.8\linewidth]{a + b}"
    assert fit(tex, r"\linewidth", "L = ").startswith(r"\deriveFitBroken[\linewidth]{L = ")


def test_the_fit_macro_has_a_floor_of_80_percent():
    tex = _document("binary_cross_entropy", "pt")
    assert "max(0.8," in tex and r"\adjustbox{max width" not in tex


# --- equation numbers -------------------------------------------------------------------


def _numbered(tex: str) -> int:
    """How many equation numbers a document prints."""
    count = len(re.findall(r"\\begin\{equation\}", tex))
    for body in re.findall(r"\\begin\{(?:align|gather)\}(.*?)\\end\{(?:align|gather)\}", tex,
                           re.S):
        lines = re.sub(r"\\intertext\{.*?\}\n", "", body, flags=re.S)
        count += lines.count(r"\\") + 1 - lines.count(r"\notag")
    return count


@pytest.mark.parametrize("lang", LANGS)
def test_derivation_lines_are_not_numbered(lang):
    # sse_half printed 16 numbers for one result: now its definition and its result.
    assert _numbered(_document("sse_half", lang)) == 2
    assert _numbered(_document("sigmoid", lang)) <= 3
    for op in registry.all_ops():
        try:
            tex = _document(op.name, lang)
        except DeriveError:
            continue  # a kind not typeset yet
        # A numbered align holding prose between its lines is a derivation: unnumbered.
        assert not re.search(r"\\begin\{align\}[^$]*?\\intertext", tex), op.name


@pytest.mark.parametrize("lang", LANGS)
def test_optimizer_updates_carry_no_numbers_nothing_refers_to(lang):
    # Nadam printed eight equation numbers for its update lines, none of them referred to.
    for op in registry.all_ops("optimizer"):
        tex = _document(op.name, lang)
        assert r"\eqref" not in tex and _numbered(tex) == 0, op.name


# --- indices counted from 1 ---------------------------------------------------------------


@pytest.mark.parametrize("lang", LANGS)
def test_indices_count_from_one_as_in_the_notes(lang):
    mse = _document("mse", lang)
    assert r"{\hat{y}}_{1}" in mse and r"{\hat{y}}_{K}" in mse
    assert r"\sum_{j=1}^{K}" in mse and r"\sum_{n=1}^{N}" in mse
    assert "_{0}" not in mse and "=0}" not in mse and "K - 1" not in mse
    softmax = _document("softmax_cross_entropy", lang)
    assert r"\sum_{j=1}^{K}" in softmax and "K - 1" not in softmax
    dense = _document("dense", lang)
    assert r"\sum_{i=1}^{I}" in dense and "=0}" not in dense
    mlp = _document("examples/mlp_notes.toml", lang)
    assert r"\sum_{i=1}^{784}" in mlp and "783" not in mlp


@pytest.mark.parametrize("lang, says", [("pt", "começam em $0$"), ("en", "start at $0$")])
def test_layers_reading_at_offsets_count_from_one_like_the_others(lang, says):
    # Issue 13 item 7: the notes count from 1, offsets too (x̃_{n,c,i+S(h−1),j+S(w−1)}).
    conv = _document("conv2d", lang)
    assert says not in conv and r"\sum_{c=0}" not in conv and r"\sum_{c=1}" in conv
    assert says not in _document("dense", lang)


# --- network documents ----------------------------------------------------------------------


CAPTION = {"pt": "parâmetro ${array}$ da camada ${layer}$",
           "en": "parameter ${array}$ of layer ${layer}$"}


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("target", NETWORKS)
def test_every_parameter_gradient_is_captioned_with_its_own_name(target, lang):
    tex = _document(target, lang)
    assert "O gradiente de um peso" not in tex and "gradient of a weight" not in tex
    lhs = re.findall(r"\\frac\{\\partial E\}\{\\partial ([A-Za-wyz]+)\^\{\((\d+)\)\}_\{[^}]*\}\}"
                     r" &=", tex)
    assert lhs, target
    for array, layer in lhs:
        caption = CAPTION[lang].format(array=f"{array}^{{({layer})}}", layer=layer)
        assert caption in tex, (target, caption)
        # The caption comes before its formula.
        assert tex.index(caption) < tex.index(rf"\partial {array}^{{({layer})}}_{{")


@pytest.mark.parametrize("lang", LANGS)
def test_network_titles_and_descriptions(lang, tmp_path):
    for target in NETWORKS:
        tex = _document(target, lang)
        title = re.search(r"\\title\{(.*)\}", tex).group(1)
        assert r"\texttt" not in title and "_" not in title, title
        assert r"\texttt" not in tex.split(r"\begin{document}")[1]
    # The description of the output follows the activation (σ, not softmax).
    spec = tmp_path / "bce_net.toml"
    spec.write_text('[network]\nname = "bce_net"\ninput_shape = [4]\n'
                    'loss = "binary_cross_entropy"\n[[layers]]\ntype = "dense"\nunits = 3\n'
                    'activation = "sigmoid"\n')
    bce = document_for(str(spec), lang=lang, fmt="article").text
    assert r"\hat{y} = \sigma\left(s^{( 1 )}\right)" in bce
    assert "softmax" not in bce.split(r"\begin{document}")[1]


@pytest.mark.parametrize("lang", LANGS)
def test_sigmoid_sse_network_reads_like_the_slides(lang):
    tex = _document("examples/sigmoid_sse.toml", lang)
    # The network's output is x⁽³⁾ everywhere (never {x_{3}}_{n,j}) and ½SSE's gradient
    # is written out, (x⁽³⁾ − y), in the explicit formulas: no bare ∇E.
    assert "x_{3}" not in tex and r"x^{(3)}_{n,j}" in tex
    assert r"\nabla" not in tex and r"x^{(3)} - y" in tex
    deeper = {"pt": "Quanto mais profunda", "en": "The deeper the layer"}[lang]
    assert deeper not in tex


# --- no dispatch on names in the templates ----------------------------------------------------


def test_templates_never_ask_which_op_they_print():
    root = HERE / "derive" / "templates" / "latex"
    found = []
    for path in root.rglob("*.jinja"):
        text = path.read_text()
        found += [(path.name, m) for m in re.findall(
            r"view\.name ==|view\.name in|\.type ==|W\.titles\[|optimizer_notes\[", text)]
    assert found == []


@pytest.mark.parametrize("lang", LANGS)
def test_every_optimizer_has_its_closing_remark(lang):
    # The remarks are a word table keyed by the declaration: a new optimizer is named
    # here until it has one (its "Remarks" section would otherwise be empty).
    from derive.latex.render import language

    notes = language(lang).words["optimizer_notes"]
    missing = [op.name for op in registry.all_ops() if op.kind == "optimizer"
               and op.name not in notes]
    assert missing == []


# --- what the page shows, read back from the PDF ----------------------------------------


def _pdf(tex: str, tmp: Path) -> tuple[list[str], str]:
    """The text of each page of the compiled document, and pdflatex's log."""
    (tmp / "doc.tex").write_text(tex)
    for _ in range(2):  # the second run settles references and float placement
        subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
                       cwd=tmp, capture_output=True, timeout=300, check=False)
    log = (tmp / "doc.log").read_text(errors="replace")
    assert (tmp / "doc.pdf").exists(), log[-2000:]
    text = subprocess.run(["pdftotext", "-layout", "doc.pdf", "-"], cwd=tmp,
                          capture_output=True, text=True, check=True).stdout
    return text.split("\f"), log


needs_poppler = pytest.mark.skipif(shutil.which("pdftotext") is None,
                                   reason="pdftotext not installed")
PLOTS = {"pt": ("Gráficos", "Figura 1"), "en": ("Graphs", "Figure 1")}


@needs_tex
@needs_poppler
@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("target", ("sigmoid", "identity"))
def test_the_plots_are_on_the_page_of_their_heading(target, lang, tmp_path):
    # A figure left floating at the end got a page of its own, its heading stranded at
    # the foot of the page before (sigmoid's "Gráficos").
    pages, _ = _pdf(_document(target, lang), tmp_path)
    heading, caption = PLOTS[lang]
    where = [i for i, page in enumerate(pages) if re.search(rf"^\s*\d+\s+{heading}\s*$",
                                                             page, re.M)]
    assert len(where) == 1, (target, lang)
    assert caption in pages[where[0]], (target, lang, where)


@needs_tex
@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("target", NETWORKS)
def test_the_network_table_fits_the_page(target, lang, tmp_path):
    # The convolution's kernel shape pushed the parameter column past the right margin
    # (cut off at the page's edge): the layer and parameter columns wrap instead.
    _, log = _pdf(_document(target, lang), tmp_path)
    # The table sits in a paragraph (center): any line wider than the text, not only a
    # row of an alignment, is a page element past the margin.
    over = [float(v) for v in re.findall(r"Overfull \\hbox \(([0-9.]+)pt too wide\)", log)]
    assert [v for v in over if v > 1] == [], (target, lang, over)


@needs_tex
@needs_poppler
@pytest.mark.parametrize("lang", LANGS)
def test_plot_ticks_are_plain_decimals(lang, tmp_path):
    # hard σ' peaks at 1/6: its axis was labelled 0, 5·10⁻², 0.1, 0.15.
    pages, _ = _pdf(_document("hard_sigmoid", lang), tmp_path)
    text = "".join(pages)
    assert {"pt": "0,05", "en": "0.05"}[lang] in text
    assert not re.search(r"5 · 10\s*[−-]\s*2", text), text


SUBSTITUTE_BACK = {"pt": "substituímos de volta", "en": "we substitute back"}


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", ["softplus", "mish", "huber", "log_cosh"])
def test_substitutions_back_are_one_step(name, lang):
    # Putting the named inner functions back is one line, not the same sentence once per
    # function (log-cosh printed it four times, huber twice).
    text = _document(name, lang)
    assert text.count(SUBSTITUTE_BACK[lang]) == 1, text


@pytest.mark.parametrize("lang", LANGS)
def test_a_step_functions_range_is_the_set_of_its_values(lang):
    # The Heaviside step takes 0 and 1 only: its range is {0, 1}, not the interval [0, 1].
    def range_item(tex):
        word = {"pt": "A imagem de", "en": "The range of"}[lang]
        return next(item for item in tex.split(r"\item") if word in item)

    assert r"$\{0, 1\}$" in range_item(_document("heaviside", lang))
    assert r"\{" not in range_item(_document("sigmoid", lang))


@needs_tex
@needs_poppler
@pytest.mark.parametrize("lang", LANGS)
def test_the_slides_network_table_does_not_hyphenate_titles(lang, tmp_path):
    # A justified narrow column split "totalmente" as "total- mente" with wide gaps.
    pages, _ = _pdf(_document("examples/mlp_notes.toml", lang, "beamer"), tmp_path)
    table = next(page for page in pages if {"pt": "parâmetros", "en": "parameters"}[lang]
                 in page)
    assert not re.search(r"[a-z]-\n", table), table
    assert {"pt": "totalmente", "en": "connected"}[lang] in table


@pytest.mark.parametrize("lang, says, never", [
    ("pt", "Nenhum termo", ("Todos os termos", "não contêm")),
    ("en", "No term", ("Every term other than", "does not contain"))])
@pytest.mark.parametrize("target", ("mse", "dense"))
def test_dropping_terms_says_no_term_contains(target, lang, says, never):
    # "Every term other than a does not contain x" reads as a double negative.
    tex = _document(target, lang)
    assert says in tex and not any(w in tex for w in never), (target, lang)


@pytest.mark.parametrize("lang, one, many", [
    ("pt", "O hiperparâmetro é", "Os hiperparâmetros são"),
    ("en", "The hyper-parameter is", "The hyper-parameters are")])
def test_one_hyper_parameter_is_named_in_the_singular(lang, one, many):
    # Dropout has one hyper-parameter (p): "Os hiperparâmetros são a probabilidade p".
    dropout, conv = _document("dropout", lang), _document("conv2d", lang)
    assert one in dropout and many not in dropout
    assert many in conv and one not in conv


@pytest.mark.parametrize("lang", LANGS)
def test_softmax_kernel_form_keeps_the_derivations_letters(lang):
    # It was x̄_{p,q} = (ȳ_{p,q} − Σ ȳ_{p,k} y_{p,k}) y_{p,q}: four new letters for the
    # z, g, n and j of the derivation just above.
    tex = _document("softmax", lang)
    # The saved output first, as in the boxed result softmax_j (g_j − Σ g_k softmax_k).
    assert (r"\frac{\partial E}{\partial {z}_{n,j}} = {\operatorname{softmax}}_{n,j} "
            r"\left({g}_{n,j} - ") in tex
    assert r"\bar{y}" not in tex and r"\bar{x}" not in tex and "_{p," not in tex


@needs_tex
@needs_poppler
@pytest.mark.parametrize("lang, intro, box", [
    ("pt", "Dentro do laço de treinamento", "Algoritmo 1"),
    ("en", "Inside the training loop", "Algorithm 1")])
def test_the_algorithm_box_is_on_the_page_that_announces_it(lang, intro, box, tmp_path):
    # Nadam's box did not fit under its sentence: the sentence ended page 1, the box
    # opened page 2.
    pages, _ = _pdf(_document("nadam", lang), tmp_path)
    where = [i for i, page in enumerate(pages) if intro in page]
    assert len(where) == 1 and box in pages[where[0]], (lang, where)
