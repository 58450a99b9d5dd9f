"""One interface over the ways a training job runs: a single process, Horovod, torch DDP, or the
workers of Ray Train.

The training loop (:mod:`augengine.train.loop`) talks only to a :class:`Distributed` object, so the
four cases share one code path:

* :class:`Distributed` itself is the single process: rank 0 of 1, every collective a no-op.
* :class:`HorovodDistributed` follows seed 002's recipe: ``hvd.init()``,
  ``hvd.DistributedOptimizer`` (gradients averaged by ring all-reduce), parameters and optimizer
  state broadcast from rank 0, the learning rate scaled by ``hvd.size()`` (done by the loop).
* :class:`TorchDistributed` does the same with ``torch.distributed``: the model wrapped in
  ``DistributedDataParallel`` (gloo on CPU, NCCL on GPU), parameters broadcast at wrapping, the
  optimizer state broadcast as an object.
* :class:`RayTrainDistributed` is :class:`TorchDistributed` inside a worker of Ray Train's
  ``TorchTrainer`` (:mod:`augengine.train.ray_backend`): Ray Train has made the process group
  and picked the worker's device; rank and sizes come from ``ray.train.get_context()``.

BatchNorm running statistics are the one state that gradient averaging does not keep equal: each
rank updates them from its own batches. :meth:`Distributed.average_buffers` averages every
floating-point buffer over the ranks (call it at each epoch end), so the ranks evaluate and save
identical models. DDP's per-forward buffer broadcast is switched off for the same reason: both
backends then treat buffers the same way (:func:`ddp_buffer_options`: ``forward_sync_buffers`` on
torch that has it, ``broadcast_buffers`` before).

Launching. ``processes > 1`` re-runs the training command under a launcher on this machine:
``horovodrun --gloo -np N -H localhost:N`` for Horovod, ``python -m torch.distributed.run
--standalone --nproc-per-node N`` (torchrun) for DDP (:func:`launch_command`). A process knows it
is a launched rank from its environment (:func:`launched_backend`), so it trains instead of
launching again. :func:`run_on_ray` runs the ranks as Ray actors through
``horovod.ray.RayExecutor`` instead, so a job can be submitted with ``ray job submit``; Ray
Train starts its own workers (:func:`augengine.train.ray_backend.fit_on_ray`), which are no
launched ranks: ``init_distributed("ray")`` asks Ray Train, not the environment.
"""
from __future__ import annotations

import gc
import inspect
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch

from augengine import raycluster
from augengine.errors import ConfigError

__all__ = ["BACKENDS", "RAY_BACKEND", "Distributed", "HorovodDistributed", "RayTrainDistributed",
           "TorchDistributed", "ddp_buffer_options", "init_distributed", "launch",
           "launch_command", "launched_backend", "ray_runtime_env", "ray_use_gpu", "run_on_ray",
           "worker_cpus"]

#: Multi-process backends with a launcher on this machine, as named by ``--backend``.
BACKENDS = ("horovod", "ddp")
#: The ``--backend`` whose workers Ray Train starts (no launcher: :mod:`.ray_backend`).
RAY_BACKEND = "ray"

# The folder holding the ``augengine`` package: launched ranks and Ray actors import the same copy.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


class Distributed:
    """The single-process case, and the interface the training loop uses for every backend.

    Attributes
    ----------
    name : str
        ``"single"``, ``"horovod"``, ``"ddp"`` or ``"ray"``.
    rank, size : int
        This process's rank and the number of ranks (0 and 1 here).
    local_rank, local_size : int
        Rank and rank count on this machine (CUDA device index, CPU thread share).

    Examples
    --------
    >>> import torch
    >>> dist = Distributed()
    >>> dist.sum(torch.tensor([2.0, 3.0])).tolist(), dist.gather_objects("a")
    ([2.0, 3.0], ['a'])
    """

    name = "single"

    def __init__(self):
        self.rank, self.size = 0, 1
        self.local_rank, self.local_size = 0, 1

    def prepare(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer):
        """Wrap for distributed training; returns ``(model, optimizer)`` to train with.

        :meth:`unwrap` gives back the plain model (for evaluation and checkpoints).
        """
        return model, optimizer

    def unwrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The plain module inside whatever :meth:`prepare` returned."""
        return model

    def broadcast_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        with_optimizer: bool) -> None:
        """Make every rank start from rank 0's parameters (and optimizer state when asked)."""

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum of a CPU tensor over the ranks (every rank gets the result)."""
        return values

    def broadcast_object(self, obj):
        """Rank 0's ``obj`` on every rank (picklable objects)."""
        return obj

    def gather_objects(self, obj) -> list:
        """Every rank's ``obj``, in rank order, on every rank."""
        return [obj]

    def average_buffers(self, model: torch.nn.Module) -> None:
        """Average the floating-point buffers (BatchNorm running statistics) over the ranks."""

    def close(self, finished: bool = True) -> None:
        """Leave the process group (no-op for one process). ``finished``: every rank got here
        the normal way, so they can wait for each other first; False when leaving on an error,
        where a peer may never come."""


