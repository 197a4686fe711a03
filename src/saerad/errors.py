"""What saerad raises when the user's input is wrong: the CLI prints these as one line; anything else is a bug."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


class UserError(ValueError):
    """A mistake in what the user asked for (a bad value, path or file); the CLI prints it as one line, exit 2."""


class MissingInput(UserError, FileNotFoundError):
    """A file or folder the user named does not exist or lacks what it needs."""


class OutputConflict(UserError, FileExistsError):
    """An output folder that saerad must not write into."""


class NotAFolder(UserError, NotADirectoryError):
    """A path that should be a folder is a file."""


class NoAccess(UserError, PermissionError):
    """A missing credential, or a licence that forbids the action."""


class Unreachable(UserError, ConnectionError):
    """A service the user pointed at (the Hub, an LLM endpoint) does not answer."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, or its type name when it has none."""
    text = str(err).strip().strip('"')
    return text.splitlines()[0] if text else type(err).__name__


@contextmanager
def loading(name: str, what: str) -> Iterator[None]:
    """Turn a failure to load `name` (a folder or hub id) into a one-line `UserError`: "NAME: cannot load WHAT"."""
    try:
        yield
    except OSError as err:
        raise UserError(f"{name}: cannot load {what} ({first_line(err)})") from None
