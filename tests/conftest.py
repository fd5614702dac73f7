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