class HorovodDistributed(Distributed):
    """Horovod ranks (``horovodrun`` or ``horovod.ray.RayExecutor``); calls ``hvd.init()``."""

    name = "horovod"

    def __init__(self):
        try:
            import horovod.torch as hvd
        except ImportError as error:
            raise ConfigError(f"backend 'horovod' needs horovod.torch, which cannot be imported "
                              f"({error}); build it with .ci/build-horovod.sh (docs/install.md) "
                              "or use --backend ddp") from None
        hvd.init()
        self.hvd = hvd
        self.rank, self.size = hvd.rank(), hvd.size()
        self.local_rank, self.local_size = hvd.local_rank(), hvd.local_size()
        self._calls = 0

    def _name(self, what: str) -> str:
        # Horovod matches collectives across ranks by name; every rank makes the same calls in
        # the same order, so a counter gives matching, never-reused names.
        self._calls += 1
        return f"augengine.{what}.{self._calls}"

    def prepare(self, model, optimizer):
        return model, self.hvd.DistributedOptimizer(optimizer,
                                                    named_parameters=model.named_parameters())

    def broadcast_state(self, model, optimizer, with_optimizer):
        self.hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        # A fresh optimizer has no state to share, and on an empty state Horovod would first
        # run a zero-gradient step(): broadcast only a resumed one.
        if with_optimizer:
            self.hvd.broadcast_optimizer_state(optimizer, root_rank=0)

    def sum(self, values):
        return self.hvd.allreduce(values, op=self.hvd.Sum, name=self._name("sum"))

    def broadcast_object(self, obj):
        return self.hvd.broadcast_object(obj, root_rank=0, name=self._name("broadcast"))

    def gather_objects(self, obj):
        return self.hvd.allgather_object(obj, name=self._name("gather"))

    def average_buffers(self, model):
        for name, buffer in model.named_buffers():
            if buffer.is_floating_point():
                buffer.copy_(self.hvd.allreduce(buffer.detach(), op=self.hvd.Average,
                                                name=self._name(f"buffer.{name}")))

    def close(self, finished: bool = True):
        self.hvd.shutdown()


def ddp_buffer_options(ddp_class) -> dict[str, bool]:
    """The ``DistributedDataParallel`` keyword that stops its per-forward buffer broadcast.

    torch 2.13 added ``forward_sync_buffers`` and deprecated ``broadcast_buffers`` (a
    FutureWarning); older torch (``pyproject`` allows >= 2.4; the GPU machines run 2.11) has only
    ``broadcast_buffers`` and rejects the new name. The old ``broadcast_buffers=False`` also skips
    the buffer broadcast at wrapping, which :meth:`TorchDistributed.broadcast_state` does itself,
    so both give the same start.

    Parameters
    ----------
    ddp_class : type
        ``torch.nn.parallel.DistributedDataParallel`` (or a stand-in with its signature).

    Returns
    -------
    dict
        ``{"forward_sync_buffers": False}`` or ``{"broadcast_buffers": False}``.

    Example
    -------
    >>> class OldDDP:
    ...     def __init__(self, module, device_ids=None, broadcast_buffers=True): ...
    >>> ddp_buffer_options(OldDDP)
    {'broadcast_buffers': False}
    """
    parameters = inspect.signature(ddp_class.__init__).parameters
    if "forward_sync_buffers" in parameters:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}


