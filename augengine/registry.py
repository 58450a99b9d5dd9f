"""Users' own ops: a function plus a typed parameter model, added to the op table that plan, run
and the manifest use (:data:`augengine.pipeline.OPS`) without editing the package.

A registered op is a step like any built-in one: its parameters are checked against its model
(a misspelt one gets "did you mean"), may be swept or drawn at random (``{uniform: [lo, hi]}``),
and each output's concrete values are recorded in the manifest's ``ops`` column::

    from pydantic import BaseModel, Field
    import augengine, skimage.exposure

    class Gamma(BaseModel):
        gamma: float = Field(gt=0, le=5)

    augengine.register_op("gamma", skimage.exposure.adjust_gamma, params=Gamma)

Ray actors run in other processes, so the ops registered in the driver travel with the run:
the runner hands their entries to each actor, which registers them again (:func:`install`).
Functions and models are sent by reference when their module is importable on the workers
(define them in a module of their own; a job file names such modules in ``plugins:``, which
are imported before its steps are checked), by value when they live in the script's
``__main__`` (the embedded Ray).
"""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, replace
from typing import Any, Callable, Literal

from pydantic import BaseModel

from augengine.errors import ConfigError, InputError
from augengine.pipeline import OPS, Frame, NoParams, OpSpec

#: The ops the package defines; a user op may not take one of their names.
BUILTIN_OPS = frozenset(OPS)

#: Op names must work in the manifest filters' ``op.param`` form and as YAML keys.
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
#: Keys of a step that are not op parameters (``augengine.config.OpStep``).
_STEP_KEYS = {"op", "sweep", "repeats"}


@dataclass(frozen=True)
class UserOp:
    """``fn(image, **params)`` as a frame op (an :class:`~augengine.pipeline.OpSpec`'s
    ``apply``): the mask kept (``mask="keep"``) or moved by the same call (``"same"``)."""

    name: str
    fn: Callable[..., Any]
    mask: Literal["keep", "same"]

    def __call__(self, frame: Frame, params: BaseModel, output_size) -> Frame:
        kwargs = {key: getattr(params, key) for key in type(params).model_fields}
        data = self.fn(frame.data, **kwargs)
        if self.mask == "same" and frame.mask is not None:
            return replace(frame, data=data, mask=self.fn(frame.mask, **kwargs))
        if frame.mask is not None and tuple(data.shape) != tuple(frame.mask.shape):
            raise InputError(f"op {self.name}: changed the image's shape "
                             f"{tuple(frame.mask.shape)} -> {tuple(data.shape)} but left its "
                             "mask; register it with mask='same' so the mask follows")
        return replace(frame, data=data)


def register_op(name: str, fn: Callable[..., Any] | None = None, *,
                params: type[BaseModel] = NoParams, mask: Literal["keep", "same"] = "keep",
                augmentation: bool = True):
    """Add the op ``name``: ``fn(image, **params)`` with parameters typed by ``params``.

    Parameters
    ----------
    name : str
        The name job steps give as ``op`` (lower case, digits and ``_``); not a built-in op's.
    fn : callable
        ``fn(image, **params) -> image``: ``image`` a (H, W) uint8 array (NumPy, or CuPy when
        the actor runs on a GPU), the result a (H, W) uint8 array. Without ``fn``,
        ``register_op`` returns a decorator.
    params : pydantic model class
        The op's parameters (their names, types and bounds); each is passed to ``fn`` by name.
        Default: none.
    mask : {"keep", "same"}
        ``keep``: the op changes grey levels, the sample's mask is left as it is (the image
        must keep its shape). ``same``: the op moves pixels and ``fn`` is applied to the 0/1
        mask with the same parameters (exact for crops, flips and permutations; an op that
        interpolates must keep 0/1 masks 0/1 itself).
    augmentation : bool
        False for an op that is part of making an "original" (a crop), as the built-ins mark.

    Returns
    -------
    callable
        ``fn`` (so the decorator form leaves the function usable on its own).

    Raises
    ------
    ConfigError
        A built-in op's name, a name taken by another function, a malformed name, ``params``
        not a pydantic model or with a field named ``op``, ``sweep`` or ``repeats``.

    Examples
    --------
    >>> from pydantic import BaseModel, Field
    >>> class Invert(BaseModel):
    ...     level: int = Field(default=255, ge=0, le=255)
    >>> @register_op("invert_doc", params=Invert)
    ... def invert(image, level):
    ...     return (level - image.astype("int16")).clip(0, 255).astype("uint8")
    >>> "invert_doc" in user_ops()
    True
    """
    if fn is None:
        return lambda function: register_op(name, function, params=params, mask=mask,
                                            augmentation=augmentation)
    where = f"register_op({name!r})"
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{where}: an op name is lower case letters, digits and '_', starting "
                          "with a letter")
    if name in BUILTIN_OPS:
        raise ConfigError(f"{where}: {name!r} is a built-in op; give yours another name")
    if not callable(fn):
        raise ConfigError(f"{where}: fn must be callable, got {type(fn).__name__}")
    if not (isinstance(params, type) and issubclass(params, BaseModel)):
        raise ConfigError(f"{where}: params must be a pydantic model class, got {params!r}")
    reserved = sorted(_STEP_KEYS & set(params.model_fields))
    if reserved:
        raise ConfigError(f"{where}: parameter {reserved[0]!r} is a step key (op, sweep, "
                          "repeats); rename it")
    if mask not in ("keep", "same"):
        raise ConfigError(f"{where}: mask must be 'keep' or 'same', got {mask!r}")
    if name in OPS and _origin(OPS[name].apply.fn) != _origin(fn):
        raise ConfigError(f"{where}: already registered by {_origin(OPS[name].apply.fn)}; "
                          "give this one another name")
    # The same function again (its module imported anew) replaces its own entry.
    OPS[name] = OpSpec(params, UserOp(name, fn, mask), domain_in="image",
                       augmentation=augmentation)
    return fn


def _origin(fn) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def user_ops() -> dict[str, OpSpec]:
    """The registry entries of the ops registered in this process (not the built-ins)."""
    return {name: spec for name, spec in OPS.items() if name not in BUILTIN_OPS}


def install(specs: dict[str, OpSpec]) -> None:
    """Register entries made in another process (a Ray actor gets the driver's user ops)."""
    OPS.update({name: spec for name, spec in specs.items() if name not in BUILTIN_OPS})


def import_plugins(modules: list[str]) -> None:
    """Import each module named in a job's ``plugins``, which registers its ops.

    Raises ``ValueError`` naming the module that cannot be imported (the job's validation turns
    it into one line for ``plugins``).
    """
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ValueError(f"cannot import plugin {module!r} ({error}); it must be importable "
                             "(on PYTHONPATH) where the job is run") from None
