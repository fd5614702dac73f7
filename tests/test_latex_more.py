"""LaTeX for losses, layers, optimizers, networks and worked examples: every document
compiles with pdflatex in both languages and both formats, and states its key results —
the notes' ½Σ derivation in order, softmax cross-entropy ending in ŷ − y, the dense
layer's δ_j x_i, the δ recursion, the algorithm box, the computed numbers."""

import re
import shutil
import unicodedata
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import sympy as sp
from test_latex import _compile, _precompile, _write, squash

from derive.calculus.derivation import derive_layer, derive_loss
from derive.cli import main
from derive.example import parse_settings, worked_example
from derive.latex import render
from derive.latex.context import document_view
from derive.latex.network import explicit_formulas
from derive.latex.render import language
from derive.network import load_spec, parse_spec
from derive.pipeline import document_for
from derive.registry import all_ops, get

LANGS = ("pt", "en")
COMPILED = ("article", "beamer")
NETWORKS = ("examples/mlp_notes.toml", "examples/cnn_small.toml")
EXAMPLES = {
    "notes": ("mse", ["x=2.1", "w=1", "b=0", "y=4"], {}),
    "sigmoid": ("sigmoid", ["x=1.4", "w=1", "b=0.5", "y=0.3"], {"loss": "sse_half"}),
}
HAVE_TEX = shutil.which("pdflatex") is not None and shutil.which("pdftotext") is not None
needs_tex = pytest.mark.skipif(not HAVE_TEX, reason="pdflatex/pdftotext not installed")

CATALOGUE = [op.name for kind in ("loss", "layer", "optimizer") for op in all_ops(kind)]
TARGETS = CATALOGUE + list(NETWORKS) + [f"example:{k}" for k in EXAMPLES]


def _example(key):
    target, settings, options = EXAMPLES[key]
    return worked_example(target, parse_settings(settings), **options)


def _text(target: str, fmt: str, lang: str) -> str:
    if target.startswith("example:"):
        return render(_example(target.split(":", 1)[1]), fmt, lang, source="a test",
                      command="derive example")
    return document_for(target, lang=lang, fmt=fmt).text


@pytest.fixture(scope="module")
def documents(tmp_path_factory):
    """Every target × language × (article, beamer), compiled two at a time on a
    precompiled preamble (the preamble is the same for every kind of document)."""
    if not HAVE_TEX:
        pytest.skip("pdflatex/pdftotext not installed")
    root = tmp_path_factory.mktemp("latex-more")
    groups = [(lang, fmt) for lang in LANGS for fmt in COMPILED]
    with ThreadPoolExecutor(max_workers=2) as pool:
        formats = {
            (lang, fmt): pool.submit(_precompile, _write(root / f"format-{lang}-{fmt}",
                                                         _text("mse", fmt, lang)),
                                     f"more-{lang}-{fmt}")
            for lang, fmt in groups
        }
        formats = {k: f.result() for k, f in formats.items()}
        jobs = {}
        for i, target in enumerate(TARGETS):
            for lang, fmt in groups:
                folder = _write(root / f"{i}-{lang}-{fmt}", _text(target, fmt, lang))
                jobs[(target, lang, fmt)] = pool.submit(_compile, folder, formats[(lang, fmt)])
        return {key: job.result() for key, job in jobs.items()}


def nfc(text: str) -> str:
    """Squashed, composed (pdftotext writes ŷ as y + a combining hat) and with straight
    apostrophes, so that it compares with the strings typed here."""
    text = unicodedata.normalize("NFC", squash(text)).replace("\u2019", "'")
    # Large delimiters come out as control characters: drop them.
    return "".join(c for c in text if unicodedata.category(c) != "Cc")


def flat(documents, target, lang, fmt):
    returncode, errors, text = documents[(target, lang, fmt)]
    assert returncode == 0, errors
    return nfc(text)


def in_order(text: str, phrases) -> None:
    """Each phrase occurs in ``text``, after the one before it."""
    at = 0
    for phrase in phrases:
        found = text.find(nfc(phrase), at)
        assert found >= 0, (phrase, text[at:at + 300])
        at = found + 1


