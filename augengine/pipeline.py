"""The op registry and the per-sample chain: which ops a job may name, their typed parameters,
how random parameters are drawn, and how one input sample becomes one output image.

This layer holds no image maths: each entry adapts an ``augengine.ops`` function to a ``Frame``
(image + mask + pixel spacing), applying geometric ops to the mask with nearest-neighbour
interpolation so that image and mask always stay aligned.
"""
from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from numbers import Real
from typing import Annotated, Any, Callable, Literal

import numpy as np
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError,
                      model_validator)

from augengine import ops
from augengine.errors import ConfigError, InputError

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


@dataclass
class Frame:
    """What flows through a chain: RF (depth, lines) or a uint8 image, its mask and spacing."""

    data: np.ndarray
    mask: np.ndarray | None
    spacing_mm: tuple[float, float] | None
    domain: Literal["rf", "image"]
    meta: dict[str, Any] = field(default_factory=dict)


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


def _geometric(fn: Callable[..., np.ndarray], **kwargs_from_params):
    """Adapter for an op that moves pixels: the mask follows with nearest-neighbour sampling."""

    def apply(frame: Frame, params, output_size) -> Frame:
        kwargs = {name: getter(params) for name, getter in kwargs_from_params.items()}
        data = fn(frame.data, **kwargs)
        mask = None if frame.mask is None else fn(frame.mask, **_nearest(fn, kwargs))
        return replace(frame, data=data, mask=mask)

    return apply


def _nearest(fn, kwargs):
    return kwargs if fn in (ops.rotate90, ops.flip) else dict(kwargs, order=0)


def _intensity(fn: Callable[..., np.ndarray], **kwargs_from_params):
    """Adapter for an op that changes grey levels only: the mask is untouched."""

    def apply(frame: Frame, params, output_size) -> Frame:
        kwargs = {name: getter(params) for name, getter in kwargs_from_params.items()}
        return replace(frame, data=fn(frame.data, **kwargs))

    return apply


def _apply_bmode(frame: Frame, params: BmodeParams, output_size) -> Frame:
    meta = frame.meta
    try:
        spacing = ops.geometry.rf_spacing_mm(meta["fs_hz"], meta["c_m_s"], meta["pitch_m"])
    except (KeyError, TypeError):
        raise InputError("RF sample lacks fs_hz, c_m_s or pitch_m in its metadata") from None
    image = ops.bmode(frame.data, params.dynamic_range_db, axis=0)
    return replace(frame, data=image, spacing_mm=spacing, domain="image",
                   meta=dict(meta, dynamic_range_db=params.dynamic_range_db))


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


#: The last few whole series, so the ``scales`` variants of one image diffuse it once.
_SERIES_MEMO: OrderedDict[tuple, object] = OrderedDict()


def _apply_srad_series(frame: Frame, params: SradSeriesParams, output_size) -> Frame:
    dynamic_range = _dynamic_range(frame, params)
    data = frame.data
    host = data.get() if hasattr(data, "get") else data
    key = (hashlib.sha256(host.tobytes()).hexdigest(), host.shape, dynamic_range,
           params.model_dump_json(exclude={"scale"}))
    if key not in _SERIES_MEMO:
        _SERIES_MEMO[key] = ops.srad_series_bmode(
            data, dynamic_range, params.scales, params.iterations_per_scale,
            **params.srad_options())
        while len(_SERIES_MEMO) > 4:
            _SERIES_MEMO.popitem(last=False)
    return replace(frame, data=_SERIES_MEMO[key][params.scale])


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


def _apply_scan_convert(frame: Frame, params: ScanConvertParams, output_size) -> Frame:
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
    data = ops.scan_convert(frame.data, frame.spacing_mm, params.pixel_size_mm, order=3)
    mask = None
    if frame.mask is not None:
        mask = ops.scan_convert(frame.mask, frame.spacing_mm, params.pixel_size_mm, order=0)
    # Square pixels of the size actually produced (the op documents how it picks the default).
    rows_mm = frame.data.shape[0] * frame.spacing_mm[0]
    pixel = rows_mm / data.shape[0]
    return replace(frame, data=data, mask=mask, spacing_mm=(pixel, pixel))


