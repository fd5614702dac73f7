"""Hostile arguments at every CLI command: a one-line error and exit 2, never a traceback.

Each case runs ``derive.cli.main`` in-process and asserts exit code 2, one line on stderr
that starts ``derive: error:`` and names the input, no traceback, no file left in the
output folder, and a bounded time. Tables per entry point: formulas (bounded work and
real-valued constants), worked-example numbers, output paths, ``derive check`` against
the declaration, data loaders, and a fuzz table of argument lists for every command.
"""

import errno
import gzip
import shutil
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from derive.cli import main
from derive.errors import DeriveError

GENERATED = Path(__file__).resolve().parent.parent / "generated"
SECONDS = 30.0


def _files(folder: Path | None) -> list[Path]:
    if folder is None or not folder.exists():
        return []
    return sorted(p for p in folder.rglob("*") if not p.is_dir())


def refused(argv, capsys, names: str, out: Path | None = None, code: int = 2) -> str:
    """Run ``derive ARGV``: exit ``code``, one error line naming ``names``, nothing written."""
    before = _files(out)
    start = time.perf_counter()
    got = main([str(a) for a in argv])
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err
    assert got == code, err
    assert "Traceback" not in err
    assert err.startswith("derive: error:") and err.count("\n") == 1, err
    assert names in err, err
    assert elapsed < SECONDS, f"{elapsed:.1f} s"
    if out is not None:
        assert _files(out) == before, "a file was left behind"
    return err


# --- formulas: bounded work, real constants, at every entry point that takes one ---------

FORMULAS = [
    ("x**sqrt(-1)", "not a real number"),
    ("sqrt(-1)*x", "not a real number"),
    ("log(-1)*x", "not a real number"),
    ("(-8)**(1/3)*x", "not a real number"),
    ("(-1)**0.5*x", "not a real number"),
    ("(x+1)**999*(x-1)**999", "power 999"),
    ("(x+1)**200*(x-1)**200", "power 200"),
    ("((x**999)**999)**999", "exponent beyond"),
    ("x**999*x**999", "exponent beyond"),
    ("(x+1)**64*(x-1)**64", "product of 128 sums"),
    ("((x+1)**8+1)**9", "sums"),
    ("1/(x+1)**60+1/(x+2)**60+1/(x+3)**60", "sums"),
    ("(sin(x)+cos(x)+1)**50", "terms"),
    ("(x+exp(x)+tanh(x)+1)**40", "terms"),
    ("1e300*1e300*x", "out of range"),
    ("x**exp(1000)", "out of range"),
    ("x*exp(exp(exp(1000)))", "out of range"),
    ("tanh(" * 70 + "x" + ")" * 70, "nests deeper"),
]


def _as_loss(formula: str) -> str:
    return formula.replace("exp(", "EXP(").replace("x", "pred").replace("EXP(", "exp(")


@pytest.mark.parametrize(("formula", "says"), FORMULAS)
def test_kernels_expr(formula, says, tmp_path, capsys):
    refused(["kernels", "--expr", formula, "--name", "f", "-o", tmp_path], capsys, says, tmp_path)


@pytest.mark.parametrize(("formula", "says"), FORMULAS)
def test_kernels_loss_expr(formula, says, tmp_path, capsys):
    refused(["kernels", "--kind", "loss", "--expr", _as_loss(formula), "--name", "f",
             "-o", tmp_path], capsys, says, tmp_path)


@pytest.mark.parametrize(("formula", "says"), FORMULAS)
def test_latex_expr(formula, says, tmp_path, capsys):
    refused(["latex", "--expr", formula, "--name", "f", "-o", tmp_path / "f.tex"], capsys,
            says, tmp_path)


@pytest.mark.parametrize(("formula", "says"), FORMULAS)
def test_minimize_formula(formula, says, tmp_path, capsys):
    refused(["minimize", formula, "--start", "1", "-o", tmp_path / "run"], capsys, says,
            tmp_path)


def test_the_clock_stops_what_the_structure_lets_through(tmp_path, capsys, monkeypatch):
    """The wall-clock guard: a budget of 0.5 s ends a derivation with a clear error."""
    import derive.formula

    monkeypatch.setattr(derive.formula, "TIME_LIMIT", 0.5)
    formula = "(sin(x)+cos(x)+1)**20"  # within the structural bounds, seconds of work
    err = refused(["latex", "--expr", formula, "--name", "f"], capsys, "longer than 0.5 s")
    assert formula in err


