"""Errors a user can cause, each with what went wrong, where, and how to fix it.

The CLI turns every :class:`DeriveError` into one paragraph on stderr and exit code 2;
anything else escaping is a bug in derive, not in the user's input.
"""

from __future__ import annotations


class DeriveError(Exception):
    """A problem in the user's input: names what, where, and how to fix it.

    Parameters
    ----------
    what : str
        What is wrong, in one sentence.
    where : str, optional
        The file, field, formula or name the problem is in.
    fix : str, optional
        How to fix it.

    """

    exit_code = 2

    def __init__(self, what: str, where: str = "", fix: str = ""):
        self.what, self.where, self.fix = what, where, fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """The one-paragraph message shown to the user."""
        head = f"{self.where}: {self.what}" if self.where else self.what
        return f"{head} {self.fix}".strip() if self.fix else head


class UnknownNameError(DeriveError):
    """A catalogue name that is not registered."""


class FormulaError(DeriveError):
    """A formula typed by the user that cannot be accepted."""


class DeclarationError(DeriveError):
    """A catalogue declaration that contradicts itself (e.g. a wrong derivative rule)."""


class StaleFilesError(DeriveError):
    """Generated files that differ from what would be generated now."""

    exit_code = 1


class OutputError(DeriveError):
    """An output path that cannot be written."""
