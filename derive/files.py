"""Writing output files: whole or not at all, and every failure a one-line OutputError.

Every file derive writes (generated modules, documents, PDFs, trajectories, curves,
checkpoints) goes through :func:`atomic_write`: the bytes go to a temporary file beside
the target, which then replaces it in one rename. A full disk, a killed process or a
target that cannot be written leaves the old file (or none), never a truncated one, and
no temporary file behind.
"""

from __future__ import annotations

import errno
import os
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