class TorchDistributed(Distributed):
    """torch DDP ranks started by torchrun (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` set).

    Parameters
    ----------
    device_type : {"cpu", "cuda"}
        ``cuda`` uses NCCL on device ``cuda:<LOCAL_RANK>``, ``cpu`` gloo.
    """

    name = "ddp"

    def __init__(self, device_type: str):
        import torch.distributed as dist

        self.dist = dist
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
        self.rank, self.size = dist.get_rank(), dist.get_world_size()
        self.local_rank = int(os.environ.get("LOCAL_RANK", self.rank))
        self.local_size = int(os.environ.get("LOCAL_WORLD_SIZE", self.size))
        self.device = torch.device("cuda", self.local_rank) if device_type == "cuda" \
            else torch.device("cpu")

    def prepare(self, model, optimizer):
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return (DistributedDataParallel(model, device_ids=ids,
                                        **ddp_buffer_options(DistributedDataParallel)),
                optimizer)

    def unwrap(self, model):
        return getattr(model, "module", model)

    def broadcast_state(self, model, optimizer, with_optimizer):
        # Wrapping in DistributedDataParallel broadcasts the parameters; this covers a state
        # loaded before wrapping too, and the optimizer, which DDP leaves alone.
        for tensor in model.state_dict().values():
            self.dist.broadcast(tensor, src=0)
        if with_optimizer:
            optimizer.load_state_dict(self.broadcast_object(optimizer.state_dict()))

    def _on_wire(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(self.device) if self.device.type == "cuda" else tensor

    def sum(self, values):
        total = self._on_wire(values.clone())
        self.dist.all_reduce(total, op=self.dist.ReduceOp.SUM)
        return total.to(values.device)

    def broadcast_object(self, obj):
        box = [obj]
        self.dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_objects(self, obj):
        out = [None] * self.size
        self.dist.all_gather_object(out, obj)
        return out

    def average_buffers(self, model):
        for buffer in model.buffers():
            if buffer.is_floating_point():
                total = self._on_wire(buffer.detach().clone())
                self.dist.all_reduce(total, op=self.dist.ReduceOp.SUM)
                buffer.copy_(total.to(buffer.device) / self.size)

    def close(self, finished: bool = True):
        # A DistributedDataParallel wrapper's reducer holds the process group: one the caller
        # has dropped but a reference cycle keeps alive would outlive destroy_process_group, and
        # gloo's threads then die at interpreter exit, which aborts the rank ("terminate called
        # without an active exception"; torch 2.13, about 1 run in 40 with gloo, more under
        # load). Collect such garbage first, and let every rank finish its last collective.
        gc.collect()
        if finished:
            self.dist.barrier()
        self.dist.destroy_process_group()


class RayTrainDistributed(TorchDistributed):
    """A worker of Ray Train's ``TorchTrainer`` (:func:`augengine.train.ray_backend.fit_on_ray`).

    Ray Train has initialised ``torch.distributed`` before the training function runs (gloo, or
    NCCL when the workers have GPUs) and owns it: it destroys the group at shutdown, so
    :meth:`close` leaves it alone. Ranks and sizes come from ``ray.train.get_context()``. On
    CUDA the device is ``ray.train.torch.get_device()``: Ray Train shows the workers of a node
    all of their GPUs (``CUDA_VISIBLE_DEVICES``), and a worker's own GPU's index among them need
    not be its local rank, so :attr:`local_rank` holds that index (the loop computes on
    ``cuda:<local_rank>``).

    Parameters
    ----------
    device_type : {"cpu", "cuda"}

    Raises
    ------
    ConfigError
        Not called inside a Ray Train worker.
    """

    name = RAY_BACKEND

    def __init__(self, device_type: str):
        import torch.distributed as dist

        try:
            import ray.train
            import ray.train.torch
        except ImportError as error:
            raise ConfigError(f"backend 'ray' needs ray.train, which cannot be imported ({error})"
                              "; install ray[train]") from None
        try:
            context = ray.train.get_context()
        except RuntimeError:  # Ray's own message is a paragraph
            raise ConfigError("backend 'ray' runs only in the workers of Ray Train's "
                              "TorchTrainer; start it with: augengine train ... --backend ray"
                              ) from None
        self.rank, self.size = context.get_world_rank(), context.get_world_size()
        local_rank, self.local_size = context.get_local_rank(), context.get_local_world_size()
        self.device = ray.train.torch.get_device() if device_type == "cuda" \
            else torch.device("cpu")
        if not dist.is_initialized():
            raise ConfigError("this Ray Train worker has no torch.distributed process group; "
                              "backend 'ray' needs ray.train.torch.TorchTrainer")
        self.dist = dist
        self.local_rank = self.device.index if self.device.type == "cuda" else local_rank

    def close(self, finished: bool = True):
        """Leave the process group to Ray Train, which made it and tears it down."""


def launched_backend(environ: Mapping[str, str] | None = None) -> str | None:
    """The launcher this process was started by, from its environment, or None.

    ``horovodrun`` and ``horovod.ray.RayExecutor`` set ``HOROVOD_RANK``; torchrun sets
    ``TORCHELASTIC_RUN_ID`` (and ``RANK``/``WORLD_SIZE``).

    Examples
    --------
    >>> launched_backend({"HOROVOD_RANK": "1", "HOROVOD_SIZE": "2"})
    'horovod'
    >>> launched_backend({"RANK": "0", "WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "x"})
    'ddp'
    >>> launched_backend({}) is None
    True
    """
    environ = os.environ if environ is None else environ
    if "HOROVOD_RANK" in environ:
        return "horovod"
    if "TORCHELASTIC_RUN_ID" in environ or ("RANK" in environ and "WORLD_SIZE" in environ):
        return "ddp"
    return None


def init_distributed(backend: str | None, device_type: str = "cpu") -> Distributed:
    """The :class:`Distributed` of this process.

    Parameters
    ----------
    backend : {"horovod", "ddp", "ray"} or None
        None (or a process no launcher started) is the single process; a launched rank must be
        told the backend of its launcher; ``"ray"`` is a Ray Train worker
        (:class:`RayTrainDistributed`), whatever its environment says: Ray Train sets torchrun's
        ``RANK``/``WORLD_SIZE`` in its workers too.
    device_type : {"cpu", "cuda"}
        Where the rank computes (DDP picks NCCL for CUDA, gloo for CPU).

    Raises
    ------
    ConfigError
        An unknown backend, a process launched by the other launcher, Horovod missing, or
        ``"ray"`` outside a Ray Train worker.
    """
    if backend is not None and backend not in (*BACKENDS, RAY_BACKEND):
        raise ConfigError(f"backend must be one of {', '.join((*BACKENDS, RAY_BACKEND))}, "
                          f"got {backend!r}")
    if backend == RAY_BACKEND:
        return RayTrainDistributed(device_type)
    launched = launched_backend()
    if launched is None or backend is None:
        return Distributed()
    if launched != backend:
        raise ConfigError(f"--backend {backend} but this process was started by the {launched} "
                          f"launcher; use --backend {launched}")
    return HorovodDistributed() if backend == "horovod" else TorchDistributed(device_type)


def _horovodrun() -> str:
    found = shutil.which("horovodrun", path=str(Path(sys.executable).parent)) \
        or shutil.which("horovodrun")
    if found is None:
        raise ConfigError("backend 'horovod' with --processes > 1 needs horovodrun, found neither "
                          f"next to {sys.executable} nor on PATH; build Horovod with "
                          ".ci/build-horovod.sh or use --backend ddp")
    return found


def launch_command(backend: str, processes: int, command: Sequence[str]) -> list[str]:
    """The command line that runs ``command`` as ``processes`` ranks on this machine.

    Parameters
    ----------
    backend : {"horovod", "ddp"}
    processes : int
        Ranks, >= 2.
    command : sequence of str
        The rank's program and arguments; starts with a Python interpreter (``sys.executable``),
        which torchrun re-uses.

    Returns
    -------
    list of str
        ``horovodrun --gloo -np N -H localhost:N --disable-cache <command>``, or
        ``python -m torch.distributed.run --standalone --nproc-per-node N <command[1:]>``.

    Examples
    --------
    >>> launch_command("ddp", 2, ["python", "-m", "augengine.train.cli", "quality"])[1:6]
    ['-m', 'torch.distributed.run', '--standalone', '--nproc-per-node', '2']
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 2:
        raise ConfigError(f"launching needs processes >= 2, got {processes!r}")
    if backend == "horovod":
        # Gloo, not MPI: the Horovod build here has no MPI. --disable-cache: no stale host check.
        return [_horovodrun(), "--gloo", "-np", str(processes), "-H", f"localhost:{processes}",
                "--disable-cache", *command]
    return [command[0], "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
            str(processes), *command[1:]]


def _rank_environment() -> dict[str, str]:
    env = dict(os.environ)
    paths = [_PACKAGE_ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    # Each rank sets its own thread count; OpenMP's default would oversubscribe the cores.
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def launch(backend: str, processes: int, command: Sequence[str]) -> int:
    """Run ``command`` as ``processes`` ranks (:func:`launch_command`); returns the exit code.

    The ranks inherit this environment, with the folder of the running ``augengine`` first on
    ``PYTHONPATH`` so that they import the same copy.
    """
    return subprocess.call(launch_command(backend, processes, command), env=_rank_environment())


def ray_runtime_env() -> dict:
    """The runtime env of augengine's Ray workers: the running ``augengine`` first on
    ``PYTHONPATH`` and one OpenMP thread (as :func:`launch` gives its ranks).

    :func:`augengine.raycluster.connect` merges it under a submitted job's own runtime env, whose
    settings win.
    """
    return {"env_vars": {"PYTHONPATH": _rank_environment()["PYTHONPATH"],
                         "OMP_NUM_THREADS": "1"}}


def worker_cpus(cpus: float, workers: int) -> float:
    """CPUs each of ``workers`` Ray actors reserves on a cluster of ``cpus``: at most 1, and
    whole-CPU actors filling a small node starve Ray's own tasks, so one share is left free.

    Examples
    --------
    >>> worker_cpus(2.0, 2), worker_cpus(64.0, 8)
    (0.67, 1.0)
    """
    return min(1.0, round(cpus / (workers + 1), 2))


def ray_use_gpu(workers: int, resources: Mapping[str, float], device: str | None = None) -> bool:
    """Whether each of ``workers`` Ray workers (Ray Train's, or Horovod's actors) takes one GPU,
    decided from the cluster's resources: under ``ray job submit`` the driver runs on the head,
    which often has no GPU while the workers' nodes do.

    Parameters
    ----------
    workers : int
        Workers, >= 1 (``--processes``).
    resources : mapping
        ``ray.cluster_resources()``: ``{"CPU": 16.0, "GPU": 2.0, ...}`` over every node.
    device : {"cpu", "cuda"} or None
        ``--device``: ``cpu`` never takes GPUs, ``cuda`` requires them, None takes them when the
        cluster has any.

    Returns
    -------
    bool
        True: one GPU per worker (NCCL); False: CPU workers (gloo).

    Raises
    ------
    ConfigError
        GPUs wanted and the cluster has fewer than ``workers`` of them (or none with ``cuda``).

    Examples
    --------
    >>> ray_use_gpu(2, {"CPU": 8.0}), ray_use_gpu(2, {"CPU": 8.0, "GPU": 2.0})
    (False, True)
    >>> ray_use_gpu(4, {"CPU": 8.0, "GPU": 2.0}, device="cpu")
    False
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"--processes (Ray workers) must be an integer >= 1, got {workers!r}")
    if device is not None and device not in ("cpu", "cuda"):
        raise ConfigError(f"--device on Ray must be cpu or cuda (Ray picks each worker's GPU), "
                          f"got {device!r}")
    gpus = float(resources.get("GPU", 0.0))
    if device == "cpu" or (device is None and gpus == 0):
        return False
    if gpus == 0:
        raise ConfigError("--device cuda, but the Ray cluster has no GPU; leave --device out or "
                          "use --device cpu")
    if gpus < workers:
        raise ConfigError(f"--processes {workers} asks for {workers} Ray workers with one GPU "
                          f"each, but the Ray cluster has {gpus:g} GPU(s); use --processes "
                          f"{int(gpus)} or fewer, or --device cpu")
    return True


