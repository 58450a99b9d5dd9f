"""load_weights (local checkpoints only)."""
from __future__ import annotations

import pytest
import torch

from augengine.errors import InputError
from augengine.models import load_weights, resnet18, resnet50


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
