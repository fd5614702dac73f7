"""The command line: parses arguments, calls derive, prints. Nothing else lives here."""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import nullcontext
from pathlib import Path

from derive import pipeline, registry
from derive.errors import DeriveError
from derive.files import check_output_file
from derive.formula import time_limit
from derive.trainspec import NORMALISATIONS

DEFAULT_OUT = Path("generated")


def _parameter(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        if not sep:
            raise ValueError
        return name.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--param {text!r}: write it as NAME=NUMBER, e.g. --param alpha=0.1"
        ) from None


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error printed as one line like every other error."""

    def error(self, message: str):
        self.exit(2, f"derive: error: {self.prog}: {message} (see `{self.prog} --help`)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="derive",
        description="Derive gradients of neural-network equations; write kernels and checks.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("list", help="the catalogue, one line each with its formula")

    k = sub.add_parser("kernels", help="generate Numba kernel modules")
    k.add_argument("names", nargs="*", metavar="NAME", help="catalogue names")
    k.add_argument("--all", action="store_true",
                   help="the whole catalogue (regenerates generated/)")
    k.add_argument("-o", "--out", type=Path, default=None,
                   help="output directory (default: generated/)")
    k.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 naming the files that are not current")
    k.add_argument("--force", action="store_true", help="overwrite files edited by hand")
    k.add_argument("--expr", help="a custom activation: a formula in x and --param names")
    k.add_argument("--kind", choices=["activation", "loss"], default="activation",
                   help="what --expr declares: an activation in x, or a loss per element "
                        "in pred and target (mean over all elements)")
    k.add_argument("--name", help="the custom op's name")
    k.add_argument("--param", type=_parameter, action="append", default=[],
                   metavar="NAME=VALUE", help="a named parameter of --expr and its default")

    c = sub.add_parser("check", help="finite-difference check of generated kernels")
    c.add_argument("names", nargs="*", metavar="NAME")
    c.add_argument("--all", action="store_true", help="the whole catalogue")
    c.add_argument("-o", "--out", type=Path, default=DEFAULT_OUT,
                   help="where the generated modules are (default: generated/)")

    co = sub.add_parser("compile", help="compile network modules ahead of time: no Numba "
                                         "start-up cost in a fresh process")
    co.add_argument("targets", nargs="*", metavar="SPEC.toml|MODULE.py",
                    help="network specs (their modules are regenerated first) or "
                         "generated network modules")
    co.add_argument("--all", action="store_true",
                    help="every network module in generated/networks/ (or -o's)")
    co.add_argument("-o", "--out", type=Path, default=DEFAULT_OUT,
                    help="where specs' modules are written (default: generated/)")
    co.add_argument("--cpu", choices=["host", "generic"], default="host",
                    help="instruction set: this CPU's (default; the build is used on this "
                         "kind of CPU only) or the architecture's baseline (any machine)")

    m = sub.add_parser("minimize", help="gradient descent / Newton on a formula, step by step")
    m.add_argument("formula", help='the function to minimise, e.g. "w1**2 + w2**2"')
    m.add_argument("--start", metavar="W1,W2,...",
                   help="start point, one number per variable in natural order (w1, w2, ...; "
                        "x, y); write --start=-1,2 when it begins with a minus")
    m.add_argument("--method", default="gd",
                   help="any optimizer of the catalogue (gd, momentum, nesterov, adagrad, "
                        "rmsprop, adam, ...: see `derive list`) or newton (default: gd)")
    m.add_argument("--lr", type=float, default=None,
                   help="step size (default: 0.01; 1 for newton)")
    m.add_argument("--steps", type=int, default=10, help="number of steps (default: 10)")
    m.add_argument("--momentum", type=float, default=None,
                   help="mu of --method momentum or nesterov (default: 0.9)")
    m.add_argument("--param", type=_parameter, action="append", default=[],
                   metavar="NAME=VALUE",
                   help="another setting of the method, e.g. --param beta1=0.8")
    m.add_argument("--tol", type=float, default=None,
                   help="stop when |grad f| <= TOL (default: when it falls to 1e-12 of its "
                        "value at the start)")
    m.add_argument("--noise", type=float, default=0.0, metavar="SIGMA",
                   help="add Gaussian noise of this standard deviation to every gradient "
                        "component: a stochastic gradient, as in SGD (default: 0)")
    m.add_argument("--seed", type=int, default=0, help="seed of --noise (default: 0)")
    m.add_argument("--lang", choices=["pt", "en"], default="en",
                   help="language of the printed explanation (default: en)")
    m.add_argument("-o", "--out", type=Path, default=None,
                   help="write path.csv and path.png (contour plot) into this directory")

    t = sub.add_parser("latex", help="a step-by-step derivation in LaTeX (or Markdown)")
    t.add_argument("target", nargs="?", metavar="TARGET",
                   help="a catalogue name (activation, loss, layer, optimizer) or a network "
                        "spec, e.g. examples/mlp_notes.toml")
    t.add_argument("--lang", choices=["pt", "en"], default="pt",
                   help="language of the text (default: pt)")
    t.add_argument("--format", choices=["article", "beamer", "fragment", "markdown"],
                   default="article", help="lecture notes, slides, a body to \\input, or "
                   "Markdown with $$ blocks (default: article)")
    t.add_argument("-o", "--out", type=Path, default=None,
                   help="write to this file (default: print to stdout)")
    t.add_argument("--pdf", action="store_true",
                   help="also compile with pdflatex; the PDF is written beside -o")
    t.add_argument("--expr", help="a custom activation: a formula in x and --param names")
    t.add_argument("--name", help="the custom activation's name")
    t.add_argument("--param", type=_parameter, action="append", default=[],
                   metavar="NAME=VALUE", help="a named parameter of --expr and its default")

    e = sub.add_parser("example", help="a worked numeric example: one neuron, one update")
    e.add_argument("target", metavar="TARGET",
                   help="an activation (the loss defaults to mse) or a loss (the activation "
                        "defaults to identity)")
    e.add_argument("--set", nargs="+", default=[], metavar="NAME=VALUE", dest="values",
                   help="x, w, b, y (and activation parameters), e.g. --set x=2.1 w=1 b=0 y=4")
    e.add_argument("--lr", default="0.01", help="learning rate of the update (default: 0.01)")
    e.add_argument("--activation", help="the neuron's activation when TARGET is a loss")
    e.add_argument("--loss", help="the loss when TARGET is an activation")
    e.add_argument("--lang", choices=["pt", "en"], default="pt",
                   help="language of the text (default: pt)")
    e.add_argument("--latex", action="store_true", help="typeset it in LaTeX instead")
    e.add_argument("--format", choices=["article", "beamer", "fragment", "markdown"],
                   default="article", help="with --latex: the document's format")
    e.add_argument("-o", "--out", type=Path, default=None,
                   help="with --latex: write to this file (default: print to stdout)")
    e.add_argument("--pdf", action="store_true",
                   help="with --latex: also compile with pdflatex, beside -o")
    r = sub.add_parser("train", help="train a network spec on a data set")
    r.add_argument("spec", type=Path, help="a network spec (TOML), e.g. examples/mlp_notes.toml")
    r.add_argument("--data", default="digits",
                   help="digits (bundled, default) | idx:DIR | npz:FILE | csv:FILE")
    r.add_argument("--epochs", type=int, default=None)
    r.add_argument("--batch-size", type=int, default=None)
    r.add_argument("--optimizer", default=None, help="override the spec's optimizer")
    r.add_argument("--lr", type=float, default=None)
    r.add_argument("--seed", type=int, default=None)
    r.add_argument("--normalise", default=None, choices=NORMALISATIONS,
                   help="input normalisation, fitted on the training set: minmax (global), "
                        "feature_minmax ([0, 1] per feature), feature_minmax_signed ([-1, 1] "
                        "per feature), pixels (x/255), zscore, l2 or none (default: the "
                        "spec's train.normalisation, else minmax)")
    r.add_argument("--out", type=Path, default=Path("run"),
                   help="where the generated module, checkpoint and curves go (default: run/)")
    r.add_argument("--resume", action="store_true", help="continue from --out's checkpoint")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--lang", choices=["pt", "en"], default="en",
                   help="language of the diagnosis (default: en)")

    d = sub.add_parser("demo", help="the main job: derive, check, typeset and train, offline")
    d.add_argument("--out", type=Path, default=Path("derive-demo"),
                   help="output directory (default: derive-demo/)")
    d.add_argument("--lang", choices=["pt", "en"], default="pt",
                   help="language of the lecture notes and of the training diagnosis "
                        "(default: pt)")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _names(args) -> list[str] | None:
    if args.all and args.names:
        raise DeriveError("give catalogue names or --all, not both.",
                          where="derive " + args.command)
    if not args.all and not args.names:
        raise DeriveError("nothing to do.", where="derive " + args.command,
                          fix="Give catalogue names (see `derive list`) or --all.")
    return None if args.all else args.names


def cmd_list(args) -> int:
    """Print the catalogue."""
    ops = registry.all_ops()
    width = max(len(op.name) for op in ops)
    for op in ops:
        formula = op.out if op.kind == "vector" else op.expr
        print(f"{op.name:<{width}}  {op.kind:<10}  {op.title}: {formula}")
    return 0


def cmd_kernels(args) -> int:
    """Generate (or check) kernel modules."""
    out = args.out or DEFAULT_OUT
    if args.expr is not None:
        if args.names or args.all:
            raise DeriveError("--expr generates one custom module; drop the catalogue names.",
                              where="derive kernels")
        if not args.name:
            raise DeriveError("--expr needs --name for the generated module.",
                              where="derive kernels", fix='Add e.g. --name my_act.')
        params = dict(args.param)
        declare = pipeline.custom_loss if args.kind == "loss" else pipeline.custom_activation
        with time_limit(args.expr, "--expr"):
            op = declare(args.expr, args.name, params)
            targets = [pipeline.custom_target(op, args.expr, params, out)]
        whole = False
    else:
        if args.param or args.name:
            raise DeriveError("--name and --param go with --expr.", where="derive kernels")
        names = _names(args)
        targets = pipeline.catalogue_targets(names, out)
        whole = names is None
    if args.check:
        pipeline.check_current(targets, out, whole)
        print(f"{len(targets)} generated file(s) are current.")
        return 0
    # Every module written is imported (in a fresh process) before we say it was written.
    written = pipeline.write_targets(targets, force=args.force, verify=True)
    changed = [str(p) for p, w in written if w]
    print(f"{len(changed)} file(s) written, {len(written) - len(changed)} unchanged, in {out}/")
    for p in changed:
        print(f"  wrote {p}")
    return 0


def cmd_check(args) -> int:
    """Finite-difference check of generated kernels; print a table of errors."""
    from derive.checks import declaration_check, finite_difference_check, load_module

    names = _names(args)
    ops = registry.module_ops() if names is None else [registry.get(n) for n in names]
    if not args.out.is_dir():
        raise DeriveError("no such directory.", where=f"derive check -o {args.out}",
                          fix="Give the folder the modules were generated into "
                              "(default: generated/).")
    rows = []
    for op in ops:
        path = args.out / registry.folder(op) / f"{op.name}.py"
        try:
            module = load_module(path)
            # Against the declaration first: a module made for another op stops here.
            rows += declaration_check(op, module) + finite_difference_check(op, module)
        except DeriveError:
            raise
        # SystemExit too: a module that calls sys.exit(0) on import made the check end
        # with exit 0 and no table, as if it had passed.
        except (Exception, SystemExit) as exc:  # noqa: BLE001 — whatever the file holds
            raise DeriveError(f"this is not a working module for {op.kind} {op.name!r} "
                              f"({type(exc).__name__}: {_first_line(exc)}).", where=str(path),
                              fix=f"Regenerate it with `derive kernels {op.name}`.") from None
    width = max(len(r.name) for r in rows)
    qwidth = max(len(r.quantity) for r in rows)
    print(f"{'op':<{width}}  {'gradient':<{qwidth}}  {'max abs err':>11}  {'max rel err':>11}")
    for r in rows:
        flag = "ok" if r.passed else "FAIL"
        print(f"{r.name:<{width}}  {r.quantity:<{qwidth}}  {r.max_abs_error:11.2e}  "
              f"{r.max_rel_error:11.2e}  {flag}")
    failed = [r for r in rows if not r.passed]
    print(f"{len(rows) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def cmd_compile(args) -> int:
    """Compile network modules ahead of time next to themselves."""
    from derive.codegen.compiled import compile_network_module

    if args.all == bool(args.targets):
        raise DeriveError("give network specs or modules, or --all (not both).",
                          where="derive compile",
                          fix="e.g. `derive compile examples/mlp_notes.toml`.")
    if args.all:
        modules = sorted((args.out / "networks").glob("*.py"))
        modules = [m for m in modules if m.name != "__init__.py"]
        if not modules:
            raise DeriveError("no network modules to compile.", where=str(args.out / "networks"),
                              fix="Generate one first with `derive kernels SPEC.toml -o DIR`.")
    else:
        modules = []
        for target in map(Path, args.targets):
            if target.suffix == ".toml":
                spec_target = pipeline.network_target(target, args.out)
                pipeline.write_targets([spec_target])
                modules.append(spec_target.path)
            else:
                modules.append(target)
    for module in modules:
        built = compile_network_module(module, cpu=args.cpu)
        print(f"compiled {module} -> {built.path} ({len(built.exports)} functions)")
        if built.serial:
            print(f"  note: {len(built.serial)} kernel(s) with parallel loops "
                  f"({', '.join(built.serial)}) run on one core in the compiled form; "
                  "DERIVE_JIT=1 runs the jitted, parallel ones instead")
    return 0


def cmd_minimize(args) -> int:
    """Minimise a formula from a start point; print every step; optionally save the path."""
    from derive import minimize

    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise DeriveError("this is a file; -o names the directory for path.csv and path.png.",
                          where=f"derive minimize -o {args.out}", fix="Name a directory.")
    with time_limit(args.formula, "derive minimize"):
        objective = minimize.parse_objective(args.formula)
        if args.start is None:
            names = ", ".join(objective.names)
            raise DeriveError(f"no start point given for {names}.", where="derive minimize",
                              fix=f"Add --start with one number per variable ({names}).")
        start = minimize.parse_start(args.start, objective)
        options = {"method": args.method, "lr": args.lr, "steps": args.steps,
                   "momentum": args.momentum, "params": dict(args.param), "tol": args.tol}
        run = minimize.minimize(objective, start, noise=args.noise, seed=args.seed,
                                lang=args.lang, **options)
        # With noise, the plot shows the exact-gradient path beside it (GD versus SGD);
        # if that path cannot be computed (Newton meets a singular Hessian), it is left out.
        exact = None
        if args.noise and args.out is not None:
            try:
                exact = minimize.minimize(objective, start, **options)
            except DeriveError:
                exact = None
    print(minimize.header(run))
    for step in run.steps:
        print(minimize.step_line(step, args.lang))
    if run.stopped:
        print(run.stopped)
    if args.out is not None:
        for path in minimize.write_trajectory(run, args.out, compare=exact):
            print(f"wrote {path}")
    return 0


def cmd_latex(args) -> int:
    """Typeset a derivation (LaTeX or Markdown); with --pdf also compile it."""
    from derive.latex.document import write_document

    if args.out is not None:
        check_output_file(args.out)
    # A formula (--expr) is the one input that can make the symbolic work run away.
    with time_limit(args.expr, "--expr") if args.expr is not None else nullcontext():
        doc = pipeline.document_for(args.target, expr=args.expr, name=args.name,
                                    params=dict(args.param), lang=args.lang,
                                    fmt=args.format, out=args.out, pdf=args.pdf)
    if args.out is None:
        sys.stdout.write(doc.text)
        return 0
    for path in write_document(doc, args.out, pdf=args.pdf):
        print(f"wrote {path}")
    return 0


def cmd_example(args) -> int:
    """Work one neuron's forward pass, gradients and update; print or typeset it."""
    from derive.example import parse_settings, worked_example

    if not args.latex and (args.out is not None or args.pdf or args.format != "article"):
        raise DeriveError("-o, --pdf and --format go with --latex.", where="derive example",
                          fix="Add --latex, or drop them to print the example as text.")
    if args.out is not None:
        check_output_file(args.out)
    with time_limit(" ".join(args.values), "derive example --set"):
        example = worked_example(args.target, parse_settings(args.values), lr=args.lr,
                                 activation=args.activation, loss=args.loss)
    if not args.latex:
        from derive.latex.example import render_text

        sys.stdout.write(render_text(example, args.lang))
        return 0
    from derive.latex.document import example_document, write_document

    words = ["example", args.target, "--set", *args.values, "--lr", args.lr, "--latex"]
    if args.activation:
        words += ["--activation", args.activation]
    if args.loss:
        words += ["--loss", args.loss]
    doc = example_document(example, words, lang=args.lang, fmt=args.format, out=args.out,
                           pdf=args.pdf)
    if args.out is None:
        sys.stdout.write(doc.text)
        return 0
    for path in write_document(doc, args.out, pdf=args.pdf):
        print(f"wrote {path}")
    return 0


