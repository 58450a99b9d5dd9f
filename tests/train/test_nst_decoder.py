"""Single-process decoder training on a tiny two-texture store: the loss falls, checkpoints and
logs are written, a resumed run equals an uninterrupted one, the LRP relevance is cached."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from augengine import store
from augengine.errors import ConfigError, InputError
from augengine.models import resnet18
from augengine.nst import generate, plan_pairs
from augengine.nst.quality import ssim
from augengine.nst.inference import load_checkpoint, load_style_net
from augengine.models.weights import state_sha256
from augengine.train import nst_decoder
from augengine.train.nst_decoder import CHECKPOINT, train_feedforward

#: Small settings shared by every run: ResNet-18 to layer2 on 32 x 32 images, 8 pairs per epoch
#: (one random same-class reference per image), two steps of 4 per epoch.
TINY = dict(arch="resnet18", layer="layer2", batch_size=4, lr=1e-3, beta=1e4,
            style_layers=("relu", "layer1", "layer2"), pairing="within_class_k", seed=3)


def texture_images(n_per_class: int = 4, size: int = 32, seed: int = 0):
    """Phantom-like textures: class 0 smooth low-frequency echo patterns, class 1 speckle."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images = []
    for _ in range(n_per_class):
        f, phase = rng.uniform(1, 2), rng.uniform(0, 2 * np.pi)
        images.append(0.5 + 0.35 * np.sin(2 * np.pi * f * xx + phase) * np.cos(2 * np.pi * f * yy))
    for _ in range(n_per_class):
        images.append(rng.exponential(0.3, (size, size)))
    pixels = np.round(255 * np.clip(np.stack(images), 0, 1)).astype(np.uint8)
    return pixels, np.repeat(np.array([0, 1], dtype=np.int8), n_per_class)


def make_texture_store(path, n_per_class: int = 4, size: int = 32, made_by: tuple = ()):
    """A finished store (manifest and all) of :func:`texture_images`; ``made_by``: the ops each
    image records as having made it (e.g. a bmode step, so an srad step knows its dynamic
    range)."""
    images, labels = texture_images(n_per_class, size)
    n = len(images)
    store.create_store(path, n, (size, size), n, False, "nst-test", {"name": "nst-test"})
    store.write_shard(path, 0, images, labels, None)
    rows = [{"index": i, "sample_id": f"t{i}:0", "input_id": f"t{i}", "source_id": f"t{i}",
             "source_path": "phantom", "reader": "test", "label": int(labels[i]), "variant": 0,
             "chain": "identity", "ops": json.dumps(list(made_by)), "seed": 0, "shard": 0, "has_mask": False,
             "sha256": store.image_sha256(images[i])} for i in range(n)]
    store.finalize(path, rows, [], n)
    return path


@pytest.fixture(scope="module")
def texture_store(tmp_path_factory):
    return make_texture_store(tmp_path_factory.mktemp("nst") / "textures.zarr")


def _train(store_path, out_dir, epochs, **overrides):
    settings = {**TINY, **overrides}
    with pytest.warns(UserWarning, match="randomly initialised"):
        return train_feedforward(store_path, out_dir, epochs=epochs, **settings)


@pytest.fixture(scope="module")
def three_epochs(texture_store, tmp_path_factory):
    """An uninterrupted 3-epoch run: (its out_dir, its result)."""
    out = tmp_path_factory.mktemp("uninterrupted")
    return out, _train(texture_store, out, epochs=3)


def test_loss_falls(three_epochs):
    _, result = three_epochs
    losses = result.epoch_losses
    assert len(losses) == 3 and (result.start_epoch, result.epochs_run) == (0, 3)
    assert losses[-1] < 0.8 * losses[0], (
        f"epoch losses {[round(x, 1) for x in losses]}: expected the last < 0.8 x the first"
    )


def test_checkpoint_and_log_are_written(three_epochs):
    out, result = three_epochs
    checkpoint = load_checkpoint(out / CHECKPOINT)
    assert checkpoint["epoch"] == 3, f"checkpoint epoch {checkpoint['epoch']}, expected 3"
    assert checkpoint["sha256"] == state_sha256(checkpoint["decoder"])
    assert checkpoint["config"]["layer"] == "layer2" and checkpoint["config"]["lrp"] is True
    assert list(checkpoint["epoch_losses"]) == list(result.epoch_losses)
    assert checkpoint["optimizer"]["state"], "optimizer state missing from the checkpoint"
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3], f"log epochs {records}"
    assert all(r["pairs"] == 8 and r["ranks"] == 1 for r in records), f"log records {records}"
    assert [r["loss"] for r in records] == list(result.epoch_losses)
    assert (out / "relevance.pt").is_file(), "LRP relevance was not cached"


def test_resume_continues_from_the_saved_epoch_with_identical_state(
    texture_store, three_epochs, tmp_path, monkeypatch
):
    full_out, full = three_epochs
    first = _train(texture_store, tmp_path, epochs=2)
    assert (first.start_epoch, first.epochs_run) == (0, 2)

    def recompute(*args, **kwargs):
        raise AssertionError("relevance recomputed although it was cached")

    monkeypatch.setattr(nst_decoder, "_compute_relevance", recompute)
    resumed = _train(texture_store, tmp_path, epochs=3)
    assert (resumed.start_epoch, resumed.epochs_run) == (2, 1), (
        f"resume: expected to start after epoch 2 and run 1, got {resumed}"
    )
    assert resumed.epoch_losses == full.epoch_losses, (
        f"losses {resumed.epoch_losses} differ from the uninterrupted run's {full.epoch_losses}"
    )
    a, b = load_checkpoint(full_out / CHECKPOINT), load_checkpoint(tmp_path / CHECKPOINT)
    assert a["sha256"] == b["sha256"], "resumed decoder differs from the uninterrupted one"
    log = (tmp_path / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1, 2, 3]


