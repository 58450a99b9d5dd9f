"""The training jobs end to end on a tiny store, and the pieces they are made of.

The store: 16 lesions (8 benign, 8 malignant), each an original 32x32 image (a square lesion on a
noisy background, bright when malignant, dark when benign; its mask is the square) plus a stored
horizontal-flip variant, so that evaluation on originals only is visible. Shards of 4 images.

Acceptance runs (``@slow``): a 2-rank classifier through ``--processes 2`` for each backend
(``horovodrun --gloo`` and torchrun) reading through the DALI CPU pipeline; ranks end with
identical weights; ``--resume`` continues from the saved epoch; the resumed Horovod run and the
uninterrupted DDP run end with the same weights. Segmenter and quality single-process smoke
runs. Horovod (DALI) tests FAIL when Horovod (DALI) cannot be imported, unless
``AUGENGINE_SKIP_HOROVOD=1`` (``AUGENGINE_SKIP_DALI=1``).
"""
from __future__ import annotations

import dataclasses
import doctest
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from augengine import ops, store
from augengine.errors import ConfigError, InputError
from augengine.manifest import rows_where
from augengine.train.cli import build_parser, config_argv, config_from_args, main
from augengine.train.loader import StoreSource
from augengine.train.loop import TrainConfig, load_checkpoint, resolve_config
from augengine.train.tasks import (
    PseudoLabelSource,
    TrainingSource,
    degrade,
    dice_bce_loss,
    pseudo_label_kind,
)
from tests.conftest import require_dali, require_horovod

REPO = Path(__file__).resolve().parents[2]
N_LESIONS, SIZE, SHARD = 16, 32, 4
#: Small enough for 2 CPUs: ResNet-18 at 32 px, batch 4 per rank, one reading thread.
TINY = ["--arch", "resnet18", "--image-size", "32", "--batch-size", "4", "--loader-threads", "1"]


