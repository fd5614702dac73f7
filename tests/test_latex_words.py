"""The words on the page: what a student reads in every document of the catalogue.

Every catalogue document (both languages, article format) and the example networks are
rendered once; the tests read their text outside mathematics and hold the points of
issue 13 that words can show: no internal vocabulary (seeds, the engine, raw
identifiers), citations of the course notes only where they are right, sections and
captions only where they apply, sensible precision, the notes' facts, and Portuguese as
a Brazilian lecturer writes it. A few documents are compiled to PDF.
"""

from __future__ import annotations

import re
import shutil
from functools import cache
from types import SimpleNamespace

import pytest
import sympy as sp

from derive import registry
from derive.errors import DeriveError
from derive.latex import compile_pdf
from derive.latex.context import inline_title, op_title
from derive.latex.document import example_document
from derive.latex.render import language
from derive.pipeline import document_for

LANGS = ("pt", "en")
NETWORKS = ("examples/mlp_notes.toml", "examples/cnn_small.toml")
HAVE_TEX = shutil.which("pdflatex") is not None
needs_tex = pytest.mark.skipif(not HAVE_TEX, reason="pdflatex not installed")


def _targets() -> list[str]:
    return [op.name for op in registry.all_ops()] + list(NETWORKS)


@cache
def _document(target: str, lang: str) -> str | None:
    """The article, or None for a kind that is not typeset (vector functions)."""
    try:
        return document_for(target, lang=lang, fmt="article").text
    except DeriveError:
        return None


def _documents():
    for lang in LANGS:
        for target in _targets():
            text = _document(target, lang)
            if text is not None:
                yield target, lang, text


def _body(tex: str) -> str:
    """The document body without comments and plots."""
    tex = tex.split(r"\begin{document}", 1)[-1]
    tex = re.sub(r"(?<!\\)%.*", "", tex)
    return re.sub(r"\\begin\{tikzpicture\}.*?\\end\{tikzpicture\}", "", tex, flags=re.S)


_MATH = re.compile(
    r"\\begin\{(equation|align|multline|gather)\*?\}.*?\\end\{\1\*?\}"
    r"|\$\$.*?\$\$|\$.*?\$|\\\[.*?\\\]|\\\(.*?\\\)",
    re.S,
)


def prose(tex: str) -> str:
    """The running text of a document: the body without mathematics or \\texttt names."""
    body = _body(tex)
    # \intertext{...} inside an align is prose: keep it.
    kept = " ".join(re.findall(r"\\intertext\{(.*?)\}\s*(?:\n|&|\\\\)", body))
    text = _MATH.sub(" ", body + " " + kept)
    return re.sub(r"\\texttt\{[^{}]*\}", " ", text)


FORBIDDEN = {
    "pt": ("seed", "motor", "engine", "SymPy", "transborda", "passo para a frente",
           "passo para trás", "cinzas", "não contêm", "subgradiente", "Função de ativação"),
    "en": ("seed", "engine", "SymPy", "subgradient"),
}


def test_every_catalogue_op_has_a_portuguese_title():
    titles = language("pt").words["titles"]
    missing = [op.name for op in registry.all_ops() if op.name not in titles]
    assert missing == [], (f"no Portuguese title for {missing}: add each to the `titles` "
                           "table of derive/templates/latex/pt/words.tex.jinja")


@pytest.mark.parametrize("kind, word", [("loss", "Função de custo"),
                                        ("optimizer", "Otimizador"),
                                        ("activation", "Função de ativação")])
def test_an_op_without_a_portuguese_title_is_named_by_its_kind(kind, word):
    op = SimpleNamespace(name="new_op", kind=kind, title="New op")
    assert op_title(op, language("pt")) == word + r" \texttt{new\_op}"
    assert op_title(op, language("en")) == "New op"


def test_titles_inside_a_sentence():
    pt, en = language("pt"), language("en")
    assert inline_title("Erro quadrático médio (MSE)", pt) == "erro quadrático médio (MSE)"
    assert inline_title("ReLU paramétrica (PReLU)", pt) == "ReLU paramétrica (PReLU)"
    assert inline_title("Heaviside step", en) == "Heaviside step"
    assert inline_title("Mean squared error", en) == "mean squared error"


