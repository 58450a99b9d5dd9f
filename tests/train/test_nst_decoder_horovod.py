"""Horovod training end to end: ``horovodrun --gloo -np 2`` runs jobs/train_nst.py on a tiny
store; both ranks end with identical decoders, the loss falls, and a second launch resumes.

Horovod is built by ``make test`` (.ci/build-horovod.sh). If it cannot be imported this test
FAILS, unless ``AUGENGINE_SKIP_HOROVOD=1`` is set, when it is skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from augengine.nst.inference import load_style_net
from augengine.train.nst_decoder import train_feedforward
from tests.train.test_nst_decoder import TINY, make_texture_store, texture_images
from tests.conftest import require_horovod

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]

#: The single-process test's settings (TINY: 8 pairs per epoch, batch 4, lr 1e-3) split over
#: 2 ranks: 4 pairs and 2 steps of 2 per rank, lr 5e-4 per rank (Horovod scales it by 2). With
#: gradients averaged over the ranks this is the same optimisation as one process.
ARGS = ["--arch", "resnet18", "--layer", "layer2", "--batch-size", "2", "--lr", "5e-4",
        "--beta", "1e4", "--style-layers", "relu,layer1,layer2", "--pairing", "within_class_k",
        "--seed", "3", "--horovod", "--debug-rank-states"]


def _horovodrun() -> str:
    """Path of horovodrun; fails the test (it is not a fixture, so this is a failure, not an
    error) when Horovod is missing, unless AUGENGINE_SKIP_HOROVOD=1."""
    require_horovod()
    runner = shutil.which("horovodrun", path=str(Path(sys.executable).parent))
    if runner is None:
        pytest.fail(f"horovod is importable but no horovodrun next to {sys.executable}")
    return runner


def _launch(runner: str, store: Path, out: Path, epochs: int) -> str:
    command = [runner, "--gloo", "-np", "2", "-H", "localhost:2", "--disable-cache",
               sys.executable, "jobs/train_nst.py", "--data", str(store), "--out", str(out),
               "--epochs", str(epochs), *ARGS]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=400)
    assert done.returncode == 0, (
        f"horovodrun exited {done.returncode}\nstdout:\n{done.stdout[-3000:]}\n"
        f"stderr:\n{done.stderr[-3000:]}"
    )
    return done.stdout


def _rank_states(out: Path) -> list[dict]:
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


def _norm(state: dict) -> float:
    """L2 norm of all tensors of a state dict together."""
    return sum(value.double().square().sum() for value in state.values()).sqrt().item()


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_two_ranks_train_identically_and_resume(tmp_path):
    horovodrun = _horovodrun()
    store = make_texture_store(tmp_path / "textures.zarr")
    out = tmp_path / "nst"

    stdout = _launch(horovodrun, store, out, epochs=3)
    rank0, rank1 = _rank_states(out)
    assert rank0["sha256"] == rank1["sha256"], "ranks 0 and 1 ended with different decoders"
    assert all(torch.equal(rank0["decoder"][k], rank1["decoder"][k]) for k in rank0["decoder"])
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 3 and checkpoint["sha256"] == rank0["sha256"], (
        f"checkpoint epoch {checkpoint['epoch']}: expected 3 with rank 0's decoder"
    )
    records = _log(out)
    assert [(r["epoch"], r["ranks"], r["pairs"]) for r in records] == [
        (1, 2, 8), (2, 2, 8), (3, 2, 8)
    ], f"log records {records} (expected 3 epochs of 8 pairs on 2 ranks, written once)"
    losses = [r["loss"] for r in records]
    assert losses[-1] < 0.8 * losses[0], f"2-rank epoch losses {losses}: expected a fall > 20 %"
    assert stdout.count("3 epoch(s) run after 0") == 1, f"expected one summary line:\n{stdout}"

    # One process on the same global batches: the same optimisation up to float32 reduction
    # order. Adam divides each gradient by its running RMS, so a weight whose gradient is at that
    # noise level moves ~lr per step in a direction the reduction order decides: single weights
    # may differ by a few lr, the decoder as a whole and its images must not.
    with pytest.warns(UserWarning, match="randomly initialised"):
        single = train_feedforward(store, tmp_path / "single", epochs=3, **TINY)
    assert single.epoch_losses == pytest.approx(losses, rel=1e-4), (
        f"2 ranks {losses} vs 1 process {single.epoch_losses}: expected equal losses"
    )
    alone = torch.load(single.checkpoint, weights_only=True)["decoder"]
    gap = _norm({k: alone[k] - rank0["decoder"][k] for k in alone}) / _norm(alone)
    assert gap < 1e-3, f"2-rank decoder differs from the 1-process one by {gap:.2e} (relative L2)"
    with pytest.warns(UserWarning, match="randomly initialised"):
        nets = [load_style_net(path) for path in (single.checkpoint, out / "checkpoint.pt")]
    images = torch.from_numpy(texture_images()[0]).unsqueeze(1).float() / 255
    with torch.no_grad():
        drawn = [net(images, images.flip(0)) for net in nets]
    pixel_gap = (drawn[0] - drawn[1]).abs().max().item()
    assert pixel_gap < 1e-3, f"2-rank and 1-process decoders draw images {pixel_gap:.2e} apart"

    stdout = _launch(horovodrun, store, out, epochs=4)
    assert "1 epoch(s) run after 3" in stdout, f"second launch did not resume:\n{stdout}"
    resumed = torch.load(out / "checkpoint.pt", weights_only=True)
    assert resumed["epoch"] == 4, f"resumed checkpoint epoch {resumed['epoch']}, expected 4"
    assert resumed["epoch_losses"][:3] == checkpoint["epoch_losses"], "history was rewritten"
    rank0, rank1 = _rank_states(out)
    assert rank0["sha256"] == rank1["sha256"] == resumed["sha256"], (
        "after resuming, the ranks and the checkpoint disagree"
    )
    assert [r["epoch"] for r in _log(out)] == [1, 2, 3, 4]