def make_tiny_store(path: Path) -> Path:
    """The module's store (see the module docstring); returns ``path``."""
    rng = np.random.default_rng(3)
    n = 2 * N_LESIONS
    store.create_store(path, n, (SIZE, SIZE), SHARD, True, "tiny", {"name": "tiny"})
    images = np.zeros((n, SIZE, SIZE), np.uint8)
    masks = np.zeros_like(images)
    labels = np.zeros(n, np.int8)
    rows = []
    for lesion in range(N_LESIONS):
        label = lesion % 2
        y0, x0 = rng.integers(4, SIZE // 2, 2)
        h, w = rng.integers(SIZE // 4, SIZE // 2, 2)
        mask = np.zeros((SIZE, SIZE), np.uint8)
        mask[y0:y0 + h, x0:x0 + w] = 1
        background = rng.integers(60, 100, (SIZE, SIZE))
        image = np.where(mask == 1, 220 if label else 10, background).astype(np.uint8)
        for variant, (pixels, region) in enumerate(((image, mask),
                                                    (image[:, ::-1], mask[:, ::-1]))):
            index = 2 * lesion + variant
            images[index], masks[index], labels[index] = pixels, region, label
            ops_applied = [{"op": "bmode", "dynamic_range_db": 40 + 10 * (lesion % 3)}]
            if variant:
                ops_applied.append({"op": "flip", "axis": "horizontal"})
            rows.append({"index": index, "sample_id": f"l{lesion}:{variant}",
                         "input_id": f"l{lesion}", "source_id": f"lesion{lesion:02d}",
                         "source_path": "/tiny", "reader": "test", "label": label,
                         "variant": variant, "chain": "test", "ops": json.dumps(ops_applied),
                         "seed": 1, "shard": index // SHARD, "has_mask": True,
                         "sha256": store.image_sha256(pixels)})
    for start in range(0, n, SHARD):
        stop = start + SHARD
        store.write_shard(path, start, images[start:stop], labels[start:stop], masks[start:stop])
    store.finalize(path, rows, [], n)
    return path


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    return make_tiny_store(tmp_path_factory.mktemp("jobs") / "tiny.zarr")


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """One CPU thread per process: on a shared 2-core machine two threads run slower."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.mark.parametrize("module", ["augengine.train.tasks", "augengine.train.loop",
                                    "augengine.train.distributed", "augengine.train.cli",
                                    "augengine.train.superres", "augengine.train.metrics",
                                    "augengine.train.plots"])
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{module}: no examples found"
    assert result.failed == 0, f"{module}: {result.failed} of {result.attempted} examples failed"


# --- losses, pseudo-labels, sources -------------------------------------------------------------

def test_dice_bce_loss_by_hand():
    masks = torch.zeros(2, 1, 4, 4)
    masks[0, :, :2, :] = 1  # 8 lesion pixels; sample 1 has none
    confident = dice_bce_loss(40 * (2 * masks - 1), masks, reduction="none")
    assert confident.tolist() == pytest.approx([0.0, 0.0], abs=1e-6), \
        f"a confident right prediction: expected loss 0, got {confident.tolist()}"
    unsure = dice_bce_loss(torch.zeros(2, 1, 4, 4), masks, reduction="none")
    # p = 1/2 everywhere: BCE = ln 2; Dice = (2 * 4 + 1) / (8 + 8 + 1) and (0 + 1) / (8 + 0 + 1)
    expected = [np.log(2) + 1 - 9 / 17, np.log(2) + 1 - 1 / 9]
    assert unsure.tolist() == pytest.approx(expected, rel=1e-6), \
        f"logits 0: expected {expected}, got {unsure.tolist()}"
    assert dice_bce_loss(torch.zeros(2, 1, 4, 4), masks).item() == pytest.approx(np.mean(expected))
    with pytest.raises(ConfigError, match="reduction must be 'mean' or 'none', got 'sum'"):
        dice_bce_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), reduction="sum")


def test_pseudo_label_kinds_are_seeded_and_balanced():
    kinds = np.array([pseudo_label_kind(5, 2, i) for i in range(3000)])
    assert np.array_equal(kinds, [pseudo_label_kind(5, 2, i) for i in range(3000)])
    shares = np.bincount(kinds, minlength=3) / kinds.size
    assert np.allclose(shares, 1 / 3, atol=0.03), f"kind shares {shares}, expected 1/3 each"
    assert not np.array_equal(kinds, [pseudo_label_kind(5, 3, i) for i in range(3000)]), \
        "epoch 3 drew the same kinds as epoch 2"


def test_degrade_uses_the_engine_ops():
    image = np.random.default_rng(0).integers(0, 256, (16, 16)).astype(np.uint8)
    assert degrade(image, 0, 20, 3.0) is image
    assert np.array_equal(degrade(image, 1, 20, 3.0), ops.jpeg(image, 20))
    assert np.array_equal(degrade(image, 2, 20, 3.0), ops.gaussian_blur(image, 3.0))
    with pytest.raises(ConfigError, match="quality kind must be 0, 1 or 2"):
        degrade(image, 3, 20, 3.0)


def test_pseudo_label_source_serves_degraded_images(tiny_store):
    plain = StoreSource(tiny_store, batch_size=8, train=False, output_size=SIZE)
    raw = plain.read_batch(0, 0)
    for kind in (None, 1, 2):
        source = PseudoLabelSource(tiny_store, batch_size=8, train=False, output_size=SIZE,
                                   kind=kind, jpeg_quality=20, blur_sigma=3.0)
        batch = source.read_batch(0, 0)
        expected = [kind if kind is not None else pseudo_label_kind(0, 0, int(i))
                    for i in raw["indices"]]
        assert batch["labels"].tolist() == expected, f"kind {kind}: labels {batch['labels']}"
        for k, label in enumerate(expected):
            assert np.array_equal(batch["images"][k, ..., 0],
                                  degrade(raw["images"][k, ..., 0], label, 20, 3.0)), \
                f"kind {kind}, sample {raw['indices'][k]}: image is not version {label}"


def test_training_source_continues_the_epoch_count(tiny_store):
    fresh = TrainingSource(tiny_store, batch_size=4, rank=0, world_size=2, output_size=SIZE)
    resumed = TrainingSource(tiny_store, batch_size=4, rank=0, world_size=2, output_size=SIZE,
                             first_epoch=3)
    assert resumed.num_batches(0) == fresh.num_batches(3)
    for name, values in fresh.read_batch(3, 1).items():
        assert np.array_equal(resumed.read_batch(0, 1)[name], values), \
            f"{name}: a source resumed at epoch 3 must serve epoch 3's batches first"


def test_rows_where_filters_by_op_parameter(tiny_store):
    manifest = store.open_store(tiny_store).manifest
    at_50 = rows_where(manifest, [("bmode.dynamic_range_db", "50")])
    assert np.flatnonzero(at_50).tolist() == [2, 3, 8, 9, 14, 15, 20, 21, 26, 27], \
        f"rows at 50 dB: {np.flatnonzero(at_50).tolist()} (lesions 1, 4, 7, 10, 13)"
    flipped_at_50 = rows_where(manifest, [("bmode.dynamic_range_db", 50),
                                          ("flip.axis", "horizontal")])
    assert np.flatnonzero(flipped_at_50).tolist() == [3, 9, 15, 21, 27]
    assert rows_where(manifest, []).all()
    with pytest.raises(ConfigError, match=r"^where: unknown manifest column 'bmode'; allowed: "
                                          r"index, .* \(or give op.param to match"):
        rows_where(manifest, [("bmode", 40)])


# --- configuration and command line -------------------------------------------------------------

@pytest.mark.parametrize("task, expected", [
    ("classifier", {"arch": "resnet50", "epochs": 20, "batch_size": 32, "optimizer": "sgd",
                    "lr": 1e-4, "momentum": 0.9, "patience": 7, "lr_schedule": True,
                    "augment": False}),
    ("segmenter", {"model": "unet", "epochs": 40, "batch_size": 4, "optimizer": "adadelta",
                   "lr": 1e-3, "patience": 0, "augment": True}),
    ("quality", {"arch": "resnet18", "epochs": 10, "batch_size": 16, "optimizer": "adam",
                 "lr": 1e-3, "augment": True}),
])
def test_recipe_defaults_from_the_seeds(task, expected):
    config = resolve_config(TrainConfig(task, "ds.zarr", "run"))
    found = {name: getattr(config, name) for name in expected}
    assert found == expected, f"{task} defaults {found}, expected {expected}"
    assert (config.image_size, config.fractions) == (224, (0.70, 0.15, 0.15))


@pytest.mark.parametrize("changes, message", [
    ({"task": "detector"},
     "task must be one of classifier, segmenter, quality, superres, got 'detector'"),
    ({"lr": -3.0}, "lr must be a finite number > 0, got -3.0"),
    ({"epochs": 0}, "epochs must be an integer >= 1, got 0"),
    ({"fractions": (0.8, 0.2, 0.0)}, "fractions must be 3 numbers"),
    ({"optimizer": "rmsprop"}, "optimizer must be one of sgd, adam, adadelta, got 'rmsprop'"),
    ({"image_size": 16}, "image_size must be an integer >= 32, got 16"),
    ({"task": "segmenter", "image_size": 40}, "multiple of 16 for unet with depth 4, got 40"),
    ({"task": "segmenter", "model": "dsa_unetpp", "image_size": 48}, "multiple of 32"),
    ({"task": "segmenter", "init_weights": "x.pth"}, "--init-weights needs --model dsa_unetpp"),
    ({"task": "segmenter", "model": "segnet", "depth": 3, "image_size": 36},
     "multiple of 8 for segnet with depth 3, got 36"),
    ({"task": "segmenter", "model": "segnet", "init_weights": "x.pth"},
     "the segnet has no pretrained encoder"),
    ({"task": "quality", "jpeg_quality": 99}, "--jpeg-quality must be an integer in 1..95"),
    ({"arch": "vgg19"}, "--arch must be one of resnet18, resnet50, got 'vgg19'"),
])
def test_bad_settings_are_refused_in_one_line(changes, message):
    config = dataclasses.replace(TrainConfig("classifier", "ds.zarr", "run"), **changes)
    with pytest.raises(ConfigError, match=message):
        resolve_config(config)


@pytest.mark.parametrize("argv", [
    ["classifier", "--data", "d.zarr", "--out", "o", "--arch", "resnet18", "--lr", "0.01",
     "--no-lr-schedule", "--fractions", "0.6", "0.2", "0.2", "--processes", "2"],
    ["segmenter", "--data", "d.zarr", "--out", "o", "--model", "dsa_unetpp", "--no-augment",
     "--train-where", "bmode.dynamic_range_db=40", "--test-where", "roi_crop.margin_mm=5",
     "--resume", "--debug-rank-hashes", "--backend", "ddp"],
    ["quality", "--data", "d.zarr", "--out", "o", "--blur-sigma", "2.5", "--loader", "torch",
     "--eval-all-variants", "--train-originals-only", "--image-size", "64"],
])
def test_a_rank_command_line_parses_back_to_the_same_settings(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    again = parser.parse_args([args.task, *config_argv(args)])
    assert config_from_args(again) == config_from_args(args), f"{argv} did not round-trip"
    assert (again.processes, again.backend) == (args.processes, args.backend)


def test_errors_end_as_one_line(tiny_store, tmp_path, capsys):
    code = main(["classifier", "--data", str(tmp_path / "missing.zarr"), "--out",
                 str(tmp_path / "run"), *TINY])
    error = capsys.readouterr().err.strip()
    assert code == 2 and error.count("\n") == 0 and "not an augengine store" in error, \
        f"exit {code}, stderr {error!r}: expected one line naming the store"
    code = main(["classifier", "--data", str(tiny_store), "--out", str(tmp_path / "run"),
                 "--resume", *TINY])
    assert code == 2 and "checkpoint not found (nothing to resume)" in capsys.readouterr().err
    code = main(["classifier", "--data", str(tiny_store), "--out", str(tmp_path / "run"),
                 "--test-where", "bmode.dynamic_range_db=99", *TINY])
    assert code == 2 and "no test rows left for the classifier: 2 sources in the split" in \
        capsys.readouterr().err, "a filter matching no test row must be named"


# --- single-process runs --------------------------------------------------------------------------

@pytest.mark.slow
def test_segmenter_smoke_run_writes_its_metrics(tiny_store, tmp_path):
    require_dali()
    out = tmp_path / "seg"
    code = main(["segmenter", "--data", str(tiny_store), "--out", str(out), "--image-size", "32",
                 "--base-channels", "4", "--depth", "2", "--epochs", "2", "--optimizer", "adam",
                 "--loader-threads", "1"])
    assert code == 0, "segmenter run failed"
    document = json.loads((out / "metrics.json").read_text())
    metrics = document["metrics"]
    assert 0 <= metrics["dice"] <= 1 and 0 <= metrics["iou"] <= metrics["dice"], \
        f"test dice {metrics['dice']}, iou {metrics['iou']}: expected 0 <= IoU <= Dice <= 1"
    assert metrics["n_samples"] == 2, "test split: 2 lesions, originals only -> 2 images"
    assert sorted(document["history"]) == ["lr", "train_dice", "train_iou", "train_loss",
                                           "val_dice", "val_iou", "val_loss"]
    assert (out / "curves.png").stat().st_size > 0 and (out / "report.md").exists()
    splits = json.loads((out / "splits.json").read_text())
    assert [len(splits[name]) for name in ("train", "val", "test")] == [12, 2, 2], \
        f"16 lesions split 70/15/15 by label: expected 12/2/2, got {splits}"


def test_segnet_trains_as_the_segmenter(tiny_store, tmp_path):
    out = tmp_path / "segnet"
    code = main(["segmenter", "--data", str(tiny_store), "--out", str(out), "--model", "segnet",
                 "--image-size", "32", "--base-channels", "4", "--depth", "2", "--epochs", "1",
                 "--optimizer", "adam", "--loader", "torch"])
    assert code == 0, "segnet run failed"
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["n_samples"] == 2 and 0 <= metrics["iou"] <= metrics["dice"] <= 1, \
        f"expected 2 test images and 0 <= IoU <= Dice <= 1, got {metrics}"
    weights = load_checkpoint(out / "checkpoint.pt")["model"]
    assert weights["head.weight"].shape == (1, 4, 1, 1) and "decoder.1.1.0.weight" in weights, \
        "the checkpoint must hold the SegNet (1x1 head on 4 channels, conv-BN-ReLU units)"


@pytest.mark.slow
def test_quality_smoke_run_writes_its_metrics(tiny_store, tmp_path):
    out = tmp_path / "quality"
    code = main(["quality", "--data", str(tiny_store), "--out", str(out), *TINY, "--epochs", "1",
                 "--loader", "torch"])
    assert code == 0, "quality run failed"
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["n_samples"] == 6, "2 test images x 3 versions (original, JPEG, blur)"
    assert metrics["mse"] > 0 and -1 <= metrics["lcc"] <= 1, f"mse/lcc {metrics}"
    assert sorted(metrics["mean_predicted_score"]) == ["blur", "jpeg", "original"]
    checkpoint = load_checkpoint(out / "checkpoint.pt")
    assert checkpoint["model"]["fc.weight"].shape == (1, 512), "ResNet-18 with one output"


@pytest.mark.slow
def test_a_run_directory_is_not_overwritten_nor_resumed_with_other_settings(tiny_store,
                                                                           tmp_path, capsys):
    out = tmp_path / "run"
    base = ["classifier", "--data", str(tiny_store), "--out", str(out), *TINY, "--epochs", "1",
            "--loader", "torch"]
    assert main(base) == 0
    capsys.readouterr()
    assert main(base) == 2 and "already holds checkpoint.pt; pass --resume" in \
        capsys.readouterr().err
    assert main([*base, "--resume", "--lr", "0.5"]) == 2
    assert "was trained with lr=0.0001, this run has lr=0.5" in capsys.readouterr().err
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    checkpoint["last_model"]["fc.bias"] += 1
    torch.save(checkpoint, out / "checkpoint.pt")
    with pytest.raises(InputError, match="do not match their recorded sha256"):
        load_checkpoint(out / "checkpoint.pt")


# --- two ranks, both backends ---------------------------------------------------------------------

def _rank_hashes(out: Path) -> list[str]:
    return [json.loads((out / f"rank{r}.json").read_text())["sha256"] for r in (0, 1)]


def _two_ranks(store_path: Path, out: Path, backend: str, epochs: int, *extra: str) -> None:
    code = main(["classifier", "--data", str(store_path), "--out", str(out), *TINY,
                 "--epochs", str(epochs), "--processes", "2", "--backend", backend,
                 "--debug-rank-hashes", *extra])
    assert code == 0, f"{backend}: 2-rank run (epochs {epochs}, {extra}) exited {code}"


@pytest.fixture(scope="module")
def two_rank_runs(tiny_store, tmp_path_factory):
    """Launched once per backend: the run directory and what each launch left behind."""
    runs = {}

    def run(backend: str) -> dict:
        if backend not in runs:
            out = tmp_path_factory.mktemp(backend) / "run"
            first_epochs = 1 if backend == "horovod" else 2
            _two_ranks(tiny_store, out, backend, first_epochs)
            first = {"hashes": _rank_hashes(out),
                     "checkpoint": load_checkpoint(out / "checkpoint.pt"),
                     "metrics": json.loads((out / "metrics.json").read_text())}
            _two_ranks(tiny_store, out, backend, first_epochs + 1, "--resume")
            runs[backend] = {"out": out, "first": first, "hashes": _rank_hashes(out),
                             "checkpoint": load_checkpoint(out / "checkpoint.pt")}
        return runs[backend]

    return run


def _require(backend: str) -> None:
    require_dali()
    if backend == "horovod":
        require_horovod()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["horovod", "ddp"])
def test_two_ranks_train_identically_and_write_the_report(backend, two_rank_runs):
    _require(backend)
    run = two_rank_runs(backend)
    first = run["first"]
    epochs = first["checkpoint"]["epoch"]
    assert first["hashes"][0] == first["hashes"][1] == first["checkpoint"]["sha256"], \
        f"{backend}: ranks {first['hashes']} and checkpoint {first['checkpoint']['sha256']} differ"
    metrics = first["metrics"]["metrics"]
    for name in ("accuracy", "precision", "recall", "specificity", "f1", "auc"):
        assert name in metrics, f"{backend}: metrics.json lacks {name}"
    assert metrics["n_samples"] == 2, "test: 2 lesions, originals only (flips left out)"
    assert metrics["training"]["world_size"] == 2 and metrics["training"]["backend"] == backend
    assert len(first["metrics"]["history"]["train_loss"]) == epochs
    for name in ("roc.png", "curves.png", "confusion_matrix.png", "report.md", "splits.json"):
        assert (run["out"] / name).stat().st_size > 0, f"{backend}: {name} missing or empty"


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["horovod", "ddp"])
def test_resume_continues_from_the_saved_epoch(backend, two_rank_runs):
    _require(backend)
    run = two_rank_runs(backend)
    before, after = run["first"]["checkpoint"], run["checkpoint"]
    assert after["epoch"] == before["epoch"] + 1, \
        f"{backend}: resumed to epoch {after['epoch']}, expected {before['epoch'] + 1}"
    for key, values in before["history"].items():
        assert after["history"][key][:before["epoch"]] == values, \
            f"{backend}: history {key} was rewritten on resume"
    assert run["hashes"][0] == run["hashes"][1] == after["sha256"], \
        f"{backend}: after resuming, ranks {run['hashes']} vs checkpoint {after['sha256']}"
    log = [json.loads(line) for line in (run["out"] / "log.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in log] == list(range(1, after["epoch"] + 1))


@pytest.mark.slow
def test_resumed_horovod_run_equals_an_uninterrupted_ddp_run(two_rank_runs):
    """Same data order, same sums of two gradients: resuming loses nothing, and Horovod's
    averaged gradients equal DDP's bit for bit."""
    _require("horovod")
    horovod, ddp = two_rank_runs("horovod"), two_rank_runs("ddp")
    assert horovod["checkpoint"]["epoch"] == ddp["first"]["checkpoint"]["epoch"] == 2
    assert horovod["checkpoint"]["sha256"] == ddp["first"]["checkpoint"]["sha256"], \
        "epoch 2 weights: Horovod (1 epoch + resume) differ from DDP (2 epochs in one go)"


@pytest.mark.slow
def test_jobs_entry_runs_horovod_ranks_on_ray(tiny_store, tmp_path):
    """``jobs/train.py --ray``: two Horovod ranks as Ray actors (horovod.ray.RayExecutor)."""
    _require("horovod")
    out = tmp_path / "ray"
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    done = subprocess.run([sys.executable, "jobs/train.py", "classifier", "--data",
                           str(tiny_store), "--out", str(out), *TINY, "--epochs", "1",
                           "--processes", "2", "--ray", "--debug-rank-hashes"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stderr[-3000:]}"
    hashes = _rank_hashes(out)
    assert hashes[0] == hashes[1] == load_checkpoint(out / "checkpoint.pt")["sha256"], \
        f"Ray ranks {hashes} differ"
    assert "1 epoch(s) run after 0 on 2 rank(s)" in done.stdout, done.stdout[-2000:]


@pytest.mark.slow
def test_a_trained_classifier_loads_as_an_lrp_network(two_rank_runs, tiny_store):
    """The checkpoint's best weights load into the project's plain ResNet, which LRP explains."""
    import zarr

    from augengine.explain import lrp
    from augengine.models import imagenet_normalize, load_weights, resnet18

    _require("ddp")
    run = two_rank_runs("ddp")
    model = load_weights(resnet18(num_classes=2), run["out"] / "checkpoint.pt").eval()
    images = zarr.open_group(tiny_store, mode="r")["images"][:2]
    x = imagenet_normalize(torch.from_numpy(images).float().div(255).unsqueeze(1))
    relevance = lrp(model, x, torch.tensor([0, 1]))
    assert relevance.shape == (2, 3, *images.shape[1:]) and torch.isfinite(relevance).all()
