"""load_weights (local checkpoints only) and the small classifier trainer fit_classifier."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from augengine.errors import ConfigError, InputError
from augengine.models import fit_classifier, load_weights, resnet18, resnet50


@pytest.fixture(scope="module")
def source():
    torch.manual_seed(1)
    return resnet18(num_classes=2)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module, skip: str = "") -> list[str]:
    """Keys whose tensors differ (ignoring keys starting with ``skip`` when given)."""
    sb = b.state_dict()
    return [k for k, v in a.state_dict().items()
            if not (skip and k.startswith(skip)) and not torch.equal(v, sb[k])]


@pytest.mark.parametrize("wrap", ["raw", "state_dict", "model", "ddp_prefix"])
def test_round_trip_in_every_checkpoint_layout(tmp_path, source, wrap):
    state = source.state_dict()
    checkpoint = {"raw": state,
                  "state_dict": {"state_dict": state, "epoch": 3},
                  "model": {"model": state, "optimizer": {}},
                  "ddp_prefix": {f"module.{k}": v for k, v in state.items()}}[wrap]
    path = tmp_path / f"{wrap}.pth"
    torch.save(checkpoint, path)
    target = resnet18(num_classes=2)
    assert load_weights(target, path) is target
    differing = _same_weights(source, target)
    assert differing == [], f"{wrap}: tensors differ after loading: {differing[:3]}"


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nowhere" / "resnet50.pth"
    with pytest.raises(InputError, match=r"nowhere[/\\]resnet50\.pth: weights file not found"):
        load_weights(resnet50(), path)


def test_unreadable_file_is_an_input_error(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="broken.pth: not a readable PyTorch checkpoint"):
        load_weights(resnet18(), path)


def test_key_mismatch_names_the_first_offending_keys(tmp_path, source):
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    with pytest.raises(InputError) as error:
        load_weights(resnet50(num_classes=2), path)
    message = str(error.value)
    assert "\n" not in message, f"message spans several lines: {message!r}"
    expected = "shape mismatch layer1.0.conv1.weight (64, 64, 3, 3) in file vs (64, 64, 1, 1)"
    assert expected in message, message
    assert "missing keys layer1.0.conv3.weight" in message, message
    assert "(+" in message, f"expected a count of further keys in: {message}"


def test_head_mismatch_suggests_and_supports_skip_head(tmp_path):
    imagenet = resnet18(num_classes=1000)
    path = tmp_path / "imagenet.pth"
    torch.save(imagenet.state_dict(), path)
    target = resnet18(num_classes=2)
    fc_before = target.fc.weight.clone()
    mismatch = r"fc\.weight \(1000, 512\) in file vs \(2, 512\).*skip_head"
    with pytest.raises(InputError, match=mismatch):
        load_weights(target, path)
    load_weights(target, path, skip_head=True)
    assert _same_weights(imagenet, target, skip="fc.") == [], "backbone not loaded with skip_head"
    assert torch.equal(target.fc.weight, fc_before), "skip_head changed the fc weights"


def test_strict_false_tolerates_extra_and_missing_keys(tmp_path, source):
    state = dict(source.state_dict())
    state["extra.weight"] = torch.zeros(1)
    del state["fc.bias"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(InputError, match="missing keys fc.bias; unexpected keys extra.weight"):
        load_weights(resnet18(num_classes=2), path)
    target = load_weights(resnet18(num_classes=2), path, strict=False)
    assert torch.equal(target.fc.weight, source.fc.weight)


# ------------------------------------------------------------------------------------------------
# fit_classifier on a store the test writes itself
# ------------------------------------------------------------------------------------------------

def _write_store(path, n=16, size=64, manifest_rows=None, bad_label_rows=()):
    """Zarr v3 group images (n, size, size) uint8 + labels (n,) int8 and manifest.parquet.

    Class 0: dark speckle; class 1: the same with a bright disc in the middle. Rows listed in
    ``bad_label_rows`` get label 7 (invalid for two classes).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zarr

    rng = np.random.default_rng(7)
    labels = np.arange(n) % 2
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 4) ** 2
    images = rng.integers(0, 60, size=(n, size, size)).astype(np.uint8)
    images[labels == 1] = np.where(disc, 220, images[labels == 1]).astype(np.uint8)
    labels = labels.astype(np.int8)
    labels[list(bad_label_rows)] = 7
    group = zarr.open_group(path, mode="w", zarr_format=3)
    stored = group.create_array("images", shape=images.shape, dtype="uint8", chunks=(1, size, size))
    stored[:] = images
    group.create_array("labels", shape=labels.shape, dtype="int8", chunks=(n,))[:] = labels
    rows = np.arange(n) if manifest_rows is None else np.asarray(manifest_rows)
    pq.write_table(pa.table({"index": rows, "label": rows % 2}),
                   path / "manifest.parquet")
    return path


def test_fit_classifier_loss_falls_and_checkpoint_loads(tmp_path):
    # Rows 8 and 9 carry an invalid label but are not in the manifest: they must be skipped.
    store = _write_store(tmp_path / "tiny.zarr", n=10, size=32, manifest_rows=range(8),
                         bad_label_rows=(8, 9))
    result = fit_classifier(store, tmp_path / "out" / "clf.pth", arch="resnet18", epochs=3,
                            batch_size=4, learning_rate=0.003, seed=0)
    losses = result.epoch_losses
    assert len(losses) == 3 and len(result.epoch_accuracies) == 3
    # Seeds 0-4 all end below half of the first epoch's loss here; 0.75 leaves room for platforms.
    assert losses[-1] < 0.75 * losses[0], f"training loss did not fall: {losses}"
    assert result.out_path.is_file()
    model = load_weights(resnet18(num_classes=2), result.out_path).eval()
    checkpoint = torch.load(result.out_path, weights_only=True)
    assert checkpoint["arch"] == "resnet18" and checkpoint["num_classes"] == 2
    assert checkpoint["epoch_losses"] == list(losses)
    assert model.fc.out_features == 2


def test_fit_classifier_is_reproducible_with_its_seed(tmp_path):
    store = _write_store(tmp_path / "tiny.zarr", n=4, size=32)
    runs = [fit_classifier(store, tmp_path / f"run{i}.pth", epochs=1, batch_size=4, seed=3)
            for i in range(2)]
    assert runs[0].epoch_losses == runs[1].epoch_losses, f"same seed, losses {runs}"


def test_fit_classifier_rejects_labels_outside_the_classes(tmp_path):
    store = _write_store(tmp_path / "bad.zarr", n=8, size=32, bad_label_rows=(5,))
    with pytest.raises(InputError, match=r"bad\.zarr: sample 5 has label 7, outside \[0, 2\)"):
        fit_classifier(store, tmp_path / "clf.pth", epochs=1)


def test_fit_classifier_bad_store_and_parameters(tmp_path):
    with pytest.raises(InputError, match="missing.zarr: store not found"):
        fit_classifier(tmp_path / "missing.zarr", tmp_path / "clf.pth")
    store = _write_store(tmp_path / "tiny.zarr", n=4, size=32, manifest_rows=[0, 9])
    with pytest.raises(InputError, match="manifest index 9 outside the 4 stored images"):
        fit_classifier(store, tmp_path / "clf.pth")
    with pytest.raises(ConfigError, match="arch must be one of"):
        fit_classifier(store, tmp_path / "clf.pth", arch="vgg19")
    with pytest.raises(ConfigError, match="epochs must be > 0, got 0"):
        fit_classifier(store, tmp_path / "clf.pth", epochs=0)
