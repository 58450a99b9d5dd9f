"""augengine: physically plausible breast-ultrasound augmentation at GPU and cluster scale.

Subpackages: ``sources`` (readers and the RF phantom simulator), ``ops`` (reconstruction,
despeckling, geometric and quality ops; NumPy references with CuPy kernels), ``store`` (Zarr v3
shards plus a Parquet manifest), ``runner`` (Ray actors), ``models``/``explain``/``nst`` (ResNets,
LRP, style transfer) and ``train`` (DALI + Horovod training jobs). Nothing heavy is imported here.
"""

__version__ = "0.1.0"

#: Public names loaded on first use, so ``import augengine`` stays light (no zarr, no torch).
_LAZY = {"open_store": "augengine.store", "StoreView": "augengine.store",
         "StoreDataset": "augengine.train.dataset"}
__all__ = ["StoreDataset", "StoreView", "open_store"]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'augengine' has no attribute {name!r}")