def _title(target, lang):
    words = language(lang).words
    if target.startswith("example:") or target.endswith(".toml"):
        return None
    op = get(target)
    return words["titles"].get(op.name, op.title)


HEADINGS = {"loss": "heading_gradient", "layer": "heading_gradients",
            "optimizer": "heading_algorithm", "network": "heading_recursion",
            "example": "heading_example_update"}


def _kind(target):
    if target.startswith("example:"):
        return "example"
    if target.endswith(".toml"):
        return "network"
    return get(target).kind


@needs_tex
@pytest.mark.parametrize("fmt", COMPILED)
@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("target", TARGETS)
def test_document_compiles_with_its_title_and_sections(documents, target, lang, fmt):
    text = flat(documents, target, lang, fmt)
    title = _title(target, lang)
    if title is not None:
        assert nfc(title) in text
    words = language(lang).words
    key = HEADINGS[_kind(target)]
    if fmt == "beamer" and key == "heading_gradients":
        # Slides are titled by the gradient they derive, or "Gradients" when derived.
        assert nfc(words["heading_result"]) in text or nfc(words[key]) in text
        return
    assert nfc(words[key].replace("$\\delta$", "δ")) in text


# --- losses -----------------------------------------------------------------------------

NOTES_STEPS = {
    "pt": ["suprimimos a soma sobre os exemplos", "Abrimos a soma", "Nenhum termo além de",
           "a regra da cadeia", "Terminadas as derivadas"],
    "en": ["we drop the sum over the examples", "We open the sum", "No term other than",
           "the chain rule", "With the derivatives done"],
}


@needs_tex
@pytest.mark.parametrize("fmt", COMPILED)
@pytest.mark.parametrize("lang", LANGS)
def test_half_sum_of_squares_follows_the_notes_in_order(documents, lang, fmt):
    text = flat(documents, "sse_half", lang, fmt)
    in_order(text, NOTES_STEPS[lang] + ["∂E∂ŷk = ŷk−yk"])
    assert "(ŷ1−y1)2+···+(ŷk−yk)2+···+(ŷK−yK)2" in text  # the opened sum, from 1
    assert "u=ŷk−yk" in text  # the named inner function


@needs_tex
@pytest.mark.parametrize("lang", LANGS)
def test_mse_ends_in_twice_the_error_over_the_elements(documents, lang):
    for fmt in COMPILED:
        text = flat(documents, "mse", lang, fmt)
        in_order(text, NOTES_STEPS[lang] + ["2(ŷk−yk)KN"])


@needs_tex
@pytest.mark.parametrize("lang", LANGS)
def test_softmax_cross_entropy_uses_one_hot_targets_and_ends_in_yhat_minus_y(documents, lang):
    one = {"pt": "Os alvos de um exemplo somam um", "en": "The targets of an example add up to one"}
    for fmt in COMPILED:
        text = flat(documents, "softmax_cross_entropy", lang, fmt)
        in_order(text, [one[lang], "yj=1", "∂L∂zk=ŷk−ykN"])
        assert "ŷk−[k=t]N" in text  # integer labels


@needs_tex
@pytest.mark.parametrize("lang", LANGS)
def test_binary_cross_entropy_with_logits_ends_in_sigma_minus_y(documents, lang):
    for fmt in COMPILED:
        text = flat(documents, "binary_cross_entropy_with_logits", lang, fmt)
        assert "σ(zk)−ykKN" in text
        assert "max(z,0)+ln(1+e−|z|)" in text  # the kernel's stable form


@needs_tex
@pytest.mark.parametrize("lang", LANGS)
def test_every_loss_states_what_its_kernel_computes(documents, lang):
    words = language(lang).words
    for op in all_ops("loss"):
        text = flat(documents, op.name, lang, "article")
        assert nfc(words["heading_kernel"]) in text and "ℓn=" in text


# --- layers -------------------------------------------------------------------------------


