"""The ``train classifier`` job as the one way to get the classifier NST explains: single
process, reproducible from its seed, its checkpoint loading as the project's plain ResNet."""
from __future__ import annotations

import pytest
import torch

from augengine.errors import ConfigError
from augengine.models import load_classifier, load_weights, resnet18
from augengine.models.weights import recorded_metadata
from augengine.nst.inference import load_checkpoint as load_nst_checkpoint
from augengine.train.loop import TrainConfig, load_checkpoint, train
from augengine.train.nst_decoder import train_feedforward
from tests.train.test_jobs import make_tiny_store
from tests.train.test_nst_decoder import TINY


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """One CPU thread: on a shared 2-core machine two threads run slower."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def _classifier(store, out, seed):
    return train(TrainConfig("classifier", str(store), str(out), arch="resnet18",
                             image_size=32, batch_size=4, epochs=2, optimizer="adam", lr=1e-3,
                             loader="torch", seed=seed))


def test_a_classifier_run_is_reproducible_and_loads_for_lrp(tmp_path):
    store = make_tiny_store(tmp_path / "tiny.zarr")
    runs = [_classifier(store, tmp_path / f"run{i}", seed=3) for i in range(2)]
    assert runs[0].history["train_loss"] == runs[1].history["train_loss"], \
        f"same seed, train losses {[run.history['train_loss'] for run in runs]}"
    assert runs[0].sha256 == runs[1].sha256, "same seed, different final weights"
    losses = runs[0].history["train_loss"]
    assert losses[-1] < 0.75 * losses[0], f"training loss did not fall: {losses}"
    path = tmp_path / "run0" / "checkpoint.pt"
    model = load_weights(resnet18(num_classes=2), path)
    best = load_checkpoint(path)["model"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in best.items()), \
        "load_weights did not load the best-validation weights"
    assert load_classifier(path).fc.out_features == 2

    # NST takes it as the LRP classifier, and as an encoder only for its recorded architecture.
    assert recorded_metadata(path)["arch"] == "resnet18"
    with pytest.warns(UserWarning, match="randomly initialised"):
        train_feedforward(store, tmp_path / "nst", classifier_weights=path, epochs=1, **TINY)
    recorded = load_nst_checkpoint(tmp_path / "nst" / "checkpoint.pt")["config"]
    assert recorded["lrp"] and len(recorded["classifier_sha256"]) == 64, recorded
    with pytest.raises(ConfigError, match="holds a resnet18"):
        train_feedforward(store, tmp_path / "nst50", path, epochs=1, lrp=False,
                          **{**TINY, "arch": "resnet50"})
