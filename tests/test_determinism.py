"""Reproducible style-transfer bytes (issue 11 item 8): the ``deterministic`` job setting, torch's
determinism scope, batches of one fixed shape, and no op that a GPU in deterministic mode refuses.

There is no GPU here. What can be checked on a CPU is checked: the switches torch reads on a GPU,
the batch shapes every network sees, and the ops that style transfer dispatches, against the list
of ops ``torch.use_deterministic_algorithms`` documents as raising on CUDA.
"""
# ruff: noqa: F811 - test arguments named after the imported fixtures
from __future__ import annotations

import os

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from augengine.config import parse_job
from augengine.determinism import CUBLAS_WORKSPACE_CONFIG, deterministic_torch
from augengine.errors import ConfigError
from augengine.nst.generate import generate, image_statistics
from augengine.plan import make_plan
from augengine.nst.stage import StyleTransferInputs
from tests.nst.test_feedforward import _collect, images, net  # noqa: F401
from tests.test_runner_nst import nst_job, train_classifier, trained  # noqa: F401

CONV, MATMUL, CUDNN = torch.backends.cudnn.conv, torch.backends.cuda.matmul, torch.backends.cudnn


def test_nst_jobs_are_deterministic_unless_the_job_says_otherwise(tmp_path):
    job = nst_job(tmp_path / "in.zarr", tmp_path / "checkpoint.pt", tmp_path / "out.zarr")
    default = parse_job(job)
    assert default.nst.deterministic is True
    job["nst"]["deterministic"] = False
    fast = parse_job(job)
    assert fast.nst.deterministic is False
    assert fast.config_hash() != default.config_hash(), "it changes the bytes: part of the job"
    job["nst"]["deterministic"] = "sometimes"
    with pytest.raises(ConfigError, match="nst.deterministic"):
        parse_job(job)


@pytest.fixture
def gpu_defaults():
    """The caller's state: torch's defaults plus what a training script may set (benchmarking,
    TF32 matmuls, deterministic algorithms in warn-only mode)."""
    saved = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(),
             CUDNN.deterministic, CUDNN.benchmark, CONV.fp32_precision, MATMUL.fp32_precision)
    torch.use_deterministic_algorithms(False)
    CUDNN.deterministic, CUDNN.benchmark = False, True
    CONV.fp32_precision, MATMUL.fp32_precision = "tf32", "tf32"
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    CUDNN.deterministic, CUDNN.benchmark = saved[2:4]
    CONV.fp32_precision, MATMUL.fp32_precision = saved[4:]


def _switches():
    return {"deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
            "cudnn.deterministic": CUDNN.deterministic, "cudnn.benchmark": CUDNN.benchmark,
            "conv fp32": CONV.fp32_precision, "matmul fp32": MATMUL.fp32_precision}


def test_scope_turns_every_switch_and_restores_the_callers(gpu_defaults):
    before = _switches()
    with deterministic_torch():
        inside = _switches()
    assert inside == {"deterministic_algorithms": True, "warn_only": False,
                      "cudnn.deterministic": True, "cudnn.benchmark": False,
                      "conv fp32": "ieee", "matmul fp32": "ieee"}, inside
    assert _switches() == before, "the caller's settings come back"


def test_scope_restores_after_an_exception_and_keeps_a_warn_only_caller(gpu_defaults):
    torch.use_deterministic_algorithms(True, warn_only=True)
    before = _switches()
    with pytest.raises(ZeroDivisionError), deterministic_torch():
        1 / 0
    assert _switches() == before