@needs_tex
@pytest.mark.parametrize("lang", LANGS)
def test_dense_layer_opens_the_neuron_sum_and_reaches_the_notes_formulas(documents, lang):
    for fmt in COMPILED:
        text = flat(documents, "dense", lang, fmt)
        assert "Wj,1xn,1+···+Wj,ixn,i+···+Wj,Ixn,I" in text  # the sum opened, from 1
        for result in ("∂E∂xn,i=OXj=1Wj,iδn,j", "∂E∂Wj,i=NXn=1δn,jxn,i",
                       "∂E∂bj=NXn=1δn,j",
                       "∂E∂xi=OXj=1Wj,iδj", "∂E∂Wj,i=δjxi", "∂E∂bj=δj"):
            assert result in text, result


@needs_tex
def test_convolution_and_pooling_in_index_form(documents):
    conv = flat(documents, "conv2d", "en", "article")
    # SymPy's Kronecker deltas, before they are eliminated; windows counted from 1 as in
    # the notes, so output row h starts at input row S(h − 1) + 1.
    assert "[r=i+S(h−1)][u=j+S(w−1)]" in conv
    assert "∂E∂Kf,c,i,j" in conv and "x̃n,c,i+S(h−1),j+S(w−1)" in conv
    avg = flat(documents, "avg_pool2d", "pt", "article")
    assert "deltasdeKronecker" in avg
    assert "arg" in flat(documents, "max_pool2d", "en", "article")


# --- networks ---------------------------------------------------------------------------------


@needs_tex
@pytest.mark.parametrize("lang", LANGS)
def test_mlp_document_has_the_recursion_and_the_explicit_formulas(documents, lang):
    for fmt in COMPILED:
        text = flat(documents, NETWORKS[0], lang, fmt)
        assert "δ(l)=W(l+1)Tδ(l+1)⊙f′s(l)" in text
        assert "δ(3)n,j=ŷn,j−yn,jN" in text
        assert "784Xi=1" in text  # the spec's sizes, indices from 1 as in the notes
        # δ⁽²⁾ with the letters of the layer below's output (n, j), and the explicit formulas
        assert "ReLU′(s(2)n,j)" in text and "∂E∂W(1)=" in text


@needs_tex
def test_cnn_document_routes_the_gradient_through_the_pooling(documents):
    text = flat(documents, NETWORKS[1], "en", "article")
    assert "δ(4)n,j=ŷn,j−yn,jN" in text
    # indices from 1, as in the notes and the mlp's document
    assert "∂E∂K(1)f,c,i,j" in text and "28Xw=1" in text and "27Xw=0" not in text


def test_explicit_formulas_agree_with_pytorch_autograd():
    torch = pytest.importorskip("torch")
    spec = parse_spec("""
        [network]
        name = "tiny"
        input_shape = [3]
        loss = "categorical_cross_entropy"
        [[layers]]
        type = "dense"
        units = 4
        activation = "tanh"
        [[layers]]
        type = "dense"
        units = 2
        activation = "softmax"
    """)
    formulas, names = explicit_formulas(spec)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 1))
    w1, b1 = rng.normal(size=(4, 3)), rng.normal(size=(4, 1))
    w2, b2 = rng.normal(size=(2, 4)), rng.normal(size=(2, 1))
    y = np.array([[0.0], [1.0]])
    tw1, tb1, tw2, tb2 = (torch.tensor(a, requires_grad=True) for a in (w1, b1, w2, b2))
    s1 = tw1 @ torch.tensor(x) + tb1
    s2 = tw2 @ torch.tanh(s1) + tb2
    loss = -(torch.tensor(y) * torch.log_softmax(s2, dim=0)).sum()
    loss.backward()
    s1_, x1 = w1 @ x + b1, np.tanh(w1 @ x + b1)
    s2_ = w2 @ x1 + b2
    yhat = np.exp(s2_) / np.exp(s2_).sum()
    values = {names[("x", 0)]: x, names[("x", 1)]: x1, names[("W", 1)]: w1,
              names[("W", 2)]: w2, names[("fprime", 1)]: 1 - np.tanh(s1_) ** 2,
              names["yhat"]: yhat, names["y"]: y}
    values = {k: sp.Matrix(v) for k, v in values.items()}
    expected = {("weight", 1): tw1.grad, ("bias", 1): tb1.grad, ("weight", 2): tw2.grad,
                ("bias", 2): tb2.grad}
    for kind, layer, _, rhs in formulas:
        got = np.array(rhs.xreplace(values).doit(), dtype=float)
        np.testing.assert_allclose(got, expected[(kind, layer)].numpy(), rtol=1e-10)


