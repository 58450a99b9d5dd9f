"""Run a job: the driver turns the plan into shard-sized work units, Ray actors build and write
whole shards, and the driver alone records them (journal, manifest, attributes).

Resuming is re-running: a shard whose journal exists, was made from the same inputs and whose
stored images, masks and labels match the recorded checksums is kept; every other shard is rebuilt. Shards are deterministic functions of the job
(per-sample seeds), and Zarr rewrites a shard byte for byte, so a resumed run ends identical to an
uninterrupted one. Ray's own machinery does the rest: actors are restarted (``max_restarts``) and
their in-flight shard retried (``max_task_retries``) if they die; a shard that still fails stops
the run with one line naming it.
"""
from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from augengine import raycluster, sources, store
from augengine._xp import is_cupy
from augengine.checksums import file_sha256
from augengine.config import JobConfig
from augengine.errors import ConfigError, InputError, RunError, one_line
from augengine.manifest import ManifestRow
from augengine.pipeline import (Frame, describe_chain, finish_chains, realise_chain, sample_seed,
                                start_chain)
from augengine.plan import Plan, WorkItem, make_plan
from augengine.sources import SampleRef

ACTOR_MAX_RESTARTS = 3
ACTOR_MAX_TASK_RETRIES = 3


def _frame(sample) -> Frame:
    if sample.rf is not None:
        return Frame(sample.rf, sample.roi, None, "rf", dict(sample.meta))
    spacing = sample.meta.get("spacing_mm")
    return Frame(sample.image, sample.roi, tuple(spacing) if spacing else None, "image",
                 dict(sample.meta))


def _on_device(frame: Frame, device: str) -> Frame:
    """Move a frame's arrays to the GPU, where every op dispatches to its CuPy path."""
    if device == "cpu":
        return frame
    import cupy

    mask = None if frame.mask is None else cupy.asarray(frame.mask)
    return replace(frame, data=cupy.asarray(frame.data), mask=mask)


def _host(array) -> np.ndarray:
    return array.get() if is_cupy(array) else array


def _load_input(item: WorkItem) -> tuple[Frame, list[dict]]:
    sample = sources.load_sample(item.ref)
    return _frame(sample), list(sample.meta.get("made_by", []))