def test_disabled_scope_changes_nothing(gpu_defaults, monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = _switches()
    with deterministic_torch(enabled=False):
        inside = _switches()
    assert inside == before
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ


@pytest.mark.parametrize("users", [None, ":16:8"])
def test_scope_fixes_the_cublas_workspace_unless_the_user_chose_one(gpu_defaults, monkeypatch,
                                                                    users):
    if users is None:
        monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    else:
        monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", users)
    with deterministic_torch():
        pass
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == (users or CUBLAS_WORKSPACE_CONFIG)


def test_docstring_examples():
    import doctest

    from augengine import determinism

    result = doctest.testmod(determinism)
    assert result.attempted > 0 and result.failed == 0, \
        f"{result.failed} of {result.attempted} examples failed"


def _spy_batch_sizes(monkeypatch, net, seen: list):
    """Record the batch size of every encoder and decoder call of ``net``."""
    for name in ("encode", "decode"):
        method = getattr(net, name)

        def spy(x, *args, _method=method, **kwargs):
            seen.append(x.shape[0])
            return _method(x, *args, **kwargs)

        monkeypatch.setattr(net, name, spy)


@pytest.mark.parametrize("multi", [False, True])
def test_fixed_batches_run_every_batch_at_batch_size_and_yield_only_the_real_rows(
        net, images, monkeypatch, multi):
    pairs = ([[0, 1, 2], [1, 0, 2], [3, 4, 5], [5, 3, 4], [0, 2, 1]] if multi
             else [[0, 1], [1, 2], [3, 4], [5, 3], [2, 0]])
    plain = _collect(generate(net, images, pairs, batch_size=4, multi_reference=multi), 5)
    seen = []
    _spy_batch_sizes(monkeypatch, net, seen)
    fixed = _collect(generate(net, images, pairs, batch_size=4, multi_reference=multi,
                              fixed_batches=True), 5)
    assert seen and set(seen) == {4}, f"batch sizes the networks saw: {seen}"
    assert (fixed == plain).all(), "the padding repeats are dropped; the real rows are unchanged"


def test_image_statistics_with_fixed_batches(net, images, monkeypatch):
    plain = image_statistics(net, images, batch_size=4)
    seen = []
    _spy_batch_sizes(monkeypatch, net, seen)
    fixed = image_statistics(net, images, batch_size=4, fixed_batches=True)
    assert seen == [4, 4], f"6 images in batches of 4: saw {seen}"
    assert all(torch.equal(a, b) for a, b in zip(fixed, plain)), "statistics of the 6 images"


def _actor(job, shard: int):
    """An actor's style-transfer state for ``job`` (no Ray) and the work items of ``shard``."""
    config = parse_job(job)
    plan = make_plan(config)
    items = [plan.work_item(i) for i in plan.shard_indices(shard)]
    return StyleTransferInputs(plan.refs, config.nst, "cpu", config.seed), items


def _conv_batch_sizes(modules, seen: list):
    """Record the batch of every convolution in ``modules`` (encoders, decoders, classifier)."""
    for module in modules:
        for layer in module.modules():
            if isinstance(layer, torch.nn.Conv2d):
                layer.register_forward_pre_hook(lambda _, args: seen.append(args[0].shape[0]))


def _iterative_job(source, out, classifier, **nst):
    job = nst_job(source, None, out, steps=[])
    job["nst"] = {"mode": "iterative", "arch": "resnet18", "iterations": 2, "batch_size": 4,
                  "classifier": str(classifier), "beta": 1e3, "style_layers": ["relu", "layer1"],
                  "pairing": "within_class_k", "k": 2, "quality_checks": 1.0, **nst}
    return job


@pytest.fixture(scope="module")
def classifier(trained):
    source, _, root = trained
    return train_classifier(source, root / "cls")


def _multi_reference_job(mode, trained, classifier, tmp_path) -> dict:
    """A multi-reference job (Eq. 9 targets: the histogram matching) in ``mode``."""
    source, checkpoint, _ = trained
    if mode == "iterative":
        return _iterative_job(source, tmp_path / "out.zarr", classifier, references="multi")
    job = nst_job(source, checkpoint, tmp_path / "out.zarr", steps=[])
    job["nst"].update(pairing="within_class_k", k=2, references="multi")
    return job


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["feedforward", "iterative"])
def test_a_shard_is_styled_and_assessed_in_batches_of_batch_size(trained, classifier, tmp_path,
                                                                 mode):
    """Shard 0 holds 5 rows: with batch_size 4, its second batch runs padded to 4, in the
    networks that style (and explain) and in the quality checks."""
    job = _multi_reference_job(mode, trained, classifier, tmp_path)
    inputs, items = _actor(job, shard=0)
    assert len(items) == 5
    seen = []
    networks = ([inputs.net] if mode == "feedforward"
                else [inputs.network, inputs.classifier])
    _conv_batch_sizes(networks, seen)
    inputs.prepare(items)
    assert seen and all(size % 4 == 0 for size in seen), (
        f"batch sizes (x K references) the convolutions saw: {sorted(set(seen))}")
    assert len(inputs.styled) == 5 and len(inputs.quality) == 5


