"""``--backend ray``: the training loop's ranks as the workers of Ray Train's ``TorchTrainer``.

    augengine train classifier --data /shared/dataset.zarr --out /shared/runs/cls \\
        --backend ray --processes 4

:func:`fit_on_ray` connects through :func:`augengine.raycluster.connect` (``$RAY_ADDRESS``, as
under ``ray job submit``, or a private embedded Ray with token auth on 127.0.0.1), decides from
the CLUSTER's resources whether each worker gets a GPU
(:func:`~augengine.train.distributed.ray_use_gpu`: under ``ray job
submit`` the driver runs on the head, which often has none, so the driver's own
``torch.cuda`` says nothing about the workers), and runs ``N`` workers. Each calls the same
:func:`augengine.train.loop.train` as every other backend, with
:class:`augengine.train.distributed.RayTrainDistributed` over the process group Ray Train made
(gloo on CPU, NCCL on GPU): same task, loop, checkpoint, metrics and run directory. Rank 0
writes the run directory, so ``--out`` must be reachable from the worker that becomes rank 0
(and ``--data`` from every worker): shared storage on a multi-node cluster.

Ray Train's own checkpointing and restarts are not used: the loop writes ``checkpoint.pt``
itself and ``--resume`` continues a run, as for the other backends; Ray Train keeps only a
storage-check marker in ``OUT/ray-train/``.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

from augengine import raycluster
from augengine.errors import AugengineError, ConfigError
from augengine.train.distributed import ray_runtime_env, ray_use_gpu, worker_cpus

__all__ = ["RAY_TRAIN_DIR", "fit_on_ray"]

#: Ray Train's storage folder inside the run directory (``RunConfig.storage_path``): without one
#: it writes to ``~/ray_results``.
RAY_TRAIN_DIR = "ray-train"


def _worker_error(error: Exception) -> AugengineError | None:
    """The augengine error (bad input, bad settings) a failed worker raised, if one did."""
    failures = getattr(error, "worker_failures", None) or {}
    for rank in sorted(failures):
        cause = failures[rank]
        while cause is not None and not isinstance(cause, AugengineError):
            cause = getattr(cause, "cause", None) or cause.__cause__
        if cause is not None:
            return cause
    return None


def _absolute_paths(config) -> dict[str, str]:
    """The config's path settings made absolute against this driver's working directory: Ray
    Train runs each worker in a folder of its own (``<session>/artifacts/<run>``)."""
    return {name: os.path.abspath(getattr(config, name))
            for name in ("data", "out", "splits", "init_weights")
            if getattr(config, name) is not None}


def fit_on_ray(function: Callable[[dict], object], config, workers: int,
               address: str | None = None):
    """Train ``config`` on ``workers`` Ray Train workers; returns rank 0's return value.

    Parameters
    ----------
    function : callable
        Module-level training function of one worker, called as ``function({"config":
        config})`` (``augengine.train.cli.ray_train_worker``); it must train with
        ``backend="ray"``.
    config : TrainConfig
        The job; with ``device`` None it is set to ``cuda`` or ``cpu`` by :func:`ray_use_gpu`,
        so that every worker computes where its resources are.
    workers : int
        Ray Train workers (``--processes``).
    address : str, optional
        Ray cluster (``--ray-address``); default ``$RAY_ADDRESS``, else an embedded Ray.

    Raises
    ------
    ConfigError, InputError
        As raised on the driver or by a worker (bad settings, GPUs missing, a bad store).
    """
    try:
        import ray
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer
    except ImportError as error:
        raise ConfigError(f"--backend ray needs ray[train], which cannot be imported ({error})"
                          ) from None
    from augengine.train.loop import resolve_config

    resolve_config(config)  # bad settings end here, before any worker starts
    started = raycluster.connect(address, runtime_env=ray_runtime_env(),
                                 object_store_memory=100 * 1024**2)
    try:
        resources = ray.cluster_resources()
        use_gpu = ray_use_gpu(workers, resources, config.device)
        config = dataclasses.replace(config, device="cuda" if use_gpu else "cpu",
                                     **_absolute_paths(config))
        trainer = TorchTrainer(
            function, train_loop_config={"config": config},
            scaling_config=ScalingConfig(
                num_workers=workers, use_gpu=use_gpu,
                resources_per_worker=None if use_gpu else
                {"CPU": worker_cpus(resources.get("CPU", 1.0), workers)}),
            run_config=RunConfig(name=RAY_TRAIN_DIR,
                                 storage_path=config.out))
        try:
            return trainer.fit().return_value
        except Exception as error:  # Ray wraps the workers' errors (TrainingFailedError)
            cause = _worker_error(error)
            if cause is not None:
                raise cause from None
            raise
    finally:
        if started:
            ray.shutdown()
