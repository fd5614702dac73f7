"""Network documents as read page by page (issue 13): what the reading found, pinned."""

import pathlib
import re

import pytest

from derive.cli import main
from derive.latex.context import document_view
from derive.latex.lines import LINE, split, width
from derive.latex.render import language
from derive.network import load_spec

DENSE_BN = """[network]
name = "dense_bn"
input_shape = [64]
loss = "categorical_cross_entropy"

[[layers]]
type = "dense"
units = 16

[[layers]]
type = "batch_norm"
activation = "relu"

[[layers]]
type = "dense"
units = 10
activation = "softmax"
"""


def tex(tmp_path, spec, lang, fmt):
    out = tmp_path / f"{lang}_{fmt}.tex"
    assert main(["latex", str(spec), "--lang", lang, "--format", fmt, "-o", str(out)]) == 0
    return out.read_text()


def frames(text):
    return re.findall(r"\\begin\{frame\}(.*?)\\end\{frame\}", text, re.S)


@pytest.mark.parametrize("lang", ["pt", "en"])
@pytest.mark.parametrize("fmt", ["article", "beamer"])
def test_a_convolution_reads_its_window_in_one_order_on_both_axes(tmp_path, lang, fmt):
    # The notes' code starts a window at the output's position and adds the offset
    # (start = h·S, then start + i): h + i − 1 and w + j − 1, in the forward pass and in
    # the kernel's gradient. SymPy's alphabetical order printed h + i − 1 beside j + w − 1.
    text = tex(tmp_path, "examples/cnn_small.toml", lang, fmt)
    assert text.count("h + i - 1,w + j - 1") >= 2
    assert "j + w" not in text and "i + h" not in text


@pytest.mark.parametrize("lang", ["pt", "en"])
def test_batch_norm_after_a_dense_layer_has_no_image_axes(tmp_path, lang):
    # The layer is declared over (N, C, H, W); after a dense layer H = W = 1, and its
    # statistics printed x⁽¹⁾_{n,c,1,1} beside x̂⁽²⁾_{n,c,h,w}.
    spec = tmp_path / "dense_bn.toml"
    spec.write_text(DENSE_BN)
    text = tex(tmp_path, spec, lang, "article")
    mean = r"\mu^{(2)}_{c} &= \deriveFit[0.75\linewidth]{\frac{1}{N} \sum_{n=1}^{N} x^{(1)}_{n,c}}"
    assert mean in text
    assert r"\hat{x}^{(2)}_{n,c} &= " in text
    assert r"\frac{\partial E}{\partial x^{(1)}_{n,c}}" in text
    assert "n,c,h,w" not in text and ",1,1}" not in text


@pytest.mark.parametrize(("lang", "intro", "note"), [
    ("pt", "Para cada exemplo $n$ do lote", "Na camada $1$"),
    ("en", "For every example $n$ of the batch", "In layer $1$")])
def test_the_forward_slides_say_what_they_compute_before_the_notes(tmp_path, lang, intro, note):
    # The CNN's first forward slide held only the notes on x̃ and r*, u*; the sentence
    # that says what the forward pass is came on the next slide.
    slides = frames(tex(tmp_path, "examples/cnn_small.toml", lang, "beamer"))
    first = next(s for s in slides if note in s)
    assert first.index(intro) < first.index(note)
    assert not any(intro in s for s in slides if s is not first)
    assert first.split(note)[0].rstrip().endswith(r"\par\medskip")  # a paragraph of its own


@pytest.mark.parametrize(("lang", "words"), [
    ("pt", "Multiplicado elemento a elemento pela derivada da ativação da camada $3$"),
    ("en", "Multiplied element by element by the derivative of the activation of layer $3$")])
def test_the_output_error_slide_says_where_delta_comes_from(tmp_path, lang, words):
    # ∂E/∂x⁽³⁾ = x⁽³⁾ − y, then δ⁽³⁾ = σ'(s⁽³⁾) ∂E/∂x⁽³⁾ with no word between on the slide.
    slides = frames(tex(tmp_path, "examples/sigmoid_sse.toml", lang, "beamer"))
    loss = next(s for s in slides if r"\delta^{(3)}_{n,j} = " in s)
    assert loss.index(r"\partial x^{(3)}_{n,j}} = ") < loss.index(words) \
        < loss.index(r"\delta^{(3)}_{n,j} = ")


@pytest.mark.parametrize(("lang", "said", "wrong"), [
    ("pt", "os parâmetros de uma camada densa", "os pesos de uma camada densa"),
    ("en", "the parameters of a dense layer", "the weights of a dense layer")])
def test_the_bias_is_not_called_a_weight(tmp_path, lang, said, wrong):
    text = tex(tmp_path, "examples/mlp_notes.toml", lang, "article")
    assert said in text and wrong not in text


@pytest.mark.parametrize("name", ["mlp_notes", "sigmoid_sse", "deep_sigmoid", "deep_relu"])
def test_every_explicit_formula_breaks_into_two_lines_that_fit(name):
    # deep_sigmoid's slide of ∂E/∂W⁽⁵⁾ shrank to the 80 % floor and still ran over: its
    # nested (W⁽⁶⁾)ᵀ((W⁽⁷⁾)ᵀ(…)) has no sign to break at before the first ⊙. mlp_notes'
    # ∂E/∂b⁽¹⁾ shrank to 87 %: its break left ⊙ ReLU'(s⁽¹⁾) alone, which was refused.
    view = document_view(load_spec(f"examples/{name}.toml"), language("en"))
    for f in view.explicit:
        line = LINE - width(f.lhs + " = ")
        pieces = split(f.rhs, line)
        assert len(pieces) <= 2 and max(width(p) for p in pieces) <= line, f.lhs
    if view.depth == 3:
        assert view.explicit_below == 0


