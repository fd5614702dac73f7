"""The recurrent layer's document (issue 15): the recurrence, one time step derived as a
layer, backpropagation through time and why the gradient vanishes or explodes."""

import shutil

import pytest

from derive.cli import main
from derive.pipeline import document_for

LANGS = ("pt", "en")
FORMATS = ("article", "beamer")
#: Words of the program that a student's page must not show.
INTERNAL = ("h_prev", "{prev}", "d_s", "dE_", "seed", "engine", "motor", "SymPy", "kernel")


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", [*FORMATS, "markdown", "fragment"])
def test_the_document_has_the_sum_over_time_and_the_jacobian_product(lang, fmt):
    text = document_for("rnn", lang=lang, fmt=fmt).text
    body = text[text.index("\\begin{document}"):] if fmt in FORMATS else text
    # ∂E/∂h^⟨t⟩ = g^⟨t⟩ + Σ_k W_hh[k, j] ∂E/∂s^⟨t+1⟩: the loss at t and what t + 1 sends.
    assert r"g^{\langle t \rangle}_{n,j} + \sum_{k=1}^{H} \left(W_{hh}\right)_{k,j}" in body
    # An element of a name with its own subscript is (W_hh)_{k,j}, never W_{hhk,j}
    assert "{W_{" not in body and "{b_{" not in body
    assert r"\partial \left(b_{ih}\right)_{j}" in body
    assert r"\partial s^{\langle t+1 \rangle}_{n,k}" in body
    # A weight's gradient sums over time (and the batch).
    assert r"\sum_{n=1}^{N} \sum_{t=1}^{T}" in body
    assert r"h^{\langle t-1 \rangle}_{n,k}" in body
    # The Jacobian of one step, their product, and the bound by σ_max(W_hh).
    diag = r"\operatorname{diag}\!\left(1 - \left(h^{\langle t+1 \rangle}\right)^{2}\right)"
    assert diag + " W_{hh}" in body
    assert r"\prod_{u=t+1}^{T}" in body
    assert r"\left(\sigma_{\max}(W_{hh})\right)^{T-t}" in body
    # Indices from 1, as the notes count them; no internal names.
    assert r"\sum_{k=0}" not in body and r"\sum_{t=0}" not in body
    for word in INTERNAL:
        assert word not in body, word


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", ["rnn", "rnn_relu"])
def test_the_bound_is_argued_step_by_step(name, lang, fmt):
    # A student meeting BPTT sees which norm, why a product's norm is bounded and why a
    # diagonal factor contributes max |f'|, not a bound stated; and the product's order.
    body = document_for(name, lang=lang, fmt=fmt).text.split("\\begin{document}")[1]
    assert r"\lVert A \rVert = \sigma_{\max}(A)" in body
    assert r"\lVert A B \rVert \le \lVert A \rVert \, \lVert B \rVert" in body
    assert r"\lVert \operatorname{diag}(v) \rVert = \max_j |v_j|" in body
    assert ("à esquerda" if lang == "pt" else "on the left") in body
    # explosion is said of the same rate that bounds the factor, not of σ_max alone
    assert r"$\sigma_{\max}(W_{hh}) > 1$" in body
    assert ", 1, " not in body


def test_the_relu_layer_has_its_own_derivative_in_the_jacobian():
    text = document_for("rnn_relu", lang="en", fmt="article").text
    assert r"\prod_{u=t+1}^{T}" in text and "tanh" not in text
    assert r"s^{\langle u \rangle} > 0" in text


needs_tex = pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed")