def _apply_resize(frame: Frame, params: ResizeParams, output_size) -> Frame:
    size = tuple(params.size or output_size)
    data = ops.resize(frame.data, size, order=3)
    mask = None if frame.mask is None else ops.resize(frame.mask, size, order=0)
    spacing = None
    if frame.spacing_mm is not None:
        spacing = (frame.spacing_mm[0] * frame.data.shape[0] / size[0],
                   frame.spacing_mm[1] * frame.data.shape[1] / size[1])
    return replace(frame, data=data, mask=mask, spacing_mm=spacing)


OPS: dict[str, OpSpec] = {
    "identity": OpSpec(NoParams, lambda frame, params, size: frame, domain_in="any",
                       augmentation=False),
    "bmode": OpSpec(BmodeParams, _apply_bmode, domain_in="rf", domain_out="image",
                    augmentation=False),
    "roi_crop": OpSpec(RoiCropParams, _apply_roi_crop, augmentation=False),
    "scan_convert": OpSpec(ScanConvertParams, _apply_scan_convert, augmentation=False),
    "resize": OpSpec(ResizeParams, _apply_resize, augmentation=False),
    "rotate90": OpSpec(Rotate90Params, _geometric(ops.rotate90, k=lambda p: p.k)),
    "flip": OpSpec(FlipParams, _geometric(ops.flip, axis=lambda p: p.axis)),
    "rotate": OpSpec(RotateParams, _geometric(ops.rotate, angle_deg=lambda p: p.angle_deg,
                                              order=lambda p: 1)),
    "translate": OpSpec(TranslateParams, _geometric(ops.translate,
                                                    shift_px=lambda p: (p.dy_px, p.dx_px),
                                                    order=lambda p: 1)),
    "scale": OpSpec(ScaleParams, _geometric(ops.scale, factor=lambda p: p.factor,
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
    except ConfigError as error:
        raise ValueError(f"op {op!r}: {error}") from None
    except ValidationError as error:
        item = error.errors()[0]
        where = ".".join(str(p) for p in item["loc"]) or "parameters"
        allowed = ", ".join(model.model_fields) or "none"
        raise ValueError(f"op {op!r}: {where}: {item['msg'].removeprefix('Value error, ')} "
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


def apply_chain(frame: Frame, chain: list[tuple[str, dict]], output_size: tuple[int, int],
                cache: dict | None = None) -> tuple[Frame, list[tuple[str, dict]]]:
    """Run a concrete chain on one input frame; return the output and the ops actually applied.

    A final bicubic ``resize`` to ``output_size`` is appended when the chain does not already end
    at that size, and recorded. ``cache`` (keyed by the chain prefix) lets the variants of one
    input sample share their common prefix, e.g. one ``bmode`` per dynamic range.
    """
    applied: list[tuple[str, dict]] = []
    key: tuple = ()
    for op, params in chain:
        key = key + ((op, json.dumps(params, sort_keys=True)),)
        if cache is not None and key in cache:
            frame = cache[key]
        else:
            spec = OPS[op]
            frame = spec.apply(frame, spec.params.model_validate(params), output_size)
            if cache is not None:
                cache[key] = frame
        applied.append((op, params))
    if tuple(frame.data.shape) != tuple(output_size):
        frame = _apply_resize(frame, ResizeParams(size=tuple(output_size)), output_size)
        applied.append(("resize", {"size": list(output_size)}))
    if frame.data.dtype != np.uint8 or frame.data.ndim != 2:
        raise InputError(f"chain produced {frame.data.dtype} {frame.data.shape}, not a uint8 image")
    return frame, applied
