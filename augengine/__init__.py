"""augengine: physically plausible breast-ultrasound augmentation at GPU and cluster scale.

Subpackages: ``sources`` (readers and the RF phantom simulator), ``ops`` (reconstruction,
despeckling, geometric and quality ops; NumPy references with CuPy kernels), ``store`` (Zarr v3
shards plus a Parquet manifest), ``runner`` (Ray actors), ``models``/``explain``/``nst`` (ResNets,
LRP, style transfer) and ``train`` (DALI + Horovod training jobs). Nothing heavy is imported here.

The public Python API (docs/python.md): ``Job``, ``plan``, ``run`` and ``register_op`` to build
and run jobs; ``open_store``, ``StoreDataset`` and ``augengine.ray_data`` to read their stores.
"""
__version__ = "0.1.0"

#: Public names loaded on first use, so ``import augengine`` stays light (no zarr, no torch).
#: ``augengine.plan`` is the module ``augengine/plan.py``, which is callable: ``augengine.plan(job)``
#: is :func:`augengine.api.plan`.
_LAZY = {"open_store": "augengine.store", "StoreView": "augengine.store",
         "StoreDataset": "augengine.train.dataset", "Job": "augengine.api",
         "run": "augengine.api", "register_op": "augengine.registry"}
__all__ = ["Job", "StoreDataset", "StoreView", "open_store", "plan", "register_op", "run"]


def __getattr__(name):
    import importlib

    if name == "plan":
        return importlib.import_module("augengine.plan")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'augengine' has no attribute {name!r}")