def test_bounded_formulas_still_work(tmp_path, capsys):
    assert main(["latex", "--expr", "(x+1)**30*(x-1)**30", "--name", "f", "--format",
                 "markdown"]) == 0
    assert main(["minimize", "x**2 + (y+1)**4", "--start=1,1", "--steps", "3"]) == 0


# --- derive example: numbers, targets, losses --------------------------------------------

BASE = ["x=2.1", "w=1", "b=0", "y=4"]
EXAMPLES = [
    (["mse", "--set", "x=1e100000000", "w=1", "b=0", "y=4"], "x='1e100000000'"),
    (["mse", "--set", "x=-1e-100000000", "w=1", "b=0", "y=4"], "out of range"),
    (["mse", "--set", "x=0e99999999999", "w=1", "b=0", "y=4"], "x='0e99999999999'"),
    (["mse", "--set", *BASE, "--lr", "1e100000000"], "lr='1e100000000'"),
    (["mse", "--set", *BASE, "--lr", "0"], "not positive"),
    (["mse", "--set", *BASE, "--lr", "-1"], "not positive"),
    (["mse", "--set", *BASE, "--lr", "nan"], "lr='nan'"),
    (["mse", "--set", *BASE, "--lr", ""], "lr=''"),
    (["mse", "--set", "x=nan", "w=1", "b=0", "y=4"], "x='nan'"),
    (["mse", "--set", "x=inf", "w=1", "b=0", "y=4"], "x='inf'"),
    (["mse", "--set", "x=1/0", "w=1", "b=0", "y=4"], "divides by zero"),
    (["mse", "--set", "x=0x10", "w=1", "b=0", "y=4"], "x='0x10'"),
    (["mse", "--set", "x=" + "9" * 60, "w=1", "b=0", "y=4"], "out of range"),
    (["mse", "--set", "x=", "w=1", "b=0", "y=4"], "x=''"),
    (["mse", "--set", "=1", "w=1", "b=0", "y=4"], "'=1'"),
    (["softmax_cross_entropy", "--set", "x=2.1", "w=1", "b=0", "y=1"], "softmax_cross_entropy"),
    (["sparse_categorical_cross_entropy", "--set", "x=2.1", "w=1", "b=0", "y=1"], "y=1"),
    (["sigmoid", "--set", *BASE, "--loss", "softmax_cross_entropy"], "softmax_cross_entropy"),
    (["dense", "--set", *BASE], "dense"),
    (["adam", "--set", *BASE], "adam"),
    (["softmax", "--set", *BASE], "softmax"),
    (["", "--set", *BASE], "''"),
    (["mse", "--set", *BASE, "--activation", "mse"], "mse"),
]


@pytest.mark.parametrize(("argv", "says"), EXAMPLES, ids=range(len(EXAMPLES)))
def test_example(argv, says, capsys):
    refused(["example", *argv], capsys, says)


def test_sparse_categorical_example_is_worked_out(capsys):
    """One output has one class, 0: with y=0 the loss is −log ŷ."""
    assert main(["example", "sparse_categorical_cross_entropy", "--set", "x=2.1", "w=1",
                 "b=0", "y=0", "--activation", "sigmoid", "--lang", "en"]) == 0
    assert "Traceback" not in capsys.readouterr().err


def test_example_with_huge_values_keeps_exponents(capsys):
    assert main(["example", "mse", "--set", "x=1e300", "w=1e300", "b=0", "y=4",
                 "--lang", "en"]) == 0
    out = capsys.readouterr().out
    assert "e+600" in out and "inf" not in out.replace("infinit", "")


# --- output paths: directories, missing parents, a full disk -----------------------------

def outputs(tmp: Path):
    """(argv, what the error names) writing to a path that is a directory or a file."""
    folder = tmp / "folder"
    folder.mkdir()
    afile = tmp / "afile"
    afile.write_text("keep")
    return [
        (["latex", "sigmoid", "-o", folder], "folder"),
        (["latex", "sigmoid", "-o", ""], "directory"),
        (["latex", "sigmoid", "-o", "."], "directory"),
        (["latex", "--expr", "x**2", "--name", "f", "--format", "beamer", "-o", folder],
         "folder"),
        (["latex", "sigmoid", "-o", afile / "x.tex"], "afile"),
        (["example", "mse", "--set", *BASE, "--latex", "-o", folder], "folder"),
        (["example", "mse", "--set", *BASE, "--latex", "-o", afile / "x.tex"], "afile"),
        (["minimize", "x**2", "--start", "1", "-o", afile], "afile"),
        (["minimize", "x**2", "--start", "1", "-o", afile / "sub"], "afile"),
    ]


