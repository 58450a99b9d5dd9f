"""A fast convolution-model RF phantom simulator of breast lesions, in physical units.

RF is modelled as the 2-D convolution of a random scatterer field with the pulse-echo point
spread function (the classic linear convolution model of ultrasound speckle)::

    rf(z, x) = [ E(z, x) * w(z, x) ] ** h(z, x) + n(z, x)

where ``w`` are zero-mean Gaussian scatterer amplitudes on every RF sample (tens of scatterers
per resolution cell, so the analytic signal is circular complex Gaussian and the envelope is
Rayleigh distributed: fully developed speckle), ``E`` the echogenicity map (relative
backscatter amplitude: layered breast tissue, the lesion, its posterior shadow or enhancement,
residual attenuation), ``**`` 2-D convolution, ``h = p(t) g(x)`` the separable PSF with

* ``p(t) = exp(-t^2 / (2 s_t^2)) cos(2 pi fc t)``: a Gaussian-modulated pulse whose amplitude
  spectrum has -6 dB fractional bandwidth ``B``: ``s_f = B fc / (2 sqrt(2 ln 2))``,
  ``s_t = 1 / (2 pi s_f)``;
* ``g(x) = exp(-x^2 / (2 s_x^2))``: the lateral beam, FWHM ``lambda * F#`` (the diffraction-
  limited width of a focused aperture), ``s_x = FWHM / (2 sqrt(2 ln 2))``;

and ``n`` white electronic noise. Time runs along axis 0 (depth ``z = c t / 2``); output is
int16 scaled to a peak of 30000, the layout of OASBUD RF (Byra et al., seed 001).

Lesions follow the BI-RADS ultrasound lexicon: benign-looking ones are oval, smooth, wider than
tall (parallel orientation) and hypoechoic, with slight posterior enhancement; malignant-looking
ones are irregular and spiculated, taller than wide (not parallel), hypoechoic, with posterior
acoustic shadowing. All randomness comes from an explicit ``numpy.random.Generator``.
"""
from __future__ import annotations

import dataclasses
import io
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
from scipy.ndimage import gaussian_filter, gaussian_filter1d
from scipy.signal import fftconvolve
from tqdm.auto import tqdm

from augengine.checks import check_int
from augengine.errors import ConfigError
from augengine.sources import LABELS, Sample

#: Peak |RF| of the int16 output: most of the int16 range, with headroom (OASBUD RF is int16).
INT16_PEAK = 30000
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
_MAT_HEADER = b"MATLAB 5.0 MAT-file, written by augengine.simulate (OASBUD layout)".ljust(116)

#: Class-specific lesion shape ranges: lateral extent (mm), height/width aspect, tilt (deg),
#: echogenicity (lesion amplitude / glandular tissue), posterior amplitude factor.
_BENIGN = {"width_mm": (8.0, 16.0), "aspect": (0.45, 0.75), "aspect_limits": (0.4, 0.8),
           "angle_deg": 15.0, "echogenicity": (0.2, 0.4), "posterior": (1.15, 1.4),
           "birads": ("3", "4a")}
_MALIGNANT = {"width_mm": (6.0, 11.0), "aspect": (1.15, 1.5), "aspect_limits": (1.1, 1.6),
              "angle_deg": 20.0, "echogenicity": (0.15, 0.35), "posterior": (0.25, 0.5),
              "birads": ("4c", "5")}
#: Room kept above a lesion (skin and fat) and below it (posterior region), in mm.
_TOP_MM, _BOTTOM_MM, _SIDE_MM = 9.0, 8.0, 2.0

__all__ = ["AcquisitionParams", "Lesion", "lesion_mask", "orthogonal_view", "sample_lesion",
           "simulate_dataset", "simulate_frame"]


