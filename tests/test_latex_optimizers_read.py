"""Optimizer documents as a student reads them (issue 13, the reader's findings).

Full-size fractions in the algorithm box, no library calls on the page, worked runs that
descend rather than jump to w ≈ 0, one sentence for one hyper-parameter, the weight first
in its update, a worked run that opens with a word, and on the slides the weight update
on the frame of the quantities it uses, with what t counts said under them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

import pytest

from derive import registry
from derive.latex.compile import compile_pdf
from derive.latex.optimizer import RUN_MAX_FIRST_STEP, worked_run
from derive.pipeline import document_for

LANGS = ("pt", "en")
FORMATS = ("article", "beamer")
OPTIMIZERS = [op.name for op in registry.all_ops("optimizer")]
PENALTIES = [op.name for op in registry.all_ops("regulariser")]
needs_tex = pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed")
needs_pdftotext = pytest.mark.skipif(shutil.which("pdftotext") is None,
                                     reason="pdftotext not installed")


@cache
def _body(name: str, lang: str, fmt: str) -> str:
    text = document_for(name, lang=lang, fmt=fmt).text
    body = text.split(r"\begin{document}", 1)[-1]
    return re.sub(r"(?<!\\)%.*", "", body)


def _algorithm(body: str) -> str:
    """The lines of the algorithm box (every tabbing of the document)."""
    boxes = re.findall(r"\\begin\{tabbing\}(.*?)\\end\{tabbing\}", body, re.S)
    assert boxes, "no algorithm box"
    return "\n".join(boxes)


def _frames(body: str) -> list[str]:
    return re.findall(r"\\begin\{frame\}(.*?)\\end\{frame\}", body, re.S)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_no_library_calls_on_the_page(name, lang, fmt):
    body = _body(name, lang, fmt)
    assert "torch" not in body  # "PyTorch" names the library; torch.optim.X is a call
    assert "SGD(" not in body and "nesterov=" not in body.lower()
    assert r"\texttt" not in body


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_the_algorithm_prints_its_fractions_at_full_size(name, lang, fmt):
    lines = _algorithm(_body(name, lang, fmt))
    for math in re.findall(r"\$([^$]*)\$", lines):
        if r"\frac" in math:
            assert math.lstrip().startswith(r"\displaystyle"), math


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_the_slides_never_scale_the_algorithm(name, lang):
    body = _body(name, lang, "beamer")
    frames = [f for f in _frames(body) if r"\begin{tabbing}" in f]
    assert frames
    for frame in frames:
        assert "adjustbox" not in frame and "scalebox" not in frame


@needs_tex
@pytest.mark.parametrize("lang", LANGS)
def test_adams_algorithm_slide_keeps_its_full_size_fractions(lang, tmp_path):
    """Adam's box, with display-style fractions, is set at the text's size on its frame."""
    (tmp_path / "doc.tex").write_text(document_for("adam", lang=lang, fmt="beamer").text)
    subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
                   cwd=tmp_path, capture_output=True, timeout=300, check=False)
    log = (tmp_path / "doc.log").read_text(errors="replace")
    sizes = re.findall(r"derive-algorithm: ([a-z ,-]+?),", log)
    assert sizes == ["small"], sizes


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_the_worked_run_descends_step_by_step(name):
    rows = worked_run(registry.get(name))
    (_, w0, _, w1, _) = rows[0]
    assert abs(w1 - w0) <= RUN_MAX_FIRST_STEP * abs(w0)
    for _, before, _, after, _ in rows:
        assert abs(after) > 1e-3, rows
        assert abs(after - before) > 1e-6 * abs(before), rows


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_the_text_says_what_is_there(name, lang, fmt):
    op = registry.get(name)
    body = _body(name, lang, fmt)
    words = {"pt": ("os demais hiperparâmetros", "Os hiperparâmetros e os seus",
                    "nesta ordem", "Ele não guarda"),
             "en": ("the other hyper-parameters", "The hyper-parameters and their",
                    "in this order", "It keeps no")}[lang]
    others, plural, order, it = words
    if len(op.params) == 1:
        assert others not in body and plural not in body
    else:
        assert others in body and plural in body
    assert (order in body) == (len(op.updates) > 1)
    assert it not in body
    # The step is η g, not of size η; β alone is not defined; a schedule is not a timetable.
    assert "mesmo tamanho" not in body and "same size" not in body
    assert r"\beta^{t}" not in body
    assert "cronograma" not in body and "decaimento de peso " not in body


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_the_weight_comes_first_and_the_rate_leads(name, lang, fmt):
    body = _body(name, lang, fmt)
    updates = re.findall(r"(?<!\\Delta )(?<![\w\\])w \\leftarrow ([^$}\\]*)", body)
    assert updates and all(u.startswith("w ") for u in updates), updates
    assert r"g \eta" not in body and r"\frac{g \eta" not in body


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_the_worked_run_opens_with_a_word(name, lang, fmt):
    body = _body(name, lang, fmt)
    opening = {"pt": "atualizações em $f(w)", "en": "updates on $f(w)"}[lang]
    start = body.index(opening)
    sentence = body[body.rfind("\n", 0, start) + 1:start].replace(r"\begingroup\small", "")
    assert re.fullmatch(r"\s*[A-ZÁÉÍÓÚÂÊÔÃÕÇa-zçãéê]+ ", sentence), sentence


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_the_weight_update_shares_a_frame_with_what_it_uses(name, lang):
    op = registry.get(name)
    frames = _frames(_body(name, lang, "beamer"))
    weight = [f for f in frames if r"{w \leftarrow" in f and r"\begin{tabbing}" not in f]
    assert len(weight) == 1
    shown = weight[0].count(r"\leftarrow")
    assert shown == min(len(op.updates), 5)
    counts = {"pt": "conta as atualizações", "en": "counts the updates"}[lang]
    if op.uses_step:
        assert counts in weight[0]
        assert sum(counts in f for f in frames) == 1


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_a_fraction_line_keeps_its_distance(name, lang):
    """tabbing leaves no space between lines: a fraction's line ends with extra space."""
    lines = _algorithm(_body(name, lang, "article")).split("\n")
    for line in lines:
        if r"\frac" in line:
            assert line.rstrip().endswith(r"\\[0.5ex]"), line