@pytest.mark.parametrize("case", range(9))
def test_output_paths(case, tmp_path, capsys):
    argv, says = outputs(tmp_path)[case]
    refused(argv, capsys, str(says) if isinstance(says, Path) else says, tmp_path)
    assert (tmp_path / "afile").read_text() == "keep"


class _FullDisk:
    """A file object whose writes fail as on a full disk."""

    def __init__(self, fd, mode):
        self.file = open(fd, mode)  # noqa: SIM115 — closed in __exit__

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()

    def write(self, data):
        self.file.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("argv", [
    ["latex", "sigmoid", "--format", "markdown", "-o", "{tmp}/notes.md"],
    ["example", "mse", "--set", *BASE, "--latex", "-o", "{tmp}/example.tex"],
    ["minimize", "x**2", "--start", "1", "-o", "{tmp}/run"],
])
def test_a_full_disk_leaves_no_file(argv, tmp_path, capsys, monkeypatch):
    import derive.files

    monkeypatch.setattr(derive.files.os, "fdopen", _FullDisk)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    refused(argv, capsys, "No space left on device", tmp_path)


def test_a_full_disk_keeps_the_old_file(tmp_path, capsys, monkeypatch):
    import derive.files

    old = tmp_path / "notes.md"
    old.write_text("old notes")
    monkeypatch.setattr(derive.files.os, "fdopen", _FullDisk)
    assert main(["latex", "sigmoid", "--format", "markdown", "-o", str(old)]) == 2
    assert "No space left" in capsys.readouterr().err
    assert old.read_text() == "old notes"
    assert [p.name for p in tmp_path.iterdir()] == ["notes.md"]


@pytest.mark.parametrize("kind", ["fifo", "link to /dev/null"])
@pytest.mark.parametrize("argv", [
    ["latex", "sigmoid", "-o", "{out}"],
    ["example", "mse", "--set", *BASE, "--latex", "-o", "{out}"],
])
def test_an_output_that_is_no_regular_file_is_left_alone(argv, kind, tmp_path, capsys):
    # The atomic rename replaced it with a regular file: as root, -o /dev/null deleted
    # the system's /dev/null. Here a FIFO, and a link (the rename replaced the link).
    import os

    out = tmp_path / "out.tex"
    if kind == "fifo":
        os.mkfifo(out)
    else:
        out.symlink_to("/dev/null")
    argv = [a.replace("{out}", str(out)) for a in argv]
    refused(argv, capsys, "not a regular file", tmp_path)
    assert out.is_fifo() if kind == "fifo" else os.readlink(out) == "/dev/null"


def test_a_generated_file_that_is_a_directory(tmp_path, capsys):
    (tmp_path / "f.py").mkdir()
    refused(["kernels", "--expr", "x**2", "--name", "f", "-o", tmp_path], capsys, "f.py",
            tmp_path)


# --- derive check: against the declaration, not only the module's own forward ----------

def _catalogue_copy(tmp: Path, source: str, saved_as: str) -> Path:
    folder = tmp / "generated" / "activations"
    folder.mkdir(parents=True)
    shutil.copy(GENERATED / source, folder / f"{saved_as}.py")
    shutil.copy(GENERATED / "derive_runtime.py", tmp / "generated")  # what modules import
    return tmp / "generated"


def test_check_compares_with_the_declaration(tmp_path, capsys):
    """tanh's module saved as sigmoid.py passes its own finite differences, not sigmoid."""
    out = _catalogue_copy(tmp_path, "activations/tanh.py", "sigmoid")
    assert main(["check", "sigmoid", "-o", str(out)]) == 1
    report = capsys.readouterr().out
    assert "forward = declaration" in report
    row = next(line for line in report.splitlines() if "forward = declaration" in line)
    assert row.endswith("FAIL")


def test_check_passes_the_right_module(tmp_path, capsys):
    out = _catalogue_copy(tmp_path, "activations/sigmoid.py", "sigmoid")
    assert main(["check", "sigmoid", "-o", str(out)]) == 0
    assert "forward = declaration" in capsys.readouterr().out


def test_check_of_another_kinds_module(tmp_path, capsys):
    out = _catalogue_copy(tmp_path, "losses/mse.py", "sigmoid")
    refused(["check", "sigmoid", "-o", out], capsys, "sigmoid.py")


def test_check_of_a_file_that_is_no_module(tmp_path, capsys):
    out = tmp_path / "generated"
    (out / "activations").mkdir(parents=True)
    (out / "activations" / "sigmoid.py").write_text("def forward(:\n")
    refused(["check", "sigmoid", "-o", out], capsys, "sigmoid.py")


