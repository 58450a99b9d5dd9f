"""Training loaders: DALI and the PyTorch baseline read, shard, order and augment the same way.

A tiny store (22 slots of 32x32, shards of 4, slots 5 and 13 quarantined) whose every image is a
bright rectangle exactly where its mask is 1, so alignment after augmentation is checkable.
DALI tests FAIL when DALI is missing, unless AUGENGINE_SKIP_DALI=1.
"""
from __future__ import annotations

import functools
import pickle

import numpy as np
import pytest
import torch
import zarr

from augengine import store
from augengine.errors import ConfigError, InputError
from augengine.train.augment import (
    GeometryRange,
    geometry_matrix,
    identity_geometry,
    normalization_stats,
    sample_geometry,
    sample_rng,
    warp_affine,
)
from augengine.train.loader import (
    DaliLoader,
    StoreSource,
    dali_pipeline,
    group_by_shard,
    make_dali_loader,
    make_torch_loader,
    rank_epoch_order,
    split_indices,
)
from tests.conftest import require_dali

N, SHARD, SIZE = 22, 4, 32
QUARANTINED = (5, 13)
VALID = np.array([i for i in range(N) if i not in QUARANTINED])
DARK, BRIGHT = 30, 200
D4_ONLY = GeometryRange(max_rotation_deg=0, scale_range=(1, 1), max_translate=0)


