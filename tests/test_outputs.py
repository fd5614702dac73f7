"""Output paths: written through links, and long bad names shortened in errors."""

import pytest

from derive.errors import DeriveError
from derive.files import atomic_write
from derive.formula import check_identifier


def test_a_link_is_written_through(tmp_path):
    target = tmp_path / "shared" / "notes.tex"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "notes.tex"
    link.symlink_to(target)
    atomic_write(link, "new")
    assert link.is_symlink() and target.read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["notes.tex"]


def test_a_long_bad_name_is_shortened_in_the_error():
    with pytest.raises(DeriveError) as caught:
        check_identifier("a" * 5000 + "-", "network.name")
    assert len(caught.value.message) < 300 and "5001 characters" in caught.value.message


@pytest.mark.parametrize("arguments", [
    ["--resume"],
    ["--data", "csv:/nonexistent/derive.csv"],
    ["--data", "http://example.org/data"],
])
def test_a_train_that_fails_before_training_leaves_no_files(tmp_path, capsys, arguments):
    from conftest import REPO

    from derive.cli import main

    out = tmp_path / "run"
    spec = str(REPO / "examples" / "mlp_notes.toml")
    assert main(["train", spec, "--out", str(out), "--no-progress", *arguments]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize("setting", ["delta=-1", "delta=0"])
def test_example_refuses_a_parameter_outside_its_declared_domain(capsys, setting):
    from derive.cli import main

    code = main(["example", "huber", "--set", "x=2.1", "w=1", "b=0", "y=4", setting])
    err = capsys.readouterr().err
    assert code == 2 and "outside its domain (delta > 0)" in err and err.count("\n") == 1


def test_example_accepts_a_parameter_inside_its_domain(capsys):
    from derive.cli import main

    assert main(["example", "huber", "--set", "x=2.1", "w=1", "b=0", "y=4", "delta=0.5"]) == 0


def test_epochs_are_bounded_in_specs_and_on_the_command_line(tmp_path, capsys):
    from conftest import REPO

    from derive.cli import main
    from derive.network import MAX_EPOCHS, SpecError, parse_spec

    spec = ('[network]\ninput_shape = [4]\nloss = "mse"\n[[layers]]\ntype = "dense"\n'
            f'units = 1\n[train]\nepochs = {MAX_EPOCHS + 1}\n')
    with pytest.raises(SpecError, match="train.epochs"):
        parse_spec(spec, "net.toml")
    code = main(["train", str(REPO / "examples" / "mlp_notes.toml"), "--out",
                 str(tmp_path / "run"), "--epochs", str(10**23)])
    assert code == 2 and "--epochs" in capsys.readouterr().err


def test_check_compares_a_layer_module_with_its_declaration(tmp_path, capsys):
    import shutil

    from conftest import GENERATED

    from derive.cli import main

    (tmp_path / "layers").mkdir()
    # Average pooling saved as max pooling: its backward agrees with its own forward.
    shutil.copy(GENERATED / "layers" / "avg_pool2d.py", tmp_path / "layers" / "max_pool2d.py")
    shutil.copy(GENERATED / "derive_runtime.py", tmp_path)  # what the module imports
    assert main(["check", "max_pool2d", "-o", str(tmp_path)]) == 1
    rows = capsys.readouterr().out.splitlines()
    assert any("forward = declaration" in r and r.endswith("FAIL") for r in rows)
    assert any("d_x" in r and r.endswith("ok") for r in rows)