@pytest.mark.parametrize("code", ["raise SystemExit(0)\n", "import sys\nsys.exit(5)\n"])
def test_check_of_a_module_that_exits_on_import(code, tmp_path, capsys):
    # SystemExit went past `except Exception`: exit 0 and no table, as if the check passed.
    out = tmp_path / "generated"
    (out / "activations").mkdir(parents=True)
    (out / "activations" / "sigmoid.py").write_text(code)
    refused(["check", "sigmoid", "-o", out], capsys, "SystemExit")


# --- data loaders: bounded memory ---------------------------------------------------------

def _idx_header(dims, type_byte=0x08) -> bytes:
    return bytes([0, 0, type_byte, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)


def test_idx_gzip_bomb_is_refused_before_inflating(tmp_path):
    from derive.train.data import read_idx

    path = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(_idx_header((1 << 20, 64, 64)))
        f.write(bytes(1 << 24))  # 16 MiB of zeros; the header promises 4 GiB
    start = time.perf_counter()
    with pytest.raises(DeriveError, match="more than derive loads"):
        read_idx(path)
    assert time.perf_counter() - start < 5


def test_idx_bound_follows_available_memory(tmp_path, monkeypatch):
    from derive.train import data

    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(_idx_header((10, 28, 28)) + bytes(7840))
    monkeypatch.setattr(data, "available_memory", lambda: 1000)
    with pytest.raises(DeriveError, match="GiB are available"):
        data.read_idx(path)


def test_npz_with_a_huge_declared_shape_is_refused(tmp_path):
    from derive.train.data import load_source

    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, x=np.zeros((4, 2)), y=np.zeros(4))
    # Rewrite x's header to declare 2**40 values (np.load would allocate them).
    import zipfile

    header = {"descr": "<f8", "fortran_order": False, "shape": (1 << 20, 1 << 20)}
    member = __import__("io").BytesIO()
    np.lib.format.write_array_header_1_0(member, header)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x.npy", member.getvalue() + bytes(1000))
        z.writestr("y.npy", member.getvalue())
    with pytest.raises(DeriveError, match="more than derive loads"):
        load_source(f"npz:{path}")


def _npy_named_npz(path):
    np.save(path.with_suffix(".npy"), np.zeros((4, 2)))
    path.with_suffix(".npy").rename(path)


def _fifo(path):
    import os
    os.mkfifo(path)


# (id, file name, how it is made, words of the refusal). The .npy one ended in an internal
# error (np.load returned its array, not an archive); a FIFO was "a file that does not exist".
BAD_DATA = [
    ("a .npy named .npz", "data.npz", _npy_named_npz, "not a zip archive"),
    ("a FIFO as npz", "data.npz", _fifo, "not a regular file"),
    ("a FIFO as csv", "data.csv", _fifo, "not a regular file"),
]


@pytest.mark.parametrize(("name", "make", "says"), [c[1:] for c in BAD_DATA],
                         ids=[c[0] for c in BAD_DATA])
def test_a_data_file_that_is_not_one(name, make, says, tmp_path):
    from derive.train.data import load_source

    path = tmp_path / name
    make(path)
    with pytest.raises(DeriveError) as error:
        load_source(f"{path.suffix[1:]}:{path}")
    message = error.value.message
    assert says in message and str(path) in message and "\n" not in message, message


def test_a_csv_with_a_byte_order_mark_keeps_its_first_row(tmp_path):
    # The mark made the first cell no number, so the first sample was taken for a header.
    from derive.train.data import load_source

    path = tmp_path / "excel.csv"
    path.write_text("\ufeff1,2,0\n3,4,1\n", encoding="utf-8")
    source = load_source(f"csv:{path}")
    assert source.x.tolist() == [[1, 2], [3, 4]] and source.y.tolist() == [0, 1]


def test_labels_past_2_to_the_53_are_not_wrapped_into_negative_ones(tmp_path):
    # uint64 2**64 - 1 was cast to int64 as -2**63 (with a RuntimeWarning on stderr).
    from derive.train.data import load_source

    path = tmp_path / "big.npz"
    np.savez(path, x=np.zeros((3, 2)), y=np.full(3, 2**64 - 1, np.uint64))
    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("error")
        source = load_source(f"npz:{path}")
    assert source.y.dtype == np.float64 and (source.y > 0).all()


# --- every command: a fuzz table of argument lists ----------------------------------------