def _check_train_arguments(args) -> None:
    """Refuse --epochs/--batch-size/--lr/--seed values no run can use, before any work."""
    import math

    from derive.network import MAX_EPOCHS, MAX_SEED

    checks = [
        ("--epochs", args.epochs, args.epochs is None or 1 <= args.epochs <= MAX_EPOCHS,
         f"Give a whole number of epochs from 1 to {MAX_EPOCHS}."),
        ("--batch-size", args.batch_size, args.batch_size is None or args.batch_size >= 1,
         "Give a whole number of samples ≥ 1."),
        ("--lr", args.lr, args.lr is None or (math.isfinite(args.lr) and args.lr > 0),
         "Give a positive learning rate, e.g. --lr 0.01."),
        ("--seed", args.seed, args.seed is None or 0 <= args.seed <= MAX_SEED,
         f"Give a whole number from 0 to {MAX_SEED}."),
    ]
    for flag, value, ok, fix in checks:
        if not ok:
            raise DeriveError(f"{flag} {value!r} is not a valid value.", where="derive train",
                              fix=fix)


def cmd_train(args) -> int:
    """Generate the spec's network module, train it, report accuracy and diagnosis.

    The run holds the --out folder's lock throughout, and a folder that already holds a
    checkpoint is only continued (--resume), never silently replaced.
    """
    import dataclasses

    from derive.checks import load_module
    from derive.network import check_batch_size, check_train, load_spec
    from derive.train import dataset_for, evaluate, fit, load_source
    from derive.train.checkpoint import CHECKPOINT, load_checkpoint, run_lock
    from derive.train.loop import DIAGNOSIS

    _check_train_arguments(args)
    spec = load_spec(args.spec)
    if args.optimizer is not None:
        registry.get(args.optimizer, "optimizer")  # an unknown name raises with suggestions
        spec = dataclasses.replace(spec, train=spec.train | {"optimizer": args.optimizer})
        # The spec's hyper-parameters must be the new optimizer's (mu means nothing to adam).
        check_train(spec.train, f"{args.spec} with --optimizer {args.optimizer}")
    if args.batch_size is not None:
        check_batch_size(spec.layers, args.batch_size, f"--batch-size {args.batch_size}")
    if spec.vocabulary is not None and args.normalise not in (None, "none"):
        raise DeriveError(f"the input is tokens (the {spec.layers[0].type} layer's rows), "
                          "which cannot be normalised.", where=f"--normalise {args.normalise}",
                          fix="Drop --normalise for this spec.")
    with run_lock(args.out):
        checkpoint = args.out / CHECKPOINT
        if not args.resume and checkpoint.exists():
            done = load_checkpoint(checkpoint).epoch
            raise DeriveError(
                f"this folder holds a run of {done} epoch(s) ({checkpoint}); a new run "
                "would replace it.", where=f"--out {args.out}",
                fix="Continue it with --resume (and --epochs for the total), or give "
                    "another --out for a new run.")
        if args.resume and not checkpoint.exists():
            raise DeriveError("there is no checkpoint to resume.", where=f"--out {args.out}",
                              fix="Drop --resume to start a new run, or point --out at the "
                                  "folder of the run to continue.")
        # The data are read before anything is written, so a wrong --data leaves no files.
        source = load_source(args.data)
        target = pipeline.spec_target(spec, args.out, f"derive train {args.spec}")
        pipeline.write_targets([target])
        module = load_module(target.path)
        if getattr(module, "COMPILED", None) is not None:
            print(f"kernels: compiled ahead of time ({module.COMPILED.__file__}); "
                  "DERIVE_JIT=1 jits them instead")
        options = {"normalisation": args.normalise or spec.train.get("normalisation", "minmax")}
        if args.seed is not None:
            options["seed"] = args.seed
        data = dataset_for(module, source, **options)
        try:
            history = fit(module, data, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                          seed=args.seed, out_dir=args.out, resume=args.resume,
                          progress=not args.no_progress, lang=args.lang)
        except KeyboardInterrupt:
            print(f"\ninterrupted; the last checkpoint in {args.out}/ is complete: "
                  "continue with --resume", file=sys.stderr)
            return 130
        loss, accuracy = evaluate(module, history.params, data.x_test, data.y_test)
        if history.best_epoch and history.stopped:
            print(history.stopped)  # early stopping: where it stopped, which epoch was best
        print(f"test loss {loss:.4f}, test accuracy {accuracy:.2%} on {len(data.y_test)} samples")
        for diagnosis in history.diagnoses:
            print(f"{DIAGNOSIS[args.lang]}: {diagnosis.text(args.lang)}")
        for path in history.files:
            print(f"wrote {path}")
        return 0