def test_a_finished_run_trains_nothing_more(texture_store, three_epochs):
    out, full = three_epochs
    again = _train(texture_store, out, epochs=3)
    assert (again.start_epoch, again.epochs_run) == (3, 0)
    assert again.epoch_losses == full.epoch_losses


def test_resume_refuses_other_settings(texture_store, three_epochs):
    out, _ = three_epochs
    with pytest.raises(ConfigError, match="beta"):
        _train(texture_store, out, epochs=4, beta=10.0)


def test_no_resume_starts_afresh(texture_store, tmp_path):
    _train(texture_store, tmp_path, epochs=1, lrp=False)
    again = _train(texture_store, tmp_path, epochs=1, lrp=False, resume=False)
    assert (again.start_epoch, again.epochs_run) == (0, 1)
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 1, "fresh run kept old log"
    assert not (tmp_path / "relevance.pt").exists(), "lrp=False computed relevance"


def test_corrupted_checkpoint_is_reported(three_epochs, tmp_path):
    out, _ = three_epochs
    checkpoint = torch.load(out / CHECKPOINT, weights_only=True)
    name = next(iter(checkpoint["decoder"]))
    checkpoint["decoder"][name] = checkpoint["decoder"][name] + 1
    torch.save(checkpoint, tmp_path / CHECKPOINT)
    with pytest.raises(InputError, match="sha256"):
        load_checkpoint(tmp_path / CHECKPOINT)
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="garbage.pt"):
        load_checkpoint(tmp_path / "garbage.pt")


def test_trained_net_loads_for_generation(texture_store, three_epochs):
    out, _ = three_epochs
    with pytest.warns(UserWarning, match="randomly initialised"):
        net = load_style_net(out / CHECKPOINT)
    assert state_sha256(net.decoder.state_dict()) == load_checkpoint(out / CHECKPOINT)["sha256"]
    images, labels = texture_images()
    rows = [batch for _, batch in generate(net, images, plan_pairs(labels), batch_size=16)]
    assert sum(len(batch) for batch in rows) == 32, "4^2 + 4^2 within-class pairs expected"


def test_encoder_weights_are_recorded_and_checked(texture_store, tmp_path):
    torch.manual_seed(1)
    weights = tmp_path / "encoder.pth"
    torch.save(resnet18().state_dict(), weights)
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="classifier"):
        train_feedforward(texture_store, out, weights, epochs=1, **TINY)
    assert load_checkpoint(out / CHECKPOINT)["config"]["encoder_sha256"] is not None
    net = load_style_net(out / CHECKPOINT, weights)
    loaded = net.encoder.state_dict()
    saved = {k: v for k, v in torch.load(weights).items() if not k.startswith("fc.")}  # unused head
    assert all(torch.equal(loaded[k], v) for k, v in saved.items()), (
        "load_style_net did not load the encoder weights file"
    )
    with pytest.raises(ConfigError, match="encoder weights"):
        load_style_net(out / CHECKPOINT)


def test_decoder_learns_to_reconstruct_the_content(texture_store, tmp_path):
    # The paper's content loss alone (beta = 0) at a stride-2 AdaIN layer: the decoder must learn
    # to invert the encoder. (At ResNet-18's layer2 the same run reaches SSIM ~0.05: a random
    # encoder's stride-8 features of 32-pixel images cannot be inverted; docs/nst.md.)
    result = _train(texture_store, tmp_path, epochs=15, layer="relu", content_layers=("relu",),
                    style_layers=("relu",), beta=0.0, lr=1e-3, pairing="within_class_all",
                    lrp=False)
    with pytest.warns(UserWarning, match="randomly initialised"):
        net = load_style_net(result.checkpoint)
    images, _ = texture_images()
    content = torch.from_numpy(images).unsqueeze(1).float() / 255
    with torch.no_grad():
        scores = ssim(net(content, content), content)
    assert scores.min() > 0.6, (
        f"SSIM of the decoded images to their contents {scores.tolist()}: expected > 0.6"
    )


def test_encoder_weights_of_another_architecture_are_refused(texture_store, tmp_path):
    weights = tmp_path / "cls.pt"
    torch.save({"state_dict": resnet18(num_classes=2).state_dict(), "arch": "resnet18",
                "num_classes": 2}, weights)                        # with recorded metadata
    with pytest.raises(ConfigError, match="resnet18"):
        train_feedforward(texture_store, tmp_path / "run", weights, epochs=1, lrp=False,
                          **{**TINY, "arch": "resnet50"})


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr": 0.0}, "lr"),
        ({"pairing": "cross_class"}, "pairing"),
        ({"arch": "vgg19"}, "arch"),
        ({"image_size": 8}, "image_size"),
    ],
)
def test_bad_settings(texture_store, tmp_path, overrides, match):
    settings = {**TINY, "epochs": 1, **overrides}
    with pytest.raises(ConfigError, match=match):
        train_feedforward(texture_store, tmp_path, **settings)


def test_missing_store_and_weights(tmp_path):
    with pytest.raises(InputError, match="zarr.json"):
        train_feedforward(tmp_path / "nowhere.zarr", tmp_path / "out", epochs=1, **TINY)
    with pytest.raises(InputError, match="not found"):
        train_feedforward(tmp_path / "nowhere.zarr", tmp_path / "out", tmp_path / "enc.pth",
                          epochs=1, **TINY)
