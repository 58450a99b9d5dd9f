"""An OASBUD-layout ``.mat`` file from a simulator independent of ``augengine.simulate``.

The experiments (``augengine experiment ... --data FILE``) must work on RF the engine never made
itself. This script shares no code with the engine: it writes the public OASBUD struct layout
(``data`` with ``id``, ``rf1``, ``rf2``, ``roi1``, ``roi2``, ``birads``, ``class``; top-level
``fs_hz``, ``fc_hz``, ``c_m_s``, ``pitch_m``) from a different physical model:

* **Point scatterers** at uniform random positions (``density`` per mm^2), with Gaussian
  amplitudes (fully developed speckle when dense), not a grid of reflectivities.
* **Pulse**: a Gaussian-windowed cosine at ``fc`` (default 7.5 MHz, 60 % fractional bandwidth),
  placed at each scatterer's round-trip time (sample ``2 z / c * fs``); lateral beam profile a
  Gaussian of ``beam_mm`` FWHM across lines (a linear array, one line per element).
* **Attenuation** 0.5 dB/cm/MHz (two-way), compensated by an imperfect linear TGC.
* **Lesions** (one per frame, depth 8-22 mm): benign ones smooth ellipses, wider than tall,
  mildly hypoechoic, with posterior enhancement; malignant ones irregular (the radius modulated
  by 5-9 spicule harmonics), taller than wide, markedly hypoechoic, with posterior shadowing.
  Sizes, contrasts and shapes overlap between the classes. The second scan of a lesion is the
  orthogonal plane: the in-plane width is the lesion's other axis.

Usage::

    python benchmarks/external_oasbud.py --out /tmp/external/external.mat --lesions 40 --seed 11

writes 40 benign + 40 malignant lesions (two scans each, 160 RF frames of 1560 x 160 int16).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import scipy.io
import scipy.signal

FS_HZ = 40e6
C_M_S = 1540.0
PITCH_M = 0.25e-3


def pulse(fc_hz: float, fs_hz: float, bandwidth: float = 0.6) -> np.ndarray:
    """Gaussian-windowed cosine: ``cos(2 pi fc t) exp(-t^2 / (2 s^2))`` with the -6 dB
    bandwidth ``bandwidth * fc`` (``s = sqrt(2 ln 2) / (pi * bandwidth * fc)``)."""
    sigma = np.sqrt(2 * np.log(2)) / (np.pi * bandwidth * fc_hz)
    t = np.arange(-4 * sigma, 4 * sigma, 1 / fs_hz)
    return np.cos(2 * np.pi * fc_hz * t) * np.exp(-t ** 2 / (2 * sigma ** 2))


def lesion_shape(rng: np.random.Generator, malignant: bool) -> dict:
    """Semi-axes (mm, depth and the two in-plane widths of the orthogonal scans), contrast (dB)
    and the boundary irregularity of one lesion."""
    width = rng.uniform(3.0, 7.0)
    aspect = rng.uniform(1.0, 1.6) if malignant else rng.uniform(0.45, 0.85)  # depth / width
    return {"depth_mm": rng.uniform(9.0, 20.0), "half_depth": aspect * width / 2,
            "half_widths": (width / 2, width / 2 * rng.uniform(0.8, 1.2)),
            "contrast_db": rng.uniform(-16, -8) if malignant else rng.uniform(-10, -3),
            "posterior_db": rng.uniform(-8, -3) if malignant else rng.uniform(1, 4),
            "harmonic": int(rng.integers(5, 10)), "spicule": rng.uniform(0.12, 0.25)
            if malignant else rng.uniform(0.0, 0.04), "phase": rng.uniform(0, 2 * np.pi),
            "birads": ("4b", "4c", "5")[int(rng.integers(3))] if malignant else
            ("3", "4a")[int(rng.integers(2))]}


def frame(rng: np.random.Generator, lesion: dict, scan: int, fc_hz: float, n_samples: int,
          n_lines: int, density: float, beam_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """One RF frame (int16, samples x lines) and its lesion mask (uint8)."""
    dz = C_M_S / (2 * FS_HZ) * 1e3                       # mm per sample
    depth_mm, width_mm = n_samples * dz, n_lines * PITCH_M * 1e3
    n_scatterers = rng.poisson(density * depth_mm * width_mm)
    z = rng.uniform(0, depth_mm, n_scatterers)
    x = rng.uniform(0, width_mm, n_scatterers)
    amplitude = rng.normal(size=n_scatterers)
    cx, cz = width_mm / 2 + rng.uniform(-2, 2), lesion["depth_mm"]
    a, b = lesion["half_widths"][scan - 1], lesion["half_depth"]

    def inside(zz, xx):
        u, v = (xx - cx) / a, (zz - cz) / b
        r = np.hypot(u, v)
        radius = 1 + lesion["spicule"] * np.cos(lesion["harmonic"] * np.arctan2(v, u)
                                                  + lesion["phase"])
        return r <= radius

    gain = np.ones(n_scatterers)
    gain[inside(z, x)] = 10 ** (lesion["contrast_db"] / 20)
    behind = (z > cz + b) & (np.abs(x - cx) < a * 0.9)
    gain[behind] *= 10 ** (lesion["posterior_db"] / 20)
    attenuation_db = 0.5 * fc_hz / 1e6 * 2 * z / 10     # 0.5 dB/cm/MHz, round trip
    tgc_db = 0.8 * 0.5 * fc_hz / 1e6 * 2 * z / 10         # the TGC makes up 80 % of it
    amplitude *= gain * 10 ** ((tgc_db - attenuation_db) / 20)

    grid = np.zeros((n_samples, n_lines))
    rows = np.clip((z / dz).astype(int), 0, n_samples - 1)
    cols = np.clip((x / (PITCH_M * 1e3)).astype(int), 0, n_lines - 1)
    np.add.at(grid, (rows, cols), amplitude)
    sigma_lines = beam_mm / 2.355 / (PITCH_M * 1e3)
    offsets = np.arange(-int(3 * sigma_lines) - 1, int(3 * sigma_lines) + 2)
    beam = np.exp(-offsets ** 2 / (2 * sigma_lines ** 2))
    kernel = pulse(fc_hz, FS_HZ)[:, None] * beam[None, :]
    rf = scipy.signal.fftconvolve(grid, kernel, mode="same")
    rf += rng.normal(scale=0.002 * np.abs(rf).max(), size=rf.shape)   # electronic noise
    rf = np.round(rf / np.abs(rf).max() * 30000).astype(np.int16)
    zz, xx = np.meshgrid((np.arange(n_samples) + 0.5) * dz,
                         (np.arange(n_lines) + 0.5) * PITCH_M * 1e3, indexing="ij")
    return rf, inside(zz, xx).astype(np.uint8)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the .mat file to write")
    parser.add_argument("--lesions", type=int, default=40, help="lesions per class")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--fc-mhz", type=float, default=7.5)
    parser.add_argument("--depth-mm", type=float, default=30.0)
    parser.add_argument("--lines", type=int, default=160)
    parser.add_argument("--density", type=float, default=12.0, help="scatterers per mm^2")
    parser.add_argument("--beam-mm", type=float, default=0.9, help="lateral beam FWHM")
    args = parser.parse_args(argv)
    n_samples = int(round(args.depth_mm / (C_M_S / (2 * FS_HZ) * 1e3)))
    began = time.perf_counter()
    fields = ("id", "rf1", "rf2", "roi1", "roi2", "birads", "class")
    data = np.empty((1, 2 * args.lesions), dtype=[(f, object) for f in fields])
    for i, (name, malignant) in enumerate((name, m) for m, name in ((0, "B"), (1, "M"))
                                          for _ in range(args.lesions)):
        index = i % args.lesions
        rng = np.random.default_rng([args.seed, malignant, index])
        lesion = lesion_shape(rng, bool(malignant))
        scans = [frame(rng, lesion, scan, args.fc_mhz * 1e6, n_samples, args.lines,
                       args.density, args.beam_mm) for scan in (1, 2)]
        data[0, i] = (f"ext{name}{index:03d}", scans[0][0], scans[1][0], scans[0][1],
                      scans[1][1], lesion["birads"], malignant)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(out, {"data": data, "fs_hz": FS_HZ, "fc_hz": args.fc_mhz * 1e6,
                           "c_m_s": C_M_S, "pitch_m": PITCH_M})
    print(f"{out}: {2 * args.lesions} lesions, {4 * args.lesions} frames of {n_samples} x "
          f"{args.lines}, {time.perf_counter() - began:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