def test_the_first_layers_bias_slide_offers_the_broken_formula(tmp_path):
    text = tex(tmp_path, "examples/mlp_notes.toml", "en", "beamer")
    slide = next(s for s in frames(text) if r"\partial b^{(1)}} = \left(" in s)
    line = next(ln for ln in slide.splitlines() if r"\partial b^{(1)}} = " in ln)
    assert line.count(r"\deriveFitBroken") == 1
    assert r"\\ &\quad {}\odot \operatorname{ReLU}'\left(s^{(1)}\right)" in line


def _delta_indices(text):
    """Each layer's δ⁽ˡ⁾ subscripts where it is the formula's subject or a bias's sum."""
    found: dict = {}
    subject = r"\\delta\^\{\((\d+)\)\}_\{([a-z,]+)\} = "
    summed = (r"\\partial b\^\{\((\d+)\)\}_\{[a-z]+\}\} = \\sum_\{n=1\}\^\{N\} "
              r"\\delta\^\{\(\d+\)\}_\{([a-z,]+)\}")
    for pattern in (subject, summed):
        for layer, indices in re.findall(pattern, text):
            found.setdefault(layer, set()).add(indices)
    return found


@pytest.mark.parametrize(("spec", "lang"), [
    ("examples/deep_sigmoid.toml", "en"), ("examples/mlp_notes.toml", "pt"),
    ("examples/residual_mlp.toml", "en"), ("examples/cnn_small.toml", "en"),
    ("dense_bn", "pt")])
def test_each_delta_has_one_set_of_indices(tmp_path, spec, lang):
    # δ⁽⁸⁾ was δ⁽⁸⁾_{n,i} in the line that defines it (the letters of layer 9's input)
    # and δ⁽⁸⁾_{n,j} in layer 8's own gradients, two letters for one axis; after a dense
    # layer, a batch norm's δ⁽²⁾ was n,i in one formula and n,c in the next.
    if spec == "dense_bn":
        spec = tmp_path / "dense_bn.toml"
        spec.write_text(DENSE_BN)
    spec = pathlib.Path(spec)
    text = tex(tmp_path, spec, lang, "markdown")
    found = _delta_indices(text)
    assert found, "no δ formula found"
    if spec.name == "dense_bn.toml":
        # The batch norm's input keeps its c (its μ_c, σ_c read it): δ⁽¹⁾ is left mixed.
        found.pop("1")
    assert all(len(v) == 1 for v in found.values()), found
    # The layer below's letters, and a summation letter of its own for the layer above.
    if "deep_sigmoid" in str(spec):
        assert (r"\frac{\partial E}{\partial x^{(8)}_{n,j}} = \sum_{k=1}^{10} "
                r"W^{(9)}_{k,j} \delta^{(9)}_{n,k}") in text


@pytest.mark.parametrize("lang", ["pt", "en"])
def test_a_layer_in_a_network_writes_its_formulas_as_its_own_document(tmp_path, lang):
    # The renamed arrays sorted by their new names: s = b + Σ W x (the dense document
    # writes Σ W x + b) and batch norm's x̂⁽²⁾γ⁽²⁾ + β⁽²⁾ (its document: γ x̂ + β).
    spec = tmp_path / "dense_bn.toml"
    spec.write_text(DENSE_BN)
    text = tex(tmp_path, spec, lang, "markdown")
    assert r"s^{(2)}_{n,c} = \gamma^{(2)}_{c} \hat{x}^{(2)}_{n,c} + \beta^{(2)}_{c}" in text
    assert r"s^{(1)}_{n,j} = \sum_{i=1}^{64} W^{(1)}_{j,i} x^{(0)}_{n,i} + b^{(1)}_{j}" in text
    assert r"\hat{x}^{(2)}_{n,c} \gamma" not in text and r"= b^{(" not in text
    assert r"= \sum_{j=1}^{10} W^{(3)}_{j,c} \delta^{(3)}_{n,j}" in text


@pytest.mark.parametrize(("name", "lang", "said", "wrong"), [
    ("deep_relu", "en", r"Here $\operatorname{ReLU}'$ is $1$ wherever a unit is active",
     "Where the derivatives of the activations are small"),
    ("deep_relu", "pt", r"Aqui $\operatorname{ReLU}'$ vale $1$ onde a unidade está ativa",
     "Onde as derivadas das ativações são pequenas"),
    ("deep_sigmoid", "en", r"Here every factor $f'$ is at most $\frac{1}{4}$ "
     r"($\sigma' \le \frac{1}{4}$)", "wherever a unit is active"),
    ("deep_sigmoid", "pt", r"Aqui cada fator $f'$ vale no máximo $\frac{1}{4}$",
     "onde a unidade está ativa")])
def test_the_vanishing_gradient_sentence_follows_the_activations_bound(
        tmp_path, name, lang, said, wrong):
    # deep_relu said the small derivatives of its activations make the gradient vanish:
    # that is the sigmoid's case (σ' ≤ 1/4); ReLU' is 0 or 1. The sentence is chosen by
    # the supremum of f' computed from each hidden activation's derivative.
    view = document_view(load_spec(f"examples/{name}.toml"), language("en"))
    assert view.slope.kind == ("unit" if name == "deep_relu" else "below")
    text = tex(tmp_path, f"examples/{name}.toml", lang, "article")
    assert said in text and wrong not in text