def test_no_internal_vocabulary_in_the_text():
    found = []
    for target, lang, tex in _documents():
        text = prose(tex)
        found += [(target, lang, w) for w in FORBIDDEN[lang] if w.lower() in text.lower()]
        # A raw identifier (categorical_cross_entropy, max_pool2d) is never running text.
        found += [(target, lang, m) for m in re.findall(r"\w*\\_\w*", text)]
        found += [(target, lang, m) for m in re.findall(r"\b[a-z]+_[a-z0-9_]+\b", text)]
    assert found == []


def test_titles_are_the_ops_titles():
    for _target, _lang, tex in _documents():
        title = re.search(r"\\title\{(.*)\}", tex).group(1)
        assert "_" not in title.replace(r"\_", "").replace("texttt", ""), title
        assert r"\_" not in title or r"\texttt{" in title, title
    pt = _document("categorical_cross_entropy", "pt")
    assert r"\title{Entropia cruzada categórica (sobre probabilidades):" in pt
    net = _document("examples/mlp_notes.toml", "pt")
    assert "entropia cruzada categórica (sobre probabilidades)" in net
    assert "camada densa (totalmente conectada)" in net


def test_the_course_notes_are_cited_only_where_right():
    for target, _lang, tex in _documents():
        text = prose(tex)
        # Algorithm 2 of the notes is Rumelhart's momentum; Algorithm 1 gradient descent.
        if target != "momentum_rumelhart":
            assert "Algoritmo 2 das" not in text and "Algorithm 2 of" not in text, target
        if target != "gd":
            assert "Algoritmo 1 das" not in text and "Algorithm 1 of" not in text, target
        assert "das notas (" not in text and "the notes (" not in text
    assert "Algoritmo 1 das notas de aula" in prose(_document("gd", "pt"))
    assert "Algoritmo 2 das notas de aula" in prose(_document("momentum_rumelhart", "pt"))
    assert "seção 6.2 das notas de aula" in prose(_document("mse", "pt"))
    assert "section 6.2 of the course notes" in prose(_document("mse", "en"))
    assert "eq.~(6.12) das notas de aula" in _document("examples/mlp_notes.toml", "pt")
    assert r"slides \emph{Retropropagação em Redes Neurais}" in prose(
        _document("examples/mlp_notes.toml", "pt"))
    assert r"slides \emph{Gradiente Descendente e Backpropagation}" in prose(
        _document("adam", "pt"))


def test_portuguese_words():
    for _target, lang, tex in _documents():
        if lang != "pt":
            continue
        text = prose(tex)
        assert "estouro" in text or "transbord" not in text
        assert "Faixas cinzas" not in text
    assert r"\section{A passagem para frente}" in _document("examples/mlp_notes.toml", "pt")
    assert "Nenhum termo" in _document("mse", "pt")
    assert "não causam estouro" in _document("binary_cross_entropy_with_logits", "pt")


_FLOAT = re.compile(r"(?<![\w.])\d+(?:\{,\}|\.)\d+")


def test_numbers_have_sensible_precision():
    long_numbers = []
    for target, lang, tex in _documents():
        body = re.sub(r"\\deriveFit\[[^]]*\]", "", _body(tex))
        for number in _FLOAT.findall(body):
            digits = re.sub(r"\D", "", number).lstrip("0")
            if len(digits) > 6:
                long_numbers.append((target, lang, number))
    assert long_numbers == []
    selu = _document("selu", "pt")
    assert r"$\alpha \approx 1{,}6733$" in selu


def test_exact_places_read_exactly():
    # An exact maximiser is written as the argument (σ'(0) = 0,25, not σ'(x) = 0,25 at x = 0).
    assert r"$\sigma'({0}) = 0{,}25$" in _document("sigmoid", "pt")
    assert r"\operatorname{SELU}'({0}) \approx 1{,}7581" in _document("selu", "pt")
    assert r"S'({2.8})" in _document("wilson_cowan", "en")
    # GELU's maximiser is √2 exactly (GELU'' = φ(x)(2 − x²)), no longer x ≈ 1,4142.
    assert r"\operatorname{GELU}'({\sqrt{2}}) \approx 1{,}1289" in _document("gelu", "pt")