FUZZ = [
    (["kernels", "--expr", "", "--name", "f"], "formula is empty"),
    (["kernels", "--expr", "x", "--name", ""], "--name"),
    (["kernels", "--expr", "x", "--name", "é"], "'é'"),
    (["kernels", "--expr", "x*a", "--name", "f", "--param", "=1"], "''"),
    (["kernels", "--expr", "x*a", "--name", "f", "--param", "a"], "--param 'a'"),
    (["kernels", "--expr", "x*a", "--name", "f", "--param", "a=abc"], "--param 'a=abc'"),
    (["kernels", "--kind", "vector", "--expr", "x", "--name", "f"], "--kind"),
    (["kernels", "nonexistent"], "nonexistent"),
    (["kernels"], "nothing to do"),
    (["latex", ""], "''"),
    (["latex", "nonexistent"], "nonexistent"),
    (["latex", "nonexistent.toml"], "nonexistent.toml"),
    (["latex", "sigmoid", "--format", "pdf"], "--format"),
    (["latex", "sigmoid", "--lang", "de"], "--lang"),
    (["latex", "sigmoid", "-o", "x.pdf"], "-o"),
    (["latex", "sigmoid", "--pdf"], "--pdf"),
    (["latex", "sigmoid", "--format", "markdown", "--pdf", "-o", "x.md"], "--pdf"),
    (["latex", "--expr", "x", "--name", "f", "--param", "a=1"], "--param a"),
    (["latex", "sigmoid", "--expr", "x", "--name", "f"], "not both"),
    (["latex"], "nothing to typeset"),
    (["example"], "TARGET"),
    (["example", "nonexistent", "--set", *BASE], "nonexistent"),
    (["example", "mse"], "missing x, w, b, y"),
    (["example", "mse", "--set", *BASE, "x=2"], "x is set twice"),
    (["example", "mse", "--set", *BASE, "z=2"], "z"),
    (["example", "mse", "--set", *BASE, "-o", "x.tex"], "--latex"),
    (["example", "sigmoid", "--set", *BASE, "--activation", "relu"], "--activation"),
    (["example", "mse", "--set", *BASE, "--loss", "mae"], "--loss"),
    (["minimize", ""], "formula is empty"),
    (["minimize", "x**2"], "no start point"),
    (["minimize", "3", "--start", "1"], "no variables"),
    (["minimize", "x**2", "--start", ""], "''"),
    (["minimize", "x**2", "--start", "1,2"], "2 number(s)"),
    (["minimize", "x**2", "--start", "nan"], "'nan'"),
    (["minimize", "x**2", "--start", "1e400"], "'1e400'"),
    (["minimize", "x**2", "--start", "1", "--steps", "-1"], "--steps"),
    (["minimize", "x**2", "--start", "1", "--steps", "1000000000"], "--steps"),
    (["minimize", "x**2", "--start", "1", "--steps", "abc"], "--steps"),
    (["minimize", "x**2", "--start", "1", "--lr", "nan"], "--lr"),
    (["minimize", "x**2", "--start", "1", "--lr", "inf"], "--lr"),
    (["minimize", "x**2", "--start", "1", "--lr", "-1"], "--lr"),
    (["minimize", "x**2", "--start", "1", "--method", ""], "--method"),
    (["minimize", "x**2", "--start", "1", "--method", "adamz"], "'adamz'"),
    (["minimize", "x**2", "--start", "1", "--method", "momentum", "--momentum", "nan"],
     "--momentum"),
    (["minimize", "x**2", "--start", "1", "--method", "momentum", "--momentum", "1"],
     "--momentum"),
    (["minimize", "abs(x)", "--start", "1", "--method", "newton"], "Hessian"),
    (["minimize", "log(x)", "--start", "-1"], "not finite"),
    (["minimize", "heaviside(x)", "--start", "1"], "zero everywhere"),
    (["minimize", "+".join(f"w{i}**2" for i in range(30)), "--start", "1"], "30 variables"),
    (["check"], "nothing to do"),
    (["check", ""], "''"),
    (["check", "nonexistent"], "nonexistent"),
    (["check", "sigmoid", "--all"], "not both"),
    (["check", "sigmoid", "-o", "/nonexistent/folder"], "/nonexistent/folder"),
    (["compile"], "--all"),
    (["compile", "nonexistent.py"], "nonexistent.py"),
    (["compile", "nonexistent.toml"], "nonexistent.toml"),
    (["compile", "--cpu", "z80", "x.py"], "--cpu"),
    (["list", "extra"], "unrecognized arguments"),
    (["nonexistent"], "invalid choice"),
    ([], "COMMAND"),
]


@pytest.mark.parametrize(("argv", "says"), FUZZ, ids=range(len(FUZZ)))
def test_fuzz(argv, says, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    refused(argv, capsys, says, tmp_path)