# --- optimizers and examples ----------------------------------------------------------------------


@needs_tex
@pytest.mark.parametrize("lang", LANGS)
def test_optimizers_have_an_algorithm_box_and_a_computed_run(documents, lang):
    word = {"pt": "Algoritmo1", "en": "Algorithm1"}[lang]
    for op in all_ops("optimizer"):
        for fmt in COMPILED:
            text = flat(documents, op.name, lang, fmt)
            assert word in text, (op.name, fmt)
    gd = flat(documents, "gd", lang, "article")
    sep = "," if lang == "pt" else "."
    assert "w←w−ηg" in gd and f"0{sep}8" in gd and f"0{sep}4096" in gd
    rumelhart = flat(documents, "momentum_rumelhart", lang, "article")
    # Algorithm 2 of the notes steps against the gradient first: Δw ← −εg + αΔw.
    assert "∆w←−ϵg+α∆w" in rumelhart and "∆w←α∆w−ϵg" not in rumelhart


@needs_tex
@pytest.mark.parametrize("lang", LANGS)
def test_the_notes_example_is_typeset_with_computed_numbers(documents, lang):
    sep = "," if lang == "pt" else "."
    for fmt in COMPILED:
        text = flat(documents, "example:notes", lang, fmt)
        for number in ("3.61", "−3.8", "−7.98", "1.0798", "0.038", "2.87106"):
            assert number.replace(".", sep) in text, number


# --- rendering without TeX ----------------------------------------------------------------------


@pytest.mark.parametrize("target", CATALOGUE + list(NETWORKS))
def test_markdown_and_fragment_render(target):
    md = document_for(target, lang="en", fmt="markdown").text
    assert md.count("$$") % 2 == 0 and md.count("$$") >= 2
    assert "\\documentclass" not in document_for(target, lang="pt", fmt="fragment").text


def test_views_of_every_kind_are_deterministic():
    for target in ("huber", "conv2d", "nadam"):
        assert document_for(target, lang="pt").text == document_for(target, lang="pt").text
    spec = load_spec(NETWORKS[1])
    assert document_view(spec, language("en")) == document_view(spec, language("en"))


def test_cli_typesets_losses_layers_optimizers_and_networks(capsys, tmp_path):
    for target in ("mse", "dense", "adam", NETWORKS[0]):
        assert main(["latex", target, "--lang", "en", "--format", "markdown"]) == 0
        assert capsys.readouterr().out.startswith("<!--")
    assert main(["latex", "examples/nothing.toml"]) == 2
    assert "cannot read the spec" in capsys.readouterr().err


@needs_tex
def test_cli_network_to_pdf(tmp_path, capsys):
    out = tmp_path / "cnn.tex"
    assert main(["latex", NETWORKS[1], "--lang", "en", "-o", str(out), "--pdf"]) == 0
    assert out.with_suffix(".pdf").read_bytes().startswith(b"%PDF")
    assert "the network spec examples/cnn_small.toml" in out.read_text()


# --- Jupyter displays of losses and layers ------------------------------------------------------

#: What a derivation is built with, by kind (its _repr_latex_ is the display).
DERIVE = {"loss": derive_loss, "layer": derive_layer}
JUPYTER_OPS = [op for kind in DERIVE for op in all_ops(kind)]
#: Jinja's delimiters (see derive/latex/render.py), which must never reach the output.
JINJA = ("(((", ")))", "((*", "*))", "((=", "=))")


def jupyter(op) -> str:
    return DERIVE[op.kind](op)._repr_latex_()


def displays(text: str) -> list[str]:
    """The $$ … $$ displays of a Jupyter text, checking that nothing lies between them."""
    found = re.findall(r"\$\$(.*?)\$\$", text, re.S)
    assert re.sub(r"\$\$.*?\$\$", "", text, flags=re.S).strip() == ""
    return found