@needs_tex
@pytest.mark.parametrize("lang", LANGS)
def test_a_long_algorithm_is_split_over_two_slides_at_full_size(lang, tmp_path):
    """Nadam's thirteen lines: two frames at \\small, numbers running on, never smaller."""
    tex = document_for("nadam", lang=lang, fmt="beamer").text
    frames = [f for f in _frames(tex) if r"\begin{tabbing}" in f]
    assert len(frames) == 2
    first, second = ([int(n) for n in re.findall(r"\{\\footnotesize (\d+):\}", f)]
                     for f in frames)
    assert min(first) == 1 and min(second) == max(first) + 1 and max(second) == 13
    assert r"\textstyle" not in tex
    (tmp_path / "doc.tex").write_text(tex)
    subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
                   cwd=tmp_path, capture_output=True, timeout=300, check=False)
    log = (tmp_path / "doc.log").read_text(errors="replace")
    assert re.findall(r"derive-algorithm: ([a-z ,-]+?),", log) == ["small", "small"]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_a_title_names_the_method_not_a_library(name, lang, fmt):
    """Nadam and Nesterov are named by their papers; PyTorch is at most a sentence."""
    text = document_for(name, lang=lang, fmt=fmt).text
    titles = re.findall(r"\\title\{([^\n]*)\}", text)
    titles += re.findall(r"\\textbf\{Algorit\w+ 1\} ([^\n]*)\\par", text)
    assert titles
    for title in titles:
        assert "PyTorch" not in title and "formula" not in title, title
    sentences = re.split(r"(?<=\.) ", _body(name, lang, fmt))
    assert sum("PyTorch" in s for s in sentences) <= 1


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_sums_read_as_the_notes_write_them(name, lang):
    """The running average first (β₁m + (1 − β₁)g, like β₂s + (1 − β₂)g²), ε last."""
    body = _body(name, lang, "article")
    assert r"\varepsilon + " not in body
    assert r"\right) g + \beta" not in body and r"\right) g^{2} + \beta" not in body
    assert r"g + \mu b" not in body


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize(("name", "update"), [
    ("momentum_rumelhart", r"\Delta w \leftarrow -\epsilon g + \alpha \Delta w"),
    ("momentum", r"v \leftarrow -\eta g + \mu v"),
])
def test_momentum_steps_against_the_gradient_first(name, update, lang, fmt):
    """The notes write −εg + αΔθ (Algorithm 2) and x − ε∇f + β(x − x′) (eq. 6.13): the
    step against the gradient, then the momentum, in the equations and in the box."""
    body = re.sub(r"\\deriveFit\[[^]]*\]\{", "", _body(name, lang, fmt)).replace("&", "")
    assert update in re.sub(r"\s+", " ", body)
    assert update.split(r"\leftarrow ")[1] in _algorithm(body)


@pytest.mark.parametrize("lang", LANGS)
def test_adam_cites_the_slides_by_their_title(lang):
    """The bias correction is cited from the course's slides by their title, as the worked
    example cites them (the pt page read 'slides de gradiente descendente e backpropagation')."""
    title = {"pt": "Gradiente Descendente e Backpropagation",
             "en": "Gradient Descent and Backpropagation"}[lang]
    for fmt in FORMATS:
        assert rf"slides \emph{{{title}}}" in _body("adam", lang, fmt)


# --- page breaks of the articles -------------------------------------------------------


