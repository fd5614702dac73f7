"""The LSTM's document (issue 15): the recurrence and its gates, one time step derived as a
layer, the gradients of h and of the cell state through time, and the path along the cell
states, ∂c^⟨t⟩/∂c^⟨t−1⟩ = f^⟨t⟩, that keeps the gradient alive."""

import shutil

import pytest
from conftest import rows_on_one_page

from derive.cli import main
from derive.latex.cell import CellView
from derive.latex.context import document_view
from derive.latex.recurrent import RecurrentView
from derive.latex.render import language
from derive.ops.layers import LSTM, RNN
from derive.pipeline import document_for

LANGS = ("pt", "en")
FORMATS = ("article", "beamer")
#: Words of the program that a student's page must not show.
INTERNAL = ("h_prev", "c_prev", "{prev}", "d_s", "d_c", "_out", "dE_", "seed", "engine",
            "motor", "SymPy", "kernel")


def test_the_document_is_chosen_by_the_recurrence_of_the_declaration():
    """One registration for layers: the Elman layer (one carried state) gets its document,
    the LSTM (a cell state too) the cell-state one, whatever the import order."""
    assert isinstance(document_view(RNN, language("en")), RecurrentView)
    assert isinstance(document_view(LSTM, language("en")), CellView)


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", [*FORMATS, "markdown", "fragment"])
def test_the_document_has_the_gates_the_totals_and_the_cell_path(lang, fmt):
    text = document_for("lstm", lang=lang, fmt=fmt).text
    body = text[text.index("\\begin{document}"):] if fmt in FORMATS else text
    t = r"^{\langle t \rangle}"
    # The gates read PyTorch's blocks of rows of one pre-activation, the block's offset
    # first as declared (SymPy's order printed j + H).
    for gate in (rf"\sigma(s{t}_{{n,H + j}})", rf"\tanh(s{t}_{{n,2 H + j}})",
                 rf"\sigma(s{t}_{{n,3 H + j}})"):
        assert gate in body, gate
    assert "j + H" not in body and "j + 2 H" not in body and "j + 3 H" not in body
    # ∂E/∂h^⟨t⟩: the gradient from above and what the next step's gates send back. The
    # gradient from above is ε (g is the candidate): δ^⟨t⟩ gave δ two meanings, the time
    # step's δ_{n,j} being all of ∂E/∂h^⟨t⟩.
    assert (r"\frac{\partial E}{\partial h^{\langle t \rangle}_{n,k}} = "
            r"\varepsilon^{\langle t \rangle}_{n,k} + \sum_{j=1}^{4 H}") in body
    assert r"\delta^{\langle" not in body
    # ∂E/∂c^⟨t⟩: what reaches it through h^⟨t⟩ written as the gate rows are, the gradient
    # first (it printed (1 − tanh²(c)) ∂E/∂h o), then what the next step sends back.
    assert (rf"\frac{{\partial E}}{{\partial h{t}_{{n,j}}}} \cdot o{t}_{{n,j}} "
            rf"\left(1 - \tanh^{{2}}(c{t}_{{n,j}})\right) + "
            r"\frac{\partial E}{\partial c^{\langle t+1 \rangle}_{n,j}}") in body
    assert r"\partial s^{\langle t+1 \rangle}_{n,j}" in body
    # ∂E/∂c^⟨t⟩ keeps the fraction f^⟨t+1⟩ of the next cell state's gradient.
    assert (r"\frac{\partial E}{\partial c^{\langle t+1 \rangle}_{n,j}} "
            r"f^{\langle t+1 \rangle}_{n,j}") in body
    # The cell path: one forget gate per step, their product.
    assert r"\prod_{u=t+1}^{T} f^{\langle u \rangle}_{n,j}" in body
    # Each gate's block of the pre-activation's gradient, in the gate's value, written as
    # the activation documents write σ′ = σ(1 − σ): ∂E/∂i · i (1 − i), not (1 − i) ∂E/∂i i.
    for gate in "ifo":
        g = rf"{gate}{t}_{{n,j}}"
        assert (rf"\frac{{\partial E}}{{\partial {g}}} \cdot {g} \left(1 - {g}\right)"
                in body), gate
    assert (rf"\frac{{\partial E}}{{\partial g{t}_{{n,j}}}} \cdot "
            rf"\left(1 - \left(g{t}_{{n,j}}\right)^{{2}}\right)") in body
    assert rf"\right) \frac{{\partial E}}{{\partial i{t}_{{n,j}}}}" not in body
    # The cell as the notes write it, f c^⟨t−1⟩ + i g (SymPy's order: c^⟨t−1⟩ f + g i).
    assert (rf"f{t}_{{n,j}} c^{{\langle t-1 \rangle}}_{{n,j}} + i{t}_{{n,j}} g{t}_{{n,j}}"
            in body)
    # The recurrence is printed once, not again under the time step's 'Definition'.
    assert ("Definição" if lang == "pt" else "Definition") not in body
    assert r"\sum_{t=0}" not in body and r"\sum_{j=0}" not in body
    for word in INTERNAL:
        assert word not in body, word


needs_tex = pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed")


@needs_tex
@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_it_compiles(tmp_path, lang, fmt):
    out = tmp_path / f"lstm_{lang}_{fmt}.tex"
    assert main(["latex", "lstm", "--lang", lang, "--format", fmt, "-o", str(out), "--pdf"]) == 0
    assert out.with_suffix(".pdf").read_bytes().startswith(b"%PDF")
    if fmt == "article":
        # The four gate rows of ∂E/∂s^⟨t⟩ ran from page 8 to page 9: one page holds them.
        rows_on_one_page(out.with_suffix(".pdf"), lang, ("n,H+j", "n,2H+j", "n,3H+j"))


def test_an_index_prints_the_block_offset_before_the_position():
    """H + j, 3 H + j as declared and as a lecturer writes a block of rows; an index that
    is not a block's offset plus a position (S h + i, j − H) keeps SymPy's order."""
    import sympy as sp

    from derive.latex.indexed import indexed_printer

    j, h, i = sp.symbols("j h i", integer=True, nonnegative=True)
    H, S = sp.symbols("H S", integer=True, positive=True)
    s = sp.IndexedBase("s")
    pr = indexed_printer(language("en"), {}).doprint
    assert pr(s[j + H]) == "{s}_{H + j}"
    assert pr(s[j + 3 * H]) == "{s}_{3 H + j}"
    # Not a block's offset: a product with a position, a subtracted size.
    assert pr(s[S * h + i]) == "{s}_{i + S h}"
    assert pr(s[j - H]) == "{s}_{j - H}"


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize(("name", "count"), [("lstm", 7), ("rnn", 6), ("dense", 3)])
def test_one_example_at_a_time_fits_its_slides(name, count, lang):
    # The LSTM's seven gradients were centred one under another on one slide, and the
    # last ran off it: at most five to a slide, aligned at '='.
    import re

    text = document_for(name, lang=lang, fmt="beamer").text
    heading = "Um exemplo de cada vez" if lang == "pt" else "One example at a time"
    frames = re.findall(r"\\begin\{frame\}\{" + heading + r".*?\\end\{frame\}", text, re.S)
    rows = [frame.count("&= ") for frame in frames]
    assert rows and max(rows) <= 5, rows
    assert sum(rows) == count
