"""Entry point of the training jobs for launchers and Ray (``augengine train`` without the
``train`` word, plus ``--ray``):

    horovodrun --gloo -np 2 -H localhost:2 python jobs/train.py classifier \\
        --data out/dataset.zarr --out runs/cls --backend horovod
    torchrun --standalone --nproc-per-node 2 jobs/train.py segmenter --data ... --out ... \\
        --backend ddp
    ray job submit --working-dir . -- python jobs/train.py quality --data ... --out ... \\
        --backend ray --processes 2

Under a launcher every process is a rank (its environment says so) and trains its share.
``--backend ray --processes N`` runs N workers of Ray Train's ``TorchTrainer``, and the older
``--ray --processes N`` N Horovod ranks as Ray actors (``horovod.ray.RayExecutor``), on the
cluster of ``--ray-address``, ``$RAY_ADDRESS`` (set by ``ray job submit``) or an embedded Ray;
a submitted job's own runtime env (``--runtime-env``) is kept, augengine's fills in the rest.
``--processes N`` alone launches ``horovodrun``/torchrun itself, as ``augengine train`` does.
See :mod:`augengine.train.cli` and docs/training.md.
"""
from __future__ import annotations

import sys

from augengine.train.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="jobs/train.py", ray=True))