@dataclass(frozen=True)
class AcquisitionParams:
    """Acquisition of a linear breast probe; defaults give a 35 mm x 38 mm, 1818 x 192 frame.

    Attributes
    ----------
    fs_hz : float
        RF sampling frequency, Hz (OASBUD: 40 MHz).
    fc_hz : float
        Pulse centre frequency, Hz.
    fractional_bandwidth : float
        -6 dB bandwidth of the pulse-echo amplitude spectrum over ``fc_hz``.
    c_m_s : float
        Speed of sound, m/s.
    pitch_m : float
        Distance between scan lines, m.
    n_lines : int
        Number of scan lines (columns).
    depth_m : float
        Imaging depth, m; ``n_samples = round(2 depth fs / c)`` rows.
    f_number : float
        Focal depth over aperture; the lateral beam FWHM is ``c / fc * f_number``.
    attenuation_db_cm : float
        Net echo loss with depth after time-gain compensation, dB/cm.
    noise_db : float
        Electronic noise RMS relative to the echo RMS, dB.
    """

    fs_hz: float = 40e6
    fc_hz: float = 7.5e6
    fractional_bandwidth: float = 0.6
    c_m_s: float = 1540.0
    pitch_m: float = 0.2e-3
    n_lines: int = 192
    depth_m: float = 0.035
    f_number: float = 2.5
    attenuation_db_cm: float = 0.5
    noise_db: float = -45.0

    def __post_init__(self):
        for name in ("fs_hz", "fc_hz", "fractional_bandwidth", "c_m_s", "pitch_m", "f_number"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be > 0, got {value!r}")
        if self.fc_hz * (1 + self.fractional_bandwidth / 2) >= self.fs_hz / 2:
            raise ConfigError(f"fc_hz {self.fc_hz:g} with fractional_bandwidth "
                              f"{self.fractional_bandwidth:g} exceeds Nyquist (fs_hz / 2 = "
                              f"{self.fs_hz / 2:g})")
        if self.depth_m < 0.03:
            raise ConfigError(f"depth_m must be >= 0.03 (room for a lesion and its posterior "
                              f"region), got {self.depth_m!r}")
        if not isinstance(self.n_lines, int) or (self.n_lines - 1) * self.pitch_m < 0.02:
            raise ConfigError(f"n_lines * pitch_m must span >= 20 mm (lesion width plus margins), "
                              f"got {self.n_lines!r} lines x {self.pitch_m!r} m")
        if self.attenuation_db_cm < 0:
            raise ConfigError(f"attenuation_db_cm must be >= 0, got {self.attenuation_db_cm!r}")

    @property
    def dz_m(self) -> float:
        """Axial sample spacing ``c / (2 fs)``, m."""
        return self.c_m_s / (2.0 * self.fs_hz)

    @property
    def n_samples(self) -> int:
        return int(round(self.depth_m / self.dz_m))

    @property
    def width_mm(self) -> float:
        """Distance between the first and last line, mm."""
        return (self.n_lines - 1) * self.pitch_m * 1e3


@dataclass(frozen=True)
class Lesion:
    """Geometry and acoustics of one lesion in one scan plane (mm, degrees, radians).

    The outline is star-shaped around a polar origin::

        rho(theta) = 1 + sum_k a_k cos(k theta + phi_k)
                       + sum_j L_j max(0, 1 - |theta - theta_j| / w_j)

    (smooth harmonics, then triangular spikes), rotated by ``angle_deg`` and finally scaled per
    axis so that its bounding box is exactly ``width_mm`` x ``height_mm`` centred on
    (``center_x_mm``, ``center_z_mm``). ``height_mm / width_mm`` is the aspect: < 1 wider than
    tall (benign-looking), > 1 taller than wide (malignant-looking).

    Attributes
    ----------
    label : int
        0 benign, 1 malignant.
    center_x_mm, center_z_mm : float
        Bounding-box centre: lateral position from the first line, depth from the transducer.
    width_mm, height_mm : float
        Lateral and axial extent of the outline.
    angle_deg : float
        Tilt of the outline before the per-axis scaling.
    echogenicity : float
        Lesion backscatter amplitude relative to glandular tissue (hypoechoic: < 1).
    posterior_factor : float
        Amplitude factor below the lesion: < 1 acoustic shadowing, > 1 enhancement.
    harmonics : tuple of (int, float, float)
        ``(k, a_k, phi_k)``.
    spikes : tuple of (float, float, float)
        ``(theta_j, L_j, w_j)``; empty for benign lesions.
    birads : str
        BI-RADS category written to the OASBUD ``birads`` field.
    """

    label: int
    center_x_mm: float
    center_z_mm: float
    width_mm: float
    height_mm: float
    angle_deg: float
    echogenicity: float
    posterior_factor: float
    harmonics: tuple[tuple[int, float, float], ...]
    spikes: tuple[tuple[float, float, float], ...]
    birads: str

    @property
    def aspect(self) -> float:
        return self.height_mm / self.width_mm

    def as_meta(self) -> dict:
        """JSON-friendly dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["harmonics"] = [list(h) for h in self.harmonics]
        out["spikes"] = [list(s) for s in self.spikes]
        return out


def sample_lesion(label, rng: np.random.Generator,
                  params: AcquisitionParams = AcquisitionParams()) -> Lesion:
    """Draw a benign- or malignant-looking lesion that fits the frame.

    Benign: lateral extent U(8, 16) mm, aspect U(0.45, 0.75), tilt U(-15, 15) deg, harmonics
    k = 2, 3 of amplitude <= 0.04 (smooth, at most gently lobulated), echogenicity U(0.2, 0.4),
    posterior factor U(1.15, 1.4). Malignant: extent U(6, 11) mm, aspect U(1.15, 1.5), tilt
    U(-20, 20) deg, harmonics k = 2..8 of amplitude <= 0.08 (irregular), 6-12 spikes of length
    U(0.3, 0.8) and half-width U(0.06, 0.14) rad, echogenicity U(0.15, 0.35), posterior factor
    U(0.25, 0.5). The box keeps 9 mm above (skin, fat), 8 mm below and 2 mm at the sides; a
    lesion too large for that is shrunk with its aspect kept.

    Parameters
    ----------
    label : int or str
        0/``"benign"`` or 1/``"malignant"``.
    rng : numpy.random.Generator
    params : AcquisitionParams

    Returns
    -------
    Lesion

    Example
    -------
    >>> lesion = sample_lesion("malignant", np.random.default_rng(0))
    >>> lesion.aspect > 1
    True
    """
    code = _label_code(label)
    spec = _BENIGN if code == 0 else _MALIGNANT
    width = rng.uniform(*spec["width_mm"])
    height = width * rng.uniform(*spec["aspect"])
    # Shrink (keeping the aspect) what would not fit a shallow or narrow frame.
    fit = min(1.0, (params.depth_m * 1e3 - _TOP_MM - _BOTTOM_MM) / height,
              (params.width_mm - 2 * _SIDE_MM) / width)
    width, height = width * fit, height * fit
    angle = rng.uniform(-spec["angle_deg"], spec["angle_deg"])
    if code == 0:
        harmonics = tuple((k, rng.uniform(0.0, 0.04), rng.uniform(0, 2 * np.pi)) for k in (2, 3))
        spikes = ()
    else:
        harmonics = tuple((k, rng.uniform(0.0, 0.08), rng.uniform(0, 2 * np.pi))
                          for k in range(2, 9))
        spikes = tuple((rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 0.8),
                        rng.uniform(0.06, 0.14)) for _ in range(rng.integers(6, 13)))
    center_x = rng.uniform(width / 2 + _SIDE_MM, params.width_mm - width / 2 - _SIDE_MM)
    center_z = rng.uniform(height / 2 + _TOP_MM,
                           params.depth_m * 1e3 - height / 2 - _BOTTOM_MM)
    return Lesion(label=code, center_x_mm=center_x, center_z_mm=center_z, width_mm=width,
                  height_mm=height, angle_deg=angle,
                  echogenicity=rng.uniform(*spec["echogenicity"]),
                  posterior_factor=rng.uniform(*spec["posterior"]), harmonics=harmonics,
                  spikes=spikes, birads=str(rng.choice(spec["birads"])))


def orthogonal_view(lesion: Lesion, rng: np.random.Generator,
                    params: AcquisitionParams = AcquisitionParams()) -> Lesion:
    """The same lesion seen in the orthogonal scan plane (OASBUD records two per lesion).

    Same depth, height, echogenicity, posterior factor and BI-RADS; the lateral extent changes
    by U(0.8, 1.2) (a 3-D lesion's cross-sections differ) within the class's aspect limits
    (benign 0.4-0.8, malignant 1.1-1.6), the tilt is mirrored (plus U(-5, 5) deg), the lateral
    position moves by U(-3, 3) mm, harmonic phases and spike directions are redrawn.

    Example
    -------
    >>> a = sample_lesion(0, np.random.default_rng(1))
    >>> b = orthogonal_view(a, np.random.default_rng(2))
    >>> (a.height_mm == b.height_mm, b.aspect < 1)
    (True, True)
    """
    spec = _BENIGN if lesion.label == 0 else _MALIGNANT
    low, high = spec["aspect_limits"]
    width = float(np.clip(lesion.width_mm * rng.uniform(0.8, 1.2),
                          lesion.height_mm / high, lesion.height_mm / low))
    width = min(width, params.width_mm - 2 * _SIDE_MM)
    center_x = float(np.clip(lesion.center_x_mm + rng.uniform(-3.0, 3.0),
                             width / 2 + _SIDE_MM, params.width_mm - width / 2 - _SIDE_MM))
    harmonics = tuple((k, a, rng.uniform(0, 2 * np.pi)) for k, a, _ in lesion.harmonics)
    spikes = tuple((rng.uniform(0, 2 * np.pi), length, half_width)
                   for _, length, half_width in lesion.spikes)
    return dataclasses.replace(lesion, center_x_mm=center_x, width_mm=width,
                               angle_deg=-lesion.angle_deg + rng.uniform(-5.0, 5.0),
                               harmonics=harmonics, spikes=spikes)


def lesion_mask(lesion: Lesion, params: AcquisitionParams = AcquisitionParams()) -> np.ndarray:
    """Rasterize the lesion outline on the RF grid.

    Sample ``(i, j)`` lies at depth ``i * c / (2 fs)`` and lateral position ``j * pitch``; it is
    inside when its polar radius about the outline's origin (after undoing the per-axis scaling
    and the tilt) is at most ``rho(theta)`` (see :class:`Lesion`).

    Returns
    -------
    ndarray (n_samples, n_lines) bool

    Example
    -------
    >>> mask = lesion_mask(sample_lesion(0, np.random.default_rng(0)))
    >>> mask.shape, bool(mask.any())
    ((1818, 192), True)
    """
    origin_x, origin_z, scale_x, scale_z = _outline_frame(lesion)
    dz_mm, dx_mm = params.dz_m * 1e3, params.pitch_m * 1e3
    rows = _index_range(lesion.center_z_mm, lesion.height_mm, dz_mm, params.n_samples)
    cols = _index_range(lesion.center_x_mm, lesion.width_mm, dx_mm, params.n_lines)
    u = (cols * dx_mm - origin_x)[None, :] / scale_x
    v = (rows * dz_mm - origin_z)[:, None] / scale_z
    angle = np.deg2rad(lesion.angle_deg)
    p = u * np.cos(angle) + v * np.sin(angle)
    q = -u * np.sin(angle) + v * np.cos(angle)
    inside = np.hypot(p, q) <= _radius(lesion, np.arctan2(q, p))
    mask = np.zeros((params.n_samples, params.n_lines), dtype=bool)
    mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] = inside
    return mask


def simulate_frame(label, rng: np.random.Generator,
                   params: AcquisitionParams = AcquisitionParams(), *,
                   lesion: Lesion | None = None, sample_id: str = "phantom",
                   source_id: str | None = None) -> Sample:
    """Simulate one RF frame of breast tissue with one lesion.

    Parameters
    ----------
    label : int or str
        0/``"benign"`` or 1/``"malignant"``.
    rng : numpy.random.Generator
        Source of every random draw (lesion if not given, tissue layers, textures, scatterers,
        noise); the same generator state gives the same bytes.
    params : AcquisitionParams
    lesion : Lesion, optional
        Geometry to image (e.g. from :func:`sample_lesion` / :func:`orthogonal_view`); drawn
        from ``rng`` when omitted. Its label must match ``label``.
    sample_id, source_id : str
        Ids of the returned sample (``source_id`` defaults to ``sample_id``).

    Returns
    -------
    Sample
        ``rf`` int16 (n_samples, n_lines), time along axis 0, peak |rf| = 30000; ``roi`` bool of
        the same shape (the lesion); ``meta`` with ``fs_hz``, ``fc_hz``, ``c_m_s``, ``pitch_m``,
        ``lesion`` (:meth:`Lesion.as_meta`), ``tissue`` (layer depths, mm), ``birads`` and
        ``simulated = True``.

    Example
    -------
    >>> s = simulate_frame("benign", np.random.default_rng(0))
    >>> s.rf.shape, s.rf.dtype, int(np.abs(s.rf).max())
    ((1818, 192), dtype('int16'), 30000)
    """
    code = _label_code(label)
    if lesion is None:
        lesion = sample_lesion(code, rng, params)
    elif lesion.label != code:
        raise ConfigError(f"lesion label {lesion.label} does not match label {code}")
    echo, tissue = _tissue(params, rng)
    roi = lesion_mask(lesion, params)
    interior = np.float32(lesion.echogenicity) * (1.0 + 0.15 * _smooth_noise(rng, params, 0.5))
    echo = np.where(roi, interior, echo) * _posterior(roi, lesion.posterior_factor, params)
    depth_cm = np.arange(params.n_samples, dtype=np.float32) * np.float32(params.dz_m * 100.0)
    echo *= (10.0 ** (-params.attenuation_db_cm * depth_cm / 20.0))[:, None]
    # float32 halves the cost of the draws and the FFTs; int16 output needs far less precision.
    scatterers = rng.standard_normal(echo.shape, dtype=np.float32) * echo
    rf = fftconvolve(scatterers, _psf(params).astype(np.float32), mode="same")
    noise_rms = np.sqrt(np.mean(np.square(rf, dtype=np.float64))) * 10.0 ** (params.noise_db / 20)
    rf += rng.standard_normal(rf.shape, dtype=np.float32) * np.float32(noise_rms)
    rf16 = np.rint(rf * (INT16_PEAK / np.abs(rf).max())).astype(np.int16)
    meta = {"fs_hz": params.fs_hz, "fc_hz": params.fc_hz, "c_m_s": params.c_m_s,
            "pitch_m": params.pitch_m, "lesion": lesion.as_meta(), "tissue": tissue,
            "birads": lesion.birads, "simulated": True}
    return Sample(sample_id=sample_id, source_id=source_id or sample_id, label=code, rf=rf16,
                  roi=roi, meta=meta)


def simulate_dataset(n_benign: int, n_malignant: int, out_dir, seed: int = 0,
                     params: AcquisitionParams = AcquisitionParams()) -> dict:
    """Simulate an OASBUD-like dataset: ``phantoms.mat`` plus one ``.npz`` per scan.

    ``n_benign`` and ``n_malignant`` count scans (frames). As in OASBUD, each lesion gets two
    scans, ``rf1`` and its :func:`orthogonal_view` ``rf2``, so ``ceil(n / 2)`` lesions per
    class; with an odd ``n`` the last lesion has ``rf1`` only (its ``rf2``/``roi2`` are empty
    0x0 arrays, which :func:`augengine.sources.read_oasbud` reads as a single-scan lesion).

    Every draw is seeded from ``(seed, class, lesion index[, scan])`` with
    ``numpy.random.default_rng``, so scan ``k`` of a class is the same whatever the counts are.

    Parameters
    ----------
    n_benign, n_malignant : int
        Number of benign and malignant scans, >= 0, not both 0.
    out_dir : str or Path
        Created if needed. Receives ``phantoms.mat`` (struct array ``data`` with fields ``id``,
        ``rf1``, ``rf2``, ``roi1``, ``roi2``, ``birads``, ``class``; top-level ``fs_hz``,
        ``fc_hz``, ``c_m_s``, ``pitch_m``) and ``npz/<id>_rf<scan>.npz`` (``rf``, ``roi``,
        ``fs_hz``, ``fc_hz``, ``c_m_s``, ``pitch_m``, ``label``, ``source_id``, ``sample_id``).
        Lesion ids are ``benign_000``, ``malignant_000``, ...; sample ids ``<id>/rf1``.
    seed : int
        Non-negative.
    params : AcquisitionParams

    Returns
    -------
    dict
        ``mat_path``, ``npz_dir``, ``n_lesions`` and ``n_frames`` (per class name),
        ``seconds`` (wall time) and ``frames_per_s``.

    Example
    -------
    >>> summary = simulate_dataset(24, 24, "phantoms", seed=7)       # doctest: +SKIP
    >>> summary["n_frames"]                                          # doctest: +SKIP
    {'benign': 24, 'malignant': 24}
    """
    counts = {"benign": n_benign, "malignant": n_malignant}
    for name, n in counts.items():
        check_int(n, f"n_{name}", 0)
    if n_benign + n_malignant == 0:
        raise ConfigError("n_benign + n_malignant must be >= 1, got 0 scans")
    check_int(seed, "seed", 0)
    start = time.perf_counter()
    out = Path(out_dir)
    npz_dir = out / "npz"
    npz_dir.mkdir(parents=True, exist_ok=True)
    total = n_benign + n_malignant
    records = []
    with tqdm(total=total, desc="simulate", unit="frame", disable=None if total > 10 else True) \
            as progress:
        for name, n in counts.items():
            code = LABELS[name]
            for index in range(-(-n // 2)):
                lesion_id = f"{name}_{index:03d}"
                lesion = sample_lesion(code, np.random.default_rng([seed, code, index]), params)
                views = (lesion, orthogonal_view(
                    lesion, np.random.default_rng([seed, code, index, 0]), params))
                record = {"id": lesion_id, "birads": lesion.birads, "class": code}
                for scan in (1, 2):
                    if 2 * index + scan > n:
                        record[f"rf{scan}"] = np.zeros((0, 0), np.int16)
                        record[f"roi{scan}"] = np.zeros((0, 0), np.uint8)
                        continue
                    sample = simulate_frame(
                        code, np.random.default_rng([seed, code, index, scan]), params,
                        lesion=views[scan - 1], sample_id=f"{lesion_id}/rf{scan}",
                        source_id=lesion_id)
                    record[f"rf{scan}"] = sample.rf
                    record[f"roi{scan}"] = sample.roi.astype(np.uint8)
                    npz = io.BytesIO()
                    np.savez(npz, rf=sample.rf, roi=sample.roi, fs_hz=params.fs_hz,
                             fc_hz=params.fc_hz, c_m_s=params.c_m_s, pitch_m=params.pitch_m,
                             label=code, source_id=lesion_id, sample_id=sample.sample_id)
                    _write_if_changed(npz_dir / f"{lesion_id}_rf{scan}.npz", npz.getvalue())
                    progress.update()
                records.append(record)
    mat_path = out / "phantoms.mat"
    fields = ("id", "rf1", "rf2", "roi1", "roi2", "birads", "class")
    data = np.empty((1, len(records)), dtype=[(f, object) for f in fields])
    for i, record in enumerate(records):
        data[0, i] = tuple(record[f] for f in fields)
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"data": data, "fs_hz": params.fs_hz, "fc_hz": params.fc_hz,
                              "c_m_s": params.c_m_s, "pitch_m": params.pitch_m})
    contents = bytearray(buffer.getvalue())
    # savemat writes its creation time into the 116-byte text header; a fixed text keeps the
    # file byte-identical for the same seed (MATLAB ignores this text).
    contents[:116] = _MAT_HEADER
    _write_if_changed(mat_path, bytes(contents))
    seconds = time.perf_counter() - start
    return {"mat_path": str(mat_path), "npz_dir": str(npz_dir),
            "n_lesions": {name: -(-n // 2) for name, n in counts.items()},
            "n_frames": dict(counts), "seconds": seconds, "frames_per_s": total / seconds}


def _write_if_changed(path: Path, contents: bytes) -> None:
    """Write ``contents`` unless the file already holds exactly them: simulating the same set
    again (``make demo`` twice) keeps the files' modification times, so a store made from them
    still recognises its inputs and resumes instead of refusing."""
    if path.exists() and path.stat().st_size == len(contents) and path.read_bytes() == contents:
        return
    path.write_bytes(contents)


def _label_code(label) -> int:
    code = LABELS.get(label, label) if isinstance(label, str) else label
    if isinstance(code, bool) or code not in (0, 1):
        raise ConfigError(f"label must be benign (0) or malignant (1), got {label!r}")
    return int(code)


def _radius(lesion: Lesion, theta: np.ndarray) -> np.ndarray:
    """``rho(theta)`` of the unscaled outline (see :class:`Lesion`)."""
    rho = np.ones_like(theta)
    for k, amplitude, phase in lesion.harmonics:
        rho += amplitude * np.cos(k * theta + phase)
    for direction, length, half_width in lesion.spikes:
        offset = np.abs((theta - direction + np.pi) % (2 * np.pi) - np.pi)
        rho += length * np.clip(1.0 - offset / half_width, 0.0, None)
    return rho


def _outline_frame(lesion: Lesion) -> tuple[float, float, float, float]:
    """Polar origin (mm) and per-axis scales that put the tilted outline in its box."""
    theta = np.linspace(0.0, 2 * np.pi, 4096, endpoint=False)
    rho = _radius(lesion, theta)
    angle = np.deg2rad(lesion.angle_deg)
    x = rho * np.cos(theta + angle)
    z = rho * np.sin(theta + angle)
    scale_x = lesion.width_mm / (x.max() - x.min())
    scale_z = lesion.height_mm / (z.max() - z.min())
    return (lesion.center_x_mm - scale_x * (x.max() + x.min()) / 2,
            lesion.center_z_mm - scale_z * (z.max() + z.min()) / 2, scale_x, scale_z)


def _index_range(center_mm: float, extent_mm: float, step_mm: float, size: int) -> np.ndarray:
    first = max(int(math.floor((center_mm - extent_mm / 2) / step_mm)) - 1, 0)
    last = min(int(math.ceil((center_mm + extent_mm / 2) / step_mm)) + 1, size - 1)
    return np.arange(first, last + 1)


def _smooth_noise(rng: np.random.Generator, params: AcquisitionParams,
                  sigma_mm: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian random field with correlation length ``sigma_mm``.

    Drawn on a 0.25 mm axial grid (the texture is far coarser than an RF sample) and linearly
    interpolated to the RF rows; laterally on the line grid.
    """
    step_mm = 0.25
    depth_mm = params.depth_m * 1e3
    coarse = rng.standard_normal((int(math.ceil(depth_mm / step_mm)) + 2, params.n_lines),
                                 dtype=np.float32)
    coarse = gaussian_filter(coarse, (sigma_mm / step_mm, sigma_mm / (params.pitch_m * 1e3)))
    coarse = (coarse - coarse.mean()) / coarse.std()
    position = np.arange(params.n_samples) * (params.dz_m * 1e3 / step_mm)
    below = np.floor(position).astype(int)
    weight = (position - below).astype(np.float32)[:, None]
    return coarse[below] * (1.0 - weight) + coarse[below + 1] * weight


def _tissue(params: AcquisitionParams, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Echogenicity of lesion-free breast: skin, lobular fat, glandular tissue, chest wall.

    Skin U(1.5, 2.2) mm thick, bright (1.6); subcutaneous fat down to an undulating boundary at
    U(5, 8) mm +- two sinusoids, dark (0.45) with 1.2 mm lobules (+-35 %); a bright fascia band
    (+0.8, 0.25 mm) at the fat/gland boundary; glandular tissue (1.0, 0.6 mm texture, +-25 %);
    pectoral muscle from U(27, 33) mm, dim (0.5) with 1.5 mm striations, under a bright fascia.
    """
    z = (np.arange(params.n_samples, dtype=np.float32) * np.float32(params.dz_m * 1e3))[:, None]
    x = (np.arange(params.n_lines, dtype=np.float32) * np.float32(params.pitch_m * 1e3))[None, :]
    skin = rng.uniform(1.5, 2.2)
    fat_depth = rng.uniform(5.0, 8.0)
    fat_bottom = fat_depth + sum(
        rng.uniform(0.5, 1.5) * np.sin(2 * np.pi * x / rng.uniform(10.0, 30.0)
                                       + rng.uniform(0, 2 * np.pi)) for _ in range(2))
    muscle_top = rng.uniform(27.0, 33.0)
    fat = 0.45 * (1.0 + 0.35 * _smooth_noise(rng, params, 1.2))
    gland = 1.0 + 0.25 * _smooth_noise(rng, params, 0.6)
    muscle = 0.5 * (1.0 + 0.6 * np.sin(2 * np.pi * (z + 0.05 * x) / 1.5))
    echo = np.where(z < fat_bottom, fat, np.where(z < muscle_top, gland, muscle))
    echo = np.where(z < skin, np.float32(1.6), echo)
    echo += 0.8 * np.exp(-0.5 * ((z - fat_bottom) / 0.25) ** 2)
    echo += 0.8 * np.exp(-0.5 * ((z - muscle_top) / 0.25) ** 2)
    tissue = {"skin_mm": skin, "fat_mm": fat_depth, "muscle_mm": muscle_top}
    return np.clip(echo, 0.05, None, out=echo), tissue


def _posterior(roi: np.ndarray, factor: float, params: AcquisitionParams) -> np.ndarray:
    """Amplitude factor below the lesion: ``factor`` under its core columns, 1 elsewhere.

    Core columns are those where the lesion is at least 30 % of its thickest column (thin
    spikes cast no shadow); the column edges are softened by a 1-line Gaussian.
    """
    thickness = roi.sum(axis=0)
    core = thickness >= 0.3 * thickness.max()
    bottom = roi.shape[0] - 1 - np.argmax(roi[::-1], axis=0)
    below = (np.arange(roi.shape[0])[:, None] > bottom[None, :]) & core[None, :]
    below = gaussian_filter1d(below.astype(np.float32), 1.0, axis=1)
    return 1.0 + np.float32(factor - 1.0) * below


def _psf(params: AcquisitionParams) -> np.ndarray:
    """Separable pulse-echo PSF on the RF grid: Gaussian-modulated pulse x Gaussian beam."""
    sigma_f = params.fractional_bandwidth * params.fc_hz / _FWHM_PER_SIGMA
    sigma_t = 1.0 / (2.0 * np.pi * sigma_f)
    half = int(math.ceil(4.0 * sigma_t * params.fs_hz))
    t = np.arange(-half, half + 1) / params.fs_hz
    pulse = np.exp(-0.5 * (t / sigma_t) ** 2) * np.cos(2 * np.pi * params.fc_hz * t)
    sigma_x = params.c_m_s / params.fc_hz * params.f_number / _FWHM_PER_SIGMA
    half_x = int(math.ceil(3.0 * sigma_x / params.pitch_m))
    x = np.arange(-half_x, half_x + 1) * params.pitch_m
    beam = np.exp(-0.5 * (x / sigma_x) ** 2)
    return np.outer(pulse, beam)
