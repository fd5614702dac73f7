"""Batch normalisation needs more than one value per channel in training (issue 14).

With one, the batch variance is 0 and PyTorch refuses the step ("Expected more than 1
value per channel when training"). derive refuses such a batch size in one line, naming
the field and the fix, and a last batch of one sample joins the batch before it.
"""

import io
from contextlib import redirect_stdout

import numpy as np
import pytest
import torch
from conftest import cli_train, one_error_line, spec_text, write_spec

from derive.cli import main
from derive.network import SpecError, parse_spec
from derive.train.checkpoint import CHECKPOINT, load_checkpoint
from derive.train.loop import batch_starts

DENSE = 'type = "dense"\nunits = 6'
BATCH_NORM = 'type = "batch_norm"\nactivation = "relu"'
OUTPUT = 'type = "dense"\nunits = 10\nactivation = "softmax"'


def bn_spec(train: str, shape=(64,), first=DENSE) -> str:
    return spec_text("bn_batch", [first, BATCH_NORM, OUTPUT], shape=shape,
                     train=f'optimizer = "gd"\nlr = 0.05\nepochs = 1\n{train}')


def test_pytorch_refuses_one_value_per_channel():
    """The fact the check stands on, measured rather than assumed."""
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        torch.nn.BatchNorm1d(3).train()(torch.ones(1, 3))
    torch.nn.BatchNorm2d(3).train()(torch.ones(1, 3, 2, 2))  # four values a channel: fine


def test_a_spec_with_batch_size_1_is_refused_naming_the_field():
    with pytest.raises(SpecError) as error:
        parse_spec(bn_spec("batch_size = 1"), "bn.toml")
    message = error.value.message
    assert "bn.toml: train.batch_size" in message and "layers[1] (batch_norm)" in message
    assert "variance is 0" in message and "batch_size to 2 or more" in message
    parse_spec(bn_spec("batch_size = 2"), "bn.toml")  # two values a channel: accepted


def test_an_image_gives_each_channel_more_than_one_value_at_batch_size_1():
    conv = 'type = "conv2d"\nfilters = 2\nkernel_size = 3\npadding = 1'
    text = spec_text("bn_image", [conv, BATCH_NORM, 'type = "flatten"', OUTPUT],
                     shape=(1, 8, 8), train='optimizer = "gd"\nbatch_size = 1')
    assert parse_spec(text).train["batch_size"] == 1


def test_derive_train_exits_2_with_one_line(tmp_path, capsys):
    spec = write_spec(tmp_path, bn_spec("batch_size = 1"))
    assert cli_train(spec, tmp_path / "run") == 2
    assert "train.batch_size" in one_error_line(capsys)
    assert not (tmp_path / "run").exists()


def test_the_batch_size_option_is_checked_too(tmp_path, capsys):
    spec = write_spec(tmp_path, bn_spec("batch_size = 8"))
    assert cli_train(spec, tmp_path / "run", "--batch-size", "1") == 2
    err = one_error_line(capsys)
    assert "--batch-size 1" in err and "layers[1] (batch_norm)" in err


def test_a_last_batch_of_one_joins_the_one_before():
    assert batch_starts(9, 4, merge_single=True) == [0, 4]
    assert batch_starts(9, 4, merge_single=False) == [0, 4, 8]
    assert batch_starts(10, 4, merge_single=True) == [0, 4, 8]  # two left: a batch
    assert batch_starts(1, 4, merge_single=True) == [0]


def test_a_partial_batch_of_one_trains_and_the_log_says_so(tmp_path, capsys):
    # The digits' training part (after the test and validation splits) holds n samples;
    # a batch size dividing n − 1 leaves exactly one sample for the last batch.
    from derive.checks import load_module
    from derive.train.data import dataset_for

    probe = write_spec(tmp_path, bn_spec("batch_size = 4"), "probe")
    stdout = io.StringIO()
    with redirect_stdout(stdout):
        assert cli_train(probe, tmp_path / "probe") == 0
    module = load_module(next((tmp_path / "probe").rglob("bn_batch.py")))
    n = len(dataset_for(module, "digits").x_train)
    size = next(b for b in range(8, n) if (n - 1) % b == 0)
    spec = write_spec(tmp_path, bn_spec(f"batch_size = {size}"))
    capsys.readouterr()
    # With the progress lines on (not a terminal: one line an epoch, and the messages).
    assert main(["train", str(spec), "--out", str(tmp_path / "run")]) == 0
    log = capsys.readouterr().err
    assert f"joins the batch before it ({size + 1} samples)" in log, log
    # Without them too: the merge changes the run the spec asked for.
    assert cli_train(spec, tmp_path / "quiet") == 0
    assert f"joins the batch before it ({size + 1} samples)" in capsys.readouterr().err
    run = load_checkpoint(tmp_path / "run" / CHECKPOINT)
    assert run.epoch == 1 and all(np.isfinite(p).all() for p in run.params)
