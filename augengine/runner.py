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

from augengine import raycluster, registry, store
from augengine._xp import is_cupy
from augengine.config import JobConfig
from augengine.errors import ConfigError, RunError, one_line
from augengine.manifest import ManifestRow
from augengine.pipeline import (Frame, describe_chain, finish_chains, first_failure, realise_chain,
                                sample_seed, start_chain)
from augengine.plan import Plan, WorkItem, check_model_files, input_frame, make_plan

ACTOR_MAX_RESTARTS = 3
ACTOR_MAX_TASK_RETRIES = 3


def _on_device(frame: Frame, device: str) -> Frame:
    """Move a frame's data to the GPU, where every op dispatches to its CuPy path. The mask
    stays on the host until a batched op moves its pixels (``pipeline._run_batch``): the
    per-input head only crops it (its bounding box is host control flow, a sync per crop on the
    device) and resamples it nearest (an index gather), and an intensity-only tail never reads
    it."""
    if device == "cpu":
        return frame
    import cupy

    return replace(frame, data=cupy.asarray(frame.data))


@dataclass
class _CopyBack:
    """A shard's arrays on their way to the host (:func:`_queue_to_host`): ``arrays`` and
    ``extras`` are host arrays, the device ones pinned buffers being filled; :meth:`wait` blocks
    until they are (the shard's one host sync) and returns them."""

    arrays: list
    extras: list
    event: object | None = None

    def wait(self) -> tuple[list, list]:
        if self.event is not None:
            self.event.synchronize()
            self.event = None  # done: a second wait has nothing to wait for
        return self.arrays, self.extras


def _queue_to_host(arrays: list, extras: list = ()) -> _CopyBack:
    """Queue the copy to the host of a shard's finished (H, W) images and masks and of
    ``extras`` (device arrays, e.g. the values of :class:`~augengine.pipeline.DeferredCheck` s):
    the arrays on the device stacked there (one launch) and copied asynchronously into pinned
    memory, the extras beside them, and an event recorded after the copies. Nothing waits here,
    so an actor can go on to its next shard while its writer thread waits for this one."""
    on_device = [i for i, array in enumerate(arrays) if is_cupy(array)]
    if not on_device and not extras:
        return _CopyBack(arrays, [])
    import cupy
    import cupyx

    def queued(array):
        pinned = cupyx.empty_pinned(array.shape, array.dtype)
        array.get(out=pinned, blocking=False)
        return pinned

    stacked = queued(cupy.stack([arrays[i] for i in on_device])) if on_device else []
    extras = [queued(array if array.flags.c_contiguous else cupy.ascontiguousarray(array))
              for array in extras]
    # A blocking event: the waiting thread sleeps instead of spinning on a CPU core.
    event = cupy.cuda.Event(block=True, disable_timing=True)
    event.record()
    arrays = list(arrays)
    for i, array in zip(on_device, stacked):
        arrays[i] = array
    return _CopyBack(arrays, extras, event)


def _failed_checks(frames: list[Frame]) -> tuple[list, Callable[[list], list]]:
    """The distinct device arrays the :class:`~augengine.pipeline.DeferredCheck` s of ``frames``
    read, and a function from their host copies to each frame's first failing check's error
    (or None)."""
    values = list({id(c.values): c.values for f in frames for c in f.checks}.values())
    position = {id(array): i for i, array in enumerate(values)}

    def errors(copies: list) -> list:
        return [first_failure(frame.checks, lambda values: copies[position[id(values)]])
                for frame in frames]

    return values, errors


def _load_input(item: WorkItem) -> tuple[Frame, list[dict]]:
    return input_frame(item.ref)


@dataclass
class PendingShard:
    """A shard built on its device whose outputs are still on their way to the host
    (:func:`start_shard`); :func:`finish_shard` waits for them and makes the shard's arrays and
    rows."""

    items: list[WorkItem]
    chains: list
    shard_size: int
    output_size: tuple[int, int]
    seeds: dict[int, int]
    made_by: dict[int, list[dict]]
    outcomes: dict[int, object]
    copy_back: _CopyBack
    check_errors: Callable[[list], list]


def start_shard(items: list[WorkItem], chains: list, job_seed: int,
                output_size: tuple[int, int], shard_size: int, device: str = "cpu",
                load_input: Callable[[WorkItem], tuple[Frame, list[dict]]] = _load_input
                ) -> PendingShard:
    """The first half of :func:`build_shard`: load, run every chain and queue the copy back;
    no wait for the device."""
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
    made = [slot for slot in range(len(items)) if not isinstance(outcomes[slot], str)]
    arrays = [outcomes[slot][0].data for slot in made] + [
        outcomes[slot][0].mask for slot in made if outcomes[slot][0].mask is not None]
    check_values, check_errors = _failed_checks([outcomes[slot][0] for slot in made])
    return PendingShard(items, chains, shard_size, tuple(output_size), seeds, made_by_of,
                        outcomes, _queue_to_host(arrays, check_values), check_errors)


