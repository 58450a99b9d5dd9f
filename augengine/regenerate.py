"""Regenerate a stored sample from its manifest row: the store's promise that any sample can be
made again (``augengine replay STORE INDEX`` and :func:`replay`).

It stands above planning, the pipeline and the style-transfer stage (it uses all three), and
below the runner and the CLI; ``augengine.replay`` is this module's :func:`replay`.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from augengine.config import JobConfig
from augengine.errors import ConfigError, InputError, one_line
from augengine.nst.stage import StyleTransferInputs, check_nst_files
from augengine.pipeline import Frame, apply_chain
from augengine.plan import Plan, WorkItem, input_frame, make_plan


def replay(row: Mapping[str, Any], job: JobConfig) -> Frame:
    """Regenerate a stored sample from its manifest row: the store's promise that any sample can
    be made again.

    The job is planned again to find the row's input (and, for style transfer, its references)
    in the sources, which must still be there unchanged; the chain starts from that sample as read
    (:func:`input_frame`), or from its pair styled again
    (:class:`augengine.nst.stage.StyleTransferInputs`, which also needs the model files the job
    names); then the row's recorded concrete ops run one by one (:func:`apply_chain`). On the
    same kind of machine and software that gives the bytes the shard was built with
    (docs/store.md, "Regeneration guarantees").

    Parameters
    ----------
    row : mapping
        A manifest row (``augengine.open_store(path).manifest.to_pylist()[i]``); ``index``,
        ``sample_id`` and ``ops`` (JSON) are read.
    job : JobConfig
        The job the store was made with (``parse_job(view.attrs["job"])``).

    Returns
    -------
    Frame
        ``data``: the uint8 image (H, W) = ``job.output.size``; ``mask``: its uint8 mask, or
        None. Compare ``augengine.store.image_sha256(frame.data)`` with ``row["sha256"]``.

    Raises
    ------
    InputError
        The sources no longer plan this sample at its index, or its input or a model file cannot
        be read: one line naming the sample and what is missing.

    Examples
    --------
    >>> view = augengine.open_store("out/dataset.zarr")                  # doctest: +SKIP
    >>> row = view.manifest.to_pylist()[7]                               # doctest: +SKIP
    >>> frame = replay(row, parse_job(view.attrs["job"]))                # doctest: +SKIP
    >>> augengine.store.image_sha256(frame.data) == row["sha256"]        # doctest: +SKIP
    True
    """
    sample_id, index = row["sample_id"], row["index"]
    try:
        plan = make_plan(job)
    except (ConfigError, InputError) as error:
        raise _unreplayable(sample_id, error) from None
    unread = "".join(f"; source {path} unreadable ({reason})"
                     for path, reason in plan.source_errors[:1])
    if not 0 <= index < plan.n_samples:
        raise InputError(f"sample {sample_id}: index {index} is beyond the {plan.n_samples} "
                         f"samples the job plans now{unread}")
    item = plan.work_item(index)
    if f"{item.input_key}:{item.variant}" != sample_id:
        raise InputError(f"sample {sample_id}: the job's sources now give "
                         f"{item.input_key}:{item.variant} at index {index}; they changed since "
                         f"the store was made{unread}")
    try:
        frame, made_by = _replay_input(plan, item)
    except (ConfigError, InputError) as error:
        raise _unreplayable(sample_id, error) from None
    recorded = [dict(step) for step in json.loads(row["ops"])[len(made_by):]]
    out, _ = apply_chain(frame, [(step.pop("op"), step) for step in recorded],
                         tuple(job.output.size))
    return out


def _unreplayable(sample_id: str, error: Exception) -> InputError:
    return InputError(f"sample {sample_id}: replay needs the inputs and model files the job "
                      f"read ({one_line(error)})")


def _replay_input(plan: Plan, item: WorkItem) -> tuple[Frame, list[dict]]:
    """The frame ``item``'s chain starts from, and the recorded ops that made it."""
    nst = plan.config.nst
    if nst is None:
        return input_frame(item.ref)
    check_nst_files(nst)
    inputs = StyleTransferInputs(plan.refs, nst, "cpu", plan.config.seed)
    inputs.prepare([item])
    return inputs.load(item)
