"""Style transfer on the device: the decoder's precision policy (bf16 and channels-last with a
float32 last convolution) and the DLPack hand-off of styled images to CuPy chains, both checked on
a CPU (bf16 autocast runs there; CuPy is the emulator, tests/cuda_emulator). A GPU run is still
the only proof of speed, of bf16 on cuDNN and of the zero-copy sharing."""
from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from augengine.config import parse_job
from augengine.models import resnet18
from augengine.nst import StyleNet, plan_pairs
from augengine.nst.generate import generate
from augengine.plan import make_plan
from augengine.nst.stage import StyleTransferInputs
from augengine.runner import build_shard
from tests import cuda_emulator
from tests.test_runner_nst import nst_job, trained  # noqa: F401


def _net() -> StyleNet:
    torch.manual_seed(0)
    return StyleNet(resnet18(), layer="layer2").eval()


def _grey_levels(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(int) - b.astype(int))


def test_decoder_keeps_its_last_convolution_and_output_in_float32_under_bf16_autocast():
    net = _net()
    convs = [m for m in net.decoder.modules() if isinstance(m, torch.nn.Conv2d)]
    dtypes = []
    for conv in convs:
        conv.register_forward_hook(lambda _module, _args, out: dtypes.append(out.dtype))
    features = net.encode(torch.rand(2, 1, 32, 32))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = net.decode(features)
    assert dtypes[:-1] == [torch.bfloat16] * (len(convs) - 1), f"hidden stages: {dtypes}"
    assert dtypes[-1] == out.dtype == torch.float32, f"last conv {dtypes[-1]}, out {out.dtype}"


def test_bf16_channels_last_generation_stays_near_float32():
    """Measured bound on a small untrained decoder: bf16 hidden stages move some pixels by one
    grey level and a few by two (docs/nst.md, "Precision")."""
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32), dtype=np.uint8)
    pairs = plan_pairs([0, 0, 1, 1])
    exact = np.concatenate([b for _, b in generate(_net(), images, pairs, batch_size=4)])
    fast = np.concatenate([b for _, b in generate(_net(), images, pairs, batch_size=4,
                                                  dtype=torch.bfloat16, channels_last=True)])
    levels = _grey_levels(exact, fast)
    assert levels.any(), "bf16 changed nothing: the decoder did not run in bf16"
    assert levels.max() <= 2 and np.mean(levels >= 2) < 0.005, (
        f"up to {levels.max()} grey levels, {np.mean(levels >= 2):.2%} of pixels by 2 or more")


def _actor(job, shard: int):
    config = parse_job(job)
    plan = make_plan(config)
    items = [plan.work_item(i) for i in plan.shard_indices(shard)]
    return StyleTransferInputs(plan.refs, config.nst, "cpu", config.seed), items, plan


@pytest.mark.slow
def test_the_actor_styles_with_the_jobs_precision(trained, tmp_path, monkeypatch):  # noqa: F811
    """``precision: auto`` takes the GPU policy (forced here on the CPU), ``fp32`` does not."""
    source, checkpoint, _ = trained

    def policy(precision, device):
        return (torch.bfloat16, True) if precision == "auto" else (None, False)

    # The module, not the function ``augengine.nst.generate`` that the package exports.
    monkeypatch.setattr(importlib.import_module("augengine.nst.generate"), "decoder_precision",
                        policy)
    styled = {}
    for precision in ("fp32", "auto"):
        job = nst_job(source, checkpoint, tmp_path / "out.zarr", steps=[])
        job["nst"].update(precision=precision, quality_checks=0.0)
        inputs, items, _ = _actor(job, shard=0)
        inputs.prepare(items)
        styled[precision] = np.stack([inputs.styled[key] for key in sorted(inputs.styled)])
    levels = _grey_levels(styled["fp32"], styled["auto"])
    assert levels.any(), "precision: auto styled in float32"
    assert levels.max() <= 2, f"bf16 moved pixels by {levels.max()} grey levels"


@pytest.mark.slow
def test_styled_images_reach_cupy_chains_through_dlpack(trained, tmp_path):  # noqa: F811
    """With the styled images on the device (a CPU tensor stands for the GPU one), ``load``
    hands the chain a CuPy array made by ``cupy.from_dlpack``, and the shard comes out as on
    the CPU path: quality checks (stacked from tensors) and SRAD on the emulated kernels."""
    source, checkpoint, _ = trained
    job = nst_job(source, checkpoint, tmp_path / "out.zarr")
    cpu_inputs, items, plan = _actor(job, shard=1)
    cpu_inputs.prepare(items)
    cpu = build_shard(items, plan.chains, plan.config.seed, (32, 32), 5, "cpu", cpu_inputs.load)
    inputs, _, _ = _actor(job, shard=1)
    inputs.on_device = True
    inputs.prepare(items)
    assert all(isinstance(image, torch.Tensor) for image in inputs.styled.values())
    with cuda_emulator.emulated_cupy() as cupy:
        frame, _ = inputs.load(items[0])
        assert isinstance(frame.data, cupy.ndarray) and frame.data.dtype == np.uint8
        device = build_shard(items, plan.chains, plan.config.seed, (32, 32), 5, "cuda",
                             inputs.load)
    assert cpu[4] == [] == device[4]
    for cpu_row, device_row in zip(cpu[3], device[3], strict=True):
        assert device_row["ops"] == cpu_row["ops"], f"sample {cpu_row['index']}"
    slots = {row["sample_id"]: slot for slot, row in enumerate(cpu[3])}
    for sample_id, slot in slots.items():
        levels = _grey_levels(cpu[0][slot], device[0][slot])
        tolerance = 0 if sample_id.endswith(":0") else 1  # variant 1: SRAD, kernel vs NumPy
        assert levels.max() <= tolerance, f"{sample_id}: {levels.max()} grey levels apart"
