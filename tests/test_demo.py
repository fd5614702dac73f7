"""`derive demo`: a stage that fails is reported and the others still run."""

import os
import stat

import pytest

from derive import demo
from derive.cli import main

#: A pdflatex that fails as TeX Live does when lmodern is missing: the log's first error
#: is the missing file, and -file-line-error then reports an emergency stop on a later line.
FAKE_PDFLATEX = r"""#!/bin/sh
cat > doc.log <<'LOG'
! LaTeX Error: File `lmodern.sty' not found.

Enter file name:
./doc.tex:7: Emergency stop.
<read *>

l.7 \usepackage
LOG
exit 1
"""


@pytest.fixture
def broken_tex(tmp_path, monkeypatch):
    """A PATH whose pdflatex fails like a TeX Live without lmodern."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "pdflatex"
    fake.write_text(FAKE_PDFLATEX)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return fake


def test_failed_stages_do_not_stop_the_demo(tmp_path, monkeypatch, capsys, broken_tex):
    def kernels_fail(report, say):
        raise RuntimeError("the kernel stage broke")

    monkeypatch.setattr(demo, "generate_and_check", kernels_fail)
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 1
    # Every note left its .tex, and no PDF (none from an earlier run either).
    for target in demo.NOTES:
        assert (out / "notes" / f"{target}.pt.tex").is_file()
        assert not (out / "notes" / f"{target}.pt.pdf").exists()
    # Training ran to the end after both failures.
    assert "training: 20 epochs, test accuracy" in printed
    closing = printed[printed.index("FAILED"):]
    assert "the kernel stage broke" in closing
    assert "LaTeX Error: File `lmodern.sty' not found" in closing
    assert "apt-get install lmodern" in closing
    assert "Emergency stop" not in closing
    # One line for the six notes that failed for the same reason.
    assert sum("lmodern.sty" in line for line in closing.splitlines()) == 1
    assert "Traceback" not in printed


def test_the_summary_exits_zero_only_when_nothing_failed():
    report = demo.DemoReport(out=demo.Path("x"))
    assert not report.failed
    report.failures.append(("sigmoid.pt.pdf", "pdflatex stopped"))
    assert report.failed
    assert any("FAILED (1)" in line for line in demo.summary(report))


@pytest.mark.parametrize(("lang", "word", "text"), [("pt", "diagnóstico", "a perda de treino"),
                                                    ("en", "diagnosis", "the training loss")])
def test_the_training_diagnosis_speaks_the_demos_language(tmp_path, monkeypatch, lang, word,
                                                          text):
    import derive.train
    from derive.train import History
    from derive.train.report import EpochRecord, diagnose

    # A made-up history whose loss stagnates: the run itself is not what is tested.
    records = tuple(EpochRecord(e, 1e-6, 2.0, 0.1, 2.0, 0.1, 0.1, 0.0) for e in range(1, 6))
    seen = {}

    def fake_fit(module, data, **options):
        seen.update(options)
        return History(records, [], [], diagnose(records))

    monkeypatch.setattr(derive.train, "fit", fake_fit)
    monkeypatch.setattr(derive.train, "evaluate", lambda *a, **k: (0.0, 0.5))
    said = []
    report = demo.DemoReport(out=tmp_path)
    demo.train_network(report, demo.pipeline.EXAMPLES / demo.NETWORK, said.append, False,
                       lang)
    assert seen["lang"] == lang
    lines = [line.strip() for line in said]
    assert lines and all(line.startswith(f"{word}: {text}") for line in lines), lines


def test_notes_include_a_recurrent_derivation():
    """The course goes on to recurrent networks: the demo's notes derive one through time."""
    from derive import registry

    recurrent = [t for t in demo.NOTES
                 if getattr(registry.get(t), "recurrence", None) is not None]
    assert recurrent, "no note of the demo is a recurrent layer's derivation"
