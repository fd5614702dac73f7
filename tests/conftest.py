from functools import cache
from pathlib import Path

import pytest

from derive.checks import load_module

REPO = Path(__file__).resolve().parent.parent
GENERATED = REPO / "generated"


@cache
def generated(kind_folder: str, name: str):
    """The committed generated module of a catalogue op."""
    return load_module(GENERATED / kind_folder / f"{name}.py")


@pytest.fixture
def repo():
    return REPO


# --- network specs and `derive train` runs, shared by the training tests ------------------

#: A network spec with one [[layers]] table per entry of ``layers`` (a TOML body each).
SPEC_HEAD = """\
[network]
name = "{name}"
input_shape = {shape}
loss = "{loss}"
"""


def spec_text(name: str, layers, *, shape=(64,), loss: str = "categorical_cross_entropy",
              train: str = "") -> str:
    """The text of a network spec.

    Parameters
    ----------
    name : str
        The network's (and generated module's) name.
    layers : iterable of str
        The body of each ``[[layers]]`` table, e.g. ``'type = "dense"\\nunits = 10'``.
    shape : sequence of int
        The input shape.
    loss : str
        The catalogue loss.
    train : str
        The body of the ``[train]`` table ("" for none).
    """
    text = SPEC_HEAD.format(name=name, shape=list(shape), loss=loss)
    for body in layers:
        text += f"\n[[layers]]\n{body}\n"
    return text + (f"\n[train]\n{train}\n" if train else "")


def write_spec(folder: Path, text: str, name: str = "net") -> Path:
    """``text`` written to ``folder/name.toml``; its path."""
    path = Path(folder) / f"{name}.toml"
    path.write_text(text)
    return path


def cli_train(spec, out, *options) -> int:
    """`derive train SPEC --out OUT --no-progress OPTIONS...`; its exit code."""
    from derive.cli import main

    return main(["train", str(spec), "--out", str(out), "--no-progress", *options])


def one_error_line(capsys) -> str:
    """The one line a refused command wrote to stderr (no traceback)."""
    err = capsys.readouterr().err
    assert err.startswith("derive: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


#: The small network the optimizer and regularisation tests train against PyTorch:
#: 5 inputs → 6 tanh units → 3 outputs, mean squared error.
TANH_MLP = ['type = "dense"\nunits = 6\nactivation = "tanh"', 'type = "dense"\nunits = 3']


def tanh_mlp_spec(name: str, train: str) -> str:
    """The spec of :data:`TANH_MLP` called ``name`` with this ``[train]`` body."""
    return spec_text(name, TANH_MLP, shape=(5,), loss="mse", train=train)


def tanh_mlp_torch_loss(params, x, y):
    """PyTorch's loss of :data:`TANH_MLP` with parameters (W1, b1, W2, b2) on a batch."""
    import torch
    import torch.nn.functional as F  # noqa: N812  (the name PyTorch documents)

    h = torch.tanh(F.linear(torch.from_numpy(x), params[0], params[1]))
    return F.mse_loss(F.linear(h, params[2], params[3]), torch.from_numpy(y))


def network_modules(folder: Path, spec_for):
    """A function name → the generated network module of ``spec_for(name)``, made once each.

    ``spec_for(name)`` gives the spec's text; its network must be called ``net_<name>``.
    """
    from derive.cli import main

    modules = {}

    def get(name):
        if name not in modules:
            spec = write_spec(folder, spec_for(name), name)
            assert main(["kernels", str(spec), "-o", str(folder)]) == 0
            modules[name] = load_module(Path(folder) / "networks" / f"net_{name}.py")
        return modules[name]

    return get


def table_spec_text(name: str, shape, layers, loss: str = "mse", train: str = "") -> str:
    """The text of a network spec whose layers are given as dictionaries.

    Parameters
    ----------
    name : str
        The network's (and generated module's) name.
    shape : sequence of int
        The input shape.
    layers : iterable of dict
        One ``[[layers]]`` table each, e.g. ``{"type": "dense", "units": 10}``.
    loss : str
        The loss's catalogue name.
    train : str
        The body of the ``[train]`` table.

    Returns
    -------
    str
        The spec, as TOML.
    """
    text = f'[network]\nname = "{name}"\ninput_shape = {list(shape)}\nloss = "{loss}"\n'
    for layer in layers:
        text += "\n[[layers]]\n" + "".join(
            f"{k} = {v!r}\n".replace("'", '"').replace("True", "true")
            for k, v in layer.items())
    return text + "\n[train]\n" + train


def table_network_builder(folder: Path):
    """A function (name, shape, layers, loss, train) → its generated module, made once each.

    The spec is :func:`table_spec_text`'s; the module is generated into ``folder`` and
    imported from there.
    """
    from derive.cli import main

    modules = {}

    def get(name, shape, layers, loss="mse", train=""):
        if name not in modules:
            spec = Path(folder) / f"{name}.toml"
            spec.write_text(table_spec_text(name, shape, layers, loss, train))
            assert main(["kernels", str(spec), "-o", str(folder)]) == 0
            modules[name] = load_module(Path(folder) / "networks" / f"{name}.py")
        return modules[name]

    return get


# --- compiled documents, shared by the recurrent layers' LaTeX tests ----------------------

def rows_on_one_page(pdf, lang: str, rows: tuple) -> None:
    """Every row of the group the text introduces 'block by block' on that phrase's page."""
    import shutil
    import subprocess

    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext not installed")

    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True,
                          check=True).stdout
    phrase = "bloco a bloco" if lang == "pt" else "block by block"
    (page,) = [p_ for p_ in text.split("\f") if phrase in p_]
    after = page[page.index(phrase):]
    for row in rows:
        assert row in after, (row, after)
