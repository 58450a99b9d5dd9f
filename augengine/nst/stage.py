"""The style-transfer stage of a job: an actor's NST inputs, styled a shard at a time.

:class:`StyleTransferInputs` is what a :class:`~augengine.runner.ShardWorker` hands
:func:`~augengine.runner.build_shard` as its ``load_input`` when the job has an ``nst`` section:
each plan row ``(content, ref_1, ..., ref_K)`` is styled (feed-forward AdaIN decoder, or the
iterative optimisation with LRP-weighted content loss), optionally assessed, and handed to its
chain as a frame with the style transfer recorded in front of its ops.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from augengine import sources
from augengine.errors import InputError, one_line
from augengine.models.weights import weights_sha256
from augengine.pipeline import Frame

if TYPE_CHECKING:
    from augengine.config import NstConfig
    from augengine.plan import WorkItem
    from augengine.sources import SampleRef

__all__ = ["StyleTransferInputs", "StyleTransferStage", "check_nst_files"]


@dataclass(frozen=True)
class StyleTransferStage:
    """What the driver sends each actor for a job with an ``nst`` section (picklable; the
    networks are built on the actor): the plan's input refs, the typed settings and the job seed.

    It is an input stage of :class:`~augengine.runner.ShardWorker`: ``setup_process()`` runs once
    before the actor starts CUDA, ``open(device)`` gives the loader whose ``prepare(items)`` styles
    a shard and whose ``load(item)`` is :func:`~augengine.runner.build_shard`'s ``load_input``.
    """

    refs: list[SampleRef]
    nst: NstConfig
    job_seed: int

    def setup_process(self) -> None:
        if self.nst.deterministic:
            from augengine.determinism import fix_cublas_workspace

            fix_cublas_workspace()

    def open(self, device: str) -> StyleTransferInputs:
        return StyleTransferInputs(self.refs, self.nst, device, self.job_seed)


class StyleTransferInputs:
    """An actor's style-transfer state: every input image loaded once and the mode's network
    built once; ``prepare`` styles a shard's pairs in batches, ``load`` hands each to its chain.

    Feed-forward: the AdaIN statistics of every image are encoded once, so a shard only encodes
    its contents (and, with ``references: multi``, each batch's references). Iterative: the
    feature network, the loss and (with LRP) each content image's relevance are built once; each
    batch of pairs is optimised for ``iterations`` steps. A row ``(content, ref_1, ..., ref_K)``
    of the plan is styled as one image; K >= 2 only with ``references: multi`` (Eqs. 7-9).
    With ``deterministic`` (the default) all of it runs in ``augengine.determinism``'s scope and
    in batches of exactly ``batch_size`` (docs/store.md, "Regeneration guarantees").

    On a GPU the styled images stay there: ``load`` hands each chain a CuPy view of the decoder's
    uint8 output (DLPack, no copy). The rows :func:`augengine.nst.quality.is_assessed` picks
    (``quality_checks``, seeded by ``job_seed``) are assessed ``batch_size`` at a time, with one
    device-to-host copy of the scores per batch.
    """

    def __init__(self, refs: list[SampleRef], nst: NstConfig, device: str, job_seed: int):
        import torch

        from augengine.models import feature_extractor

        self.refs, self.nst, self.job_seed = refs, nst, job_seed
        self.torch_device = "cuda" if device == "cuda" and torch.cuda.is_available() else "cpu"
        #: Styled images as torch tensors on the GPU, for the CuPy chains; else NumPy arrays.
        self.on_device = self.torch_device == "cuda"
        samples, self.errors = [], {}
        for position, ref in enumerate(refs):
            try:
                samples.append(sources.load_sample(ref))
            except Exception as error:  # noqa: BLE001 - its pairs are quarantined, not the run
                samples.append(None)
                self.errors[position] = one_line(error)
        shapes = {s.image.shape for s in samples if s is not None}
        if len(shapes) > 1:
            raise InputError(f"nst: input images must share one size, found {sorted(shapes)[:3]}; "
                             "resize them in an earlier job (reader: store)")
        (shape,) = shapes
        self.samples = samples
        self.images = np.stack([s.image if s is not None else np.zeros(shape, np.uint8)
                                for s in samples])
        with self._deterministic():
            if nst.mode == "feedforward":
                features, self.record, loss = self._setup_feedforward()
            else:
                features, self.record, loss = self._setup_iterative()
        # Keyed by WorkItem.nst_key: (content, *style positions).
        self.styled: dict[tuple[int, ...], object] = {}
        self.quality: dict[tuple[int, ...], dict] = {}
        self.extractor = None
        if nst.quality_checks > 0:
            self.extractor = feature_extractor(features, tuple(loss["style_layers"]))
            self.quality_c = loss["c"]

    def _setup_feedforward(self):
        from augengine.nst.generate import image_statistics
        from augengine.nst.inference import load_checkpoint, load_style_net

        nst = self.nst
        config = load_checkpoint(nst.checkpoint)["config"]
        self.net = load_style_net(nst.checkpoint, nst.encoder_weights, self.torch_device)
        self.statistics = image_statistics(self.net, self.images, nst.batch_size,
                                           self.torch_device, fixed_batches=nst.deterministic)
        loss = {key: config[key] for key in ("alpha", "beta", "content_layers", "style_layers",
                                             "lrp", "c")}
        record = {"op": "nst", "mode": "feedforward", "alpha": nst.alpha,
                  "checkpoint_sha256": weights_sha256(nst.checkpoint), "loss": loss}
        return self.net.encoder, record, loss

    def _setup_iterative(self):
        from augengine.models import ARCHITECTURES, load_weights
        from augengine.nst.losses import StyleTransferLoss

        nst = self.nst
        network = ARCHITECTURES[nst.arch]()
        if nst.encoder_weights is not None:
            load_weights(network, nst.encoder_weights, skip_head=True)
        self.network = network.eval().requires_grad_(False).to(self.torch_device)
        self.loss = StyleTransferLoss(beta=nst.beta, content_layers=tuple(nst.content_layers),
                                      style_layers=tuple(nst.style_layers))
        # Recorded as the feed-forward checkpoint records its loss; alpha and c are the loss's own.
        loss = {"alpha": self.loss.alpha, "beta": nst.beta, "content_layers": nst.content_layers,
                "style_layers": nst.style_layers, "lrp": nst.lrp, "c": self.loss.c}
        self.classifier = None
        if nst.lrp:
            from augengine.models import load_classifier

            self.classifier = load_classifier(nst.classifier).to(self.torch_device)
        self.relevance: dict[int, object] = {}
        record = {"op": "nst", "mode": "iterative", "iterations": nst.iterations,
                  "encoder_sha256": weights_sha256(nst.encoder_weights),
                  "classifier_sha256": weights_sha256(nst.classifier) if nst.lrp else None,
                  "loss": loss}
        return self.network, record, loss

    def _deterministic(self):
        """The job's determinism scope (``augengine.determinism``) for everything that styles."""
        from augengine.determinism import deterministic_torch

        return deterministic_torch(self.nst.deterministic)

    def _batches(self):
        from augengine.determinism import Batches

        return Batches(self.nst.batch_size, fixed=self.nst.deterministic)

    def _content_relevance(self, contents: np.ndarray):
        """LRP relevance of each content image for its own label, computed once per image."""
        import torch

        from augengine.explain import lrp
        from augengine.models import imagenet_normalize
        from augengine.nst.generate import to_unit
        from augengine.nst.losses import uniform_where_unusable

        for positions in self._relevance_batches(contents):
            run = self._batches().run(positions)
            x = imagenet_normalize(to_unit(self.images[run], self.torch_device))
            labels = torch.tensor([max(self.refs[c].label, 0) for c in run])
            for c, r in zip(positions, lrp(self.classifier, x, labels.to(x.device)).sum(dim=1)):
                self.relevance[int(c)] = r
        return uniform_where_unusable(torch.stack([self.relevance[int(c)] for c in contents]))

    def _relevance_batches(self, contents: np.ndarray) -> list[np.ndarray]:
        """Positions whose relevance is still missing, as LRP batches: all in one, or with
        ``deterministic`` the fixed blocks of ``batch_size`` positions they fall in, so that an
        image's relevance never depends on which shards this actor styled before."""
        missing = np.array([c for c in np.unique(contents) if int(c) not in self.relevance],
                           np.int64)
        if not missing.size:
            return []
        if not self.nst.deterministic:
            return [missing]
        size = self.nst.batch_size
        return [np.arange(block * size, min(block * size + size, len(self.images)))
                for block in np.unique(missing // size)]

    def _style_batches(self, pairs: np.ndarray):
        """(rows, uint8 images) batches of the styled pairs, in the mode of the job: NumPy
        arrays, or with ``on_device`` tensors on the GPU."""
        if self.nst.mode == "feedforward":
            from augengine.nst.generate import decoder_precision, generate

            dtype, channels_last = decoder_precision(self.nst.precision, self.torch_device)
            yield from generate(self.net, self.images, pairs, batch_size=self.nst.batch_size,
                                device=self.torch_device, dtype=dtype,
                                channels_last=channels_last, alpha=self.nst.alpha,
                                statistics=self.statistics,
                                multi_reference=self.nst.references == "multi",
                                fixed_batches=self.nst.deterministic,
                                to_host=not self.on_device)
            return
        from augengine.nst.generate import to_pixels, to_uint8, to_unit
        from augengine.nst.iterative import stylize

        batches = self._batches()
        for rows in batches.split(len(pairs)):
            run = batches.run(rows)
            content = to_unit(self.images[pairs[run, 0]], self.torch_device)
            relevance = (self._content_relevance(pairs[run, 0])
                         if self.classifier is not None else None)
            result = stylize(content, self._references(pairs[run, 1:]), self.loss, self.network,
                             relevance, iterations=self.nst.iterations)
            convert = to_pixels if self.on_device else to_uint8
            yield rows, convert(result.images[:rows.size])

    def _references(self, positions: np.ndarray):
        """The style images of rows of reference positions ``(B, K)`` as ``(B, K, 1, H, W)`` in
        [0, 1], the reference stacks of Eq. 9 (K = 1: one style image each)."""
        from augengine.nst.generate import to_unit

        stacked = to_unit(self.images[positions.reshape(-1)], self.torch_device)
        return stacked.unflatten(0, positions.shape)

    def prepare(self, items: list[WorkItem]) -> None:
        """Style every plan row of a shard in batches, before its chains run; assess the rows
        ``quality_checks`` picks, ``batch_size`` at a time as they come."""
        wanted = sorted({i.nst_key for i in items if not self.errors.keys() & set(i.nst_key)})
        self.styled, self.quality = {}, {}
        if not wanted:
            return
        checked = self._checked(items)
        size, pending = self.nst.batch_size, []
        with self._deterministic():
            for rows, batch in self._style_batches(np.array(wanted, np.int64)):
                for row, image in zip(rows, batch):
                    self.styled[wanted[row]] = image
                    if wanted[row] in checked:
                        pending.append(wanted[row])
                while len(pending) >= size:
                    self._assess(pending[:size])
                    pending = pending[size:]
            if pending:
                self._assess(pending)

    def _checked(self, items: list[WorkItem]) -> set[tuple[int, ...]]:
        """The nst keys of ``items`` whose plan row gets a quality check."""
        from augengine.nst.quality import is_assessed

        fraction = self.nst.quality_checks
        if fraction == 0:
            return set()
        return {i.nst_key for i in items if is_assessed(self.job_seed, i.input_key, fraction)}

    def _assess(self, keys: list[tuple[int, ...]]) -> None:
        """SSIM to the content, and style distance before and after to the row's style target
        (the style image's features, or the Eq. 9 target of K references), for one batch of
        styled rows: one call, and one device-to-host copy of its scores."""
        import torch

        from augengine.nst.generate import to_unit
        from augengine.nst.quality import assess_quality

        device = self.torch_device
        run = [keys[k] for k in self._batches().run(np.arange(len(keys)))]
        pairs = np.array(run, np.int64)
        stack = torch.stack if self.on_device else np.stack
        results = to_unit(stack([self.styled[key] for key in run]), device)
        scores = assess_quality(results, to_unit(self.images[pairs[:, 0]], device),
                                self._references(pairs[:, 1:]), self.extractor, self.quality_c)
        table = torch.stack([scores.ssim, scores.style_before, scores.style_after], dim=1)
        names = ("ssim_to_content", "style_distance_before", "style_distance_after")
        for key, values in zip(keys, table.cpu().tolist()):
            self.quality[key] = {name: round(value, 6) for name, value in zip(names, values)}

    def load(self, item: WorkItem) -> tuple[Frame, list[dict]]:
        for position in item.nst_key:
            if position in self.errors:
                raise InputError(f"{self.refs[position].sample_id}: {self.errors[position]}")
        content = self.samples[item.content]
        data = self.styled[item.nst_key]
        if self.on_device:
            import cupy

            data = cupy.from_dlpack(data)
        frame = replace(Frame.from_sample(content), data=data)
        record = dict(self.record, content_id=item.ref.sample_id)
        style_ids = [style.sample_id for style in item.styles]
        if self.nst.references == "multi":
            record["style_ids"] = style_ids
        else:
            record["style_id"] = style_ids[0]
        record["assessed"] = item.nst_key in self.quality
        if record["assessed"]:
            record["quality"] = self.quality[item.nst_key]
        return frame, [*content.meta.get("made_by", []), record]


def check_nst_files(nst: NstConfig) -> None:
    """Fail on the driver, in one line, before any actor starts: a missing or corrupt
    checkpoint, classifier or encoder weights."""
    if nst.mode == "feedforward":
        from augengine.nst.inference import load_style_net

        load_style_net(nst.checkpoint, nst.encoder_weights)
        return
    from augengine.models import ARCHITECTURES, load_classifier, load_weights

    if nst.encoder_weights is not None:
        load_weights(ARCHITECTURES[nst.arch](), nst.encoder_weights, skip_head=True)
    if nst.lrp:
        load_classifier(nst.classifier)
