"""EDSR and RDN (seed 004): output shapes per scale, the papers' parameter counts for one grey
channel, EDSR's residual scaling; the batched op that applies a trained one."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from augengine.errors import ConfigError, InputError
from augengine.models import edsr, edsr_small, rdn, rdn_small
from augengine.checksums import file_sha256
from augengine.models.superres import (
    NETWORKS,
    ResBlock,
    load_superres,
    super_resolve,
)


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("build", [edsr_small, rdn_small])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_output_is_scale_times_the_input(build, scale):
    out = build(scale)(torch.rand(2, 1, 9, 7))
    assert out.shape == (2, 1, 9 * scale, 7 * scale), \
        f"{build.__name__} x{scale}: expected (2, 1, {9 * scale}, {7 * scale}), got {out.shape}"


# Counted by hand from 9 F^2 + F per 3x3 conv (see the edsr/rdn docstrings); the papers give
# 43M for EDSR (x4) and 22M for RDN.
@pytest.mark.parametrize(("build", "scale", "expected"), [
    (edsr, 2, 40_720_385), (edsr, 3, 43_670_785), (edsr, 4, 43_080_705),
    (rdn, 2, 22_158_017), (rdn, 3, 22_342_657), (rdn, 4, 22_305_729)])
def test_full_models_have_the_papers_parameter_counts(build, scale, expected):
    count = _count(build(scale))
    assert count == expected, f"{build.__name__} x{scale}: expected {expected:,}, got {count:,}"
    paper = 43e6 if build is edsr else 22e6
    assert abs(count - paper) / paper < 0.07, \
        f"{build.__name__} x{scale}: {count:,} is not within 7 % of the paper's {paper:,.0f}"


def test_seed_defaults():
    model = edsr()
    blocks = [m for m in model.modules() if isinstance(m, ResBlock)]
    assert (model.scale, len(blocks), blocks[0].body[0].out_channels) == (3, 32, 256)
    assert all(block.res_scale == 0.1 for block in blocks)
    model = rdn()
    assert (model.scale, len(model.blocks), len(model.blocks[0].layers)) == (4, 16, 8)
    assert model.fuse[0].out_channels == 64 and model.blocks[0].fuse.out_channels == 64


def test_residual_scaling_is_applied():
    torch.manual_seed(0)
    block = ResBlock(4, res_scale=0.1)
    x = torch.randn(1, 4, 5, 5)
    expected = x + 0.1 * block.body(x)
    assert torch.allclose(block(x), expected), "ResBlock must return x + 0.1 body(x)"
    assert not torch.allclose(block(x), x + block.body(x)), "residual not scaled"


def test_bad_scale_and_input_are_refused():
    with pytest.raises(ConfigError, match="scale must be one of 2, 3, 4, got 5"):
        edsr_small(5)
    with pytest.raises(InputError, match=r"EDSR expects .*\(N, 1, h, w\)"):
        edsr_small(2)(torch.rand(1, 3, 8, 8))


def write_superres_checkpoint(path, model: str = "edsr_small", scale: int = 2, seed: int = 0):
    """A checkpoint with the keys ``augengine train superres`` writes that the op reads."""
    torch.manual_seed(seed)
    network = NETWORKS[model](scale=scale)
    torch.save({"task": "superres", "model": network.state_dict(),
                "config": {"model": model, "scale": scale}}, path)
    return path


def test_super_resolve_is_the_same_batched_or_one_by_one(tmp_path):
    path = write_superres_checkpoint(tmp_path / "checkpoint.pt")
    images = np.random.default_rng(0).integers(0, 256, (5, 12, 10)).astype(np.uint8)
    together = super_resolve(images, path, file_sha256(path), batch_size=2)
    alone = np.stack([super_resolve(image, path) for image in images])
    assert together.shape == (5, 24, 20) and together.dtype == np.uint8
    assert np.array_equal(together, alone), "batching must not change an image's result"


def test_super_resolve_refuses_another_file(tmp_path):
    path = write_superres_checkpoint(tmp_path / "checkpoint.pt")
    with pytest.raises(InputError, match=f"sha256 {file_sha256(path)} differs from the job's "
                                         f"{'0' * 64}"):
        load_superres(path, "0" * 64)
    torch.save({"task": "segmenter", "model": {}, "config": {}}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="not an augengine train superres checkpoint"):
        load_superres(tmp_path / "other.pt")


def test_a_job_must_pin_the_checkpoint_by_its_sha256():
    from augengine.pipeline import validate_op_params

    with pytest.raises(ValueError, match="sha256: String should match pattern"):
        validate_op_params("superres", {"checkpoint": "run/checkpoint.pt", "sha256": "abc"})
    with pytest.raises(ValueError, match="sha256: Field required"):
        validate_op_params("superres", {"checkpoint": "run/checkpoint.pt"})
    validate_op_params("superres", {"checkpoint": "run/checkpoint.pt", "sha256": "0" * 64})
