"""Writing output files: whole or not at all, and every failure a one-line OutputError.

Every file derive writes (generated modules, documents, PDFs, trajectories, curves,
checkpoints) goes through :func:`atomic_write`: the bytes go to a temporary file beside
the target, which then replaces it in one rename. A full disk, a killed process or a
target that cannot be written leaves the old file (or none), never a truncated one, and
no temporary file behind. :func:`write_if_changed` writes a generated file only when its
bytes change, and refuses to overwrite one edited by hand.

The header of a generated file is written here too, since it is what the hand-edit check
reads: the command that regenerates the file (:func:`command_line`), kept on one comment
line (:func:`comment_text`), and a hash of the file's body (:func:`with_hash`).

This module depends on the standard library only (and on :mod:`derive.errors`, which does
too), so every stage that writes files, training included, can use it.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shlex
import sys
import tempfile
from pathlib import Path

from derive.errors import OutputError

#: Modules a generated module, or code next to it, imports: a file of one of these names
#: in an output folder would be imported in their place (when the folder is on sys.path).
SHADOWED = frozenset(sys.stdlib_module_names) | {
    "numpy", "numba", "llvmlite", "scipy", "sympy", "jinja2", "derive", "torch",
    "matplotlib", "pytest", "hypothesis", "mpmath", "generated", "setuptools", "pip",
}
#: The header line that records a hash of a generated file's body.
HASH_PREFIX = "# derive-hash: "


def module_name_clash(name: str) -> str | None:
    """Why a generated module may not be called ``name``, or None when it may.

    ``__init__`` and other dunder names mean something to Python (a package, a script);
    a library's name would shadow the library for every import from the output folder.
    """
    if name.startswith("__") and name.endswith("__"):
        return "a name Python gives a meaning to (__init__, __main__, ...)"
    if name in SHADOWED:
        return f"the name of the module {name!r}, which this file would shadow"
    return None


#: Fixes for the errors a write commonly meets, by errno.
_FIXES = {
    errno.ENOSPC: "Free some disk space, or write elsewhere with -o/--out.",
    errno.EDQUOT: "Free some of your disk quota, or write elsewhere with -o/--out.",
    errno.EACCES: "Choose a writable location with -o/--out.",
    errno.EPERM: "Choose a writable location with -o/--out.",
    errno.EROFS: "The file system is read-only: choose another location with -o/--out.",
}


def _output_error(exc: OSError, where: Path, what: str) -> OutputError:
    reason = exc.strerror or str(exc)
    return OutputError(f"{what} ({reason}).", where=str(where),
                       fix=_FIXES.get(exc.errno, "Choose another location with -o/--out."))


def check_output_file(path: Path) -> Path:
    """Refuse an output path that can only name a directory, before any work is done.

    Parameters
    ----------
    path : Path
        Where a file is to be written.

    Returns
    -------
    Path
        The same path.

    Raises
    ------
    OutputError
        When ``path`` is empty, an existing directory, or an existing file that is not
        a regular one (``/dev/null``, a FIFO).

    """
    path = Path(path)
    if str(path) in ("", ".") or path.is_dir():
        raise OutputError("this is a directory, not a file to write.", where=str(path),
                          fix="Name a file, e.g. -o notes.tex (or a file inside it).")
    if path.exists() and not path.is_file():
        # A device, FIFO or socket (or a link to one, like /dev/stdout): the rename that
        # makes a write atomic would replace it with a regular file, and as root -o
        # /dev/null would delete the system's /dev/null.
        raise OutputError("this is not a regular file (a device, pipe or socket?).",
                          where=str(path), fix="Name a regular file, e.g. -o notes.tex; "
                          "without -o the text goes to standard output.")
    return path


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and a rename.

    An interrupted or failed write leaves either the old file or the new one, never a
    truncated file, and never the temporary file.

    Parameters
    ----------
    path : Path
        Destination; missing parent directories are created.
    data : str or bytes
        The contents (text is written as UTF-8).

    Raises
    ------
    OutputError
        When the path is a directory, or the file cannot be written (no space left,
        no permission, a parent that is a file, ...), naming the path and the reason.

    """
    path = check_output_file(path)
    if path.is_symlink():
        # Write through a link (notes.tex -> shared/notes.tex), as open() would: the
        # rename would otherwise replace the link itself and leave its target stale.
        path = Path(os.path.realpath(path))
    raw = data.encode() if isinstance(data, str) else data
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _output_error(exc, path.parent, "cannot write here") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        # mkstemp makes the file private (0600); give it the permissions a plain
        # open() would have under the user's umask.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise _output_error(exc, path, "cannot write the file") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _body_hash(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def with_hash(text: str) -> str:
    """Insert a hash of the file's body after its header, to detect hand edits later."""
    head, _, body = text.partition("\n\n")
    return f"{head}\n{HASH_PREFIX}{_body_hash(body)}\n\n{body}"