def build_shard(items: list[WorkItem], chains: list, job_seed: int, output_size: tuple[int, int],
                shard_size: int, device: str = "cpu",
                load_input: Callable[[WorkItem], tuple[Frame, list[dict]]] = _load_input):
    """Make the samples of one shard. Returns ``(images, masks, labels, rows, quarantined)``.

    ``items`` are in index order. ``load_input(item)`` gives the frame the item's chain starts
    from plus the ops that made it (none for a plain input; the style transfer for NST). Each
    input is loaded once and the per-input head of every chain runs on it with the variants
    sharing their common prefix (:func:`~augengine.pipeline.start_chain`); then the tails run
    in batches across the shard, one call per op per group of same-structured chains
    (:func:`~augengine.pipeline.finish_chains`). The outputs, seeds and rows are those of
    :func:`~augengine.pipeline.apply_chain` run sample by sample. A sample that fails (bad
    input, or any error inside an op) is quarantined with its reason; the others are still made.
    ``device="cuda"`` runs the chains on the GPU (CuPy), copying only finished images back.
    """
    h, w = output_size
    images = np.zeros((len(items), h, w), np.uint8)
    masks = np.zeros((len(items), h, w), np.uint8)
    labels = np.full(len(items), -1, np.int8)
    seeds, outcomes, made_by_of, starts, started = {}, {}, {}, [], []
    loaded_key, frame, made_by, load_error, cache = None, None, [], None, {}
    for slot, item in enumerate(items):
        if item.input_key != loaded_key:
            loaded_key, frame, made_by, load_error, cache = item.input_key, None, [], None, {}
            try:
                frame, made_by = load_input(item)
                frame = _on_device(frame, device)
            except Exception as error:  # noqa: BLE001 - one bad input must not stop the shard
                load_error = one_line(error)
        seeds[slot] = sample_seed(job_seed, item.input_key, item.variant)
        concrete = realise_chain(chains[item.variant], seeds[slot])
        made_by_of[slot] = made_by
        if load_error is not None:
            outcomes[slot] = load_error
            continue
        try:
            starts.append(start_chain(frame, concrete, output_size, cache))
            started.append(slot)
        except Exception as error:  # noqa: BLE001
            outcomes[slot] = one_line(error)
    for slot, result in zip(started, finish_chains(starts, output_size)):
        outcomes[slot] = one_line(result) if isinstance(result, Exception) else result
    rows, quarantined = [], []
    for slot, item in enumerate(items):
        ref, variant, outcome = item.ref, item.variant, outcomes[slot]
        if isinstance(outcome, str):
            quarantined.append({"index": item.index, "input_id": item.input_key,
                                "source_path": ref.path, "variant": variant,
                                "shard": item.index // shard_size, "reason": outcome})
            continue
        out, applied = outcome
        images[slot] = _host(out.data)
        if out.mask is not None:
            masks[slot] = _host(out.mask)
        labels[slot] = ref.label
        rows.append(ManifestRow(
            index=item.index, sample_id=f"{item.input_key}:{variant}",
            input_id=ref.sample_id, source_id=ref.source_id, source_path=ref.path,
            reader=ref.reader, label=ref.label, variant=variant,
            chain=describe_chain(chains[variant]),
            ops=json.dumps(made_by_of[slot] + [{"op": op, **params} for op, params in applied],
                           sort_keys=True),
            seed=seeds[slot], shard=item.index // shard_size,
            has_mask=out.mask is not None,
            sha256=store.image_sha256(images[slot]),
            mask_sha256=None if out.mask is None else store.image_sha256(masks[slot]),
        ).as_dict())
    return images, masks, labels, rows, quarantined


class StyleTransferInputs:
    """An actor's style-transfer state: every input image loaded once and the mode's network
    built once; ``prepare`` styles a shard's pairs in batches, ``load`` hands each to its chain.

    Feed-forward: the AdaIN statistics of every image are encoded once, so a shard only encodes
    its contents (and, with ``references: multi``, each batch's references). Iterative: the
    feature network, the loss and (with LRP) each content image's relevance are built once; each
    batch of pairs is optimised for ``iterations`` steps. A row ``(content, ref_1, ..., ref_K)``
    of the plan is styled as one image; K >= 2 only with ``references: multi`` (Eqs. 7-9).
    With ``deterministic`` (the default) all of it runs in ``augengine.determinism``'s scope and
    in batches of exactly ``batch_size`` (docs/store.md, "Regeneration guarantees").

    On a GPU the styled images stay there: ``load`` hands each chain a CuPy view of the decoder's
    uint8 output (DLPack, no copy). The rows :func:`augengine.nst.quality.is_assessed` picks
    (``quality_checks``, seeded by ``job_seed``) are assessed ``batch_size`` at a time, with one
    device-to-host copy of the scores per batch.
    """

    def __init__(self, refs: list[SampleRef], nst: dict, device: str, job_seed: int):
        import torch

        from augengine.models import feature_extractor

        self.refs, self.nst, self.job_seed = refs, nst, job_seed
        self.torch_device = "cuda" if device == "cuda" and torch.cuda.is_available() else "cpu"
        #: Styled images as torch tensors on the GPU, for the CuPy chains; else NumPy arrays.
        self.on_device = self.torch_device == "cuda"
        samples, self.errors = [], {}
        for position, ref in enumerate(refs):
            try:
                samples.append(sources.load_sample(ref))
            except Exception as error:  # noqa: BLE001 - its pairs are quarantined, not the run
                samples.append(None)
                self.errors[position] = one_line(error)
        shapes = {s.image.shape for s in samples if s is not None}
        if len(shapes) > 1:
            raise InputError(f"nst: input images must share one size, found {sorted(shapes)[:3]}; "
                             "resize them in an earlier job (reader: store)")
        (shape,) = shapes
        self.samples = samples
        self.images = np.stack([s.image if s is not None else np.zeros(shape, np.uint8)
                                for s in samples])
        with self._deterministic():
            if nst["mode"] == "feedforward":
                features, self.record, loss = self._setup_feedforward()
            else:
                features, self.record, loss = self._setup_iterative()
        # Keyed by WorkItem.nst_key: (content, *style positions).
        self.styled: dict[tuple[int, ...], object] = {}
        self.quality: dict[tuple[int, ...], dict] = {}
        self.extractor = None
        if nst["quality_checks"] > 0:
            self.extractor = feature_extractor(features, tuple(loss["style_layers"]))
            self.quality_c = loss["c"]

    def _setup_feedforward(self):
        from augengine.nst.generate import image_statistics
        from augengine.nst.training import load_checkpoint, load_style_net

        nst = self.nst
        config = load_checkpoint(nst["checkpoint"])["config"]
        self.net = load_style_net(nst["checkpoint"], nst["encoder_weights"], self.torch_device)
        self.statistics = image_statistics(self.net, self.images, nst["batch_size"],
                                           self.torch_device, fixed_batches=nst["deterministic"])
        loss = {key: config[key] for key in ("alpha", "beta", "content_layers", "style_layers",
                                             "lrp", "c")}
        record = {"op": "nst", "mode": "feedforward", "alpha": nst["alpha"],
                  "checkpoint_sha256": _file_sha256(nst["checkpoint"]), "loss": loss}
        return self.net.encoder, record, loss

    def _setup_iterative(self):
        from augengine.models import ARCHITECTURES, load_weights
        from augengine.nst.losses import StyleTransferLoss

        nst = self.nst
        network = ARCHITECTURES[nst["arch"]]()
        if nst["encoder_weights"] is not None:
            load_weights(network, nst["encoder_weights"], skip_head=True)
        self.network = network.eval().requires_grad_(False).to(self.torch_device)
        loss = {"alpha": 1.0, "beta": nst["beta"], "content_layers": nst["content_layers"],
                "style_layers": nst["style_layers"], "lrp": nst["lrp"], "c": 0.0}
        self.loss = StyleTransferLoss(beta=nst["beta"], content_layers=tuple(nst["content_layers"]),
                                      style_layers=tuple(nst["style_layers"]))
        self.classifier = None
        if nst["lrp"]:
            from augengine.models import load_classifier

            self.classifier = load_classifier(nst["classifier"]).to(self.torch_device)
        self.relevance: dict[int, object] = {}
        record = {"op": "nst", "mode": "iterative", "iterations": nst["iterations"],
                  "encoder_sha256": _file_sha256(nst["encoder_weights"]),
                  "classifier_sha256": _file_sha256(nst["classifier"]) if nst["lrp"] else None,
                  "loss": loss}
        return self.network, record, loss

    def _deterministic(self):
        """The job's determinism scope (``augengine.determinism``) for everything that styles."""
        from augengine.determinism import deterministic_torch

        return deterministic_torch(self.nst["deterministic"])

    def _batches(self):
        from augengine.determinism import Batches

        return Batches(self.nst["batch_size"], fixed=self.nst["deterministic"])

    def _content_relevance(self, contents: np.ndarray):
        """LRP relevance of each content image for its own label, computed once per image."""
        import torch

        from augengine.explain import lrp
        from augengine.models import imagenet_normalize
        from augengine.nst.generate import to_unit
        from augengine.nst.losses import uniform_where_unusable

        for positions in self._relevance_batches(contents):
            run = self._batches().run(positions)
            x = imagenet_normalize(to_unit(self.images[run], self.torch_device))
            labels = torch.tensor([max(self.refs[c].label, 0) for c in run])
            for c, r in zip(positions, lrp(self.classifier, x, labels.to(x.device)).sum(dim=1)):
                self.relevance[int(c)] = r
        return uniform_where_unusable(torch.stack([self.relevance[int(c)] for c in contents]))

    def _relevance_batches(self, contents: np.ndarray) -> list[np.ndarray]:
        """Positions whose relevance is still missing, as LRP batches: all in one, or with
        ``deterministic`` the fixed blocks of ``batch_size`` positions they fall in, so that an
        image's relevance never depends on which shards this actor styled before."""
        missing = np.array([c for c in np.unique(contents) if int(c) not in self.relevance],
                           np.int64)
        if not missing.size:
            return []
        if not self.nst["deterministic"]:
            return [missing]
        size = self.nst["batch_size"]
        return [np.arange(block * size, min(block * size + size, len(self.images)))
                for block in np.unique(missing // size)]

    def _style_batches(self, pairs: np.ndarray):
        """(rows, uint8 images) batches of the styled pairs, in the mode of the job: NumPy
        arrays, or with ``on_device`` tensors on the GPU."""
        if self.nst["mode"] == "feedforward":
            from augengine.nst.generate import decoder_precision, generate

            dtype, channels_last = decoder_precision(self.nst["precision"], self.torch_device)
            yield from generate(self.net, self.images, pairs, batch_size=self.nst["batch_size"],
                                device=self.torch_device, dtype=dtype,
                                channels_last=channels_last, alpha=self.nst["alpha"],
                                statistics=self.statistics,
                                multi_reference=self.nst["references"] == "multi",
                                fixed_batches=self.nst["deterministic"],
                                to_host=not self.on_device)
            return
        from augengine.nst.generate import to_pixels, to_uint8, to_unit
        from augengine.nst.iterative import stylize

        batches = self._batches()
        for rows in batches.split(len(pairs)):
            run = batches.run(rows)
            content = to_unit(self.images[pairs[run, 0]], self.torch_device)
            relevance = (self._content_relevance(pairs[run, 0])
                         if self.classifier is not None else None)
            result = stylize(content, self._references(pairs[run, 1:]), self.loss, self.network,
                             relevance, iterations=self.nst["iterations"])
            convert = to_pixels if self.on_device else to_uint8
            yield rows, convert(result.images[:rows.size])

    def _references(self, positions: np.ndarray):
        """The style images of rows of reference positions ``(B, K)`` as ``(B, K, 1, H, W)`` in
        [0, 1], the reference stacks of Eq. 9 (K = 1: one style image each)."""
        from augengine.nst.generate import to_unit

        stacked = to_unit(self.images[positions.reshape(-1)], self.torch_device)
        return stacked.unflatten(0, positions.shape)

    def prepare(self, items: list[WorkItem]) -> None:
        """Style every plan row of a shard in batches, before its chains run; assess the rows
        ``quality_checks`` picks, ``batch_size`` at a time as they come."""
        wanted = sorted({i.nst_key for i in items if not self.errors.keys() & set(i.nst_key)})
        self.styled, self.quality = {}, {}
        if not wanted:
            return
        checked = self._checked(items)
        size, pending = self.nst["batch_size"], []
        with self._deterministic():
            for rows, batch in self._style_batches(np.array(wanted, np.int64)):
                for row, image in zip(rows, batch):
                    self.styled[wanted[row]] = image
                    if wanted[row] in checked:
                        pending.append(wanted[row])
                while len(pending) >= size:
                    self._assess(pending[:size])
                    pending = pending[size:]
            if pending:
                self._assess(pending)

    def _checked(self, items: list[WorkItem]) -> set[tuple[int, ...]]:
        """The nst keys of ``items`` whose plan row gets a quality check."""
        from augengine.nst.quality import is_assessed

        fraction = self.nst["quality_checks"]
        if fraction == 0:
            return set()
        return {i.nst_key for i in items if is_assessed(self.job_seed, i.input_key, fraction)}

    def _assess(self, keys: list[tuple[int, ...]]) -> None:
        """SSIM to the content, and style distance before and after to the row's style target
        (the style image's features, or the Eq. 9 target of K references), for one batch of
        styled rows: one call, and one device-to-host copy of its scores."""
        import torch

        from augengine.nst.generate import to_unit
        from augengine.nst.quality import assess_quality

        device = self.torch_device
        run = [keys[k] for k in self._batches().run(np.arange(len(keys)))]
        pairs = np.array(run, np.int64)
        stack = torch.stack if self.on_device else np.stack
        results = to_unit(stack([self.styled[key] for key in run]), device)
        scores = assess_quality(results, to_unit(self.images[pairs[:, 0]], device),
                                self._references(pairs[:, 1:]), self.extractor, self.quality_c)
        table = torch.stack([scores.ssim, scores.style_before, scores.style_after], dim=1)
        names = ("ssim_to_content", "style_distance_before", "style_distance_after")
        for key, values in zip(keys, table.cpu().tolist()):
            self.quality[key] = {name: round(value, 6) for name, value in zip(names, values)}

    def load(self, item: WorkItem) -> tuple[Frame, list[dict]]:
        for position in item.nst_key:
            if position in self.errors:
                raise InputError(f"{self.refs[position].sample_id}: {self.errors[position]}")
        content = self.samples[item.content]
        data = self.styled[item.nst_key]
        if self.on_device:
            import cupy

            data = cupy.from_dlpack(data)
        frame = replace(_frame(content), data=data)
        record = dict(self.record, content_id=item.ref.sample_id)
        style_ids = [style.sample_id for style in item.styles]
        if self.nst["references"] == "multi":
            record["style_ids"] = style_ids
        else:
            record["style_id"] = style_ids[0]
        record["assessed"] = item.nst_key in self.quality
        if record["assessed"]:
            record["quality"] = self.quality[item.nst_key]
        return frame, [*content.meta.get("made_by", []), record]


def _file_sha256(path) -> str | None:
    return None if path is None else file_sha256(path)


def _actor_device() -> str:
    """"cuda" when Ray gave this actor a GPU and CuPy can use it, else "cpu"."""
    import ray

    if not ray.get_gpu_ids():
        return "cpu"
    try:
        import cupy

        return "cuda" if cupy.cuda.runtime.getDeviceCount() > 0 else "cpu"
    except Exception:  # noqa: BLE001 - no CuPy or no driver: run the NumPy path
        return "cpu"


class ShardWorker:
    """A Ray actor (wrapped with ``ray.remote`` at run time) that owns the shards it is given.

    Each shard is written by the actor's one writer thread while the actor builds the next one
    (compression and file writes release the GIL): ``process_shard`` returns once the shard is
    built and handed to the writer, ``wait_written`` once it is on disk. At most one shard waits
    for the writer while the next is built, so an actor holds at most two shards' buffers. The
    actor must run with ``max_concurrency >= 2`` so that ``wait_written`` can answer while the
    next shard is being built.
    """

    def __init__(self, store_path: str, chains: list, job_seed: int, output_size, shard_size: int,
                 nst: dict | None = None, refs: list[SampleRef] | None = None):
        self.store_path, self.chains, self.job_seed = store_path, chains, job_seed
        self.output_size, self.shard_size = tuple(output_size), shard_size
        if nst is not None and nst["deterministic"]:
            from augengine.determinism import fix_cublas_workspace

            fix_cublas_workspace()  # before _actor_device starts CUDA in this process
        self.device = _actor_device()
        self.nst, self.refs, self._style_inputs = nst, refs, None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer")
        self._writes: dict[int, Future] = {}
        self._last_write: Future | None = None

    def device_name(self) -> str:
        return self.device

    def pid(self) -> int:
        return os.getpid()

    def process_shard(self, shard: int, start: int, items: list):
        """Build a shard and queue its write; returns ``(shard, rows, quarantined)`` before the
        write is done (the driver asks :meth:`wait_written` before journaling it)."""
        load_input = _load_input
        if self.nst is not None:
            if self._style_inputs is None:
                self._style_inputs = StyleTransferInputs(self.refs, self.nst, self.device,
                                                         self.job_seed)
            self._style_inputs.prepare(items)
            load_input = self._style_inputs.load
        images, masks, labels, rows, quarantined = build_shard(
            items, self.chains, self.job_seed, self.output_size, self.shard_size, self.device,
            load_input)
        if self._last_write is not None:
            wait([self._last_write])  # the bound; its error is reported by its own wait_written
        self._last_write = self._writes[shard] = self._writer.submit(
            store.write_shard, self.store_path, start, images, labels, masks)
        return shard, rows, quarantined

    def wait_written(self, shard: int) -> bool:
        """True once ``shard``'s write has returned (a failed write raises here); False when
        this actor never built it: it was restarted since, losing the queued write, so the
        driver must build the shard again."""
        write = self._writes.pop(shard, None)
        if write is None:
            return False
        write.result()
        return True


@dataclass
class RunResult:
    path: str
    planned: int
    written: int
    quarantined: int
    shards_built: int
    shards_kept: int
    seconds: float
    #: :func:`augengine.store.quarantine_summary` of the samples and sources left out.
    quarantine: list[str] = field(default_factory=list)


def _host_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _refuse_memory(plan: Plan, need: int, have: int, where: str) -> None:
    out = plan.config.output
    raise ConfigError(
        f"output.size {out.size[0]}x{out.size[1]} x output.shard_size {out.shard_size}: one actor "
        f"needs about {need / 2**30:.1f} GiB, more than {where} has ({have / 2**30:.1f} GiB); "
        "lower output.shard_size or output.size")


def _actor_options(config: JobConfig, shards_todo: int, memory: int) -> tuple[int, dict]:
    """One actor per GPU where the cluster has GPUs, else CPU actors with a little headroom
    (whole-CPU actors filling a small node starve Ray's own tasks). Each actor reserves its
    ``memory`` estimate, so Ray never packs more onto a node than it can hold; the count is cut
    to what the cluster's memory allows."""
    import ray

    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), resources.get("CPU", 1)
    if gpus:
        workers = config.workers or gpus
        options = {"num_gpus": 1, "num_cpus": 1}
    else:
        workers = config.workers or max(1, int(cpus))
        options = {"num_cpus": min(1.0, round(cpus / (workers + 1), 2))}
    workers = max(1, min(workers, shards_todo, int(resources.get("memory", memory) // memory)))
    options.update(memory=memory, max_restarts=ACTOR_MAX_RESTARTS,
                   max_task_retries=ACTOR_MAX_TASK_RETRIES)
    return workers, options


def _check_memory(plan: Plan, memory: int, embedded: bool) -> None:
    """Refuse, before anything is written, a job one of whose actors cannot fit: on this machine
    for an embedded Ray, on the largest node of a cluster (Ray's ``memory`` resource)."""
    if embedded:
        if memory > _host_memory():
            _refuse_memory(plan, memory, _host_memory(), "this machine")
        return
    import ray

    largest = max((node["Resources"].get("memory", 0) for node in ray.nodes() if node["Alive"]),
                  default=0)
    if memory > largest:
        _refuse_memory(plan, memory, largest, "the largest node of the cluster")


def finished_shards(plan: Plan) -> dict[int, store.Journal]:
    """Shards of an existing store that a resumed run can keep: journaled from the same inputs
    (:meth:`Plan.shard_digest`), and every stored image, mask and label intact."""
    import zarr

    group = zarr.open_group(plan.config.output.path, mode="r")
    done = {}
    for shard in range(plan.n_shards):
        journal = store.read_journal(plan.config.output.path, shard)
        if journal is None or journal.inputs_digest != plan.shard_digest(shard):
            continue
        indices = plan.shard_indices(shard)
        recorded = sorted([r["index"] for r in journal.rows] +
                          [q["index"] for q in journal.quarantined])
        if recorded == list(indices) and store.shard_problem(
                group, shard, indices.start, indices.stop, journal.rows,
                journal.quarantined) is None:
            done[shard] = journal
    return done


class _LogLines:
    """A text stream for tqdm when stderr is not a terminal (``ray job logs -f``, batch logs):
    each refresh becomes its own line instead of a carriage-return redraw."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> None:
        for line in text.replace("\r", "\n").splitlines():
            if line.strip():
                self._stream.write(line.rstrip() + "\n")

    def flush(self) -> None:
        self._stream.flush()


def progress_bar(total: int, initial: int, name: str, enabled: bool):
    """tqdm bar with rate and ETA: redrawn in place on a terminal; on a log (no TTY), one line
    every 30 s, so a job followed with ``ray job logs -f`` shows how far it is."""
    from tqdm.auto import tqdm

    interactive = sys.stderr.isatty()
    return tqdm(total=total, initial=initial, unit="img", desc=name, disable=not enabled,
                smoothing=0.1, mininterval=0.1 if interactive else 30.0, ascii=not interactive,
                file=sys.stderr if interactive else _LogLines(sys.stderr))


def run_job(config: JobConfig, address: str | None = None, progress: bool = True,
            on_shard_done: Callable[[int, list], None] | None = None,
            rebuild: bool = False) -> RunResult:
    """Plan, build every unfinished shard on Ray actors, and finalize the store.

    The output is checked (:func:`augengine.store.check_output_path`) and locked before anything
    is written. ``rebuild`` accepts a store whose inputs changed and rebuilds exactly the shards
    whose own inputs differ. ``on_shard_done(shard, actors)`` is called on the driver after each
    shard is recorded (tests use it to kill an actor mid-run).
    """
    started = time.perf_counter()
    if config.nst is not None:
        _check_nst_files(config.nst)
    plan = make_plan(config)
    out = config.output
    store.check_output_path(out.path, [source.path for source in config.sources])
    memory = plan.actor_memory_bytes()
    embedded = not (address or os.environ.get("RAY_ADDRESS"))
    owns_ray = False if embedded else raycluster.connect(address)
    try:
        _check_memory(plan, memory, embedded)
        with store.locked_output(out.path):
            store.create_store(out.path, plan.n_samples, out.size, out.shard_size, plan.has_masks,
                               plan.job_hash(), config.model_dump(mode="json"), plan.inputs(),
                               rebuild)
            store.remove_journals_from(out.path, plan.n_shards)
            done = finished_shards(plan)
            todo = [s for s in range(plan.n_shards) if s not in done]
            if todo:
                owns_ray = raycluster.connect(address) or owns_ray
                _build_shards(plan, todo, done, memory, progress, on_shard_done)
            journals = [done[shard] for shard in sorted(done)]
            rows = [row for journal in journals for row in journal.rows]
            quarantined = [q for journal in journals for q in journal.quarantined]
            counts = store.finalize(out.path, rows, quarantined, plan.n_samples,
                                    plan.source_errors)
    finally:
        if owns_ray:
            import ray

            ray.shutdown()
    unreadable = [{"input_id": path, "reason": f"source unreadable: {reason}"}
                  for path, reason in plan.source_errors]
    return RunResult(str(out.path), plan.n_samples, counts["written"], counts["quarantined"],
                     len(todo), plan.n_shards - len(todo), time.perf_counter() - started,
                     store.quarantine_summary(unreadable + quarantined))


def _check_nst_files(nst) -> None:
    """Fail on the driver, in one line, before any actor starts: a missing or corrupt
    checkpoint, classifier or encoder weights."""
    if nst.mode == "feedforward":
        from augengine.nst.training import load_style_net

        load_style_net(nst.checkpoint, nst.encoder_weights)
        return
    from augengine.models import ARCHITECTURES, load_classifier, load_weights

    if nst.encoder_weights is not None:
        load_weights(ARCHITECTURES[nst.arch](), nst.encoder_weights, skip_head=True)
    if nst.lrp:
        load_classifier(nst.classifier)


def _shard_result(task, shard: int, path, finished: int):
    """The value of an actor's task, or the ``RunError`` (one line) naming the shard it was for."""
    import ray

    try:
        return ray.get(task)
    except ray.exceptions.RayError as error:
        cause = getattr(error, "cause", None) or error
        raise RunError(f"{path}: shard {shard} failed ({one_line(cause)}); the {finished} shards "
                       "finished so far are kept: re-run the same command to resume") from None


def _build_shards(plan: Plan, todo: list[int], done: dict, memory: int, progress: bool,
                  on_shard_done) -> None:
    """Hand the shards in ``todo`` to actors, one build at a time each (an actor builds its next
    shard while its writer writes the last), and journal each once its write has returned. A
    shard that still fails after Ray's retries, in its build or its write, stops the run with
    one line naming it (the shards finished so far stay journaled, so re-running resumes)."""
    import ray

    config, out = plan.config, plan.config.output
    workers, options = _actor_options(config, len(todo), memory)
    actor_class = ray.remote(ShardWorker).options(max_concurrency=2, **options)
    nst = None if config.nst is None else config.nst.model_dump()
    actors = [actor_class.remote(str(Path(out.path).resolve()), plan.chains, config.seed,
                                 out.size, out.shard_size, nst, plan.refs if nst else None)
              for _ in range(workers)]
    queue = list(todo)
    # running: a task -> (shard, actor, stage), stage "build" or "write". An actor is idle again
    # once its shard is built; the shard is journaled only once its write has returned.
    idle, running, built = list(actors), {}, {}
    bar = progress_bar(plan.n_samples, plan.n_samples - sum(len(plan.shard_indices(s))
                                                            for s in todo), config.name, progress)
    try:
        while queue or running:
            while idle and queue:
                shard = queue.pop(0)
                indices = plan.shard_indices(shard)
                actor = idle.pop()
                task = actor.process_shard.remote(shard, indices.start,
                                                  [plan.work_item(i) for i in indices])
                running[task] = shard, actor, "build"
            [ready], _ = ray.wait(list(running), num_returns=1)
            shard, actor, stage = running.pop(ready)
            result = _shard_result(ready, shard, out.path, len(done))
            if stage == "build":
                built[shard] = result[1:]
                running[actor.wait_written.remote(shard)] = shard, actor, "write"
                idle.append(actor)
                continue
            rows, quarantined = built.pop(shard)
            if not result:  # its actor was restarted before writing it: build it again
                queue.insert(0, shard)
                continue
            digest = plan.shard_digest(shard)
            store.write_journal(out.path, shard, rows, quarantined, digest)
            done[shard] = store.Journal(rows, quarantined, digest)
            bar.update(len(plan.shard_indices(shard)))
            if on_shard_done is not None:
                on_shard_done(shard, actors)
    finally:
        bar.close()
        for actor in actors:
            ray.kill(actor)