def finish_shard(pending: PendingShard, checksums: bool = True):
    """The second half of :func:`build_shard`: wait for the copy back (the shard's one host
    sync on a GPU), quarantine the samples whose deferred checks fail, and return ``(images,
    masks, labels, rows, quarantined)``."""
    items, outcomes, shard_size = pending.items, dict(pending.outcomes), pending.shard_size
    h, w = pending.output_size
    images = np.zeros((len(items), h, w), np.uint8)
    masks = np.zeros((len(items), h, w), np.uint8)
    labels = np.full(len(items), -1, np.int8)
    made = [slot for slot in range(len(items)) if not isinstance(outcomes[slot], str)]
    targets = [(images, slot) for slot in made] + [
        (masks, slot) for slot in made if outcomes[slot][0].mask is not None]
    arrays, check_copies = pending.copy_back.wait()
    failed = {slot: one_line(error)
              for slot, error in zip(made, pending.check_errors(check_copies))
              if error is not None}
    for (target, slot), array in zip(targets, arrays):
        if slot not in failed:
            target[slot] = array
    outcomes.update(failed)
    rows, quarantined = [], []
    for slot, item in enumerate(items):
        ref, variant, outcome = item.ref, item.variant, outcomes[slot]
        if isinstance(outcome, str):
            quarantined.append({"index": item.index, "input_id": item.input_key,
                                "source_path": ref.path, "variant": variant,
                                "shard": item.index // shard_size, "reason": outcome})
            continue
        out, applied = outcome
        labels[slot] = ref.label
        rows.append(ManifestRow(
            index=item.index, sample_id=f"{item.input_key}:{variant}",
            input_id=ref.sample_id, source_id=ref.source_id, source_path=ref.path,
            reader=ref.reader, label=ref.label, variant=variant,
            chain=describe_chain(pending.chains[variant]),
            ops=json.dumps(pending.made_by[slot] + [{"op": op, **params}
                                                    for op, params in applied],
                           sort_keys=True),
            seed=pending.seeds[slot], shard=item.index // shard_size,
            has_mask=out.mask is not None, sha256=None, mask_sha256=None,
        ).as_dict())
    if checksums and items:
        add_checksums(rows, items[0].index, images, masks)
    return images, masks, labels, rows, quarantined


def build_shard(items: list[WorkItem], chains: list, job_seed: int, output_size: tuple[int, int],
                shard_size: int, device: str = "cpu",
                load_input: Callable[[WorkItem], tuple[Frame, list[dict]]] = _load_input,
                checksums: bool = True):
    """Make the samples of one shard. Returns ``(images, masks, labels, rows, quarantined)``.

    ``items`` are consecutive, in index order. ``load_input(item)`` gives the frame the item's
    chain starts from plus the ops that made it (none for a plain input; the style transfer for
    NST). Each
    input is loaded once and the per-input head of every chain runs on it with the variants
    sharing their common prefix (:func:`~augengine.pipeline.start_chain`); then the heads'
    reconstruction and resampling ops run across the shard's inputs and the tails in batches,
    one call per op per group of same-structured chains
    (:func:`~augengine.pipeline.finish_chains`). The outputs, seeds and rows are those of
    :func:`~augengine.pipeline.apply_chain` run sample by sample. A sample that fails (bad
    input, or any error inside an op) is quarantined with its reason; the others are still made.
    ``device="cuda"`` runs the chains on the GPU (CuPy), copying only finished images back,
    with the values of the ops' deferred checks (a sample whose check fails is quarantined with
    the op's message), in one asynchronous copy and one wait per shard.
    ``checksums=False`` leaves the rows' ``sha256`` and ``mask_sha256`` None, for the writer
    to fill in (:func:`write_checksummed_shard`).
    """
    return finish_shard(start_shard(items, chains, job_seed, output_size, shard_size, device,
                                    load_input), checksums)


def add_checksums(rows: list[dict], start: int, images: np.ndarray, masks: np.ndarray
                  ) -> list[dict]:
    """Fill in each row's ``sha256`` (and ``mask_sha256`` where it has a mask) from the shard's
    arrays, row ``index`` at position ``index - start``; returns ``rows``."""
    for row in rows:
        slot = row["index"] - start
        row["sha256"] = store.image_sha256(images[slot])
        row["mask_sha256"] = store.image_sha256(masks[slot]) if row["has_mask"] else None
    return rows


def write_checksummed_shard(store_path: str, start: int, images: np.ndarray, labels: np.ndarray,
                            masks: np.ndarray, rows: list[dict]) -> list[dict]:
    """A writer thread's whole job for one built shard: the samples' checksums, then
    :func:`augengine.store.write_shard`. Returns the rows with their checksums, for the journal."""
    add_checksums(rows, start, images, masks)
    store.write_shard(store_path, start, images, labels, masks)
    return rows


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

    Each shard is finished and written by the actor's one writer thread while the actor
    builds the next one (waiting for the device, hashing, compression and file writes release
    the GIL): ``process_shard`` returns once the shard's chains have run and its copy back is
    queued (:func:`start_shard`), ``wait_written`` once the writer has waited for that copy,
    quarantined the samples whose deferred checks failed (:func:`finish_shard`) and written the
    shard, with its rows, their checksums and its quarantined samples. On a GPU the device so
    finishes a shard while the actor already queues the next one's work. At most one shard
    waits for the writer while the next is built, so an actor holds at most two shards'
    buffers. The actor must run with ``max_concurrency >= 2`` so that ``wait_written`` can
    answer while the next shard is being built.
    """

    def __init__(self, store_path: str, chains: list, job_seed: int, output_size, shard_size: int,
                 inputs=None, user_ops: dict | None = None):
        """``inputs``: None when each item's chain starts from its sample as read
        (``sources.load_sample``); else an input stage (e.g.
        :class:`~augengine.nst.stage.StyleTransferStage`): ``inputs.setup_process()`` runs before
        this process starts CUDA, ``inputs.open(device)`` once, on the first shard, gives a loader
        whose ``prepare(items)`` runs before each shard is built and whose ``load`` is the
        shard's ``load_input``. ``user_ops``: the driver's registered ops
        (``augengine.register_op``), registered here too: this process has only the built-ins."""
        registry.install(user_ops or {})
        self.store_path, self.chains, self.job_seed = store_path, chains, job_seed
        self.output_size, self.shard_size = tuple(output_size), shard_size
        if inputs is not None:
            inputs.setup_process()
        self.device = _actor_device()
        self._inputs, self._loader = inputs, None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer")
        self._writes: dict[int, Future] = {}
        self._last_write: Future | None = None

    def device_name(self) -> str:
        return self.device

    def process_shard(self, shard: int, start: int, items: list) -> int:
        """Run a shard's chains and queue its copy back, checks, checksums and write; returns
        the shard before the write is done (the driver asks :meth:`wait_written` for the rows
        before journaling it)."""
        load_input = _load_input
        if self._inputs is not None:
            if self._loader is None:
                self._loader = self._inputs.open(self.device)
            self._loader.prepare(items)
            load_input = self._loader.load
        pending = start_shard(items, self.chains, self.job_seed, self.output_size,
                              self.shard_size, self.device, load_input)
        if self._last_write is not None:
            wait([self._last_write])  # the bound; its error is reported by its own wait_written
        self._last_write = self._writes[shard] = self._writer.submit(
            self._finish_and_write, pending, start)
        return shard

    def _finish_and_write(self, pending: PendingShard, start: int) -> tuple[list, list]:
        images, masks, labels, rows, quarantined = finish_shard(pending, checksums=False)
        rows = write_checksummed_shard(self.store_path, start, images, labels, masks, rows)
        return rows, quarantined

    def wait_written(self, shard: int) -> tuple[list[dict], list[dict]] | None:
        """The shard's rows, with their checksums, and its quarantined samples, once its write
        has returned (a failed write raises here); None when this actor never built it: it was
        restarted since, losing the queued write, so the driver must build the shard again."""
        write = self._writes.pop(shard, None)
        if write is None:
            return None
        return write.result()


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
    check_model_files(config)
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
    actors = [actor_class.remote(str(Path(out.path).resolve()), plan.chains, config.seed,
                                 out.size, out.shard_size, plan.input_stage(),
                                 registry.user_ops())
              for _ in range(workers)]
    queue = list(todo)
    # running: a task -> (shard, actor, stage), stage "build" or "write". An actor is idle again
    # once its shard is built; the shard is journaled only once its write has returned.
    idle, running = list(actors), {}
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
                running[actor.wait_written.remote(shard)] = shard, actor, "write"
                idle.append(actor)
                continue
            if result is None:  # its actor was restarted before writing it: build it again
                queue.insert(0, shard)
                continue
            rows, quarantined = result
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