def edited_by_hand(text: str) -> bool:
    """Whether a generated file's body no longer matches the hash it was written with."""
    head, _, body = text.partition("\n\n")
    recorded = [ln[len(HASH_PREFIX):] for ln in head.splitlines() if ln.startswith(HASH_PREFIX)]
    return not recorded or recorded[0] != _body_hash(body)


def write_if_changed(path: Path, text: str, force: bool = False) -> bool:
    """Write ``text`` unless the file already holds exactly these bytes.

    Leaving an unchanged file untouched keeps its modification time, which is what
    Numba's on-disk cache keys on.

    Parameters
    ----------
    path : Path
        Destination.
    text : str
        Module text.
    force : bool
        Overwrite a file that was edited by hand.

    Returns
    -------
    bool
        True when the file was (re)written.

    Raises
    ------
    OutputError
        When the existing file was edited by hand and ``force`` is False.

    """
    path = check_output_file(path)
    if path.exists():
        try:
            old = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            old = ""  # not text, so not a generated file: treated as edited by hand
        except OSError as exc:
            raise OutputError(f"cannot read the existing file ({exc.strerror}).",
                              where=str(path), fix="Choose another -o/--out.") from None
        if old == text:
            return False
        if edited_by_hand(old) and not force:
            raise OutputError(
                "this generated file was edited by hand; regenerating would lose the edits.",
                where=str(path),
                fix="Move your changes into the declaration, or pass --force to overwrite.",
            )
    atomic_write(path, text)
    return True


#: PEP 263: a comment in a file's first two lines matching this sets its source encoding.
_CODING = re.compile(r"(coding)([:=])")


def _escape_char(c: str) -> str:
    """Python's escape for one character (as ``repr`` writes it)."""
    code = ord(c)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def comment_text(value: object) -> str:
    r"""A user's text (a path, a formula, a command) made safe for one ``#`` comment line.

    Every character that is not printable — line breaks of any kind (``\n``, ``\r``,
    form feed, ``\x85``, U+2028/2029), NUL, other controls, bidirectional overrides — is
    written as its ``\xNN``/``\uNNNN`` escape, so the comment cannot end early and let the
    rest of the text run as code. ``coding:`` and ``coding=`` become ``coding\x3a`` and
    ``coding\x3d``: in a file's first two lines they would set its source encoding
    (PEP 263). Printable text comes back unchanged.
    """
    text = "".join(c if c.isprintable() else _escape_char(c) for c in str(value))
    return _CODING.sub(lambda m: m[1] + _escape_char(m[2]), text)


def _shell_char(c: str) -> str:
    if c in "\\'":
        return "\\" + c
    if c.isprintable():
        return c
    # Bash's \xNN is one byte, not a character: above 0x7f only \u and \U spell it.
    return f"\\x{ord(c):02x}" if ord(c) < 0x80 else _escape_char(c).replace("\\x", "\\u00")


def _shell_word(word: str) -> str:
    if all(c.isprintable() for c in word):
        return shlex.quote(word)
    # Bash's $'...' quoting spells the other characters as escapes, so the command stays
    # on one line and still regenerates the same file when pasted into a shell.
    return "$'" + "".join(_shell_char(c) for c in word) + "'"


def command_line(words: list[str]) -> str:
    """The shell command that regenerates a file, quoted word by word, on one line."""
    return " ".join(_shell_word(str(w)) for w in words)
