"""From a job to an exact plan: which input samples, which variants, which output index and shard.

Output index ``i`` is input sample ``i // V``, variant ``i % V`` (``V`` variants per input), so the
variants of one input sit next to each other and usually in one shard: an actor reads each input
once and shares the common prefix of its chains (one envelope per dynamic range, for example).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from augengine import sources
from augengine.config import JobConfig
from augengine.errors import ConfigError, InputError
from augengine.pipeline import describe_chain
from augengine.sources import LABEL_NAMES, SampleRef


@dataclass(frozen=True)
class WorkItem:
    """One output sample to make: its index, input sample, chain variant and, for style
    transfer, the style reference (``content``/``style`` are positions in the plan's refs)."""

    index: int
    ref: SampleRef
    variant: int
    content: int = -1
    style: SampleRef | None = None
    style_position: int = -1

    @property
    def input_key(self) -> str:
        """What the sample is made from: the input id, or ``content~style`` for NST."""
        if self.style is None:
            return self.ref.sample_id
        return f"{self.ref.sample_id}~{self.style.sample_id}"


@dataclass
class Plan:
    config: JobConfig
    refs: list[SampleRef]
    chains: list[list[tuple[str, dict]]]
    #: Sources that could not even be listed: ``(path, reason)``; their samples are not planned.
    source_errors: list[tuple[str, str]] = field(default_factory=list)
    #: With style transfer: (rows, 1 + K) indices into ``refs``, column 0 the content image.
    pairs: np.ndarray | None = None

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
        content, style = (int(i) for i in self.pairs[index // self.variants])
        return WorkItem(index, ref, variant, content, self.refs[style], style)

    def style_indices(self, index: int) -> list[int]:
        """Indices into ``refs`` of the style reference(s) of output ``index`` (NST jobs)."""
        return [int(i) for i in self.pairs[index // self.variants, 1:]]

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
            prefix = f"nst({nst.mode},{rule}) > "
        counts = Counter(prefix + describe_chain(chain) for chain in self.chains)
        return {name: n * self.n_rows for name, n in counts.items()}


def make_plan(config: JobConfig) -> Plan:
    """List every source's samples (cheaply; no pixel data is decoded) and fix the layout."""
    refs: list[SampleRef] = []
    errors: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for i, source in enumerate(config.sources):
        path = Path(source.path).resolve()  # actors may run in another working directory
        if not path.exists():
            raise ConfigError(f"sources[{i}].path: {source.path} does not exist")
        try:
            found = sources.discover(source.reader, str(path), **source.options)
        except InputError as error:
            errors.append((source.path, str(error)))
            continue
        except TypeError as error:
            raise ConfigError(f"sources[{i}].options: {error}") from None
        for ref in found:
            if ref.sample_id in seen:
                raise ConfigError(f"sources[{i}]: sample id {ref.sample_id!r} from {ref.path} "
                                  f"also comes from {seen[ref.sample_id]}; sample ids must be unique")
            seen[ref.sample_id] = ref.path
        refs.extend(found)
    if not refs:
        detail = "; ".join(f"{path}: {reason}" for path, reason in errors)
        raise InputError(f"no readable samples in any source{': ' + detail if detail else ''}")
    pairs = None
    if config.nst is not None:
        from augengine.nst.pairs import plan_pairs

        pairs = plan_pairs([ref.label for ref in refs], rule=config.nst.pairing, k=config.nst.k,
                           seed=config.seed)
        # Feed-forward AdaIN takes one style per output: k references make k pairs each.
        pairs = np.column_stack([np.repeat(pairs[:, 0], pairs.shape[1] - 1),
                                 pairs[:, 1:].reshape(-1)])
    return Plan(config=config, refs=refs, chains=config.chains(), source_errors=errors,
                pairs=pairs)


def format_plan(plan: Plan) -> str:
    """The text ``augengine plan`` prints: counts per label and per op chain, and the shards."""
    out = plan.config.output
    inputs = f"{len(plan.refs)} input samples"
    if plan.pairs is not None:
        inputs += f" -> {plan.n_rows} style-transfer pairs ({plan.config.nst.pairing})"
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
