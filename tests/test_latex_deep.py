"""Deep networks in `derive latex`: typeset up to the limit, a clear error beyond it."""

from derive.cli import main
from derive.latex.network import MAX_LAYERS


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
    assert text.count(r"\odot") >= MAX_LAYERS - 1


def test_a_deeper_network_is_one_line_and_no_file(tmp_path, capsys):
    out = tmp_path / "deep.tex"
    assert main(["latex", str(spec(tmp_path, MAX_LAYERS + 1)), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"has {MAX_LAYERS + 1} layers" in err and err.count("\n") == 1
    assert not out.exists()
