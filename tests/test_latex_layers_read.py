"""The layer documents as a student reads them (issue 13, the reader's findings on layers).

Each test pins one defect a reader found on the rendered pages: program names on the
page, a wrong statement, a symbol used before it is defined, a library named as the
reason for a convention, a word that is not the subject's term.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess

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
    assert re.search(r"&(\\quad )+(\\left\. )*(\\vphantom\{[^}]*\}\} )?\{\}[+-]", text)
    assert not re.search(r"&(\\quad )+(\\left\. )*[+-]", text)


# --- indices from 1, line breaks, titles (issue 13 items 2 and 7, second reading) ----------

#: Layers whose indices have offsets (a window, a stride): counted from 1 like the others.
WINDOWED = ("conv2d", "conv1d", "avg_pool2d", "max_pool2d")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", WINDOWED)
def test_windowed_layers_count_indices_from_one(name, lang, fmt):
    """Σ from 1, the window at S (h − 1): no sum from 0 and no note on counting from 0."""
    text = body(document(name, lang, fmt))
    assert r"=0}" not in text and r"=1}" in text
    assert r"S \left(h - 1\right)" in text
    assert r"S h +" not in text and "begin at $0$" not in text
    assert "começam em $0$" not in text and "start at $0$" not in text


def test_conv2d_definition_reads_its_input_from_one():
    text = body(document("conv2d", "en"))
    assert (r"\sum_{c=1}^{C} \sum_{i=1}^{k_{h}} \sum_{j=1}^{k_{w}} {K}_{f,c,i,j} "
            r"{\tilde{x}}_{n,c,i + S \left(h - 1\right),j + S \left(w - 1\right)}") in text
    # The kernel read at the offset inside the window, which the condition bounds.
    assert r"{K}_{f,c,r - S \left(h - 1\right),u - S \left(w - 1\right)}" in text
    # A summation index is named as itself, not shifted (c', not c' − 1).
    assert "$c' - 1$" not in text and "$n' - 1 = n - 1$" not in text


@pytest.mark.parametrize("lang", LANGS)
def test_max_pool_window_rows_are_counted_from_one(lang):
    text = body(document("max_pool2d", lang))
    assert (r"S \left(h - 1\right) + 1 \leq r \leq S \left(h - 1\right) + k") in text


def test_counting_from_one_is_the_same_quantity():
    """The rewritten gradient, read with arrays stored from 1, equals the one from 0."""
    import sympy as sp

    from derive.latex.indexed import count_from_one

    op = get("conv2d")
    steps = derivation_steps(op)
    fixed = frozenset(p.symbol for p in op.hyper)
    stride = next(p.symbol for p in op.hyper if p.keyword == "stride")
    rng = __import__("numpy").random.default_rng(0)
    for g in steps.gradients:
        sizes = {s: 2 for s in g.result.free_symbols if s.is_positive and s != stride}
        zero = g.result.xreplace(sizes).xreplace({stride: 1})
        one = count_from_one(zero, fixed)
        bases = {el.base for el in zero.atoms(sp.Indexed)}
        values = {b: rng.normal(size=(4,) * 4) for b in bases}
        read = functools.partial(_read_stored, values=values)
        free = sorted(g.element.free_symbols - {b.label for b in bases}, key=str)
        free = [s for s in free if s.is_integer and not s.is_positive]
        point0 = {s: 1 for s in free}
        point1 = {s: 2 for s in free}
        a = read(zero.xreplace(point0), 0)
        b = read(one.xreplace(point1), 1)
        assert abs(float(a) - float(b)) < 1e-12, (g.element, a, b)


def _read_stored(e, shift, values):
    """``e`` evaluated with each array element read from ``values`` at index − shift."""
    import sympy as sp

    def value(el):
        idx = [int(i) - shift for i in el.indices]
        return float(values[el.base][tuple(idx + [0] * (4 - len(idx)))])

    return e.doit().replace(lambda a: isinstance(a, sp.Indexed), value)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", ("conv2d", "conv1d"))
def test_a_bracket_broken_over_lines_has_one_height(name, lang, fmt):
    """[b_f … on one line and … ] on the next are as tall as the sum inside.

    (The weighted sum now comes first, Σ K x̃ + b_f, so no line holds b_f alone; any
    bracket cut where one piece has a sum and the other none still needs the phantom.)
    """
    text = body(document(name, lang, fmt))
    pieces = re.findall(r"\\left\[((?:(?!\\left\[).)*?)\\right\. \\\\ &(?:\\quad )+"
                        r"\\left\.(.*?)\\right\]", text)
    assert pieces  # the opened sums of the kernel's gradient are cut over lines
    for first, rest in pieces:
        if (r"\sum" in first) != (r"\sum" in rest):
            assert r"\vphantom{\sum_{1}^{1}}" in first and r"\vphantom{\sum_{1}^{1}}" in rest


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("lang", LANGS)
def test_batch_norm_breaks_between_terms_not_inside_a_parenthesis(lang, fmt):
    """(x_{n'} − μ_c)² is never cut, nor 1/m ∂E/∂σ² parted from the derivative it scales."""
    text = body(document("batch_norm", lang, fmt))
    for block in re.findall(r"\\begin\{aligned\}\[t\](.*?)\\end\{aligned\}", text):
        for line in block.split(r" \\ "):
            assert not line.rstrip().endswith(r"\left({x}_{n',c,h',w'} \right."), line
            assert not re.search(r"&(\\quad )+\\left\. \S*\s*\{\}- \{\\mu\}_\{c\}\\right\)",
                                 line)
            assert not line.rstrip().endswith(
                r"\frac{1}{m} \frac{\partial E}{\partial \sigma^{2}_{c}}"), line


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", ("batch_norm", "layer_norm"))
def test_a_number_joins_the_coefficient(name, lang, fmt):
    """2/m u ∂E/∂σ², not 1/m ∂E/∂σ² 2u: no fraction followed by a bare number."""
    text = body(document(name, lang, fmt))
    assert not re.search(r"\\frac\{1\}\{[mD]\} 2", text)
    assert not re.search(r"\\frac\{1\}\{[mD]\} \\frac\{\\partial E\}\{[^}]*\}\}? 2", text)


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", ("batch_norm", "layer_norm", "batch_norm_inference"))
def test_the_title_never_leaves_a_lone_word_on_its_last_line(name, lang):
    title = re.search(r"\\title\{(.*)\}", document(name, lang)).group(1)
    suffix = title.rsplit(": ", 1)[1]
    assert " " not in suffix and "~" in suffix, title


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", ("conv2d", "batch_norm"))
def test_tall_steps_get_a_slide_each(name, lang):
    """A step broken over lines fills a slide: no second step (\\pause) on its frame."""
    frames = re.findall(r"\\begin\{frame\}(.*?)\\end\{frame\}", document(name, lang, "beamer"),
                        re.S)
    for frame in frames:
        if r"\pause" in frame:
            assert r"\begin{aligned}" not in frame, frame[:200]


@pytest.mark.parametrize("lang", LANGS)
def test_the_result_stays_with_its_last_step(lang):
    """No page break between the chain's display and the result that concludes it."""
    text = body(document("batch_norm", lang))
    chains = text.count(r"\begin{align*}")
    assert text.count(r"\global\postdisplaypenalty=10000") == chains
    assert text.count(r"\global\postdisplaypenalty=0") == chains


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", ("conv2d", "dense"))
def test_a_result_is_measured_with_its_left_hand_side(name, lang):
    """The boxed result is broken only when the whole equation is too wide.

    Three quarters of the line for the right-hand side alone broke conv2d's ∂E/∂x̃ after
    its sums (Σ Σ Σ on one line, · {cases} on the next) though the equation fits.
    """
    text = body(document(name, lang))
    boxes = re.findall(r"\\begin\{equation\}\n(.*)\n\\end\{equation\}", text)
    results = [b for b in boxes if r"\boxed" in b]
    assert results
    for b in results:
        assert re.match(r"\\deriveFit(Broken)?\[0\.96\\linewidth\]\{\\boxed\{\\frac\{\\partial E\}",
                        b), b[:120]


def _pages(tex: str, tmp) -> list[str]:
    (tmp / "doc.tex").write_text(tex)
    subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
                   cwd=tmp, capture_output=True, timeout=300, check=False)
    assert (tmp / "doc.pdf").exists()
    text = subprocess.run(["pdftotext", "doc.pdf", "-"], cwd=tmp, capture_output=True,
                          text=True, check=True).stdout
    return text.split("\f")


@pytest.mark.skipif(shutil.which("pdflatex") is None or shutil.which("pdftotext") is None,
                    reason="pdflatex or pdftotext not installed")
def test_no_page_opens_with_the_word_that_announces_a_result(tmp_path):
    """'Hence' and its boxed result on the page of the step they conclude.

    amsmath ends an align with \\interdisplaylinepenalty, 0 under \\allowdisplaybreaks:
    conv2d's ∂E/∂b_f result went alone to the top of page 4, its steps on page 3.
    """
    pages = _pages(document("conv2d", "en"), tmp_path)
    assert len(pages) > 2
    for k, page in enumerate(pages[1:], start=2):
        assert not page.lstrip().startswith("Hence"), k


@pytest.mark.skipif(shutil.which("pdflatex") is None or shutil.which("pdftotext") is None,
                    reason="pdflatex or pdftotext not installed")
def test_a_chain_still_breaks_across_pages(tmp_path):
    """Holding the result to its last step does not make the whole chain one block.

    Set before the chain (or in amsmath's measuring pass) the penalty forbade every break
    inside it: global average pooling's page 1 ended half empty, all its steps on page 2.
    """
    pages = _pages(document("global_avg_pool2d", "pt"), tmp_path)
    assert "Uma saída" in pages[0] and "Substituímos" in pages[0]


def test_a_line_continuing_a_bracket_is_indented_past_the_terms():
    """Batch norm's '+ ⋯ + (x_{N,c,H,W} − μ_c)²]' continues a bracket: at the terms' indent
    it read as a fourth term of ∂E/∂x."""
    text = body(document("batch_norm", "pt"))
    inside = re.findall(r"&((?:\\quad )+)\\left\. ", text)
    assert inside
    assert all(q.count(r"\quad") >= 2 for q in inside)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_short_bracket_is_never_cut(fmt):
    """∂/∂μ_c [x_{n,c,h,w} − μ_c] broke after x on batch norm's slide: '− μ_c]' alone."""
    text = body(document("batch_norm", "pt", fmt))
    assert r"\left[{x}_{n,c,h,w} \right." not in text


def test_the_pooling_titles_are_portuguese_alike():
    """'Max pooling 2-D' beside 'Pooling médio 2-D': one language, one word order."""
    assert r"\title{Pooling máximo 2-D:" in document("max_pool2d", "pt")
    assert r"\title{Pooling médio 2-D:" in document("avg_pool2d", "pt")


@pytest.mark.parametrize("lang", LANGS)
def test_embedding_slides_say_how_repeated_tokens_add_up(lang):
    """The article's paragraph after the result (a scatter-add) was missing from the slides."""
    article, slides = document("embedding", lang), document("embedding", lang, "beamer")
    closing = {"pt": "O colchete guarda", "en": "The bracket keeps"}[lang]
    assert closing in article and closing in slides


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", ("batch_norm", "batch_norm_inference", "layer_norm"))
def test_epsilon_is_added_after_the_variance(name, lang, fmt):
    r"""√(σ² + ε), as the papers and the notes write it: SymPy's order printed √(ε + σ²)."""
    text = body(document(name, lang, fmt))
    assert r"+ \varepsilon" in text
    assert not re.search(r"\\varepsilon \+", text)


@pytest.mark.parametrize("lang", LANGS)
def test_a_step_names_its_own_rule_once(lang):
    """Batch norm with running statistics said "the derivative of a sum is the sum of the
    derivatives of its terms" twice in one sentence (a sum rule folded into a sum rule)."""
    said = ("a derivada de uma soma é a soma das derivadas das parcelas" if lang == "pt"
            else "the derivative of a sum is the sum of the derivatives of its terms")
    for name in ("batch_norm_inference", "batch_norm", "layer_norm", "dense"):
        for line in body(document(name, lang)).splitlines():
            assert line.count(said) <= 1, (name, line)
    # A clause on the other sum says something new: kept in a step of the same rule.
    other = "da outra soma resta apenas" if lang == "pt" else "of the other sum only"
    assert other in body(document("layer_norm", lang))


@pytest.mark.parametrize("lang", LANGS)
def test_one_example_at_a_time_is_aligned_at_its_equals_signs(lang):
    """Layer norm's three gradients for N = 1 were centred one by one (gather)."""
    text = body(document("layer_norm", lang))
    block = re.search(r"\\begin\{align\}\n(.*?)\\end\{align\}", text[text.index("N = 1"):],
                      re.S).group(1)
    rows = block.strip().split(r" \\" + "\n")
    assert len(rows) == 3 and all(row.count("&=") == 1 for row in rows)


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", ("conv1d", "conv2d"))
def test_the_padded_input_sentence_is_one_sentence(name, lang):
    """"The gradient with respect to the padded input x̃; cropped …, it is …" had no verb
    before its semicolon (pt: "…preenchida x̃; recortado …, é o que segue")."""
    text = body(document(name, lang))
    said = {"pt": r"preenchida $\tilde{x}$, recortado ao formato de $x$, é o que segue",
            "en": r"padded input $\tilde{x}$, cropped to the shape of $x$, is what goes on"}
    assert said[lang] in text


@pytest.mark.parametrize("fmt", FORMATS)
def test_portuguese_layer_prose_calls_the_arrays_arranjos(fmt):
    """'leem o tensor' beside 'arranjos intermediários' for the same arrays."""
    for name in ("layer_norm", "batch_norm"):
        assert "tensor" not in body(document(name, "pt", fmt))


@pytest.mark.parametrize("lang", LANGS)
def test_the_closing_identity_is_not_broken_at_its_equals_sign(lang):
    r"""'∂x/∂x =' ending a line and '1:' starting the next (layer norm's article, page 4):
    the folded ∂x/∂x = 1 is kept on one line."""
    text = body(document("layer_norm", lang))
    assert r"\mbox{$\frac{\partial {x}_{n,k}}{\partial {x}_{n,k}} = 1$}" in text


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("lang", LANGS)
def test_a_second_condition_starts_under_if(lang, fmt):
    """The pooling window's two ranges, one to a row: 'e 1 ≤ u …' started under the first
    range's '1', right of 'se'; now 'se' opens the first row and 'e' the second."""
    text = body(document("avg_pool2d", lang, fmt))
    first, then = {"pt": (r"\text{se }", r"\text{e }"), "en": (r"\text{if }", r"\text{and }")}[lang]
    rows = r"\begin{array}[t]{@{}l@{}}"
    assert rows + first + "1 \\leq r" in text
    assert r"\\ " + then + " 1 \\leq u" in text
    assert first + rows not in text


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("lang", LANGS)
def test_dropout_drops_an_element_if_its_draw_is_below_p(lang, fmt):
    """'se p > u_{n,k}' (SymPy's canonical order) reads backwards: the draw is compared."""
    text = body(document("dropout", lang, fmt))
    assert r"{u}_{n,k} < p" in text and r"p > {u}" not in text


@pytest.mark.parametrize("lang", LANGS)
def test_a_weight_scales_the_difference_from_the_front(lang):
    """γ_c (x − μ̂_c)/√(σ̂²_c + ε), as the notes write it; SymPy's order put γ_c after."""
    text = body(document("batch_norm_inference", lang))
    assert (r"\frac{{\gamma}_{c} \left({x}_{n,c,h,w} - {\bar{\mu}}_{c}\right)}"
            r"{\sqrt{\bar{\sigma}^{2}_{c} + \varepsilon}} + {\beta}_{c}") in text
    assert r"{\bar{\mu}}_{c}\right) {\gamma}_{c}" not in text
    # ∂E/∂γ_c = Σ δ (x − μ̂_c)/√(σ̂²_c + ε): the upstream gradient before the difference too.
    assert r"\frac{{\delta}_{n,c,h,w} \left({x}_{n,c,h,w} - {\bar{\mu}}_{c}\right)}" in text


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", ["dense", "conv1d"])
def test_a_weighted_sum_is_written_in_the_order_of_the_weights(name, lang):
    """s = Σ W x + b (the notes' Wx + b), not SymPy's b + Σ W x."""
    text = body(document(name, lang))
    definition = re.search(r"= \\deriveFit\[0\.8\\linewidth\]\{(.*)\}\n", text).group(1)
    assert definition.startswith(r"\sum"), definition
    assert definition.endswith(r" + {b}_{f}" if name == "conv1d" else r" + {b}_{j}"), definition


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", ["batch_norm", "layer_norm"])
def test_the_chain_rule_terms_keep_the_order_of_the_steps(name, lang, fmt):
    """∂E/∂x's three terms stay μ, σ², x̂ from line to line, as the chain rule wrote them.

    SymPy's order moved them about (σ², μ, x̂ after the substitution; μ, σ², x̂ when the
    sum was opened; μ, x̂, σ² from the power rule on), slide after slide.
    """
    text = body(document(name, lang, fmt))
    start = text.index(r"\frac{\partial E}{\partial {x}_{n,")
    names = (r"\partial \mu_{", r"\partial \sigma^{2}_{", r"\partial \hat{x}_{")
    lines = [line for line in text[start:].splitlines() if all(n in line for n in names)]
    assert len(lines) >= 5
    for line in lines:
        places = [line.index(n) for n in names]
        assert places == sorted(places), line[:200]
    if name == "layer_norm":
        # One example at a time (∂E/∂μ and ∂E/∂σ² without an index) keeps that order too.
        single = text[text.index("N = 1"):]
        places = [single.index(n) for n in (r"\partial \mu}", r"\partial \sigma^{2}}",
                                            r"\partial \hat{x}_{")]
        assert places == sorted(places)


@pytest.mark.skipif(shutil.which("pdflatex") is None or shutil.which("pdftotext") is None,
                    reason="pdflatex or pdftotext not installed")
@pytest.mark.parametrize(("name", "lang", "hence"), [("embedding", "pt", "Portanto"),
                                                      ("dropout", "en", "Hence")])
def test_the_closing_text_never_makes_a_page_of_its_own(name, lang, hence, tmp_path):
    """The text after the last result stays whole and with that result.

    Embedding's page 2 held the closing paragraph's last two lines, dropout's the
    one-example section alone: the result (and its last step) now go with them.
    """
    pages = [p for p in _pages(document(name, lang), tmp_path) if p.strip()]
    assert len(pages) > 1
    assert hence in pages[-1]
