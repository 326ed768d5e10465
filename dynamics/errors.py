"""The project's own error types: what the command line reports as one line and exit status 2.

Each subclasses the built-in exception a caller would expect (`ValueError` for bad values,
`FileNotFoundError` for missing files, `OSError` for storage problems), so library users can keep
catching those; the command line catches `UserError` only, so a bug anywhere else still shows its
traceback instead of passing for bad input.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input or an unusable environment: the message says what was received and what to do."""


class InputError(UserError, ValueError):
    """A value, file content or combination of options that cannot be used."""


class MissingInputError(UserError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class StorageError(UserError, OSError):
    """The disk or a permission stopped a write (disk full, read-only folder)."""


class ExistingOutputError(UserError, FileExistsError):
    """An output folder or file is in the way, and overwriting it was not asked for."""


class NotAFolderError(UserError, NotADirectoryError):
    """A path that must be a folder is a file."""


class AccessError(UserError, PermissionError):
    """A file or folder cannot be written for lack of permission."""


class UnknownNameError(UserError, KeyError):
    """A name (a run id, a model) that the warehouse does not hold."""

    def __str__(self) -> str:  # KeyError's own str() quotes the message
        return str(self.args[0]) if self.args else ""


def first_line(err: BaseException) -> str:
    """An exception's message without the detail lines libraries append (DuckDB's caret block, torch's advice)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
