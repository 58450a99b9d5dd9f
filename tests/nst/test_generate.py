"""Multi-reference feed-forward generation: AdaIN statistics of the Eq. 7-9 target, rows of K
references styled as one image each."""
# ruff: noqa: F811 - test arguments named after the imported fixtures

from __future__ import annotations

import numpy as np
import pytest
import torch

from augengine.errors import InputError
from augengine.nst.feedforward import align_statistics, feature_stats
from augengine.nst.generate import (
    generate,
    image_statistics,
    multi_reference_statistics,
    to_uint8,
    to_unit,
)

# Fixtures are taken from the feed-forward tests (pytest sees them through this import).
from tests.nst.test_feedforward import _collect, images, net  # noqa: F401

ROWS = np.array([[0, 1, 2], [1, 0, 2], [3, 4, 5], [5, 3, 4], [0, 2, 1]])


def test_one_reference_gives_its_plain_statistics():
    features = torch.randn(3, 1, 8, 5, 5)
    mean, std = multi_reference_statistics(features)
    plain_mean, plain_std = feature_stats(features[:, 0])
    assert torch.equal(mean, plain_mean) and torch.equal(std, plain_std), "K = 1: no change"


@pytest.mark.parametrize("k", [2, 4])
def test_target_statistics_approach_the_pooled_references(k):
    """H gives the target the references' pooled histogram: on 64 x 64 maps its moments are the
    pooled moments up to the binning, while the max alone is biased upwards."""
    generator = torch.Generator().manual_seed(k)
    # References with different levels and spreads per channel.
    refs = (torch.randn(1, k, 3, 64, 64, generator=generator)
            * torch.rand(1, k, 3, 1, 1, generator=generator) * 2
            + torch.randn(1, k, 3, 1, 1, generator=generator))
    mean, std = multi_reference_statistics(refs, eps=0.0)
    pooled = refs.transpose(1, 2).flatten(2)
    pooled_mean, pooled_std = pooled.mean(dim=2), pooled.std(dim=2, correction=0)
    spread = pooled.amax(dim=2) - pooled.amin(dim=2)
    assert torch.all((mean.flatten(1) - pooled_mean).abs() < spread / 256), (
        f"K={k}: target means {mean.flatten().tolist()} vs pooled {pooled_mean.flatten().tolist()}"
    )
    assert torch.all((std.flatten(1) - pooled_std).abs() < 0.01 * pooled_std), (
        f"K={k}: target stds {std.flatten().tolist()} vs pooled {pooled_std.flatten().tolist()}"
    )
    max_mean = refs.amax(dim=1).mean(dim=(2, 3))
    assert torch.all(max_mean > pooled_mean + 0.1), "the max alone would shift the mean up"


def _direct(net, images, rows):
    """One row at a time: AdaIN of the content to the target statistics of its references."""
    out = []
    with torch.no_grad():
        for content, *refs in rows:
            features = net.encode(to_unit(images[[content]]))
            target = multi_reference_statistics(net.encode(to_unit(images[refs])).unsqueeze(0),
                                                net.eps)
            aligned = align_statistics(features, *feature_stats(features, net.eps), *target)
            out.append(to_uint8(net.decode(aligned, (32, 32))))
    return np.concatenate(out)


def test_multi_reference_rows_equal_the_direct_computation(net, images):
    encoded = []
    hook = net.encoder.conv1.register_forward_hook(lambda m, i, o: encoded.append(o.shape[0]))
    try:
        out = _collect(generate(net, images, ROWS, batch_size=3, multi_reference=True), len(ROWS))
    finally:
        hook.remove()
    diff = np.abs(out.astype(int) - _direct(net, images, ROWS).astype(int))
    assert diff.max() <= 1, f"max difference {diff.max()} grey levels (batching only)"
    # Contents 0, 1, 3, 5 once; then each pair batch's distinct references: rows 0-2 use
    # 0, 1, 2, 4, 5 and rows 3-4 use 1, 2, 3, 4.
    assert sum(encoded) == 4 + 5 + 4, f"encoded {encoded}"


def test_cached_statistics_serve_the_content_side(net, images):
    statistics = image_statistics(net, images, batch_size=4)
    cached = _collect(generate(net, images, ROWS, batch_size=2, statistics=statistics,
                               multi_reference=True), len(ROWS))
    plain = _collect(generate(net, images, ROWS, batch_size=2, multi_reference=True), len(ROWS))
    assert np.abs(cached.astype(int) - plain.astype(int)).max() <= 1


def test_single_reference_rows_are_the_plain_pairs(net, images):
    pairs = ROWS[:, :2]
    assert np.array_equal(
        _collect(generate(net, images, pairs, batch_size=4, multi_reference=True), len(pairs)),
        _collect(generate(net, images, pairs, batch_size=4), len(pairs)),
    ), "multi_reference=True with K = 1 must give the plain pairs' images"


def test_reference_rows_need_the_multi_reference_flag(net, images):
    with pytest.raises(InputError, match=r"rows of K references need multi_reference=True"):
        generate(net, images, ROWS)
    with pytest.raises(InputError, match="outside"):
        generate(net, images, [[0, 1, 9]], multi_reference=True)
