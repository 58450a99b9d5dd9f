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
