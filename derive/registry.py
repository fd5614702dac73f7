"""The catalogue: every declared op by name.

Declarations register themselves when :mod:`derive.ops` is imported; lookups import it
on first use so that ``get("sigmoid")`` works from anywhere.
"""

from __future__ import annotations

import difflib
import inspect

from derive.errors import DeriveError, UnknownNameError

_OPS: dict[str, object] = {}
#: The module that registered each op (``derive.ops.losses``), for generated headers.
_MODULES: dict[str, str] = {}
#: The folder of a generated tree each kind of op is written to (generated/activations/).
FOLDERS = {"activation": "activations", "vector": "activations", "loss": "losses",
           "layer": "layers", "optimizer": "optimizers"}


def register(op):
    """Add a declaration to the catalogue after checking it against its own derivative.

    Parameters
    ----------
    op : Activation
        The declaration.

    Returns
    -------
    Activation
        The same declaration, so that ``SIGMOID = register(Activation(...))`` reads well.

    """
    from derive.calculus.verify import verify_declaration

    if op.name in _OPS:
        if _OPS[op.name] == op:
            # The same declaration run again: a catalogue module re-imported after an
            # earlier import of the catalogue failed part-way (its first declarations
            # had registered). The real error is the one that failure raises again.
            return _OPS[op.name]
        raise ValueError(f"{op.name!r} is declared twice in the catalogue")
    verify_declaration(op)
    _OPS[op.name] = op
    # Read from the caller rather than a table by kind, so that the file named in a
    # generated header is where the declaration is, wherever it is moved.
    caller = inspect.currentframe().f_back
    _MODULES[op.name] = caller.f_globals.get("__name__", "") if caller else ""
    return op


def declared_in(op) -> str | None:
    """The file that declares a catalogue op, as a path from the repository root.

    Parameters
    ----------
    op : record
        A declaration.

    Returns
    -------
    str or None
        E.g. ``"derive/ops/losses.py"``; None for an op not in the catalogue (a custom
        formula) or registered from outside a module.

    """
    module = _MODULES.get(op.name) if _OPS.get(op.name) == op else None
    return module.replace(".", "/") + ".py" if module and module != "__main__" else None


def _load_catalogue() -> None:
    import derive.ops  # noqa: F401  (registers the declarations as a side effect)


def get(name: str, kind: str | None = None):
    """Return the declaration called ``name``.

    Parameters
    ----------
    name : str
        Catalogue name, e.g. ``"sigmoid"``.
    kind : str, optional
        Restrict the lookup to one kind (``"activation"``, ...).

    Raises
    ------
    UnknownNameError
        With the closest registered names as suggestions.

    """
    _load_catalogue()
    op = _OPS.get(name)
    if op is not None and (kind is None or op.kind == kind):
        return op
    names = [n for n, o in _OPS.items() if kind is None or o.kind == kind]
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f"Did you mean {', '.join(close)}?" if close else "Run `derive list` to see them."
    what = f"no {kind or 'op'} called {name!r} in the catalogue."
    raise UnknownNameError(what, fix=hint)


def all_ops(kind: str | None = None) -> list:
    """Every registered declaration (of one kind), in declaration order."""
    _load_catalogue()
    return [op for op in _OPS.values() if kind is None or op.kind == kind]


def module_ops() -> list:
    """Every declaration with a generated module of its own, in declaration order.

    A regulariser has none: its gradient is computed inside a network's training step.
    """
    return [op for op in all_ops() if op.kind in FOLDERS]


def folder(op) -> str:
    """The folder of a generated tree that holds an op's module (``activations``).

    Raises
    ------
    DeriveError
        For a kind of op that has no module of its own (a regulariser).
    """
    if op.kind not in FOLDERS:
        raise DeriveError(f"the {op.kind} {op.name!r} has no module of its own: a network "
                          "computes its gradient inside the training step.", where=op.name,
                          fix=f"Set it in a network spec's [train] table; `derive latex "
                              f"{op.name}` typesets its derivation.")
    return FOLDERS[op.kind]