def label_of(index):
    return (index // 2) % 3  # two samples per source, one label per source


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("loader") / "ds.zarr"
    rng = np.random.default_rng(7)
    store.create_store(path, N, (SIZE, SIZE), SHARD, True, "hash", {"name": "loader-test"})
    rows, quarantined = [], []
    for start in range(0, N, SHARD):
        stop = min(start + SHARD, N)
        masks = np.zeros((stop - start, SIZE, SIZE), np.uint8)
        for k in range(stop - start):
            y0, x0 = rng.integers(3, 14, 2)
            h, w = rng.integers(7, 15, 2)
            masks[k, y0:y0 + h, x0:x0 + w] = 1
        images = (DARK + (BRIGHT - DARK) * masks).astype(np.uint8)
        labels = np.array([label_of(i) for i in range(start, stop)], np.int8)
        store.write_shard(path, start, images, labels, masks)
        for k, index in enumerate(range(start, stop)):
            if index in QUARANTINED:
                quarantined.append({"index": index, "input_id": f"in{index}", "source_path": "/x",
                                    "variant": 0, "shard": index // SHARD, "reason": "test"})
                continue
            rows.append({"index": index, "sample_id": f"in{index}:0", "input_id": f"in{index}",
                         "source_id": f"lesion{index // 2}", "source_path": "/x",
                         "reader": "busi", "label": int(labels[k]), "variant": 0,
                         "chain": "identity", "ops": "[]", "seed": 1, "shard": index // SHARD,
                         "has_mask": True, "sha256": store.image_sha256(images[k])})
    store.finalize(path, rows, quarantined, N)
    return path


@pytest.fixture(scope="module")
def stored(tiny_store):
    group = zarr.open_group(tiny_store, mode="r")
    return group["images"][:], group["masks"][:]


@pytest.fixture(params=["dali", "torch"])
def make_loader(request):
    """Either loader with test defaults (32 px output, no worker processes, one thread)."""
    if request.param == "dali":
        require_dali()
        return functools.partial(make_dali_loader, output_size=SIZE, py_num_workers=0,
                                 num_threads=1)
    return functools.partial(make_torch_loader, output_size=SIZE, num_workers=0)


def run_epoch(loader):
    batches = list(loader)
    return {name: torch.cat([b[name] for b in batches]) for name in batches[0]}, batches


def grey_levels(images, channels=3):
    """Undo the normalisation: network input -> grey levels 0..255 (channel 0)."""
    mean, std = normalization_stats(channels)
    return (images[:, 0] * std[0] + mean[0]) * 255


# --- order and sharding (pure) ------------------------------------------------------------------

def test_group_by_shard_skips_quarantined_slots():
    groups = group_by_shard(VALID, SHARD)
    assert [g.tolist() for g in groups[:2]] == [[0, 1, 2, 3], [4, 6, 7]], \
        "shard 1 must hold 4, 6, 7 (slot 5 is quarantined)"
    assert len(groups) == 6 and sum(map(len, groups)) == 20


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_rank_orders_partition_the_subset_when_not_evened(world_size):
    groups = group_by_shard(VALID, SHARD)
    for epoch in range(3):
        orders = [rank_epoch_order(groups, 5, epoch, r, world_size, even_ranks=False)
                  for r in range(world_size)]
        served = np.concatenate(orders)
        assert len(served) == len(set(served.tolist())) == 20, \
            f"epoch {epoch}: each of the 20 valid samples exactly once, got {len(served)}"
        assert set(served.tolist()) == set(VALID.tolist())
        for order in orders:  # whole shards per rank
            shards = set((order // SHARD).tolist())
            assert set(order.tolist()) == set(np.concatenate([groups[s] for s in range(6)
                                                              if s in shards]).tolist())


def test_even_ranks_drop_to_the_smallest_share():
    groups = group_by_shard(VALID, SHARD)
    for epoch in range(4):
        full = [rank_epoch_order(groups, 5, epoch, r, 2, even_ranks=False) for r in range(2)]
        even = [rank_epoch_order(groups, 5, epoch, r, 2) for r in range(2)]
        smallest = min(len(o) for o in full)
        assert [len(o) for o in even] == [smallest, smallest], \
            f"epoch {epoch}: both ranks serve {smallest} samples, got {[len(o) for o in even]}"
        for rank in range(2):  # a prefix of the full order: the tail is what is dropped
            assert np.array_equal(even[rank], full[rank][:smallest])
        assert not set(even[0].tolist()) & set(even[1].tolist()), "ranks must be disjoint"


def test_shard_order_changes_per_epoch_and_is_deterministic_per_seed():
    groups = group_by_shard(VALID, SHARD)

    def shard_sequence(seed, epoch):
        order = rank_epoch_order(groups, seed, epoch, 0, 1, buffer_shards=1)
        shards = order // SHARD
        return shards[np.r_[True, shards[1:] != shards[:-1]]].tolist()

    first = shard_sequence(3, 0)
    assert sorted(first) == list(range(6)), f"one contiguous run per shard, got {first}"
    assert shard_sequence(3, 0) == first, "same seed and epoch must give the same order"
    assert shard_sequence(3, 1) != first, "the shard order must change between epochs"
    assert shard_sequence(4, 0) != first, "another seed must give another order"
    eval_order = rank_epoch_order(groups, 3, 0, 0, 1, shuffle=False)
    assert eval_order.tolist() == VALID.tolist(), "no shuffle: store order"


def test_in_buffer_shuffle_stays_within_its_buffer():
    groups = group_by_shard(VALID, SHARD)
    order = rank_epoch_order(groups, 9, 0, 0, 1, buffer_shards=2)
    shards = order // SHARD
    position = 0
    shard_order = np.random.default_rng((9, 0)).permutation(6)
    for buffer in range(3):
        members = set(shard_order[2 * buffer:2 * buffer + 2].tolist())
        size = sum(len(groups[s]) for s in members)
        chunk = shards[position:position + size]
        assert set(chunk.tolist()) == members, \
            f"buffer {buffer} must hold exactly shards {members}, got {set(chunk.tolist())}"
        assert not np.array_equal(order[position:position + size],
                                  np.sort(order[position:position + size])), \
            f"buffer {buffer} is not shuffled"
        position += size
    assert position == 20


def test_more_ranks_than_shards_is_refused(tiny_store):
    with pytest.raises(ConfigError, match="world_size 7 exceeds the 6 store shards"):
        StoreSource(tiny_store, world_size=7, rank=0)


# --- StoreSource --------------------------------------------------------------------------------

def test_quarantined_or_repeated_indices_are_refused(tiny_store):
    with pytest.raises(InputError, match="not samples of the manifest.*e.g. 5"):
        StoreSource(tiny_store, indices=[0, 5, 6])
    with pytest.raises(InputError, match="sample index 6 is given more than once"):
        StoreSource(tiny_store, indices=[6, 6])
    with pytest.raises(InputError, match="no samples to serve"):
        StoreSource(tiny_store, indices=[])


def test_source_reads_each_shard_once_with_one_slice(tiny_store):
    source = StoreSource(tiny_store, batch_size=3, seed=1, buffer_shards=2)
    reads = []

    class Recorder:  # the Zarr group, recording every slice asked of its arrays
        def __init__(self, group):
            self.group = group

        def __getitem__(self, name):
            array = self.group[name]

            class Array:
                def __getitem__(self, key):
                    reads.append((name, key))
                    return array[key]
            return Array()

    source._group = Recorder(zarr.open_group(tiny_store, mode="r"))
    for iteration in range(source.num_batches(0)):
        source.read_batch(0, iteration)
    image_reads = sorted((k.start, k.stop) for name, k in reads if name == "images")
    assert image_reads == [(0, 4), (4, 8), (8, 12), (12, 16), (16, 20), (20, 22)], \
        f"each of the 6 shards read once as one whole slice, got {image_reads}"


def test_source_batch_contents(tiny_store, stored):
    images, masks = stored
    source = StoreSource(tiny_store, batch_size=8, with_masks=True, train=False, output_size=16)
    batch = source.read_batch(0, 1)
    assert batch["indices"].tolist() == [9, 10, 11, 12, 14, 15, 16, 17]
    assert batch["images"].shape == (8, SIZE, SIZE, 1) and batch["images"].dtype == np.uint8
    assert np.array_equal(batch["images"][..., 0], images[batch["indices"]])
    assert np.array_equal(batch["masks"][..., 0], masks[batch["indices"]])
    assert batch["labels"].tolist() == [label_of(i) for i in batch["indices"]]
    assert np.allclose(batch["matrices"][0], [[2, 0, 0], [0, 2, 0]]), \
        "eval: only the 32 -> 16 resize (x_in = 2 x_out)"
    same_size = StoreSource(tiny_store, batch_size=8, train=False, output_size=SIZE)
    assert "matrices" not in same_size.read_batch(0, 0), "eval at the stored size: no warp"
    assert source.read_batch(0, 3) is None, "20 samples / 8 = 3 batches"
    clone = pickle.loads(pickle.dumps(source))
    assert np.array_equal(clone.read_batch(0, 1)["images"], batch["images"])


def test_split_indices(tiny_store):
    splits = {"train": [f"lesion{s}" for s in range(8)], "val": ["lesion8", "lesion9"],
              "test": ["lesion10"]}
    assert split_indices(tiny_store, splits, "val").tolist() == [16, 17, 18, 19]
    assert split_indices(tiny_store, splits, "test").tolist() == [20, 21]
    train = split_indices(tiny_store, splits, "train")
    assert 5 not in train and 13 not in train and len(train) == 14


def test_masks_requested_from_a_store_without_masks(tmp_path):
    path = tmp_path / "nomask.zarr"
    store.create_store(path, 2, (8, 8), 2, False, "h", {})
    image = np.zeros((2, 8, 8), np.uint8)
    store.write_shard(path, 0, image, np.zeros(2, np.int8), None)
    rows = [{"index": i, "sample_id": f"a{i}", "input_id": f"a{i}", "source_id": f"a{i}",
             "source_path": "/x", "reader": "busi", "label": 0, "variant": 0, "chain": "",
             "ops": "[]", "seed": 0, "shard": 0, "has_mask": False,
             "sha256": store.image_sha256(image[i])} for i in range(2)]
    store.finalize(path, rows, [], 2)
    with pytest.raises(InputError, match="has no masks/ array"):
        StoreSource(path, with_masks=True)


# --- augmentation (torch executor and matrices) -------------------------------------------------

def apply_d4(array, params):
    """The exact D4 part of ``params`` with NumPy: flips, then quarter turns."""
    if params["flip_horizontal"]:
        array = np.flip(array, axis=-1)
    if params["flip_vertical"]:
        array = np.flip(array, axis=-2)
    return np.rot90(array, params["rot90_k"], axes=(-2, -1))


@pytest.mark.parametrize("k", [0, 1, 2, 3])
@pytest.mark.parametrize("flips", [(False, False), (True, False), (False, True)])
def test_matrix_warp_equals_numpy_flip_rot90(k, flips, rng):
    image = rng.integers(0, 256, (1, 1, 6, 6)).astype(np.float32)
    params = dict(identity_geometry(), rot90_k=k, flip_horizontal=flips[0],
                  flip_vertical=flips[1])
    matrix = torch.from_numpy(geometry_matrix(params, (6, 6), (6, 6)))[None]
    for mode in ("bilinear", "nearest"):
        out = warp_affine(torch.from_numpy(image), matrix, (6, 6), mode).numpy()
        assert np.allclose(out, apply_d4(image, params), atol=1e-4), \
            f"k={k} flips={flips} {mode}: warp must equal np.rot90(np.flip(...)) exactly"


def test_matrix_resize_and_shift():
    scale_only = geometry_matrix(identity_geometry(), (64, 32), (16, 16))
    assert np.allclose(scale_only, [[2, 0, 0], [0, 4, 0]]), "x_in = 2 x_out, y_in = 4 y_out"
    shifted = dict(identity_geometry(), translate_x=0.25)
    assert np.allclose(geometry_matrix(shifted, (8, 8), (8, 8)), [[1, 0, -2], [0, 1, 0]]), \
        "a shift of +0.25 * 8 px moves content right by 2: x_in = x_out - 2"
    turned = dict(identity_geometry(), angle_deg=90.0)
    assert np.allclose(geometry_matrix(turned, (8, 8), (8, 8)),
                       geometry_matrix(dict(identity_geometry(), rot90_k=1), (8, 8), (8, 8)),
                       atol=1e-6), "a 90 degree rotation is one counter-clockwise quarter turn"


def test_sampled_geometry_is_seeded_and_in_range():
    ranges = GeometryRange(max_rotation_deg=10, scale_range=(0.9, 1.1), max_translate=0.1)
    draws = [sample_geometry(sample_rng(1, 0, i), ranges) for i in range(200)]
    assert draws[17] == sample_geometry(sample_rng(1, 0, 17), ranges)
    assert draws[17] != sample_geometry(sample_rng(1, 1, 17), ranges), "epoch changes the draw"
    assert all(abs(d["angle_deg"]) <= 10 and 0.9 <= d["scale"] <= 1.1
               and abs(d["translate_x"]) <= 0.1 for d in draws)
    assert {d["rot90_k"] for d in draws} == {0, 1, 2, 3}
    assert 0.35 < np.mean([d["flip_horizontal"] for d in draws]) < 0.65


@pytest.mark.parametrize("bad, match", [
    ({"scale_range": (0, 1)}, "scale_range"),
    ({"max_rotation_deg": -1}, "max_rotation_deg"),
    ({"max_translate": 1.5}, "max_translate"),
])
def test_bad_geometry_ranges(bad, match):
    with pytest.raises(ConfigError, match=match):
        GeometryRange(**bad)


def test_bad_loader_arguments(tiny_store):
    with pytest.raises(ConfigError, match="rank must be an integer >= 0 and < 2, got 2"):
        make_torch_loader(tiny_store, rank=2, world_size=2)
    with pytest.raises(ConfigError, match="channels must be 1 or 3"):
        make_torch_loader(tiny_store, channels=2)
    with pytest.raises(ConfigError, match="batch_size must be an integer >= 1"):
        make_torch_loader(tiny_store, batch_size=0)


# --- both loaders -------------------------------------------------------------------------------

@pytest.mark.parametrize("channels", [1, 3])
def test_batch_shapes_dtypes_and_labels(make_loader, tiny_store, channels):
    loader = make_loader(tiny_store, batch_size=8, with_masks=True, channels=channels, seed=2)
    assert len(loader) == 3, "20 samples in batches of 8"
    epoch, batches = run_epoch(loader)
    assert [len(b["labels"]) for b in batches] == [8, 8, 4], "last batch partial"
    first = batches[0]
    assert first["images"].shape == (8, channels, SIZE, SIZE)
    assert first["images"].dtype == torch.float32
    assert first["masks"].shape == (8, 1, SIZE, SIZE) and first["masks"].dtype == torch.uint8
    assert first["labels"].dtype == torch.int64 and first["indices"].dtype == torch.int64
    expected = [label_of(i) for i in epoch["indices"].tolist()]
    assert epoch["labels"].tolist() == expected, "labels must follow the served indices"
    if channels == 3:
        mean, std = normalization_stats(3)
        greys = [(first["images"][:, c] * std[c] + mean[c]) * 255 for c in range(3)]
        for c in (1, 2):
            assert torch.allclose(greys[0], greys[c], atol=1e-3), \
                f"channel {c} must hold the same grey levels as channel 0 (grey -> RGB)"


@pytest.mark.parametrize("even_ranks", [False, True])
def test_ranks_get_disjoint_shares_each_sample_once(make_loader, tiny_store, even_ranks):
    loaders = [make_loader(tiny_store, batch_size=4, rank=r, world_size=2, seed=11,
                           even_ranks=even_ranks) for r in range(2)]
    for epoch in range(2):
        served = [run_epoch(loader)[0]["indices"].numpy() for loader in loaders]
        for rank, indices in enumerate(served):
            share = rank_epoch_order(group_by_shard(VALID, SHARD), 11, epoch, rank, 2,
                                     even_ranks=even_ranks)
            assert sorted(indices.tolist()) == sorted(share.tolist()), \
                f"epoch {epoch} rank {rank}: each sample of its share exactly once"
            assert len(set(indices.tolist())) == len(indices)
        assert not set(served[0].tolist()) & set(served[1].tolist()), \
            f"epoch {epoch}: ranks must be disjoint"
        union = set(served[0].tolist()) | set(served[1].tolist())
        assert union <= set(VALID.tolist()), "quarantined slots 5, 13 must never be served"
        if even_ranks:
            assert len(served[0]) == len(served[1]), f"epoch {epoch}: ranks in lockstep"
        else:
            assert union == set(VALID.tolist()), f"epoch {epoch}: ranks cover all 20 samples"


def test_same_seed_same_stream_other_epoch_other_order(make_loader, tiny_store):
    runs = [make_loader(tiny_store, batch_size=5, seed=4, buffer_shards=1) for _ in range(2)]
    epochs_a = [run_epoch(runs[0])[0] for _ in range(2)]
    epoch0_b = run_epoch(runs[1])[0]
    assert torch.equal(epochs_a[0]["indices"], epoch0_b["indices"]), "same seed, same order"
    assert torch.equal(epochs_a[0]["images"], epoch0_b["images"]), "same seed, same pixels"
    assert not torch.equal(epochs_a[0]["indices"], epochs_a[1]["indices"]), \
        "epoch 1 must be served in another order"


def test_masks_stay_aligned_after_augmentation(make_loader, tiny_store):
    loader = make_loader(tiny_store, batch_size=10, with_masks=True, seed=3,
                         geometry=GeometryRange(max_rotation_deg=10, scale_range=(0.9, 1.1),
                                                max_translate=0.1))
    epoch, _ = run_epoch(loader)
    grey = grey_levels(epoch["images"])
    masks = epoch["masks"][:, 0].bool()
    for index, image, mask in zip(epoch["indices"].tolist(), grey, masks):
        bright = image > (DARK + BRIGHT) / 2
        agreement = (bright == mask).float().mean().item()
        assert agreement >= 0.95, \
            f"sample {index}: mask must cover the bright region, agreement {agreement:.3f} < 0.95"
        assert image[mask].mean() > 150, f"sample {index}: pixels under the mask must be bright"


def test_flip_rot90_exact_for_images_and_masks(make_loader, tiny_store, stored):
    images, masks = stored
    loader = make_loader(tiny_store, batch_size=20, with_masks=True, seed=8, geometry=D4_ONLY)
    epoch, _ = run_epoch(loader)
    grey = grey_levels(epoch["images"]).round()
    for row, index in enumerate(epoch["indices"].tolist()):
        params = sample_geometry(sample_rng(8, 0, index), D4_ONLY)
        expected_mask = apply_d4(masks[index], params)
        assert np.array_equal(epoch["masks"][row, 0].numpy(), expected_mask), \
            f"sample {index}: mask must be np.rot90(flip(mask), {params['rot90_k']})"
        assert np.array_equal(grey[row].numpy(), apply_d4(images[index], params)), \
            f"sample {index}: image must get the same flip/rot90 as its mask"


def test_eval_is_deterministic_and_unaugmented(make_loader, tiny_store, stored):
    images, masks = stored
    loader = make_loader(tiny_store, batch_size=6, with_masks=True, train=False, channels=1)
    first, second = run_epoch(loader)[0], run_epoch(loader)[0]
    assert first["indices"].tolist() == VALID.tolist(), "eval: every valid sample in store order"
    assert torch.equal(first["images"], second["images"]), "eval must not change between epochs"
    grey = grey_levels(first["images"], channels=1)
    assert torch.allclose(grey, torch.from_numpy(images[VALID]).float(), atol=1e-3), \
        "eval at the stored size returns the stored grey levels"
    assert np.array_equal(first["masks"][:, 0].numpy(), masks[VALID])


def test_eval_resize_is_bilinear_on_pixel_centres(make_loader, tiny_store, stored):
    images, _ = stored
    loader = make_loader(tiny_store, batch_size=20, train=False, output_size=SIZE // 2)
    epoch, _ = run_epoch(loader)
    assert epoch["images"].shape == (20, 3, SIZE // 2, SIZE // 2)
    # Output pixel j samples x = 2 j + 1: halfway between input pixels 2j and 2j+1, so the
    # 32 -> 16 resize is the mean of each 2x2 block, rounded half up to a grey level.
    blocks = images[VALID].reshape(20, SIZE // 2, 2, SIZE // 2, 2).astype(float).mean((2, 4))
    expected = torch.from_numpy(np.floor(blocks + 0.5)).float()
    error = (grey_levels(epoch["images"]) - expected).abs()
    tie = torch.from_numpy(blocks % 1 == 0.5)  # x.5: float error may round either way
    assert error[~tie].max() < 1e-3, \
        f"2x2 block means expected, max error {error[~tie].max():.4f} grey levels"
    assert error[tie].max() < 1 + 1e-3, "a tie rounds to one of its two grey levels"


# --- DALI specifics -----------------------------------------------------------------------------

def test_dali_matches_torch_baseline(tiny_store):
    require_dali()
    common = {"batch_size": 7, "with_masks": True, "seed": 21, "output_size": 24}
    dali = run_epoch(make_dali_loader(tiny_store, py_num_workers=0, **common))[0]
    base = run_epoch(make_torch_loader(tiny_store, num_workers=0, **common))[0]
    assert torch.equal(dali["indices"], base["indices"])
    assert torch.equal(dali["masks"], base["masks"]), "masks (nearest) must be identical"
    diff = (dali["images"] - base["images"]).abs()
    one_level = 1 / 255 / 0.224  # one grey level after normalisation
    assert diff.max() <= one_level * 1.01, \
        f"images may differ by one grey level of rounding at most, got {diff.max():.4f}"
    assert (diff > 1e-4).float().mean() < 0.002, \
        "float rounding may tip a grey level on < 0.2% of the pixels"


def test_dali_parallel_workers_serve_the_same_stream(tiny_store):
    require_dali()
    common = {"batch_size": 6, "seed": 5, "output_size": SIZE}
    forked = run_epoch(make_dali_loader(tiny_store, py_num_workers=2, **common))[0]
    inline = run_epoch(make_dali_loader(tiny_store, py_num_workers=0, **common))[0]
    assert torch.equal(forked["indices"], inline["indices"])
    assert torch.equal(forked["images"], inline["images"])


def test_dali_workers_are_started_with_the_pipeline(tiny_store):
    # Before any later CUDA context (the model on the GPU, another pipeline's build): DALI
    # refuses to fork once CUDA is initialised.
    require_dali()
    pipeline = dali_pipeline(StoreSource(tiny_store, batch_size=6, output_size=SIZE),
                             py_num_workers=2)
    assert pipeline._py_pool_started, "fork workers not started when the pipeline was made"


def test_dali_workers_spawn_and_serve_the_same_stream_once_cuda_is_initialised(tiny_store,
                                                                                monkeypatch):
    require_dali()
    common = {"batch_size": 6, "seed": 5, "output_size": SIZE}
    inline = run_epoch(make_dali_loader(tiny_store, py_num_workers=0, **common))[0]
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    source = StoreSource(tiny_store, **common)
    pipeline = dali_pipeline(source, py_num_workers=2)
    assert pipeline.py_start_method == "spawn", \
        f"with CUDA initialised the workers must be spawned, got {pipeline.py_start_method!r}"
    spawned = run_epoch(DaliLoader(pipeline, source))[0]
    assert torch.equal(spawned["indices"], inline["indices"]), "spawned workers: other samples"
    assert torch.equal(spawned["images"], inline["images"]), "spawned workers: other images"


def test_torch_workers_serve_the_same_stream(tiny_store):
    common = {"batch_size": 6, "seed": 5, "output_size": SIZE, "with_masks": True}
    forked = run_epoch(make_torch_loader(tiny_store, num_workers=2, **common))[0]
    inline = run_epoch(make_torch_loader(tiny_store, num_workers=0, **common))[0]
    for name in ("indices", "images", "masks", "labels"):
        assert torch.equal(forked[name], inline[name]), f"{name} must not depend on workers"
