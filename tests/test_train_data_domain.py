"""`derive train` on data the network's loss cannot take: one line, exit 2, nothing trained."""

import pytest

from derive.cli import main

SPEC = """
[network]
name = "{name}"
input_shape = [64]
loss = "{loss}"
[[layers]]
type = "dense"
units = {units}
activation = "{activation}"
"""


@pytest.mark.parametrize("loss, activation, units, complaint", [
    ("binary_cross_entropy", "sigmoid", 1, "targets in [0.0, 1.0], got values from 0 to 9"),
    ("hinge", "identity", 1, "targets"),
    # Ten outputs and one label per example: the kernels would read past y's end.
    ("mse", "identity", 10, "shape"),
])
def test_digits_labels_refused_by_losses_that_cannot_take_them(tmp_path, capsys, loss,
                                                               activation, units, complaint):
    spec = tmp_path / "net.toml"
    spec.write_text(SPEC.format(name=f"net_{loss}", loss=loss, activation=activation,
                                units=units))
    out = tmp_path / "run"
    code = main(["train", str(spec), "--epochs", "1", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("derive: error: digits (training set):") and complaint in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (out / "checkpoint.npz").exists()
