"""From a job to an exact plan: which input samples, which variants, which output index and shard.

Output index ``i`` is input sample ``i // V``, variant ``i % V`` (``V`` variants per input), so the
variants of one input sit next to each other and usually in one shard: an actor reads each input
once and shares the common prefix of its chains (one envelope per dynamic range, for example).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import types
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from augengine import sources
from augengine.config import JobConfig, NstConfig, as_job
from augengine.errors import ConfigError, InputError
from augengine.pipeline import Frame, describe_chain
from augengine.sources import LABEL_NAMES, SampleRef


#: Memory one sample's chain may use on an actor (see :meth:`Plan.actor_memory_bytes`).
WORKING_SET_BYTES = 512 * 2**20
#: A ResNet-50 encoder, its decoder and a batch of 32 activations at 224x224, with room to spare.
NST_MODEL_BYTES = 2 * 2**30


@dataclass(frozen=True)
class WorkItem:
    """One output sample to make: its index, input sample, chain variant and, for style
    transfer, its style reference(s) (``content``/``style_positions`` are positions in the
    plan's refs)."""

    index: int
    ref: SampleRef
    variant: int
    content: int = -1
    styles: tuple[SampleRef, ...] = ()
    style_positions: tuple[int, ...] = ()

    @property
    def input_key(self) -> str:
        """What the sample is made from: the input id, or ``content~style_1~...~style_K`` for
        NST (unique per plan row: a plan never repeats a row)."""
        return "~".join([self.ref.sample_id, *(style.sample_id for style in self.styles)])

    @property
    def nst_key(self) -> tuple[int, ...]:
        """``(content, *style_positions)``: the style transfer this sample starts from."""
        return (self.content, *self.style_positions)


@dataclass
class Plan:
    config: JobConfig
    refs: list[SampleRef]
    chains: list[list[tuple[str, dict]]]
    #: Sources that could not even be listed: ``(path, reason)``; their samples are not planned.
    source_errors: list[tuple[str, str]] = field(default_factory=list)
    #: With style transfer: (rows, 1 + K) indices into ``refs``, column 0 the content image,
    #: columns 1..K its references (K = 1 unless ``nst.references`` is ``multi``).
    pairs: np.ndarray | None = None
    #: sha256 of the explicit pairing file: part of the job's identity (:meth:`job_hash`).
    pairs_sha256: str | None = None

    @property
    def variants(self) -> int:
        return len(self.chains)

    @property
    def n_rows(self) -> int:
        """Inputs to the chains: the input samples, or the planned style-transfer pairs."""
        return len(self.refs) if self.pairs is None else len(self.pairs)

    @property
    def n_samples(self) -> int:
        return self.n_rows * self.variants

    @property
    def shard_size(self) -> int:
        return self.config.output.shard_size

    @property
    def n_shards(self) -> int:
        return -(-self.n_samples // self.shard_size)

    @property
    def has_masks(self) -> bool:
        return any(ref.has_roi for ref in self.refs)

    def actor_memory_bytes(self) -> int:
        """A deliberately generous estimate of one actor's peak memory while it builds a shard.

        The shard's output buffers (images, and masks when any input has one) three times over:
        the arrays ``build_shard`` fills, Zarr's encoded copy and the copy Ray returns; plus
        ``WORKING_SET_BYTES`` for one sample's chain (float64 intermediates of a full RF frame);
        for style transfer, every input image as uint8 and float32 and ``NST_MODEL_BYTES`` for
        the networks and one batch of activations. Inputs are not decoded at plan time, so an
        input much larger than the output is covered only by the working set.
        """
        h, w = self.config.output.size
        buffers = 3 * self.shard_size * h * w * (2 if self.has_masks else 1)
        nst = 0 if self.pairs is None else NST_MODEL_BYTES + 5 * len(self.refs) * h * w
        return buffers + WORKING_SET_BYTES + nst

    def shard_indices(self, shard: int) -> range:
        start = shard * self.shard_size
        return range(start, min(start + self.shard_size, self.n_samples))

    def item(self, index: int) -> tuple[SampleRef, int]:
        """The input (content) sample and variant number behind output ``index``."""
        row, variant = divmod(index, self.variants)
        return self.refs[row if self.pairs is None else int(self.pairs[row, 0])], variant

    def work_item(self, index: int) -> WorkItem:
        """Everything an actor needs to make output ``index``."""
        ref, variant = self.item(index)
        if self.pairs is None:
            return WorkItem(index, ref, variant)
        content, *styles = (int(i) for i in self.pairs[index // self.variants])
        return WorkItem(index, ref, variant, content, tuple(self.refs[s] for s in styles),
                        tuple(styles))

    def counts_by_label(self) -> dict[str, int]:
        if self.pairs is None:
            labels = (ref.label for ref in self.refs)
        else:
            labels = (self.refs[int(i)].label for i in self.pairs[:, 0])
        counts = Counter(LABEL_NAMES.get(label, str(label)) for label in labels)
        return {name: n * self.variants for name, n in sorted(counts.items())}

    def counts_by_chain(self) -> dict[str, int]:
        prefix = ""
        if self.config.nst is not None:
            nst = self.config.nst
            rule = nst.pairing + (f",k={nst.k}" if nst.k else "")
            multi = ",multi" if nst.references == "multi" else ""
            prefix = f"nst({nst.mode},{rule}{multi}) > "
        counts = Counter(prefix + describe_chain(chain) for chain in self.chains)
        return {name: n * self.n_rows for name, n in counts.items()}

    @cached_property
    def _stamps(self) -> dict[str, list]:
        """``[size, mtime_ns]`` of every file the plan reads (``None`` for a missing file), each
        file stat-ed once however many samples it holds."""
        paths = {path for ref in self.refs for path in sources.input_files(ref)}
        return {path: file_stamp(path) for path in sorted(paths | set(self.job_files))}

    @property
    def job_files(self) -> list[str]:
        """Files besides the samples that every output depends on: the style-transfer models."""
        nst = self.config.nst
        if nst is None:
            return []
        return [str(Path(p).resolve()) for p in nst.model_files()]

    def inputs(self) -> list[dict]:
        """What the plan reads, in plan order: one row per input sample (its id and each file
        it reads with size and mtime), then one per model file (``sample_id`` None). Recorded
        in the store (``inputs.parquet``) so a resume can say what changed."""
        rows = [{"sample_id": ref.sample_id,
                 "files": json.dumps([[p, *(self._stamps[p] or [None, None])]
                                      for p in sources.input_files(ref)])}
                for ref in self.refs]
        rows += [{"sample_id": None, "files": json.dumps([[p, *(self._stamps[p] or [None, None])]])}
                 for p in self.job_files]
        return rows

    def inputs_digest(self) -> str:
        """sha256 of :meth:`inputs`: equal for two plans exactly when they read the same sample
        ids, in the same order, from files of the same size and modification time."""
        return hashlib.sha256(json.dumps(self.inputs()).encode()).hexdigest()

    def shard_digest(self, shard: int) -> str:
        """sha256 of what shard ``shard`` is made from: its indices, each item's input key and
        variant, and the stamps of every file those inputs (and the model files) read. A shard
        whose digest is unchanged holds exactly the samples the plan puts there now."""
        items = []
        for index in self.shard_indices(shard):
            item = self.work_item(index)
            files = [p for ref in (item.ref, *item.styles) for p in sources.input_files(ref)]
            items.append([index, item.input_key, item.variant,
                          [[p, self._stamps[p]] for p in files]])
        job = [[p, self._stamps[p]] for p in self.job_files]
        return hashlib.sha256(json.dumps([self.job_hash(), job, items]).encode()).hexdigest()

    def job_hash(self) -> str:
        """The store's identity: :meth:`JobConfig.config_hash`, and the content of the explicit
        pairing file when there is one, so a run never resumes a store made from other pairs."""
        digest = self.config.config_hash()
        if self.pairs_sha256 is None:
            return digest
        return hashlib.sha256(f"{digest}:{self.pairs_sha256}".encode()).hexdigest()

    def input_stage(self):
        """What the actors' chains start from (see :class:`augengine.runner.ShardWorker`): None
        for plain inputs (each sample as read, :func:`input_frame`); the style-transfer stage
        (:class:`augengine.nst.stage.StyleTransferStage`) for a job with an ``nst`` section."""
        if self.config.nst is None:
            return None
        from augengine.nst.stage import StyleTransferStage

        return StyleTransferStage(self.refs, self.config.nst, self.config.seed)


def check_model_files(config: JobConfig) -> None:
    """Fail in one line, before planning or starting any actor, when a model file the job names
    (an NST checkpoint, classifier or encoder weights) is missing or corrupt."""
    if config.nst is not None:
        from augengine.nst.stage import check_nst_files

        check_nst_files(config.nst)


def file_stamp(path: str) -> list[int] | None:
    """``[size in bytes, mtime in ns]`` of a file, or None when it is missing."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def make_plan(config: JobConfig) -> Plan:
    """List every source's samples (cheaply; no pixel data is decoded) and fix the layout."""
    refs: list[SampleRef] = []
    errors: list[tuple[str, str]] = []
    unreadable: list[str] = []
    seen: dict[str, str] = {}
    for i, source in enumerate(config.sources):
        name = f"sources[{i}] ({source.reader})"
        path = Path(source.path).resolve()  # actors may run in another working directory
        if not path.exists():
            raise ConfigError(f"sources[{i}].path: {source.path} does not exist")
        try:
            found = sources.discover(source.reader, str(path), **source.options)
        except InputError as error:
            errors.append((source.path, str(error)))
            unreadable.append(f"{name}: {error}")  # the reader's message names the file
            continue
        except ConfigError as error:  # an option the reader lacks or a value it cannot use
            raise ConfigError(f"{name}: {error}") from None
        for ref in found:
            if ref.sample_id in seen:
                raise ConfigError(f"sources[{i}]: sample id {ref.sample_id!r} from {ref.path} "
                                  f"also comes from {seen[ref.sample_id]}; sample ids must be unique")
            seen[ref.sample_id] = ref.path
        refs.extend(found)
    if not refs:
        detail = "; ".join(unreadable)
        raise InputError(f"no readable samples in any source{': ' + detail if detail else ''}")
    pairs, pairs_sha256 = None, None
    if config.nst is not None:
        pairs = _style_rows(config.nst, config.seed, refs)
        if config.nst.pairs is not None:
            pairs_sha256 = hashlib.sha256(Path(config.nst.pairs).read_bytes()).hexdigest()
    return Plan(config=config, refs=refs, chains=config.chains(), source_errors=errors,
                pairs=pairs, pairs_sha256=pairs_sha256)


def _style_rows(nst: NstConfig, seed: int, refs: list[SampleRef]) -> np.ndarray:
    """The plan's style-transfer rows ``(rows, 1 + K)``: the pairing rule's rows, each split into
    K single-reference rows ``(content, ref_j)`` unless ``references`` is ``multi``."""
    from augengine.nst.pairs import plan_pairs, read_pairs_csv, split_references

    if nst.pairing != "explicit":
        rows = plan_pairs([ref.label for ref in refs], rule=nst.pairing, k=nst.k, seed=seed)
        return rows if nst.references == "multi" else split_references(rows)
    names = [LABEL_NAMES.get(ref.label, str(ref.label)) for ref in refs]
    rows, lines = read_pairs_csv(nst.pairs, [ref.sample_id for ref in refs], names,
                                 allow_cross_class=nst.allow_cross_class)
    if nst.references == "single":
        lines = np.repeat(lines, rows.shape[1] - 1)
        rows = split_references(rows)
    _refuse_repeats(rows, lines, nst.pairs, refs)
    return rows


def _refuse_repeats(rows: np.ndarray, lines: np.ndarray, path: str, refs: list[SampleRef]):
    """ConfigError naming the lines when two rows are the same (they would be one sample twice,
    under one sample id)."""
    _, first, inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
    first_of_row = first[inverse.reshape(-1)]
    repeated = np.flatnonzero(first_of_row != np.arange(len(rows)))
    if repeated.size:
        row = int(repeated[0])
        ids = "~".join(refs[int(i)].sample_id for i in rows[row])
        raise ConfigError(f"{path} line {lines[row]}: {ids} repeats line "
                          f"{lines[first_of_row[row]]}; every output must be distinct")


def format_plan(plan: Plan) -> str:
    """The text ``augengine plan`` prints: counts per label and per op chain, and the shards."""
    out = plan.config.output
    inputs = f"{len(plan.refs)} input samples"
    if plan.pairs is not None:
        nst = plan.config.nst
        if nst.references == "multi":
            inputs += (f" -> {plan.n_rows} multi-reference style transfers ({nst.pairing}: each "
                       f"content styled by its {plan.pairs.shape[1] - 1} references together)")
        else:
            inputs += f" -> {plan.n_rows} style-transfer pairs ({nst.pairing}: one per reference)"
    lines = [
        f"job {plan.config.name!r}: {inputs} x {plan.variants} variants "
        f"= {plan.n_samples} output samples",
        f"output {out.path}: images ({plan.n_samples}, {out.size[0]}, {out.size[1]}) uint8"
        + (", masks" if plan.has_masks else "") + f", {plan.n_shards} shards of up to "
        f"{plan.shard_size} samples",
        "",
        "per label:",
        *(f"  {name:<12} {n:>10}" for name, n in plan.counts_by_label().items()),
        "",
        "per op chain:",
        *(f"  {n:>10}  {name}" for name, n in plan.counts_by_chain().items()),
    ]
    if plan.source_errors:
        lines += ["", "unreadable sources (skipped):",
                  *(f"  {path}: {reason}" for path, reason in plan.source_errors)]
    return "\n".join(lines)


def input_frame(ref: SampleRef) -> tuple[Frame, list[dict]]:
    """The frame the chain of a plain input starts from (its sample as read,
    :meth:`Frame.from_sample`) and the recorded ops that made that input (a store source's
    ``made_by``; none for a scan or image file). Raises ``InputError`` for a bad sample."""
    sample = sources.load_sample(ref)
    return Frame.from_sample(sample), list(sample.meta.get("made_by", []))


def plan_job(job_or_path) -> Plan:
    """The exact plan of a job before anything runs (``augengine plan``, ``augengine.plan``).

    Parameters
    ----------
    job_or_path : augengine.Job, mapping or path
        A job, a mapping with a job file's keys, or a YAML job file
        (:func:`augengine.config.as_job`).

    Returns
    -------
    Plan
        ``n_samples``, ``n_shards``, ``chains``, ``counts_by_label()``, ...;
        :func:`format_plan` gives the text the command prints.
    """
    return make_plan(as_job(job_or_path))


class _CallableModule(types.ModuleType):
    """``augengine.plan(job)`` is :func:`plan_job`: the package's public ``plan`` and this module
    share the name, and importing the module sets the package attribute ``augengine.plan`` to
    it, so the module answers the call."""

    def __call__(self, job_or_path) -> Plan:
        return plan_job(job_or_path)


sys.modules[__name__].__class__ = _CallableModule