def test_kinks_say_one_sided_derivatives_and_the_convention():
    selu = prose(_document("selu", "pt"))
    assert "derivadas laterais" in selu and "a derivada lateral à esquerda" in selu
    assert "the left-hand derivative" in prose(_document("selu", "en"))
    relu = prose(_document("relu", "pt"))
    assert "adotamos por convenção" in relu


def test_sections_only_where_they_apply():
    softsign = _document("softsign", "pt")
    assert "Pontos não deriváveis" not in softsign
    assert "parâmetros padrão" not in softsign
    assert "Faixas cinza" not in softsign and r"\fill" not in softsign
    sigmoid = _document("sigmoid", "pt")
    assert "Faixas cinza" in sigmoid and r"\fill" in sigmoid
    # A caption mentions dots only where the graph has them.
    assert "Círculo cheio" not in _document("elu", "pt")
    assert "Círculo cheio" in _document("relu", "pt")
    # Only a program with numerical safeguards says so.
    for name in ("mse", "sse_half", "hinge", "mae", "huber"):
        for lang in LANGS:
            text = prose(_document(name, lang))
            assert "estável" not in text and "stable" not in text, (name, lang)
            assert "cuidados numéricos" not in text and "safeguards" not in text
    assert "cuidados numéricos" in prose(_document("softmax_cross_entropy", "pt"))


def test_the_notes_facts():
    wc = _document("wilson_cowan", "pt")
    assert "$S(0) = 0$" in wc
    sigmoid = prose(_document("sigmoid", "pt"))
    assert "seção 7.4" in sigmoid and "8" in sigmoid
    assert "10^{-3}" in _document("sigmoid", "pt").split("seção 7.4", 1)[1]


def _slides_example(lang: str, **values):
    from derive.example import worked_example

    settings = {"x": "2.1", "w": "1", "b": "0", "y": "4"} | values
    ex = worked_example("mse", {k: sp.Rational(v) for k, v in settings.items()}, lr="0.01")
    return example_document(ex, ["example", "mse"], lang=lang).text


@pytest.mark.parametrize("lang, printed", [("pt", "-7{,}68"), ("en", "-7.68")])
def test_the_worked_example_corrects_the_slides(lang, printed):
    tex = _slides_example(lang)
    assert printed in tex and ("-7{,}98" in tex or "-7.98" in tex)
    assert ("1{,}0798" in tex or "1.0798" in tex)
    assert r"\approx 2{,}87106" in tex or r"\approx 2.87106" in tex
    title = re.search(r"\\title\{(.*)\}", tex).group(1)
    assert not re.search(r"\bmse\b", title) and "identity," not in title
    other = _slides_example(lang, x="3")
    assert printed not in other


@needs_tex
@pytest.mark.parametrize("target, lang", [("selu", "pt"), ("softsign", "en"),
                                          ("gd", "pt"), ("examples/mlp_notes.toml", "pt")])
def test_a_few_documents_compile(target, lang, tmp_path):
    pdf = compile_pdf(_document(target, lang), tmp_path / "doc.pdf")
    assert pdf.stat().st_size > 0


@needs_tex
def test_the_worked_example_compiles(tmp_path):
    assert compile_pdf(_slides_example("pt"), tmp_path / "example.pdf").stat().st_size > 0


#: "caso" for "otherwise" and "no melhor caso" are Portuguese idiom, not a sample.
_CASE = {"pt": re.compile(r"(?<!melhor )\bcasos?\b(?! contrário)"),
         "en": re.compile(r"(?<!best )(?<!worst )\bcases?\b")}


def test_a_sample_is_an_example_not_a_case():
    """The notes call one input of the batch an example ("exemplo"), never a case."""
    for target, lang, tex in _documents():
        found = _CASE[lang].findall(prose(tex))
        assert not found, (target, lang, found)
