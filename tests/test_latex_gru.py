"""The GRU's document (issue 15): the recurrence and its gates in PyTorch's order, one time
step derived as a layer, the gradient of h through time on both of its paths, and the
direct path through the update gate, ∂h^⟨t⟩/∂h^⟨t−1⟩ = diag(z^⟨t⟩) + (∂h^⟨t⟩/∂v^⟨t⟩) W_hh,
that keeps the gradient alive."""

import shutil

import pytest
from conftest import rows_on_one_page

from derive.cli import main
from derive.latex.cell import CellView
from derive.latex.context import document_view
from derive.latex.gated import GatedView
from derive.latex.indexed import recurrence_kind
from derive.latex.recurrent import RecurrentView
from derive.latex.render import language, render_jupyter
from derive.ops.layers import GRU, LSTM, RNN
from derive.pipeline import document_for

LANGS = ("pt", "en")
FORMATS = ("article", "beamer")
#: Words of the program that a student's page must not show.
INTERNAL = ("h_prev", "{prev}", "htilde", "d_s", "d_v", "d_h", "dE_", "seed", "engine",
            "motor", "SymPy", "kernel")
T = r"^{\langle t \rangle}"


def test_the_document_is_chosen_by_the_recurrence_of_the_declaration():
    """One carried state for both the Elman layer and the GRU: the GRU's output also reads
    its previous value directly, and that chooses its document."""
    assert [recurrence_kind(op) for op in (RNN, GRU, LSTM)] == [(1, False), (1, True),
                                                               (2, False)]
    en = language("en")
    assert isinstance(document_view(RNN, en), RecurrentView)
    assert isinstance(document_view(GRU, en), GatedView)
    assert isinstance(document_view(LSTM, en), CellView)


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", [*FORMATS, "markdown", "fragment"])
def test_the_document_has_the_gates_the_total_and_the_direct_path(lang, fmt):
    text = document_for("gru", lang=lang, fmt=fmt).text
    body = text[text.index("\\begin{document}"):] if fmt in FORMATS else text
    # PyTorch's gate order, and its name of the candidate, are said.
    assert "PyTorch" in body and "$n$" in body
    # The gates read PyTorch's blocks of rows of both parts; the reset gate scales the
    # state's part of the candidate only.
    for gate in (rf"\sigma(s{T}_{{n,j}} + v{T}_{{n,j}})",
                 rf"\sigma(s{T}_{{n,H + j}} + v{T}_{{n,H + j}})"):
        assert gate in body, gate
    # The candidate in the declared order, tanh(s + r v): the input's part, then the gate
    # that scales the state's part (printed tanh(v r + s): SymPy's order of the terms, the
    # factors by the order they are computed in). The block's offset first: 2 H + j.
    r, v = rf"r{T}_{{n,j}}", rf"v{T}_{{n,2 H + j}}"
    assert rf"\tanh(s{T}_{{n,2 H + j}} + {r} {v})" in body
    assert f"{v} {r}" not in body and "j + 2 H" not in body and "j + H" not in body
    # h^⟨t⟩ mixes the candidate h̃ with the previous state through the update gate, the
    # gate first: z h^⟨t−1⟩.
    z, before = rf"z{T}_{{n,j}}", r"h^{\langle t-1 \rangle}_{n,j}"
    assert rf"\left(1 - {z}\right) \tilde{{h}}{T}_{{n,j}} + {z} {before}" in body
    # ∂E/∂h^⟨t⟩: the gradient from above, the next step's direct path and its state part.
    # The gradient from above is g^⟨t⟩, as in the Elman layer's document (δ^⟨t⟩ gave δ
    # two meanings: the time step's δ_{n,j} is all of ∂E/∂h^⟨t⟩).
    assert r"\delta^{\langle" not in body
    assert (rf"\frac{{\partial E}}{{\partial h{T}_{{n,k}}}} = g{T}_{{n,k}} + "
            r"\frac{\partial E}{\partial h^{\langle t+1 \rangle}_{n,k}} "
            r"z^{\langle t+1 \rangle}_{n,k} + \sum_{j=1}^{3 H}") in body
    assert r"\partial v^{\langle t+1 \rangle}_{n,j}" in body
    # One step's Jacobian holds the update gate, and the direct path is their product.
    assert (rf"\operatorname{{diag}}\!\left(z{T}\right) + "
            rf"\frac{{\partial h{T}}}{{\partial v{T}}} W_{{hh}}") in body
    assert r"\operatorname{diag}\!\left(\prod_{u=t+1}^{T} z^{\langle u \rangle}\right)" in body
    # Each gate's block of both parts' gradients, in the gate's value: ∂E/∂r · r (1 − r).
    for part in "sv":
        assert (rf"\frac{{\partial E}}{{\partial {part}{T}_{{n,j}}}}" in body), part
    for gate in "rz":
        g = rf"{gate}{T}_{{n,j}}"
        assert rf"\frac{{\partial E}}{{\partial {g}}} \cdot {g} \left(1 - {g}\right)" in body
    assert (rf"\cdot r{T}_{{n,j}} \left(1 - \left(\tilde{{h}}{T}_{{n,j}}\right)^{{2}}\right)"
            in body)
    assert r"\sum_{t=0}" not in body and r"\sum_{j=0}" not in body
    for word in INTERNAL:
        assert word not in body, word


def test_the_jupyter_displays_end_with_the_direct_path():
    text = render_jupyter(GRU, lang="en")
    assert text.startswith("$$") and text.endswith("$$")
    assert r"\prod_{u=t+1}^{T}" in text


needs_tex = pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed")


@needs_tex
@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_it_compiles(tmp_path, lang, fmt):
    out = tmp_path / f"gru_{lang}_{fmt}.tex"
    assert main(["latex", "gru", "--lang", lang, "--format", fmt, "-o", str(out), "--pdf"]) == 0
    assert out.with_suffix(".pdf").read_bytes().startswith(b"%PDF")
    if fmt == "article":
        # The six rows of the two parts' gradients, block by block, on one page.
        rows_on_one_page(out.with_suffix(".pdf"), lang,
                         ("sn,j", "sn,H+j", "sn,2H+j", "vn,j", "vn,H+j", "vn,2H+j"))


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_no_sentence_ends_in_a_bare_number(name, lang):
    """'... menores que 1.' broke before the number: page 10 of the GRU's pt article began
    '1. O primeiro termo ...', read as a numbered item. The number stays inside."""
    import re

    text = document_for(name, lang=lang, fmt="article").text
    body = text[text.index("\\begin{document}"):]
    assert not re.search(r"(?:que|than) 1\.", body), re.findall(r".{40}(?:que|than) 1\.", body)
