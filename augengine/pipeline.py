"""The op registry and the chains: which ops a job may name, their typed parameters, how random
parameters are drawn, and how one input sample becomes one output image: one sample at a time
(:func:`apply_chain`, the replay of a manifest row) or a shard's samples together, each op of
their chains' tails run once per batch (:func:`start_chain`, :func:`finish_chains`).

This layer holds no image maths: each entry adapts an ``augengine.ops`` function to a ``Frame``
(image + mask + pixel spacing), applying geometric ops to the mask with nearest-neighbour
interpolation so that image and mask always stay aligned.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from numbers import Real
from typing import Annotated, Any, Callable, Literal

import numpy as np
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError,
                      model_validator)

from augengine import ops
from augengine._xp import get_array_module, is_cupy
from augengine.errors import ConfigError, InputError, unknown

RANDOM_KINDS = ("uniform", "choice", "randint")

#: Typed job settings (op parameters and the job's own sections): unknown keys are errors, and a
#: float must be finite. NaN fails every comparison, so without this a NaN bound check reports the
#: bound ("<= 120") instead of the value; and no setting means anything at infinity.
STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

#: Sides of every image a job makes [pixels]: ``output.size``, ``resize.size`` and the result of
#: ``scan_convert``. The upper bound keeps one image (and its float work copies) to a few hundred
#: MiB per actor.
MIN_SIDE, MAX_SIDE = 8, 8192


def _check_image_size(size: tuple[int, int]) -> tuple[int, int]:
    if min(size) < MIN_SIDE or max(size) > MAX_SIDE:
        raise ValueError(f"each side must be in [{MIN_SIDE}, {MAX_SIDE}] pixels, got {list(size)}")
    return size


#: ``(height, width)`` in pixels, each side in [MIN_SIDE, MAX_SIDE].
ImageSize = Annotated[tuple[int, int], AfterValidator(_check_image_size)]


@dataclass(frozen=True, eq=False)
class DeferredCheck:
    """A check an op made on the device without reading its values back: ``values`` (a device
    array) holds this sample's entry at ``index``, and ``message(host_values[index])`` is the
    error the op raises for it on its checking path, or None. A shard's checks are read back
    with its images, in the one copy back, instead of costing a host sync where the op ran
    (e.g. bmode's all-zero/NaN envelope check, :func:`_bmode_frames`)."""

    values: Any
    index: int
    message: Callable[[np.ndarray], str | None]

    def error(self, host_values: np.ndarray) -> InputError | None:
        """The check's error given the host copy of :attr:`values`, or None."""
        text = self.message(host_values[self.index])
        return None if text is None else InputError(text)


def first_failure(checks: tuple[DeferredCheck, ...],
                  host: Callable[[Any], np.ndarray]) -> InputError | None:
    """The first failing check's error, ``host(values)`` giving a check's values on the host."""
    for check in checks:
        error = check.error(host(check.values))
        if error is not None:
            return error
    return None


def settle(checks: tuple[DeferredCheck, ...]) -> InputError | None:
    """:func:`first_failure`, reading the values back now (a host sync per distinct array: for
    a sample that failed anyway, or outside a shard's copy back)."""
    copies: dict[int, np.ndarray] = {}

    def host(values) -> np.ndarray:
        if id(values) not in copies:
            copies[id(values)] = values.get() if is_cupy(values) else np.asarray(values)
        return copies[id(values)]

    return first_failure(checks, host)


@dataclass
class Frame:
    """What flows through a chain: RF (depth, lines) or a uint8 image, its mask and spacing,
    and the checks of its ops still to be read back from the device (:class:`DeferredCheck`)."""

    data: np.ndarray
    mask: np.ndarray | None
    spacing_mm: tuple[float, float] | None
    domain: Literal["rf", "image"]
    meta: dict[str, Any] = field(default_factory=dict)
    checks: tuple[DeferredCheck, ...] = ()

    @classmethod
    def from_sample(cls, sample) -> Frame:
        """The frame a chain starts from for a loaded :class:`~augengine.sources.Sample`: its RF
        (no spacing: the scan geometry is in ``meta``) when it has one, else its image with the
        pixel spacing ``meta["spacing_mm"]`` (None when the reader knows none)."""
        if sample.rf is not None:
            return cls(sample.rf, sample.roi, None, "rf", dict(sample.meta))
        spacing = sample.meta.get("spacing_mm")
        return cls(sample.image, sample.roi, tuple(spacing) if spacing else None, "image",
                   dict(sample.meta))


class _Params(BaseModel):
    model_config = STRICT


class NoParams(_Params):
    pass


class BmodeParams(_Params):
    dynamic_range_db: float = Field(gt=0, le=120)


class RoiCropParams(_Params):
    # The box is clipped to the image, so a margin only needs an upper bound in pixels.
    margin_mm: float | None = Field(default=None, ge=0)
    margin_px: int | None = Field(default=None, ge=0, le=MAX_SIDE)

    @model_validator(mode="after")
    def _one_margin(self):
        if (self.margin_mm is None) == (self.margin_px is None):
            raise ValueError("give exactly one of margin_mm or margin_px")
        return self


class ScanConvertParams(_Params):
    #: The result's size depends on each sample's extent, so it is checked per sample (at most
    #: MAX_SIDE per side); this range only refuses settings no ultrasound image needs: 0.01 mm is
    #: a tenth of the wavelength at 15 MHz.
    pixel_size_mm: float | None = Field(default=None, ge=0.01, le=10)


class ResizeParams(_Params):
    #: (height, width); default: the job's output size.
    size: ImageSize | None = None


class Rotate90Params(_Params):
    k: int = Field(ge=1, le=3)


class FlipParams(_Params):
    axis: Literal["horizontal", "vertical"]


class RotateParams(_Params):
    angle_deg: float = Field(ge=-360, le=360)


class TranslateParams(_Params):
    # A shift by a whole side leaves only fill on any image a job can make.
    dy_px: float = Field(default=0.0, ge=-MAX_SIDE, le=MAX_SIDE)
    dx_px: float = Field(default=0.0, ge=-MAX_SIDE, le=MAX_SIDE)


class ScaleParams(_Params):
    factor: float = Field(gt=0.1, le=10)


class BlurParams(_Params):
    sigma: float = Field(ge=0, le=50)


class JpegParams(_Params):
    quality: int = Field(ge=1, le=95)


class SuperResParams(_Params):
    #: An ``augengine train superres`` checkpoint, pinned by the sha256 of its bytes, which the
    #: manifest then records (the NST op records its checkpoint's the same way).
    checkpoint: str = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    batch_size: int = Field(default=16, ge=1, le=4096)


def _apply_superres(frame: Frame, params: SuperResParams, output_size) -> Frame:
    from augengine.models.superres import super_resolve

    data = super_resolve(frame.data, params.checkpoint, params.sha256, params.batch_size)
    factor = data.shape[0] // frame.data.shape[0]
    mask = None if frame.mask is None else ops.resize(frame.mask, data.shape, order=0)
    spacing = None if frame.spacing_mm is None else tuple(s / factor for s in frame.spacing_mm)
    return replace(frame, data=data, mask=mask, spacing_mm=spacing)


class _SradOptions(_Params):
    time_step: float = Field(default=0.5, gt=0, le=1)
    #: Fixed speckle scale; None re-estimates q0 from the whole image each iteration.
    q0: float | None = Field(default=None, gt=0)
    rho: float | None = Field(default=None, ge=0)
    #: Dynamic range of the uint8 input; default: the one its ``bmode`` step used.
    dynamic_range_db: float | None = Field(default=None, gt=0, le=120)

    def srad_options(self) -> dict:
        return {"time_step": self.time_step, "q0": self.q0, "rho": self.rho}


class SradParams(_SradOptions):
    iterations: int = Field(ge=1, le=10000)


class SradSeriesParams(_SradOptions):
    #: Which snapshot (0-based): the image after (scale + 1) * iterations_per_scale iterations.
    scale: int = Field(ge=0)
    scales: int = Field(default=8, ge=1, le=64)
    iterations_per_scale: int = Field(default=10, ge=1, le=1000)

    @model_validator(mode="after")
    def _scale_in_series(self):
        if self.scale >= self.scales:
            raise ValueError(f"scale must be < scales ({self.scales}), got {self.scale}")
        return self


@dataclass(frozen=True)
class OpSpec:
    """A registry entry: parameter model, input/output domains and the frame adapter."""

    params: type[_Params]
    apply: Callable[[Frame, Any, tuple[int, int]], Frame]
    domain_in: Literal["rf", "image", "any"] = "image"
    domain_out: Literal["image", "same"] = "same"
    #: False for reconstruction/cropping (part of making an "original"), True for augmentations.
    augmentation: bool = True
    #: The part of the op that its parameters do not change, ``shared(frame)``: with a cache,
    #: computed once for the chains of one input that reach this op by the same prefix, and
    #: given to ``apply(frame, params, output_size, shared)`` (which computes it when given None).
    shared: Callable[[Frame], Any] | None = None


def _geometric(fn: Callable[..., np.ndarray], mask_interp: Literal["exact", "nearest"],
               **kwargs_from_params):
    """Adapter for an op that moves pixels: the mask follows, moved exactly (``"exact"``: the op
    is a pixel permutation, e.g. a flip) or resampled nearest-neighbour (``"nearest"``: the op
    interpolates, and takes ``order``)."""

    def apply(frame: Frame, params, output_size) -> Frame:
        kwargs = {name: getter(params) for name, getter in kwargs_from_params.items()}
        data = fn(frame.data, **kwargs)
        mask_kwargs = kwargs if mask_interp == "exact" else dict(kwargs, order=0)
        mask = None if frame.mask is None else fn(frame.mask, **mask_kwargs)
        return replace(frame, data=data, mask=mask)

    return apply


def _intensity(fn: Callable[..., np.ndarray], **kwargs_from_params):
    """Adapter for an op that changes grey levels only: the mask is untouched."""

    def apply(frame: Frame, params, output_size) -> Frame:
        kwargs = {name: getter(params) for name, getter in kwargs_from_params.items()}
        return replace(frame, data=fn(frame.data, **kwargs))

    return apply


def _bmode_envelope_spacing(frame: Frame) -> tuple[float, float]:
    """The pixel spacing of an RF frame's B-mode image, from its scan metadata."""
    meta = frame.meta
    try:
        return ops.geometry.rf_spacing_mm(meta["fs_hz"], meta["c_m_s"], meta["pitch_m"])
    except (KeyError, TypeError):
        raise InputError("RF sample lacks fs_hz, c_m_s or pitch_m in its metadata") from None


def _bmode_envelope(frame: Frame) -> tuple:
    """What every dynamic range of one RF frame shares: its pixel spacing, envelope and peak."""
    return (_bmode_envelope_spacing(frame), *ops.envelope_peaks(frame.data, axis=0))


def _apply_bmode(frame: Frame, params: BmodeParams, output_size, shared=None) -> Frame:
    """``ops.bmode`` byte for byte, from the envelope the input's other dynamic ranges share."""
    spacing, envelope, peaks = shared if shared is not None else _bmode_envelope(frame)
    image = ops.compress_envelope(envelope, peaks, params.dynamic_range_db)
    return replace(frame, data=image, spacing_mm=spacing, domain="image",
                   meta=dict(frame.meta, dynamic_range_db=params.dynamic_range_db))


def _dynamic_range(frame: Frame, params: _SradOptions) -> float:
    value = params.dynamic_range_db or frame.meta.get("dynamic_range_db")
    if value is None:
        raise InputError("srad on a B-mode image needs dynamic_range_db: give it in the step "
                         "(image sources do not record how they were compressed)")
    return value


def _apply_srad(frame: Frame, params: SradParams, output_size) -> Frame:
    data = ops.srad_bmode(frame.data, params.iterations, _dynamic_range(frame, params),
                          **params.srad_options())
    return replace(frame, data=data)


def _apply_srad_series(frame: Frame, params: SradSeriesParams, output_size) -> Frame:
    """One snapshot of the series (the batched form diffuses an image once for all of its
    snapshots that a shard asks for)."""
    picked = ops.srad_series_bmode_pick(frame.data[None], _dynamic_range(frame, params),
                                        [(0, params.scale)], params.scales,
                                        params.iterations_per_scale, **params.srad_options())
    return replace(frame, data=picked[0])


def _apply_roi_crop(frame: Frame, params: RoiCropParams, output_size) -> Frame:
    if frame.mask is None:
        raise InputError("roi_crop needs an ROI/mask and this sample has none")
    if params.margin_mm is not None:
        if frame.spacing_mm is None:
            raise InputError("roi_crop with margin_mm needs the pixel spacing, which this sample "
                             "lacks; use margin_px")
        rows, cols = ops.roi_box(frame.mask, params.margin_mm, frame.spacing_mm)
    else:
        rows, cols = ops.roi_box(frame.mask, 0.0, (1.0, 1.0))
        m = params.margin_px
        rows = slice(max(rows.start - m, 0), min(rows.stop + m, frame.data.shape[0]))
        cols = slice(max(cols.start - m, 0), min(cols.stop + m, frame.data.shape[1]))
    return replace(frame, data=frame.data[rows, cols], mask=frame.mask[rows, cols])


def _scan_convert_checked(frame: Frame, params: ScanConvertParams) -> None:
    """Refuse, naming the sample's extent, a frame ``scan_convert`` cannot or must not convert."""
    if frame.spacing_mm is None:
        raise InputError("scan_convert needs the pixel spacing, which this sample lacks")
    shape = ops.geometry.scan_convert_shape(frame.data.shape, frame.spacing_mm,
                                            params.pixel_size_mm)
    if max(shape) > MAX_SIDE:
        extent = " x ".join(f"{n * mm:.1f}" for n, mm in zip(frame.data.shape, frame.spacing_mm))
        pixel = params.pixel_size_mm or "(default)"
        raise InputError(f"scan_convert: pixel_size_mm {pixel} would make a "
                         f"{shape[0]} x {shape[1]} image of this {extent} mm sample; each side "
                         f"must be <= {MAX_SIDE} pixels (give a larger pixel_size_mm)")


def _scan_convert_spacing(frame: Frame, rows_out: int) -> tuple[float, float]:
    """Square pixels of the size actually produced (the op documents how it picks the default)."""
    pixel = frame.data.shape[0] * frame.spacing_mm[0] / rows_out
    return pixel, pixel


def _apply_scan_convert(frame: Frame, params: ScanConvertParams, output_size) -> Frame:
    _scan_convert_checked(frame, params)
    data = ops.scan_convert(frame.data, frame.spacing_mm, params.pixel_size_mm, order=3)
    mask = None
    if frame.mask is not None:
        mask = ops.scan_convert(frame.mask, frame.spacing_mm, params.pixel_size_mm, order=0)
    return replace(frame, data=data, mask=mask,
                   spacing_mm=_scan_convert_spacing(frame, data.shape[0]))


def _resize_spacing(frame: Frame, size: tuple[int, int]) -> tuple[float, float] | None:
    if frame.spacing_mm is None:
        return None
    return (frame.spacing_mm[0] * frame.data.shape[0] / size[0],
            frame.spacing_mm[1] * frame.data.shape[1] / size[1])


def _apply_resize(frame: Frame, params: ResizeParams, output_size) -> Frame:
    size = tuple(params.size or output_size)
    data = ops.resize(frame.data, size, order=3)
    mask = None if frame.mask is None else ops.resize(frame.mask, size, order=0)
    return replace(frame, data=data, mask=mask, spacing_mm=_resize_spacing(frame, size))


OPS: dict[str, OpSpec] = {
    "identity": OpSpec(NoParams, lambda frame, params, size: frame, domain_in="any",
                       augmentation=False),
    "bmode": OpSpec(BmodeParams, _apply_bmode, domain_in="rf", domain_out="image",
                    augmentation=False, shared=_bmode_envelope),
    "roi_crop": OpSpec(RoiCropParams, _apply_roi_crop, augmentation=False),
    "scan_convert": OpSpec(ScanConvertParams, _apply_scan_convert, augmentation=False),
    "resize": OpSpec(ResizeParams, _apply_resize, augmentation=False),
    "rotate90": OpSpec(Rotate90Params, _geometric(ops.rotate90, "exact", k=lambda p: p.k)),
    "flip": OpSpec(FlipParams, _geometric(ops.flip, "exact", axis=lambda p: p.axis)),
    "rotate": OpSpec(RotateParams, _geometric(ops.rotate, "nearest",
                                              angle_deg=lambda p: p.angle_deg,
                                              order=lambda p: 1)),
    "translate": OpSpec(TranslateParams, _geometric(ops.translate, "nearest",
                                                    shift_px=lambda p: (p.dy_px, p.dx_px),
                                                    order=lambda p: 1)),
    "scale": OpSpec(ScaleParams, _geometric(ops.scale, "nearest", factor=lambda p: p.factor,
                                            order=lambda p: 1)),
    "gaussian_blur": OpSpec(BlurParams, _intensity(ops.gaussian_blur, sigma=lambda p: p.sigma)),
    "jpeg": OpSpec(JpegParams, _intensity(ops.jpeg, quality=lambda p: p.quality)),
    "srad": OpSpec(SradParams, _apply_srad),
    "srad_series": OpSpec(SradSeriesParams, _apply_srad_series),
    "superres": OpSpec(SuperResParams, _apply_superres),
}


def _random_bounds(name: str, spec: dict) -> list[Any]:
    """The values of a random spec to check against the op's model: both bounds, every choice.
    Bounds are used as they are when drawing, so they must be numbers, not numeric strings."""
    kind, args = next(iter(spec.items()))
    if kind in ("uniform", "randint"):
        number = int if kind == "randint" else Real
        if not (isinstance(args, list) and len(args) == 2
                and all(isinstance(a, number) and not isinstance(a, bool) for a in args)):
            what = "integers" if kind == "randint" else "numbers"
            raise ConfigError(f"{name}: {{{kind}: [lo, hi]}} needs two {what}, got {args!r}")
        return list(args)
    if not (isinstance(args, list) and args):
        raise ConfigError(f"{name}: {{choice: [...]}} needs a non-empty list, got {args!r}")
    return list(args)


def validate_op_params(op: str, params: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the parameter if ``params`` (random specs allowed) do not fit."""
    model = OPS[op].params
    random_keys = {k for k, v in params.items() if isinstance(v, dict) and len(v) == 1
                   and next(iter(v)) in RANDOM_KINDS}
    # Before the model, which would first report the parameter a misspelt one stands for as
    # missing.
    for key in params:
        if key not in model.model_fields:
            raise ValueError(unknown("parameter", key, model.model_fields))
    try:
        bounds = {key: _random_bounds(key, params[key]) for key in random_keys}
        # Check every bound/choice of each random key, the others held at their first value.
        base = {k: (bounds[k][0] if k in bounds else v) for k, v in params.items()}
        candidates = [base] + [dict(base, **{key: value}) for key in bounds for value in bounds[key]]
        for candidate in candidates:
            model.model_validate(candidate)
        # After the model, which names a NaN bound as not finite (NaN <= x is always False).
        for key, values in bounds.items():
            kind = next(iter(params[key]))
            if kind != "choice" and not values[0] <= values[1]:
                raise ConfigError(f"{key}: {{{kind}: [lo, hi]}} needs lo <= hi, got {values!r}")
    except ValidationError as error:
        item = error.errors()[0]
        where = ".".join(str(p) for p in item["loc"]) or "parameters"
        allowed = ", ".join(model.model_fields) or "none"
        raise ValueError(f"{where}: {item['msg'].removeprefix('Value error, ')} "
                         f"(parameters of {op}: {allowed})") from None


def sample_seed(job_seed: int, sample_id: str, variant: int) -> int:
    """The per-output-sample seed: a stable 63-bit hash of (job seed, input sample, variant)."""
    digest = hashlib.sha256(f"{job_seed}\x00{sample_id}\x00{variant}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def realise_chain(chain: list[tuple[str, dict]], seed: int) -> list[tuple[str, dict]]:
    """Draw every random parameter of ``chain`` from ``Generator(seed)``, in chain order.

    The result holds only concrete values, so it can be recorded in the manifest and replayed.
    """
    rng = np.random.default_rng(seed)
    concrete = []
    for op, params in chain:
        drawn = {}
        for key in sorted(params):
            value = params[key]
            if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in RANDOM_KINDS:
                kind, args = next(iter(value.items()))
                if kind == "uniform":
                    value = float(rng.uniform(args[0], args[1]))
                elif kind == "randint":
                    value = int(rng.integers(args[0], args[1], endpoint=True))
                else:
                    value = args[int(rng.integers(len(args)))]
            drawn[key] = value
        concrete.append((op, drawn))
    return concrete


def describe_chain(chain: list[tuple[str, dict]]) -> str:
    """A short human-readable name for a chain template, e.g. ``bmode(40) > flip(horizontal)``."""

    def fmt(value):
        if isinstance(value, dict):
            kind, args = next(iter(value.items()))
            return f"{kind}{args}".replace(" ", "")
        return str(value)

    parts = []
    for op, params in chain:
        if op == "identity" and len(chain) > 1:
            continue
        args = ",".join(fmt(params[k]) for k in sorted(params))
        parts.append(f"{op}({args})" if args else op)
    return " > ".join(parts) or "identity"


def _run_ops(frame: Frame, chain: list[tuple[str, dict]], output_size: tuple[int, int],
             cache: dict | None) -> Frame:
    """Apply ``chain`` one op at a time; ``cache`` holds each result keyed by its chain prefix,
    and an op's :attr:`OpSpec.shared` part keyed by the prefix before it and the op's name."""
    key: tuple = ()
    for op, params in chain:
        prefix, key = key, key + ((op, json.dumps(params, sort_keys=True)),)
        if cache is not None and key in cache:
            frame = cache[key]
            continue
        spec = OPS[op]
        model = spec.params.model_validate(params)
        if spec.shared is None:
            frame = spec.apply(frame, model, output_size)
        else:
            shared_key = prefix + ((op, None),)
            if cache is not None and shared_key not in cache:
                cache[shared_key] = spec.shared(frame)
            frame = spec.apply(frame, model, output_size,
                               None if cache is None else cache[shared_key])
        if cache is not None:
            cache[key] = frame
    return frame


def _finish(frame: Frame, applied: list[tuple[str, dict]],
            output_size: tuple[int, int]) -> tuple[Frame, list[tuple[str, dict]]]:
    """The final bicubic resize to ``output_size`` (recorded) where needed, and the uint8 check."""
    applied = list(applied)
    if tuple(frame.data.shape) != tuple(output_size):
        frame = _apply_resize(frame, ResizeParams(size=tuple(output_size)), output_size)
        applied.append(("resize", {"size": list(output_size)}))
    if frame.data.dtype != np.uint8 or frame.data.ndim != 2:
        raise InputError(f"chain produced {frame.data.dtype} {frame.data.shape}, not a uint8 image")
    return frame, applied


def apply_chain(frame: Frame, chain: list[tuple[str, dict]], output_size: tuple[int, int],
                cache: dict | None = None) -> tuple[Frame, list[tuple[str, dict]]]:
    """Run a concrete chain on one input frame; return the output and the ops actually applied.

    A final bicubic ``resize`` to ``output_size`` is appended when the chain does not already end
    at that size, and recorded. ``cache`` (keyed by the chain prefix) lets the variants of one
    input sample share their common prefix, e.g. one ``bmode`` per dynamic range, and the part
    of an op its parameters do not change (:attr:`OpSpec.shared`), e.g. one envelope for them.

    This is the per-sample replay of a manifest row, and the reference the batched path
    (:func:`start_chain` + :func:`finish_chains`) reproduces byte for byte.
    """
    frame = _run_ops(frame, chain, output_size, cache)
    return _finish(frame, chain, output_size)


# --- batched chains ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchedOp:
    """How an op runs on a stack of B same-shaped frames, image for image the bytes of its
    per-sample :class:`OpSpec`.

    ``apply(data, mask, params, metas)`` takes the stacked data (B, H, W), the stacked masks (or
    None), the B validated parameter models and the B frames' metadata, and returns the new data
    and masks. ``vector`` names the parameters that may differ inside one batch (per-sample
    vectors); samples that differ in any other parameter run in separate batches.
    ``moves_pixels`` False: the op never reads or changes the masks (it gets None for them and
    what it returns for them is ignored), so a tail of such ops never stacks them. With
    ``twins``, ``apply`` also gets, per row, the first row whose data is the same (the same
    array, through the same ops with the same parameters), so equal rows are computed once.
    """

    apply: Callable[..., tuple[Any, Any]]
    vector: tuple[str, ...] = ()
    moves_pixels: bool = True
    twins: bool = False


def _batched_geometric(fn: Callable[..., Any], values: Callable[[Any], Any]):
    """Adapter for an op that moves pixels with a value per sample: the image resampled
    linearly and its mask nearest with the same maps, in one call for the whole batch (one
    launch on CuPy)."""

    def apply(data, mask, params, metas):
        vector = [values(p) for p in params]
        if mask is None:
            return fn(data, vector, order=1), None
        return fn(data, vector, order=1, masks=mask)

    return apply


def _batched_exact(fn: Callable[..., Any], name: str):
    """Adapter for an exact pixel permutation shared by the whole batch (image and mask): the
    parameter is not a vector, so :func:`_tail_key` made it equal across the batch."""

    def apply(data, mask, params, metas):
        value = getattr(params[0], name)
        return fn(data, value), None if mask is None else fn(mask, value)

    return apply


def _batched_flip(data, mask, params, metas):
    """``ops.flip_batch`` of the stack and its masks in one call (one launch on CuPy)."""
    axis = params[0].axis  # not a vector: equal across the batch (_tail_key)
    return (ops.flip_batch(data, axis), None) if mask is None else ops.flip_batch(
        data, axis, masks=mask)


#: Pixels per SRAD call on a NumPy stack. SRAD's scratch buffers for a whole shard fall out of
#: the CPU caches: 32 images of 224 x 224 in one call ran about 2x slower than image by image,
#: chunks of two as fast (measured here). On CuPy the whole batch is one call (one launch per
#: iteration). Each image's result is independent of its batch (tests/ops/test_srad.py).
SRAD_CPU_CHUNK_PIXELS = 1 << 17


def _srad_chunks(data, members: list[int]) -> list[list[int]]:
    """``members`` in the batches SRAD runs them in on this stack's device."""
    if is_cupy(data):
        return [members]
    step = max(1, SRAD_CPU_CHUNK_PIXELS // (data.shape[1] * data.shape[2]))
    return [members[i:i + step] for i in range(0, len(members), step)]


def _batched_srad(data, mask, params: list[SradParams], metas):
    """One SRAD run per dynamic range present (every other parameter is shared)."""
    xp = get_array_module(data)
    ranges = [_dynamic_range(Frame(None, None, None, "image", meta), p)
              for meta, p in zip(metas, params)]
    result = xp.empty_like(data)
    for value in sorted(set(ranges)):
        members = [b for b, r in enumerate(ranges) if r == value]
        for chunk in _srad_chunks(data, members):
            picked = xp.asarray(np.array(chunk, np.int64))
            result[picked] = ops.srad_bmode(data[picked], params[0].iterations, value,
                                            **params[0].srad_options())
    return result, mask


def _batched_srad_series(data, mask, params: list[SradSeriesParams], metas, twins: list[int]):
    """One series per distinct image (:class:`BatchedOp` ``twins``) and dynamic range of the
    batch, the images of one dynamic range diffused together (:func:`_srad_chunks`), each sample
    taking its own ``scale`` snapshot: the variants of one image that differ only in ``scale``
    diffuse it once. On CuPy a batch of one dynamic range is one launch, no host sync
    (:func:`augengine.ops.srad_series_bmode_pick`)."""
    xp = get_array_module(data)
    ranges = [_dynamic_range(Frame(None, None, None, "image", meta), p)
              for meta, p in zip(metas, params)]
    options = params[0]
    everything = list(range(len(data)))
    result = None
    for value in sorted(set(ranges)):
        members = [b for b, r in enumerate(ranges) if r == value]
        for chunk in _srad_chunks(data, list(dict.fromkeys(twins[b] for b in members))):
            position = {source: i for i, source in enumerate(chunk)}
            rows = [b for b in members if twins[b] in position]
            images = data if chunk == everything else data[xp.asarray(np.array(chunk, np.int64))]
            picked = ops.srad_series_bmode_pick(
                images, value, [(position[twins[b]], params[b].scale) for b in rows],
                options.scales, options.iterations_per_scale, **options.srad_options())
            if rows == everything:
                return picked, mask
            if result is None:
                result = xp.empty_like(data)
            result[xp.asarray(np.array(rows, np.int64))] = picked
    return result, mask


#: The ops a batch runs on stacks (B, H, W) in :func:`finish_chains`, each giving the per-sample
#: bytes (tests/test_batched_chains.py, tests/ops/test_batch.py). On CuPy: rotate, translate,
#: scale and flip one ``warp_affine`` launch per batch for the images and their masks (nearest);
#: SRAD two launches per iteration for the batch, the SRAD series of small images one
#: launch for all iterations (``ops.srad_series_bmode_pick``); rotate90 one copy; blur
#: one filter call per distinct sigma; JPEG one host round trip per batch (PIL encodes on the host).
#: On NumPy, where a call costs no launch, the batch forms are chosen for CPU speed: rotate,
#: translate, scale and JPEG go image by image, SRAD in chunks of ``SRAD_CPU_CHUNK_PIXELS``.
#: bmode, roi_crop, scan_convert and resize are not here: their results' shapes differ per
#: input, so a chain's head up to the last of them runs apart from its tail: per input in
#: :func:`start_chain`, except its trailing run of :data:`HEAD_BATCHED` ops, which runs
#: across the shard's inputs whatever their shapes.
BATCHED: dict[str, BatchedOp] = {
    "identity": BatchedOp(lambda data, mask, params, metas: (data, mask), moves_pixels=False),
    "rotate90": BatchedOp(_batched_exact(ops.rotate90_batch, "k")),
    "flip": BatchedOp(_batched_flip),
    "rotate": BatchedOp(_batched_geometric(ops.rotate_batch, lambda p: p.angle_deg),
                        vector=("angle_deg",)),
    "translate": BatchedOp(_batched_geometric(ops.translate_batch,
                                              lambda p: (p.dy_px, p.dx_px)),
                           vector=("dy_px", "dx_px")),
    "scale": BatchedOp(_batched_geometric(ops.scale_batch, lambda p: p.factor),
                       vector=("factor",)),
    "gaussian_blur": BatchedOp(
        lambda data, mask, params, metas: (
            ops.gaussian_blur_batch(data, [p.sigma for p in params]), mask),
        vector=("sigma",), moves_pixels=False),
    "jpeg": BatchedOp(
        lambda data, mask, params, metas: (ops.jpeg_batch(data, [p.quality for p in params]),
                                           mask),
        vector=("quality",), moves_pixels=False),
    "srad": BatchedOp(_batched_srad, vector=("dynamic_range_db",), moves_pixels=False),
    "srad_series": BatchedOp(_batched_srad_series, vector=("scale", "dynamic_range_db"),
                             moves_pixels=False, twins=True),
}


def _bmode_frames(frames: list[Frame], params: list[BmodeParams], output_size) -> list[Frame]:
    """:func:`_apply_bmode` of each ``(frames[i], params[i])`` (a frame may come once per dynamic
    range), each input's envelope computed once for all its ranges.

    On NumPy frame by frame through :func:`_bmode_envelope` and :func:`_apply_bmode`, the
    per-sample code itself. On CuPy the inputs of one RF shape and dtype share one
    ``ops.envelope_peaks`` call (the frames stacked) and every (input, range) of them one
    ``ops.compress_envelope_batch`` launch; the all-zero/NaN peak check is not read back here
    (that would be a host sync per call) but deferred (:class:`DeferredCheck`) to the shard's
    copy back, with ``ops.peaks_error`` giving the message the checking path raises."""
    if not is_cupy(frames[0].data):
        shared: dict[int, tuple] = {}
        made = []
        for frame, model in zip(frames, params):
            if id(frame) not in shared:
                shared[id(frame)] = _bmode_envelope(frame)
            made.append(_apply_bmode(frame, model, output_size, shared[id(frame)]))
        return made
    xp = get_array_module(frames[0].data)
    inputs = list({id(frame): frame for frame in frames}.values())
    spacing = {id(frame): _bmode_envelope_spacing(frame) for frame in inputs}
    groups: dict[tuple, list[Frame]] = {}
    for frame in inputs:
        groups.setdefault((tuple(frame.data.shape), str(frame.data.dtype)), []).append(frame)
    made: list = [None] * len(frames)
    for members in groups.values():
        rf = members[0].data[None] if len(members) == 1 else xp.stack([f.data for f in members])
        envelope, peaks = ops.envelope_peaks(rf, axis=0, check=False)
        slot = {id(frame): i for i, frame in enumerate(members)}
        wanted = [i for i, frame in enumerate(frames) if id(frame) in slot]
        images = ops.compress_envelope_batch(
            envelope, peaks, [slot[id(frames[i])] for i in wanted],
            [params[i].dynamic_range_db for i in wanted])
        for row, i in enumerate(wanted):
            frame = frames[i]
            check = DeferredCheck(peaks, slot[id(frame)], ops.peaks_error)
            made[i] = replace(frame, data=images[row], spacing_mm=spacing[id(frame)],
                              domain="image", checks=frame.checks + (check,),
                              meta=dict(frame.meta, dynamic_range_db=params[i].dynamic_range_db))
    return made


def _roi_crop_frames(frames: list[Frame], params: list[RoiCropParams],
                     output_size) -> list[Frame]:
    """:func:`_apply_roi_crop` frame by frame: the box comes from the host mask and the crop is
    a view, so there is nothing to batch on the device."""
    return [_apply_roi_crop(frame, model, output_size) for frame, model in zip(frames, params)]


def _masks_resampled(frames: list[Frame], resample) -> list:
    """Each frame's mask through ``resample(masks) -> masks`` (None where a frame has none)."""
    having = [i for i, frame in enumerate(frames) if frame.mask is not None]
    masks: list = [None] * len(frames)
    for i, mask in zip(having, resample([frames[i].mask for i in having]) if having else []):
        masks[i] = mask
    return masks


def _scan_convert_frames(frames: list[Frame], params: list[ScanConvertParams],
                         output_size) -> list[Frame]:
    """:func:`_apply_scan_convert` of frames of any shapes and spacings in one
    ``ops.scan_convert_many`` call (two launches on CuPy), masks nearest in another."""
    pixel = params[0].pixel_size_mm  # not a vector: equal across the batch (_head_key)
    for frame in frames:
        _scan_convert_checked(frame, params[0])
    spacings = [frame.spacing_mm for frame in frames]
    data = ops.scan_convert_many([frame.data for frame in frames], spacings, pixel, order=3)
    masks = _masks_resampled(frames, lambda masks: ops.scan_convert_many(
        masks, [f.spacing_mm for f in frames if f.mask is not None], pixel, order=0))
    return [replace(frame, data=image, mask=mask,
                    spacing_mm=_scan_convert_spacing(frame, image.shape[0]))
            for frame, image, mask in zip(frames, data, masks)]


def _resize_frames(frames: list[Frame], params: list[ResizeParams], output_size) -> list[Frame]:
    """:func:`_apply_resize` of frames of any shapes to one size in one ``ops.resize_many``
    call (two launches on CuPy), masks nearest in another."""
    size = tuple(params[0].size or output_size)  # not a vector (_head_key)
    data = ops.resize_many([frame.data for frame in frames], size, order=3)
    masks = _masks_resampled(frames, lambda masks: ops.resize_many(masks, size, order=0))
    return [replace(frame, data=image, mask=mask, spacing_mm=_resize_spacing(frame, size))
            for frame, image, mask in zip(frames, data, masks)]


@dataclass(frozen=True)
class HeadOp:
    """How a head op runs across a shard's inputs: ``apply(frames, params, output_size) ->
    frames``, image for image the bytes of its :class:`OpSpec` on NumPy, whatever the frames'
    shapes (a frame may repeat, with other parameters). ``vector`` names the parameters that
    may differ inside one batch."""

    apply: Callable[[list[Frame], list[Any], tuple[int, int]], list[Frame]]
    vector: tuple[str, ...] = ()


#: Head ops (before a chain's batched tail) that a shard runs across its inputs: a chain's
#: head runs per input (:func:`start_chain`) up to its trailing run of these ops, which waits
#: for the shard (:func:`finish_chains`): op by op, one call per op and parameters (less
#: ``vector``) for every input and variant that reaches it, the variants of one input that
#: share the prefix counting once. On CuPy the demo head costs, per shard, one envelope per RF
#: shape, one compression launch for every (frame, range), no device work for the crops (host
#: boxes, views) and two launches for each of scan_convert and resize (ragged resampling).
HEAD_BATCHED: dict[str, HeadOp] = {
    "bmode": HeadOp(_bmode_frames, vector=("dynamic_range_db",)),
    "roi_crop": HeadOp(_roi_crop_frames),
    "scan_convert": HeadOp(_scan_convert_frames),
    "resize": HeadOp(_resize_frames),
}


@dataclass
class ChainStart:
    """One sample after the per-input head of its chain: the frame, the ops applied so far (with
    ``pending``), the ops of the head still to run across the shard's inputs
    (:data:`HEAD_BATCHED`) and the tail that :func:`finish_chains` runs in batches."""

    frame: Frame
    applied: list[tuple[str, dict]]
    tail: list[tuple[str, dict]]
    pending: list[tuple[str, dict]] = field(default_factory=list)


def start_chain(frame: Frame, chain: list[tuple[str, dict]], output_size: tuple[int, int],
                cache: dict | None = None) -> ChainStart:
    """Run the head of a concrete chain on one input frame, as :func:`apply_chain` does.

    The head ends at the last op without a :data:`BATCHED` form (nothing when every op has
    one); the rest, the tail, is left to :func:`finish_chains`. So is the head's trailing run of
    :data:`HEAD_BATCHED` ops (``pending``), which :func:`finish_chains` runs across inputs. Every
    parameter of the tail and of ``pending`` is validated here, so a bad value is this sample's
    error alone.
    """
    split = max((i + 1 for i, (op, _) in enumerate(chain) if op not in BATCHED), default=0)
    head, tail = chain[:split], chain[split:]
    for op, params in tail:
        OPS[op].params.model_validate(params)
    cut = split
    while cut > 0 and head[cut - 1][0] in HEAD_BATCHED:
        cut -= 1
    frame = _run_ops(frame, head[:cut], output_size, cache)
    # Validated after the ops before them ran, as the per-sample path meets them.
    for op, params in head[cut:]:
        OPS[op].params.model_validate(params)
    return ChainStart(frame, list(head), list(tail), list(head[cut:]))


def _head_key(frame: Frame, op: str, params: dict) -> tuple:
    """Frames with equal keys run a :data:`HEAD_BATCHED` op as one batch: the same op, the same
    parameters less its ``vector``, the same dtype, domain and presence of a mask."""
    fixed = {k: v for k, v in params.items() if k not in HEAD_BATCHED[op].vector}
    return (op, json.dumps(fixed, sort_keys=True), str(frame.data.dtype), frame.domain,
            frame.mask is None)


def _reported(frame: Frame, error: Exception) -> Exception:
    """The error a sample reports when an op raised on ``frame``: a failing deferred check of
    an earlier op wins, as that op raises first on the per-sample path (read back now: a sync,
    on this error path only)."""
    return settle(frame.checks) or error


def _finish_heads(starts: list[ChainStart], output_size: tuple[int, int]
                  ) -> list[ChainStart | Exception]:
    """Run every sample's ``pending`` head ops, position by position, one batch per
    :func:`_head_key`; samples that reach an op with the same frame object and parameters (the
    variants of one input, through the per-input cache or an earlier batch) share one entry of
    it and its result. Returns, per sample, its start with the head done, or the exception it
    raised: a batch that raises runs again frame by frame through the per-sample op, so each
    failure is the per-sample path's."""
    current: list = [replace(s, pending=[]) for s in starts]
    for position in range(max((len(s.pending) for s in starts), default=0)):
        groups: dict[tuple, dict[tuple, list[int]]] = {}
        for index, start in enumerate(starts):
            if isinstance(current[index], Exception) or position >= len(start.pending):
                continue
            frame = current[index].frame
            op, params = start.pending[position]
            groups.setdefault(_head_key(frame, op, params), {}).setdefault(
                (id(frame), json.dumps(params, sort_keys=True)), []).append(index)
        for by_entry in groups.values():
            sharing = list(by_entry.values())
            op = starts[sharing[0][0]].pending[position][0]
            frames = [current[members[0]].frame for members in sharing]
            models = [OPS[op].params.model_validate(starts[members[0]].pending[position][1])
                      for members in sharing]
            try:
                made: list = HEAD_BATCHED[op].apply(frames, models, output_size)
            except Exception:  # noqa: BLE001 - find the culprit frame by frame below
                made = []
                for frame, model in zip(frames, models):
                    try:
                        made.append(OPS[op].apply(frame, model, output_size))
                    except Exception as error:  # noqa: BLE001 - reported per sample
                        made.append(_reported(frame, error))
            for members, result in zip(sharing, made):
                for index in members:
                    current[index] = (result if isinstance(result, Exception)
                                      else replace(current[index], frame=result))
    return current


def _tail_key(start: ChainStart) -> tuple:
    """Samples with equal keys run their tails as one batch: the same shapes and dtypes, the
    same ops, and the same value of every parameter that is not a per-sample vector."""
    frame = start.frame
    mask = None if frame.mask is None else (tuple(frame.mask.shape), str(frame.mask.dtype))
    structure = tuple(
        (op, json.dumps({k: v for k, v in params.items() if k not in BATCHED[op].vector},
                        sort_keys=True))
        for op, params in start.tail)
    return tuple(frame.data.shape), str(frame.data.dtype), mask, frame.domain, structure


def _stack_on(xp, arrays: list):
    """``arrays`` stacked in module ``xp``. A GPU run may keep masks on the host until a batched
    op moves their pixels; then they go over in one copy."""
    if all(get_array_module(a) is xp for a in arrays):
        return xp.stack(arrays)
    return xp.asarray(np.stack([a.get() if is_cupy(a) else a for a in arrays]))


def _run_batch(starts: list[ChainStart]) -> list[Frame]:
    """Every op of the shared tail once on the stacked frames of ``starts``. The masks are
    stacked only for an op that moves pixels; until then each sample keeps its own."""
    frames = [s.frame for s in starts]
    if all(op == "identity" for op, _ in starts[0].tail):
        return frames  # nothing to run, so nothing to stack
    xp = get_array_module(frames[0].data)
    data = xp.stack([f.data for f in frames])
    mask = None  # the stacked masks, once an op moved pixels
    metas = [f.meta for f in frames]
    first: dict[int, int] = {}
    twins = [first.setdefault(id(f.data), b) for b, f in enumerate(frames)]
    for position, (op, _) in enumerate(starts[0].tail):
        params = [OPS[op].params.model_validate(s.tail[position][1]) for s in starts]
        batched = BATCHED[op]
        if batched.moves_pixels and mask is None and frames[0].mask is not None:
            mask = _stack_on(xp, [f.mask for f in frames])
        extra = (twins,) if batched.twins else ()
        data, moved = batched.apply(data, mask if batched.moves_pixels else None, params, metas,
                                    *extra)
        mask = moved if batched.moves_pixels else mask
        twins = [t if params[b] == params[t] else b for b, t in enumerate(twins)]
    return [replace(f, data=data[b], mask=f.mask if mask is None else mask[b])
            for b, f in enumerate(frames)]


def finish_chains(starts: list[ChainStart], output_size: tuple[int, int]
                  ) -> list[tuple[Frame, list[tuple[str, dict]]] | Exception]:
    """Run the tails of many samples' chains in batches and finish each as :func:`apply_chain`.

    First the heads' ``pending`` ops, batched across the samples (:func:`_finish_heads`). Then
    samples are grouped by :func:`_tail_key`; each group runs each op of its tail once on a
    stack (B, H, W) with the per-sample parameters as vectors (:data:`BATCHED`). Then, per
    sample, the final resize to ``output_size`` where the chain did not reach it, and the uint8
    check. Returns, in the order of ``starts``, ``(frame, applied)`` or the exception that sample
    raised. A group whose batch raises runs again one sample at a time, so one bad sample never
    costs the others their outputs and each failure is reported as the per-sample path reports it.
    A frame returned may still carry :class:`DeferredCheck` s (CuPy): the caller reads them back
    with the images and quarantines a sample whose check fails (or calls :func:`settle`).
    """
    starts = _finish_heads(starts, output_size)
    results: list = [start if isinstance(start, Exception) else None for start in starts]
    groups: dict[tuple, list[int]] = {}
    for index, start in enumerate(starts):
        if not isinstance(start, Exception):
            groups.setdefault(_tail_key(start), []).append(index)
    for members in groups.values():
        chosen = [starts[i] for i in members]
        try:
            frames = _run_batch(chosen)
        except Exception:  # noqa: BLE001 - find the culprit sample by sample below
            frames = None
        for position, index in enumerate(members):
            start = starts[index]
            try:
                frame = (frames[position] if frames is not None
                         else _run_ops(start.frame, start.tail, output_size, None))
                results[index] = _finish(frame, start.applied + start.tail, output_size)
            except Exception as error:  # noqa: BLE001 - reported per sample
                results[index] = _reported(start.frame, error)
    return results
