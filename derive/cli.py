"""The command line: parses arguments, calls derive, prints. Nothing else lives here."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from derive import pipeline, registry
from derive.errors import DeriveError

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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    written = pipeline.write_targets(targets, force=args.force)
    changed = [str(p) for p, w in written if w]
    print(f"{len(changed)} file(s) written, {len(written) - len(changed)} unchanged, in {out}/")
    for p in changed:
        print(f"  wrote {p}")
    return 0


def cmd_check(args) -> int:
    """Finite-difference check of generated kernels; print a table of errors."""
    from derive.checks import finite_difference_check, load_module

    names = _names(args)
    ops = registry.all_ops() if names is None else [registry.get(n) for n in names]
    rows = []
    for op in ops:
        module = load_module(args.out / pipeline.FOLDERS[op.kind] / f"{op.name}.py")
        rows += finite_difference_check(op, module)
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


COMMANDS = {"list": cmd_list, "kernels": cmd_kernels, "check": cmd_check}


def main(argv: list[str] | None = None) -> int:
    """Run the command line; user errors print one paragraph and return their exit code."""
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except DeriveError as exc:
        print(f"derive: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        # `derive list | head` closed the pipe: not an error of ours or the user's.
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