@pytest.mark.parametrize("op", JUPYTER_OPS, ids=lambda op: op.name)
def test_jupyter_display_of_every_loss_and_layer(op):
    text = jupyter(op)
    assert text.startswith("$$") and text.endswith("$$")
    blocks = displays(text)
    assert blocks
    for block in blocks:
        # One aligned environment per display, with nothing around it.
        assert block.startswith(r"\begin{aligned}") and block.endswith(r"\end{aligned}")
        assert block.count(r"\begin{aligned}") == block.count(r"\end{aligned}") == 1
    # MathJax knows standard math only: no sectioning, preamble or macros of the documents.
    for banned in (r"\section", r"\documentclass", r"\usepackage", r"\deriveFit", *JINJA):
        assert banned not in text, banned
    view = document_view(op, language("en"))
    if view.kind == "loss":
        lhs = [view.chain.lhs, view.result_lhs]
    else:
        lhs = [g.lhs for g in view.gradients]
    for side in lhs:
        assert side.startswith(r"\frac{\partial") and side in text, side


def test_jupyter_mse_shows_the_steps_of_its_document():
    text = jupyter(get("mse"))
    first, chain, result = displays(text)
    assert r"\operatorname{MSE} &= \frac{1}{K N} \sum_{n=1}^{N} \sum_{j=1}^{K}" in first
    # ∂/∂ŷ_k[ŷ_k − y_k] = 1 is a clause of the power rule's line, not a line of its own.
    power = r" &= \frac{2 u}{K N} && \text{power rule}"
    # The derivation ends for the output k it was taken for, and the result follows it
    # once, in a display of its own (as the documents box it).
    assert power in chain and "index j" not in chain
    assert result.strip() == (r"\begin{aligned}" "\n"
                              r"\frac{\partial \operatorname{MSE}}{\partial {\hat{y}}_{k}} &= "
                              r"\frac{2 \left({\hat{y}}_{k} - {y}_{k}\right)}{K N}" "\n"
                              r"\end{aligned}")
    rules = ["definition", "drop the other examples", "open the sum", "constant terms vanish",
             "chain rule", "power rule", "substitute back"]
    at = [chain.index(rf"\text{{{rule}}}") for rule in rules]
    assert at == sorted(at)


def test_jupyter_layers_show_steps_results_and_the_notes_formulas():
    dense = jupyter(get("dense"))
    assert len(displays(dense)) == 5  # definition, ∂E/∂x, ∂E/∂W, ∂E/∂b, one case at a time
    assert r"\text{chain rule through the outputs}" in dense
    assert r"& \frac{\partial E}{\partial {W}_{j,i}} = {\delta}_{j} {x}_{i}" in dense
    # Batch norm: the definition, then ∂E/∂x (through μ and σ²), ∂E/∂γ and ∂E/∂β, each
    # step by step.
    norm = displays(jupyter(get("batch_norm")))
    assert len(norm) == 4 and r"\sigma^{2}_{c} &= \frac{1}{m}" in norm[0]  # m = N·H·W
    assert r"\frac{\partial E}{\partial {x}_{n,c,h,w}} &= " in norm[1]
    assert r"\frac{\partial E}{\partial \sigma^{2}_{c}}" in norm[1]  # x's gradient goes through σ²
    assert r"\frac{\partial E}{\partial {\gamma}_{c}} &= " in norm[2]
    assert r"\frac{\partial E}{\partial {\beta}_{c}} &= " in norm[3]
    sparse = jupyter(get("sparse_categorical_cross_entropy"))
    assert r"\left[k = t\right]" in displays(sparse)[-1]


@needs_tex
def test_jupyter_displays_compile_as_latex_math(tmp_path):
    """Every display, with \\[ \\] for $$, compiles in a document with amsmath only."""
    def math(text):
        return re.sub(r"\$\$(.*?)\$\$", lambda m: "\\[" + m.group(1) + "\\]", text, flags=re.S)

    body = "\n".join(f"% {op.name}\n{math(jupyter(op))}" for op in JUPYTER_OPS)
    tex = ("\\documentclass{article}\n\\usepackage{amsmath,amssymb}\n\\begin{document}\n"
           f"{body}\n\\end{{document}}\n")
    returncode, errors, text = _compile(_write(tmp_path / "jupyter", tex))
    assert returncode == 0, errors
    assert "MSE" in text