def run_on_ray(function: Callable, kwargs: Mapping, processes: int, use_gpu: bool | None = None,
               address: str | None = None, device: str | None = None) -> list:
    """Run ``function(**kwargs)`` on ``processes`` Horovod ranks as Ray actors.

    Uses ``horovod.ray.RayExecutor``: the actors get Horovod's rendezvous environment, so
    ``function`` can call ``hvd.init()`` (:class:`HorovodDistributed`). Connects to ``address``,
    ``$RAY_ADDRESS`` (as under ``ray job submit``) or else starts an embedded Ray.

    Parameters
    ----------
    function : callable
        Module-level (so picklable by reference) training entry, e.g.
        ``augengine.train.cli.ray_rank``.
    kwargs : mapping
        Its keyword arguments (picklable).
    processes : int
        Ranks (actors), >= 1.
    use_gpu : bool, optional
        One GPU per actor; None decides from the cluster's GPUs and ``device``
        (:func:`ray_use_gpu`).
    address : str, optional
        Ray cluster address.
    device : {"cpu", "cuda"}, optional
        ``--device``, for :func:`ray_use_gpu`.

    Returns
    -------
    list
        Each rank's return value, in rank order.
    """
    try:
        import ray
        from horovod.ray import RayExecutor
    except ImportError as error:
        raise ConfigError(f"--ray needs ray and horovod.ray, which cannot be imported ({error})"
                          ) from None
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ConfigError(f"processes must be an integer >= 1, got {processes!r}")
    started = raycluster.connect(address, runtime_env=ray_runtime_env(),
                                 object_store_memory=100 * 1024**2)
    try:
        resources = ray.cluster_resources()
        if use_gpu is None:
            use_gpu = ray_use_gpu(processes, resources, device)
        per_worker = worker_cpus(resources.get("CPU", 1.0), processes)
        executor = RayExecutor(RayExecutor.create_settings(timeout_s=120), num_workers=processes,
                               cpus_per_worker=per_worker, use_gpu=use_gpu)
        executor.start()
        try:
            return executor.run(function, kwargs=dict(kwargs))
        finally:
            executor.shutdown()
    finally:
        if started:
            ray.shutdown()