def cmd_demo(args) -> int:
    """Run the main job and print its summary."""
    from derive.demo import run_demo, summary

    report = run_demo(args.out, lang=args.lang, progress=not args.no_progress)
    print()
    for line in summary(report):
        print(line)
    return 1 if report.failed else 0


COMMANDS = {"list": cmd_list, "kernels": cmd_kernels, "check": cmd_check,
            "compile": cmd_compile,
            "minimize": cmd_minimize, "latex": cmd_latex, "example": cmd_example,
            "train": cmd_train,
            "demo": cmd_demo}


def main(argv: list[str] | None = None) -> int:
    """Run the command line; user errors print one paragraph and return their exit code.

    Exit codes: 0 success, 1 a check failed, 2 a user error (one line on stderr), 3 an
    internal error of derive's (one line asking for a report; ``DERIVE_TRACEBACK=1``
    shows the traceback).
    """
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed on one line
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    try:
        return COMMANDS[args.command](args)
    except DeriveError as exc:
        print(f"derive: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        # `derive list | head` closed the pipe: not an error of ours or the user's.
        sys.stderr.close()
        return 0
    except MemoryError:
        print("derive: error: out of memory: the input asks for more than this machine "
              "has.", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 — the last resort; every known case is a DeriveError
        if os.environ.get("DERIVE_TRACEBACK"):
            raise
        print(f"derive: internal error ({type(exc).__name__}: {_first_line(exc)}); please "
              "report it with the command that caused it (DERIVE_TRACEBACK=1 shows the "
              "traceback).", file=sys.stderr)
        return 3


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else "no message"


if __name__ == "__main__":
    sys.exit(main())
