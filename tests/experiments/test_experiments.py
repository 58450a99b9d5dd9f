"""The experiments end to end on tiny data (the session's embedded Ray, the PyTorch loader, one
epoch at 32 px): the split discipline of style transfer, the header's counts, results.json and
the table, the figure, and the command line.

The augmentation run reads a BUSI folder (the image path: resize, SRAD at a given dynamic
range), the dynamic-range run an OASBUD-layout file (the RF path).
"""
from __future__ import annotations

import doctest
import json

import pytest

from augengine.errors import InputError
from augengine.experiments.augmentation import ARMS, check_training_only
from augengine.experiments.cli import main

TINY = ["--loader", "torch", "--set", "epochs=1", "--set", "batch_size=8", "--bootstrap", "20",
        "--fractions", "[0.5,0.25,0.25]"]


@pytest.mark.parametrize("name", ["augmentation", "cli", "common", "dynamic_range"])
def test_docstring_examples(name):
    import importlib

    module = importlib.import_module(f"augengine.experiments.{name}")
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0, \
        f"{name}: {result.failed} of {result.attempted} examples failed"


def test_a_style_input_from_a_test_lesion_is_refused():
    record = {"content": {"lesions": ["a", "b"]}, "style": {"lesions": ["a"]},
              "decoder_training": {"lesions": ["a", "c"]}}
    splits = {"train": ["a", "b"], "val": ["d"], "test": ["c"]}
    with pytest.raises(InputError, match="repeat1: decoder training lesion 'c' is in the test"):
        check_training_only(record, splits, "repeat1")
    record["decoder_training"]["lesions"] = ["a"]
    check_training_only(record, splits, "repeat1")  # all from the training split: accepted


def test_unknown_settings_are_one_line(tmp_path, capsys):
    assert main(["augmentation", "--out", str(tmp_path), "--set", "colour=red"]) == 2
    assert "train: Value error, 'colour' is not a training setting" in capsys.readouterr().err
    assert main(["augmentation", "--out", str(tmp_path), "--nst-set", "speed=9"]) == 2
    assert "'speed' is not a decoder setting" in capsys.readouterr().err
    # One home for the encoder: --nst-encoder-weights trains and styles with the same file.
    assert main(["augmentation", "--out", str(tmp_path), "--nst-set", "encoder_weights=x"]) == 2
    assert "'encoder_weights' is not a decoder setting" in capsys.readouterr().err


def test_the_augengine_command_has_the_experiment():
    from augengine.cli import build_parser

    args = build_parser().parse_args(["experiment", "dynamic-range", "--out", "o", "--data",
                                      "x.mat", "--repeats", "5", "--margins", "2", "5", "10"])
    assert (args.experiment, args.repeats, args.margins) == ("dynamic-range", 5, [2, 5, 10])


@pytest.mark.slow
def test_augmentation_styles_only_with_training_lesions(ray_session, busi_dir, tmp_path,
                                                        monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "aug"
    assert main(["augmentation", "--data", str(busi_dir), "--out", str(out), "--repeats", "2",
                 "--nst-set", "epochs=1", "--style-refs", "1", "--srad-iterations", "2",
                 *TINY]) == 0
    results = json.loads((out / "results.json").read_text())
    assert len(results["repeats"]) == 2, "one record per repeat"
    for r, record in enumerate(results["repeats"]):
        splits = json.loads((out / f"repeat{r}" / "splits.json").read_text())
        sources = json.loads((out / f"repeat{r}" / "style_sources.json").read_text())
        held_out = set(splits["val"]) | set(splits["test"])
        for role in ("content", "style", "decoder_training"):
            assert sources[role]["lesions"], f"repeat {r}: no {role} images recorded"
            leaked = set(sources[role]["lesions"]) & held_out
            assert not leaked, f"repeat {r}: {role} images from held-out lesions {leaked}"
        # 4 training lesions (2 per class, one image each) styled once each; the decoder trained
        # on exactly those 4 originals.
        assert len(sources["content"]["samples"]) == 4, sources["content"]
        assert set(sources["decoder_training"]["lesions"]) == set(splits["train"])
        assert record["train_images"] == {"NoAugmentation": 4, "Geometric": 20,
                                          "StyleTransfer": 8, "StyleTransfer+Geometric": 24}
        assert list(record["cells"]) == list(ARMS)
        for arm, row in record["cells"].items():
            # BUSI: one image per lesion; 2 test lesions, one per class
            assert (row["Test"]["lesions"], row["Test"]["images"]) == (2, 2), f"{arm}: {row}"
    assert results["repeats"][0]["split"] != results["repeats"][1]["split"] or \
        json.loads((out / "repeat0" / "splits.json").read_text()) != \
        json.loads((out / "repeat1" / "splits.json").read_text()), "each repeat splits anew"
    for arm in ARMS:
        cell = results["summary"][arm]["Test"]
        assert set(cell) == {"lesion_auc", "lesion_accuracy", "image_auc", "image_accuracy"}
        for metric, value in cell.items():
            assert set(value) == {"mean", "low", "high"}, f"{arm} {metric}: {value}"
            assert value["low"] <= value["high"], f"{arm} {metric}: {value}"
    table = (out / "table.md").read_text()
    assert table.startswith(f"Experiment 2 (seed 002 Table 2): {busi_dir.name} (reader busi): "
                            "8 lesions (4 benign, 4 malignant), 8 original images (4 benign, "
                            "4 malignant);"), table.splitlines()[0]
    assert "2 repeat(s)" in table and "2 test lesions per repeat" in table
    assert (out / "augmentation.png").stat().st_size > 10_000, "the figure is written"


@pytest.mark.slow
def test_dynamic_range_on_an_oasbud_file(ray_session, phantoms_8_8, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "dr"
    assert main(["dynamic-range", "--data", str(phantoms_8_8 / "phantoms.mat"), "--out",
                 str(out), "--repeats", "1", *TINY]) == 0
    results = json.loads((out / "results.json").read_text())
    record = results["repeats"][0]
    assert record["split"] == {"train": 4, "val": 2, "test": 2}, "8 lesions split 50/25/25"
    # 4 training lesions x 2 scans x one 5 mm margin, at one dynamic range or all three
    assert record["train_images"] == {"Train40dB": 8, "Train50dB": 8, "Train60dB": 8,
                                      "TrainALL": 24}
    for arm, row in record["cells"].items():
        assert list(row) == ["Test40dB", "Test50dB", "Test60dB"], f"{arm}: {list(row)}"
        for test, cell in row.items():
            assert (cell["lesions"], cell["images"]) == (2, 4), f"{arm}/{test}: {cell}"
    header = (out / "table.md").read_text().splitlines()[0]
    assert header.startswith("Experiment 1 (seed 001 Table I): phantoms.mat (reader oasbud): 8 "
                             "lesions (4 benign, 4 malignant), 48 original images (24 benign, "
                             "24 malignant); each frame at 40/50/60 dB x ROI margins 5 mm."), \
        header
    assert (out / "dynamic_range.png").is_file()