@needs_tex
@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_it_compiles(tmp_path, lang, fmt):
    out = tmp_path / f"rnn_{lang}_{fmt}.tex"
    assert main(["latex", "rnn", "--lang", lang, "--format", fmt, "-o", str(out), "--pdf"]) == 0
    assert out.with_suffix(".pdf").read_bytes().startswith(b"%PDF")
    log = out.with_suffix(".log")
    if log.exists():
        assert "Overfull \\hbox" not in log.read_text(errors="replace")


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", ["rnn", "rnn_relu"])
def test_the_step_claims_no_statistics(name, lang):
    # The step's intro said the statistics of the example appear in every input's gradient
    # (batch/layer norm's sentence); a recurrent step computes none. Normalisations keep it.
    word = "estatísticas" if lang == "pt" else "statistics"
    assert word not in document_for(name, lang=lang, fmt="article").text
    assert word in document_for("layer_norm", lang=lang, fmt="article").text


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", [*FORMATS, "markdown"])
@pytest.mark.parametrize("name", ["rnn", "rnn_relu"])
def test_the_recurrence_is_printed_once(name, lang, fmt):
    # Section 1 prints the recurrence; the time step's derivation does not print it again
    # under its own 'Definition' heading (it did, word for word).
    text = document_for(name, lang=lang, fmt=fmt).text
    body = text[text.index("\\begin{document}"):] if fmt in FORMATS else text
    heading = "Definição" if lang == "pt" else "Definition"
    assert heading not in body
    # The step's inputs and parameters are still said, once.
    said = "os parâmetros aprendidos são" if lang == "pt" else "the learned parameters are"
    assert body.count(said) == 1


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", [*FORMATS, "markdown"])
@pytest.mark.parametrize("name", ["rnn", "rnn_relu"])
def test_the_preactivation_follows_the_declared_order(name, lang, fmt):
    text = document_for(name, lang=lang, fmt=fmt).text
    body = text[text.index("\\begin{document}"):] if fmt in FORMATS else text
    # W_ih x + b_ih + W_hh h + b_hh, as declared: SymPy's order put b_hh + b_ih first.
    t = r"^{\langle t \rangle}"
    assert (rf"x{t}_{{n,i}} + \left(b_{{ih}}\right)_{{j}} + \sum_{{k=1}}^{{H}} "
            r"\left(W_{hh}\right)_{j,k}") in body
    assert r"h^{\langle t-1 \rangle}_{n,k} + \left(b_{hh}\right)_{j}" in body
    assert r"\left(b_{hh}\right)_{j} + \left(b_{ih}\right)_{j}" not in body


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("name", ["rnn", "lstm"])
def test_the_previous_state_goes_back_in_time_not_to_a_layer_below(name, lang):
    # The step reads h^⟨t−1⟩ as an input, but its gradient goes to step t − 1: it was
    # introduced as 'the input h^⟨t−1⟩, which goes on to the layer below'.
    text = document_for(name, lang=lang, fmt="article").text
    state = ("estado anterior $h^{\\langle t-1 \\rangle}$, que volta ao instante anterior"
             if lang == "pt" else
             "previous state $h^{\\langle t-1 \\rangle}$, which goes back to the previous "
             "time step")
    assert state in text
    assert "$h^{\\langle t-1 \\rangle}$, " + ("que segue" if lang == "pt" else "which goes on") \
        not in text


#: The headings of the time step and of the gradient through time, in each language.
HEADINGS = {"pt": ("Um instante de tempo", "Através do tempo"),
            "en": ("One time step", "Through time")}


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_one_word_for_the_time_step_in_every_recurrent_document(lang, fmt):
    """The LSTM's and GRU's pt text said 'passo de tempo' where the Elman layer's said
    'instante': one word for one thing, 'instante' ('passo' is a step of a derivation) and
    'time step' in en, with the same headings in the four documents. 'Dentro de um
    instante' reads 'in a moment': the step is 'o instante t'."""
    import re

    step, time = HEADINGS[lang]
    for name in ("rnn", "rnn_relu", "lstm", "gru"):
        text = document_for(name, lang=lang, fmt=fmt).text
        body = text[text.index("\\begin{document}"):]
        assert step in body and time in body, name
        # The recurrent text itself, around the one time step's layer derivation (whose
        # shared prose says 'Cada passo abaixo', a step of the derivation).
        own = body[:body.index(step)] + body[body.index(time):]
        if lang == "pt":
            assert "instante" in own and "passo de tempo" not in body, name
            assert not re.search(r"\bpassos?\b", own), (name, re.findall(r".{30}\bpassos?\b", own))
            assert "Dentro de um" not in body, name
        else:
            assert "time step" in own, name
            bare = re.findall(r".{30}(?<!time )\bsteps?\b", own)
            assert not bare, (name, bare)
