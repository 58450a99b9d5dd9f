"""Errors that reach users as one clear line, naming the file or sample and the problem."""
import difflib
from collections.abc import Iterable


class AugengineError(Exception):
    """Base class: the CLI prints ``str(error)`` as one line, never a traceback."""


class InputError(AugengineError, ValueError):
    """Bad input data: unreadable file, wrong dtype/rank, NaN/Inf, mismatched mask, ...

    The message must name the file or sample and what is wrong, e.g.
    ``"data/case7.mat: sample 'case7/rf1': RF is all zeros (Amax = 0)"``.
    """


class ConfigError(AugengineError, ValueError):
    """Invalid job configuration: the message names the key and the allowed values."""


class RunError(AugengineError):
    """A run stopped part-way (a shard could not be built or written); the shards it finished
    are journaled, so re-running the same command resumes."""


def did_you_mean(name: object, allowed: Iterable[str]) -> str:
    """``did you mean 'x'?`` for the allowed name closest to a misspelt one, else ``""``: every
    "did you mean" reads alike."""
    close = difflib.get_close_matches(str(name), list(allowed), n=1)
    return f"did you mean {close[0]!r}?" if close else ""


def unknown(what: str, name: object, allowed: Iterable[str]) -> str:
    """``unknown <what> 'name'; did you mean 'x'?``, or ``...; allowed: a, b, c`` when no
    allowed name is close."""
    allowed = list(allowed)
    hint = did_you_mean(name, allowed) or f"allowed: {', '.join(allowed) or 'none'}"
    return f"unknown {what} {name!r}; {hint}"


def one_line(error: BaseException) -> str:
    """An error as one line: an ``AugengineError``'s own message, else ``Type: first line``."""
    text = str(error).splitlines()[0] if str(error) else ""
    if isinstance(error, AugengineError):
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def printable(text: object) -> str:
    """``str(text)`` with control and other non-printable characters written as escapes
    (``\\x1b``, ``\\n``, ``\\u2028``): names, paths and reasons read from files must not move the
    cursor, clear the terminal or forge extra output lines."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in str(text))


def error_line(error: Exception) -> str:
    """The one line a command prints for an error it reports: an ``AugengineError``'s message, or
    for an ``OSError`` (no space, name too long, permission denied, ...) the path(s) it concerns
    and the system's reason, without Python's ``[Errno N]`` prefix; escaped as :func:`printable`."""
    if not isinstance(error, OSError) or error.strerror is None:
        return printable(error)
    paths = [str(p) for p in (error.filename, error.filename2) if p is not None]
    return printable(": ".join([" -> ".join(paths), error.strerror] if paths else [error.strerror]))
