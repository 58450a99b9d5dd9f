"""Errors that reach users as one clear line, naming the file or sample and the problem."""


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


def one_line(error: BaseException) -> str:
    """An error as one line: an ``AugengineError``'s own message, else ``Type: first line``."""
    text = str(error).splitlines()[0] if str(error) else ""
    if isinstance(error, AugengineError):
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
