"""The one checkpoint format (augengine.train.checkpoint with models.weights.read_checkpoint):
atomic writes, the recorded sha256, refusal of foreign files in one line, resume checks."""
from __future__ import annotations

import doctest
import importlib
import json

import pytest
import torch

from augengine.errors import ConfigError, InputError
from augengine.models.weights import read_checkpoint, state_sha256
from augengine.train import checkpoint as ckpt


def _weights() -> dict[str, torch.Tensor]:
    return {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "n": torch.tensor(4)}


@pytest.mark.parametrize("module", ["augengine.train.checkpoint", "augengine.models.weights",
                                    "augengine.train.nst_decoder"])
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{module}: no examples found"
    assert result.failed == 0, f"{module}: {result.failed} of {result.attempted} examples failed"


def test_save_records_the_weights_sha256_and_reads_back(tmp_path):
    path = tmp_path / ckpt.CHECKPOINT
    ckpt.save_checkpoint(path, {"model": _weights(), "epoch": 2}, weights="model")
    loaded = read_checkpoint(path, keys=("model", "epoch"), weights="model")
    assert loaded["epoch"] == 2 and loaded["sha256"] == state_sha256(_weights()), loaded
    assert sorted(p.name for p in tmp_path.iterdir()) == [ckpt.CHECKPOINT], \
        "a finished save leaves no .partial file"


def test_a_failed_save_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / ckpt.CHECKPOINT
    ckpt.save_checkpoint(path, {"model": _weights(), "epoch": 1}, weights="model")
    before = path.read_bytes()

    def crash(obj, target):
        with open(target, "wb") as f:
            f.write(b"half a checkpoi")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="No space left"):
        ckpt.save_checkpoint(path, {"model": _weights(), "epoch": 2}, weights="model")
    assert path.read_bytes() == before, "the epoch-1 checkpoint was damaged by a failed save"


def test_a_mismatched_key_set_is_refused_in_one_line(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"state_dict": _weights(), "epoch": 1}, path)
    with pytest.raises(InputError) as error:
        read_checkpoint(path, keys=("decoder", "optimizer", "epoch"), weights="decoder",
                        kind="an NST training")
    message = str(error.value)
    assert message == (f"{path}: not an NST training checkpoint (needs keys decoder, optimizer, "
                       "epoch, sha256)"), message
    assert "\n" not in message


def test_changed_weights_are_refused(tmp_path):
    path = tmp_path / ckpt.CHECKPOINT
    ckpt.save_checkpoint(path, {"decoder": _weights()}, weights="decoder")
    saved = torch.load(path, weights_only=True)
    saved["decoder"]["w"][0, 0] += 1
    torch.save(saved, path)
    with pytest.raises(InputError, match="decoder weights do not match their recorded sha256"):
        read_checkpoint(path, weights="decoder")


def test_pickled_code_is_not_run(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    path = tmp_path / "evil.pt"
    torch.save({"model": Payload()}, path)
    with pytest.raises(InputError, match="evil.pt: not a readable PyTorch checkpoint"):
        read_checkpoint(path, keys=("model",))


def test_resume_allows_only_the_resumable_settings():
    saved = {"lr": 0.1, "epochs": 3, "seed": 0}
    ckpt.check_resumable(saved, {**saved, "epochs": 5}, ("epochs",), "run/c.pt", "hint")
    with pytest.raises(ConfigError) as error:
        ckpt.check_resumable(saved, {**saved, "seed": 1, "lr": 0.2}, ("epochs",), "run/c.pt",
                             "use another out_dir")
    assert str(error.value) == ("run/c.pt: was trained with lr=0.1, this run has lr=0.2; "
                                "use another out_dir"), "the first differing setting, by name"
    with pytest.raises(ConfigError, match="was trained with beta=None, this run has beta=2"):
        ckpt.check_resumable(saved, {**saved, "beta": 2}, ("epochs",), "c.pt", "hint")


def test_append_log_adds_one_line_per_record(tmp_path):
    ckpt.append_log(tmp_path, {"epoch": 1, "loss": 0.5})
    ckpt.append_log(tmp_path, {"epoch": 2, "loss": 0.25})
    lines = (tmp_path / ckpt.LOG).read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2], lines


def test_cpu_state_is_a_copy():
    layer = torch.nn.Linear(2, 1)
    state = ckpt.cpu_state(layer)
    with torch.no_grad():
        layer.weight.add_(1)
    assert not torch.equal(state["weight"], layer.weight), "cpu_state shares the live weights"