@cache
def _pages(name: str, lang: str) -> tuple[tuple[str, ...], ...]:
    """The article compiled, as the lines of text of each page (page numbers left out)."""
    with tempfile.TemporaryDirectory(prefix="derive-test-") as tmp:
        pdf = compile_pdf(document_for(name, lang=lang, fmt="article").text, Path(tmp) / "doc.pdf")
        text = subprocess.run(["pdftotext", "-layout", "-enc", "UTF-8", str(pdf), "-"],
                              capture_output=True, text=True, check=True, timeout=60).stdout
    pages = []
    for page in text.split("\f"):
        lines = [" ".join(line.split()) for line in page.splitlines() if line.strip()]
        if lines and lines[-1].isdigit():
            lines = lines[:-1]
        if lines:
            pages.append(tuple(lines))
    return tuple(pages)


def _headings(name: str, lang: str) -> list[str]:
    """The section headings as the page shows them ("4 A worked run"), maths unwrapped."""
    body = _body(name, lang, "article")
    titles = re.findall(r"\\section\{(.*)\}\n", body)
    return [f"{k} {' '.join(t.replace('$', '').split())}" for k, t in enumerate(titles, 1)]


@needs_tex
@needs_pdftotext
@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", OPTIMIZERS + PENALTIES)
def test_no_page_ends_with_a_heading_or_leaves_a_tail(name, lang):
    """A heading is never the last line of a page, and a second page is never only the
    tail of the last paragraph (momentum_rumelhart's pt remark left two lines there)."""
    pages = _pages(name, lang)
    headings = _headings(name, lang)
    assert len(headings) >= 5, headings
    for page in pages[:-1]:
        assert page[-1] not in headings, page[-3:]
    if len(pages) > 1:
        assert any(line in headings for line in pages[-1]), pages[-1]


@needs_tex
@needs_pdftotext
@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_the_worked_run_shares_a_page_with_its_table(name, lang):
    """The sentence that announces the run and the table it announces are on one page
    (Adam's en article had the sentence at the foot of page 1, the table on page 2)."""
    opening = {"pt": "atualizações em f", "en": "updates on f"}[lang]
    head = {"pt": "w (novo)", "en": "w (new)"}[lang]
    pages = _pages(name, lang)
    [where] = [k for k, page in enumerate(pages) if any(opening in line for line in page)]
    assert any(head in line for line in pages[where]), pages[where]


@needs_tex
@needs_pdftotext
@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", [n for n in OPTIMIZERS if len(registry.get(n).updates) <= 2])
def test_a_two_line_update_fits_one_page(name, lang):
    """With a compact title, an optimizer of one or two update lines is one page, its
    remark included (six of them put the remark alone on a second page)."""
    assert len(_pages(name, lang)) == 1


@pytest.mark.parametrize("fmt", (*FORMATS, "markdown"))
@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", PENALTIES)
def test_a_penalty_page_has_one_symbol_per_strength(name, lang, fmt):
    """AdamW's decoupled decay is written with the penalty's own strength (elastic net's
    page said −ηλw, 'λ the decay's strength', beside λ₁ and λ₂)."""
    op = registry.get(name)
    body = _body(name, lang, fmt)
    strengths = {p.latex for p in op.strengths}
    used = {u.replace("{", "").replace("}", "") for u in
            re.findall(r"\\lambda(?:_\{\d\}|_\d)?", body)}
    assert used and used <= strengths, (used, strengths)
    # The strength of the term in w (λ, λ₂) is the one AdamW's decay takes.
    for coupled in (p.latex for p in op.strengths if p.symbol.name == "l2"):
        assert rf"-\eta {coupled} w" in body


#: Phrases a Brazilian reader of these pages stopped at, each with what replaced it:
#: 'como aritmética' (nas contas), 'o move de −ηλ sgn(w)' (read as 'from'; soma),
#: 'passa a designar' (passa a valer), 'não recebe empurrão' (não é empurrado).
#: 'Um único neurônio … deste único exemplo' said 'único' twice in one sentence.
FLAGGED_PT = ("Como aritmética", "o move de", "muda também de", "passa a designar",
              "recebe empurrão", "deste único exemplo")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", OPTIMIZERS + PENALTIES)
def test_the_pt_text_reads_as_a_brazilian_lecturer_writes(name, fmt):
    body = _body(name, "pt", fmt)
    assert not [p for p in FLAGGED_PT if p in body]


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_pt_worked_example_reads_as_a_brazilian_lecturer_writes(fmt):
    from derive.example import parse_settings, worked_example
    from derive.latex.document import example_document

    example = worked_example("mse", parse_settings(["x=2.1", "w=1", "b=0", "y=4"]))
    text = example_document(example, ["example", "mse"], lang="pt", fmt=fmt).text
    assert not [p for p in FLAGGED_PT if p in text]
    opening = text[text.index("Um único neurônio"):].split(". ", 1)[0]
    assert opening.count("único") == 1 and "um só exemplo" in opening


@pytest.mark.parametrize("fmt", FORMATS)
def test_rumelharts_remark_reads_naturally_in_english(fmt):
    """'As arithmetic it is Polyak's recurrence' read as a noun phrase gone astray."""
    body = _body("momentum_rumelhart", "en", fmt)
    assert "Arithmetically it is Polyak's recurrence" in body and "As arithmetic" not in body
