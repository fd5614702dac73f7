"""Deep networks in `derive latex`: typeset up to the limit, a clear error beyond it."""

import pytest

from derive.cli import main
from derive.latex.context import document_view
from derive.latex.lines import width
from derive.latex.network import EXPLICIT_WIDTH, MAX_LAYERS
from derive.latex.render import language
from derive.network import load_spec


def spec(tmp_path, depth):
    path = tmp_path / f"deep{depth}.toml"
    layers = '[[layers]]\ntype = "dense"\nunits = 4\nactivation = "sigmoid"\n' * depth
    path.write_text(f'[network]\nname = "deep{depth}"\ninput_shape = [4]\nloss = "mse"\n'
                    + layers)
    return path


def test_the_deepest_network_typesets(tmp_path, capsys):
    # Printing the first layer's explicit gradient went through SymPy's minus-sign search
    # on every nested product: minutes at thirty layers, a RecursionError at a hundred.
    out = tmp_path / "deep.tex"
    assert main(["latex", str(spec(tmp_path, MAX_LAYERS)), "-o", str(out)]) == 0
    text = out.read_text()
    # Only the top layers' explicit formulas are written; the text says which are not.
    assert r"\odot" in text and "não caberiam em duas linhas" in text


def test_a_deeper_network_is_one_line_and_no_file(tmp_path, capsys):
    out = tmp_path / "deep.tex"
    assert main(["latex", str(spec(tmp_path, MAX_LAYERS + 1)), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"has {MAX_LAYERS + 1} layers" in err and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize("lang", ["pt", "en"])
@pytest.mark.parametrize("name", ["deep_sigmoid", "deep_relu", "mlp_notes", "sigmoid_sse"])
def test_explicit_formulas_are_written_only_where_they_fit_two_lines(name, lang):
    # A 9-layer network's first layers nest eight (W)ᵀ(…) ⊙ f'(s) pairs: at full width
    # they shrank to the 80 % floor. They are left to the δ recursion, decided by width.
    view = document_view(load_spec(f"examples/{name}.toml"), language(lang))
    kept = {f.layer for f in view.explicit}
    assert all(width(f.rhs) <= EXPLICIT_WIDTH for f in view.explicit)
    assert kept == set(range(view.explicit_below + 1, view.depth + 1))
    assert len(view.explicit) == 2 * len(kept)
    if view.depth <= 3:  # the notes' three-layer networks keep every layer
        assert view.explicit_below == 0
    else:
        assert 0 < view.explicit_below < view.depth - 2


@pytest.mark.parametrize(("lang", "words"), [("pt", "das camadas 1 a"),
                                             ("en", "layers 1 to")])
def test_the_text_says_which_explicit_formulas_are_left_to_the_recursion(lang, words, tmp_path):
    out = tmp_path / "deep.tex"
    assert main(["latex", "examples/deep_relu.toml", "--lang", lang, "-o", str(out)]) == 0
    view = document_view(load_spec("examples/deep_relu.toml"), language(lang))
    text = out.read_text()
    assert f"{words} {view.explicit_below}" in text
    assert rf"\partial W^{{({view.explicit_below})}}" not in text.split("\\section")[-1]


def test_the_three_layer_notes_keep_every_explicit_formula(tmp_path):
    out = tmp_path / "mlp.tex"
    assert main(["latex", "examples/mlp_notes.toml", "-o", str(out)]) == 0
    assert "caberiam" not in out.read_text()
