"""The main job: everything derive does, on built-in defaults, with no network access.

``derive demo`` derives the whole catalogue and generates its kernels, checks every
kernel against finite differences, writes lecture notes (PDF when pdflatex is there),
and trains the course notes' MLP on scikit-learn's bundled digits.
"""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from derive import pipeline, registry
from derive.errors import DeriveError

#: Lecture notes the demo typesets: one of each kind, as a course would use them, and
#: the Elman RNN's backpropagation through time (the recurrent chapter's derivation).
NOTES = ("sigmoid", "relu", "sse_half", "softmax_cross_entropy", "dense", "gd", "l2", "rnn")
NETWORK = "mlp_notes.toml"


@dataclass
class DemoReport:
    """What the demo did, for the closing summary."""

    out: Path
    kernels: int = 0
    checks_passed: int = 0
    checks_failed: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    test_accuracy: float = float("nan")
    epochs: int = 0
    timings: dict = field(default_factory=dict)
    #: (what failed, why and how to fix it) for each failure. Non-empty → exit code 1.
    failures: list = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """Whether anything failed (a gradient check, a document, a stage)."""
        return bool(self.checks_failed or self.failures)


def _check_one(args) -> list:
    """Finite-difference check of one generated module (run in a worker process)."""
    name, path = args
    from derive.checks import finite_difference_check, load_module

    op = registry.get(name)
    return [(r.name, r.quantity, r.passed, r.max_rel_error)
            for r in finite_difference_check(op, load_module(path))]


def generate_and_check(report: DemoReport, say) -> None:
    """Write every kernel into ``out/generated`` and check them, two processes at a time."""
    generated = report.out / "generated"
    targets = pipeline.catalogue_targets(None, generated)
    pipeline.write_targets(targets)
    report.kernels = len([t for t in targets if t.path.name != "__init__.py"])
    say(f"  {report.kernels} kernel modules in {generated}/")
    jobs = [(op.name, generated / registry.folder(op) / f"{op.name}.py")
            for op in registry.module_ops()]
    with ProcessPoolExecutor(max_workers=2) as pool:
        for results in pool.map(_check_one, jobs):
            for name, quantity, passed, _ in results:
                if passed:
                    report.checks_passed += 1
                else:
                    report.checks_failed.append(f"{name} {quantity}")


def write_notes(report: DemoReport, lang: str, say) -> None:
    """Typeset a few derivations; compile them when pdflatex is available.

    A document that fails is recorded and the others still run; a PDF that fails leaves
    its .tex, so the notes can be compiled by hand once the cause is fixed.
    """
    from derive.latex.document import write_document
    from derive.pipeline import document_for

    notes = report.out / "notes"
    pdf = shutil.which("pdflatex") is not None
    for target in NOTES:
        out = notes / f"{target}.{lang}.tex"
        try:
            doc = document_for(target, lang=lang, fmt="article", out=out, pdf=pdf)
            report.notes += write_document(doc, out, pdf=pdf)
        except DeriveError as error:
            if out.exists():
                report.notes.append(out)
            # A PDF left from an earlier run would pass for this run's.
            out.with_suffix(".pdf").unlink(missing_ok=True)
            say(f"  {out.name}: {error.message}")
            report.failures.append((out.with_suffix(".pdf" if pdf else ".tex").name,
                                    error.message))
    if not pdf:
        report.failures.append((
            "lecture notes", f"pdflatex was not found, so {notes}/ holds .tex files only: "
            "run ./setup.sh (or apt-get install texlive-latex-extra texlive-lang-portuguese "
            "lmodern) and run the demo again, or compile them with pdflatex yourself."))
    say(f"  {len(report.notes)} files in {notes}/")


def train_network(report: DemoReport, spec_path: Path, say, progress: bool,
                  lang: str = "pt") -> None:
    """Train the notes' MLP on the bundled digits and evaluate it on held-out data.

    The diagnosis of the run is said in ``lang`` (``pt`` or ``en``), as the notes are.
    """
    from derive.checks import load_module
    from derive.train import dataset_for, evaluate, fit
    from derive.train.loop import DIAGNOSIS

    target = pipeline.network_target(spec_path, report.out / "generated")
    pipeline.write_targets([target])
    module = load_module(target.path)
    data = dataset_for(module, "digits",
                       normalisation=module.TRAIN.get("normalisation", "minmax"))
    history = fit(module, data, out_dir=report.out / "training", progress=progress,
                  lang=lang)
    _, report.test_accuracy = evaluate(module, history.params, data.x_test, data.y_test)
    report.epochs = len(history.records)
    if history.best_epoch and history.stopped:
        say(f"  {history.stopped}")
    for diagnosis in history.diagnoses:
        say(f"  {DIAGNOSIS[lang]}: {diagnosis.text(lang)}")


def run_demo(out: Path, lang: str = "pt", say=print, progress: bool = True) -> DemoReport:
    """Run every stage of the demo and return what it did.

    Parameters
    ----------
    out : Path
        Output directory (kernels, notes, training curves and checkpoint).
    lang : str
        Language of the lecture notes and of the training's diagnosis.
    say : callable
        Where progress lines go.
    progress : bool
        Show the training progress bar.
    """
    report = DemoReport(out=Path(out))
    spec = pipeline.EXAMPLES / NETWORK
    stages = [
        ("derive, generate and check the catalogue", lambda: generate_and_check(report, say)),
        ("write the lecture notes", lambda: write_notes(report, lang, say)),
        ("train the notes' MLP on the bundled digits",
         lambda: train_network(report, spec, say, progress, lang)),
    ]
    for title, stage in stages:
        say(f"» {title}")
        start = time.perf_counter()
        # A stage that fails is reported and the next one still runs: the notes do not
        # need training, and training does not need the notes.
        try:
            stage()
        except DeriveError as error:
            say(f"  failed: {error.message}")
            report.failures.append((title, error.message))
        except Exception as error:  # a bug in one stage must not stop the others
            text = f"{type(error).__name__}: {error}".splitlines()[0]
            say(f"  failed: {text}")
            report.failures.append((title, f"{text} (a bug in derive: please report it, "
                                           "with this line)"))
        report.timings[title] = time.perf_counter() - start
    return report


def summary(report: DemoReport) -> list[str]:
    """The closing lines of ``derive demo``: what was made, then everything that failed."""
    total = sum(report.timings.values())
    trained = report.epochs > 0
    lines = [
        f"kernels: {report.kernels} modules, {report.checks_passed} gradients checked"
        + (f", FAILED: {', '.join(report.checks_failed)}" if report.checks_failed else ", all ok"),
        "lecture notes: "
        + (", ".join(p.name for p in report.notes if p.suffix == ".pdf") or "no PDF"),
        f"training: {report.epochs} epochs, test accuracy {report.test_accuracy:.2%}"
        if trained else "training: did not run to the end",
        f"everything is in {report.out}/ ({total:.0f} s)",
    ]
    if report.failures:
        # Six notes failing for one missing package are one line, not six.
        reasons: dict[str, list[str]] = {}
        for what, why in report.failures:
            reasons.setdefault(why, []).append(what)
        lines.append(f"FAILED ({len(report.failures)}):")
        lines += [f"  {', '.join(whats)}: {why}" for why, whats in reasons.items()]
    return lines