@pytest.mark.slow
def test_relevance_is_computed_in_fixed_blocks_whatever_the_shard_order(trained, classifier,
                                                                        tmp_path, monkeypatch):
    """An actor that styled shard 0 first and one that styles shard 1 alone run LRP on the same
    batches, so a content image's relevance does not depend on the actor's history."""
    import augengine.explain

    source, _, _ = trained
    job = _iterative_job(source, tmp_path / "out.zarr", classifier, k=1)
    explained = []
    lrp = augengine.explain.lrp

    def spy(model, x, labels):
        explained.append(x.shape[0])
        return lrp(model, x, labels)

    monkeypatch.setattr(augengine.explain, "lrp", spy)
    first, items = _actor(job, shard=0)
    first.prepare(items)
    _, later = _actor(job, shard=1)
    first.prepare(later)
    history = explained[:]
    explained.clear()
    alone, _ = _actor(job, shard=1)
    alone.prepare(later)
    assert set(history) == set(explained) == {4}, (history, explained)
    for content in {item.content for item in later}:
        assert torch.equal(first.relevance[content], alone.relevance[content]), content


# Ops that torch.use_deterministic_algorithms (torch 2.13 docstring) lists as raising on CUDA,
# by their aten names (backward kernels appear under their own names in the dispatcher).
REFUSED_ON_CUDA = {
    "aten::avg_pool3d_backward", "aten::_adaptive_avg_pool2d_backward",
    "aten::_adaptive_avg_pool3d_backward", "aten::adaptive_max_pool2d_backward",
    "aten::fractional_max_pool2d_backward", "aten::fractional_max_pool3d_backward",
    "aten::max_unpool2d", "aten::max_unpool3d", "aten::upsample_linear1d_backward",
    "aten::upsample_bilinear2d_backward", "aten::upsample_bicubic2d_backward",
    "aten::upsample_trilinear3d_backward", "aten::reflection_pad1d_backward",
    "aten::reflection_pad2d_backward", "aten::reflection_pad3d_backward",
    "aten::nll_loss_forward", "aten::nll_loss2d_forward", "aten::_ctc_loss_backward",
    "aten::put", "aten::put_", "aten::histc", "aten::grid_sampler_2d_backward",
    "aten::grid_sampler_3d_backward",
}


def _refused_on_cuda(func, args, kwargs, out) -> bool:
    name = func._schema.name
    if name == "aten::cumsum":
        return out.is_floating_point() or out.is_complex()
    if name == "aten::bincount":
        return (args[1] if len(args) > 1 else kwargs.get("weights")) is not None
    if name == "aten::median":
        return func._overloadname != "default"  # the forms that return indices
    if name == "aten::scatter_reduce":
        return (args[3] if len(args) > 3 else kwargs.get("reduce")) == "prod"
    return name in REFUSED_ON_CUDA


class RefusedOnCuda(TorchDispatchMode):
    """Collect the ops of the block that a CUDA run in deterministic mode would refuse."""

    def __init__(self):
        super().__init__()
        self.refused: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if _refused_on_cuda(func, args, kwargs, out):
            self.refused.add(str(func))
        return out


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["feedforward", "iterative"])
def test_style_transfer_uses_no_op_that_cuda_refuses_in_deterministic_mode(
        trained, classifier, tmp_path, mode):
    """A deterministic job on a GPU would stop at the first such op; multi-reference targets
    (histogram matching), LRP and the quality checks included."""
    job = _multi_reference_job(mode, trained, classifier, tmp_path)
    config = parse_job(job)
    plan = make_plan(config)
    with RefusedOnCuda() as ops:
        inputs = StyleTransferInputs(plan.refs, config.nst, "cpu", config.seed)
        inputs.prepare([plan.work_item(i) for i in plan.shard_indices(0)])
    assert not ops.refused, f"ops a CUDA run in deterministic mode refuses: {ops.refused}"
