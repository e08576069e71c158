"""Test stacks made by other means than fibrecon's simulator.

A figure measured on the stacks the code was tuned to says little about a
user's stack. This module is a separately written, deliberately different
imaging model: it renders label volumes of other origins (the real-geometry
volumes in ``../shared/data/nmc_label_volumes``) as FIB-SEM slices, with its
own grey levels, blur, shine-through, noise and drift models, none of them
taken from :mod:`fibrecon.simulate`. Tests and benchmarks import it (the
``benchmarks`` folder on ``sys.path``).

What differs from the project's simulator, on purpose:

- grey levels drawn per stack and per kV channel (the CBD may be brighter than
  the AM), then a gamma curve and a gain;
- shine-through as an exponentially weighted sum over the silicone column
  below each pore pixel, whose depth grows with kV by another law;
- an anisotropic point spread (wider along the scan line);
- noise: Poisson, Gaussian or their mixture, plus noise correlated along the
  scan line;
- drift: a smooth random walk (AR(2)) in y and x with rare steps;
- no charging, no curtains unless asked for.

The volumes may be transformed first (flips, 90-degree turns about the
milling axis, rotation by any angle about y or x so that structures run
obliquely through the slices).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage as ndi

__all__ = ["DATA", "LABEL_VOLUMES", "label_volume", "tilted", "ForeignStack", "render"]

ROOT = Path(__file__).resolve().parents[1]
#: The project's shared data: where FIBRECON_SHARED_DATA points, or beside the checkout.
DATA = next((p for p in (Path(os.environ.get("FIBRECON_SHARED_DATA", "/nonexistent")),
                         ROOT.parent / "shared" / "data", Path("/work/shared/data"))
             if p.is_dir()), ROOT.parent / "shared" / "data")

#: file -> its own label values of (pore, AM, CBD)
LABEL_VOLUMES = {
    "matbox_nmc1_251x301x301.tif": (0, 1, 2),
    "inpainter_nmc_128cube.tif": (0, 1, 2),
    "slicegan_nmc_30x252x253.tif": (0, 128, 255),
    "taufactor_electrode_256cube.tif": (0, 85, 170),
}


def label_volume(name: str) -> np.ndarray:
    """One of the shared real-geometry label volumes as 0 pore, 1 AM, 2 CBD (uint8)."""
    raw = tifffile.imread(DATA / "nmc_label_volumes" / name)
    out = np.full(raw.shape, 255, dtype=np.uint8)
    for phase, value in enumerate(LABEL_VOLUMES[name]):
        out[raw == value] = phase
    if (out == 255).any():
        raise ValueError(f"{name}: values other than {LABEL_VOLUMES[name]}")
    return out


def tilted(labels: np.ndarray, angle_deg: float, axis: str = "y") -> np.ndarray:
    """Rotate a label volume about the y or x axis (nearest neighbour) and keep the full cube.

    Structures then run obliquely through the z slices, as the grains of a
    real electrode do. The largest axis-aligned block without empty corners
    is returned.
    """
    axes = (0, 2) if axis == "y" else (0, 1)
    rot = ndi.rotate(labels, angle_deg, axes=axes, order=0, reshape=False, mode="constant",
                     cval=255)
    valid = rot != 255
    keep = [np.flatnonzero(valid.all(axis=tuple(a for a in range(3) if a != ax)))
            for ax in range(3)]
    sl = tuple(slice(k[0], k[-1] + 1) if k.size else slice(0, 0) for k in keep)
    out = rot[sl]
    if out.size == 0 or (out == 255).any():
        # fall back to a centred box inside the rotation's valid region
        c = np.asarray(labels.shape) // 2
        h = int(min(labels.shape) / (2 * np.sqrt(2)))
        out = rot[c[0] - h:c[0] + h, c[1] - h:c[1] + h, c[2] - h:c[2] + h]
    return out


@dataclass
class ForeignStack:
    """A rendered stack: raw images, the labels each slice shows, the true drift."""

    raw: np.ndarray          # (z, c, y, x) uint16
    labels: np.ndarray       # (z, y, x) labels of the imaged field, frame of slice 0
    drift_px: np.ndarray     # (z, 2): content displacement of slice z vs slice 0
    kvs: list
    levels: np.ndarray       # (c, 3) grey level of pore, AM, CBD per channel


def _drift_path(n: int, rng, step_px: float) -> np.ndarray:
    """A smooth random walk: AR(2) velocities plus rare steps, starting at 0."""
    vel = np.zeros((n, 2))
    for z in range(1, n):
        vel[z] = 0.8 * vel[z - 1] + rng.normal(0, step_px, 2)
    jumps = rng.random(n) < 0.02
    vel[jumps] += rng.normal(0, 3 * step_px + 0.5, (int(jumps.sum()), 2))
    vel[0] = 0
    return np.cumsum(vel, axis=0)


def render(labels: np.ndarray, kvs=(1.0, 3.0), *, rng, n_slices: int | None = None,
           levels=None, cbd_brighter: bool = False, shine: float = 1.0, noise: float = 1.0,
           noise_model: str = "mixed", drift_step_px: float = 0.3, margin: int = 12,
           blur_px: float = 0.9, texture: float = 1.0, curtains: float = 0.0,
           cap_px: int = 0) -> ForeignStack:
    """Render a (z, y, x) label volume as a multi-kV FIB-SEM stack.

    Parameters
    ----------
    labels : ndarray of uint8
        0 pore, 1 AM, 2 CBD; ``margin`` voxels each side in y and x are room
        for drift (not in the returned field), the last slices feed the
        shine-through of the ones above.
    kvs : sequence of float
        One channel each; a higher kV sees deeper below the silicone.
    rng : numpy.random.Generator
    n_slices : int, optional
        Slices imaged (default: all but the deepest eighth).
    levels : array (c, 3), optional
        Grey levels (0..1) of pore, AM, CBD per channel; drawn when omitted.
    cbd_brighter : bool
        Draw levels with the CBD brighter than the AM.
    shine : float
        Share (0..1) of the first solid below the silicone that a pore pixel
        shows where the beam reaches it (0 switches shine-through off; 0.9 is strong).
    noise, texture, curtains : float
        Strengths (0 switches one off).
    noise_model : {"poisson", "gaussian", "mixed"}
    drift_step_px : float
        Velocity noise of the drift path (0: no drift).
    cap_px : int
        Rows of a protective cap at the top of the field: a granular texture
        with two milled marks, the same in every slice, drifting with the
        sample (its labels are 255 in ``labels``).
    blur_px : float
        Point-spread sigma along y at the lowest kV (x is 1.4 times wider).
    """
    rng = np.random.default_rng(rng)
    kvs = [float(k) for k in kvs]
    nzl, nyl, nxl = labels.shape
    nz = n_slices or max(2, nzl - max(2, nzl // 8))
    ny, nx = nyl - 2 * margin, nxl - 2 * margin
    if levels is None:
        levels = []
        for _ in kvs:
            pore = rng.uniform(0.05, 0.2)
            am = rng.uniform(0.55, 0.9)
            cbd = rng.uniform(am + 0.05, 0.98) if cbd_brighter else \
                rng.uniform(pore + 0.15, am - 0.12)
            levels.append((pore, am, cbd))
    levels = np.asarray(levels, dtype=np.float32)
    drift = _drift_path(nz, rng, drift_step_px) if drift_step_px > 0 else np.zeros((nz, 2))
    drift = np.clip(drift, -margin + 1, margin - 1)
    # texture: a per-voxel field shared by every kV (CBD porosity, AM grains)
    tex = ndi.gaussian_filter(rng.standard_normal(labels.shape).astype(np.float32), 1.2)
    tex /= tex.std() + 1e-9
    gamma = rng.uniform(0.8, 1.25, len(kvs))
    gain = rng.uniform(0.7, 1.3, len(kvs))
    curtain = ndi.gaussian_filter1d(rng.standard_normal((nz, nxl)), 2.0, axis=1) * 0.05 * curtains
    solid_below = labels > 0
    cap = None
    if cap_px:
        rows = margin + cap_px
        cap = 0.45 + 0.12 * ndi.gaussian_filter(rng.standard_normal((rows, nxl)), 1.5) / 0.19
        for x0 in rng.uniform(0.2, 0.8, 2) * nxl:  # two milled marks, slanted
            yy, xx = np.mgrid[0:rows, 0:nxl]
            cap[np.abs(xx - x0 - 0.5 * (yy - rows)) < 2.0] = 0.1
        cap = cap.astype(np.float32)
    raw = np.zeros((nz, len(kvs), ny, nx), dtype=np.uint16)
    for c, kv in enumerate(kvs):
        depth_vox = 0.6 * kv ** 1.5  # information depth, in slices (another law than fibrecon's)
        weights = np.exp(-np.arange(1, int(4 * depth_vox) + 2) / depth_vox)
        weights /= weights.sum() * 1.6
        for z in range(nz):
            lab = labels[z]
            img = levels[c][lab].astype(np.float32)
            img = img * (1 + 0.08 * texture * tex[z] * (lab > 0))
            if shine > 0:
                # a pore pixel shows the first solid below it through the silicone, weighted
                # by the electrons that reach that depth: at most the solid's own level
                seen = np.zeros(lab.shape, np.float32)
                reach = np.zeros(lab.shape, np.float32)
                free = np.ones(lab.shape, bool)  # silicone column still transparent
                for k, w in enumerate(weights * 1.6, start=1):
                    if z + k >= nzl:
                        break
                    hit = free & solid_below[z + k]
                    seen[hit] = levels[c][labels[z + k][hit]]
                    reach[hit] = np.exp(-k / depth_vox)
                    free &= ~solid_below[z + k]
                a = np.clip(shine, 0, 1) * reach
                img = np.where(lab == 0, (1 - a) * img + a * seen, img)
            bl = blur_px * (0.8 + 0.1 * kv)
            img = ndi.gaussian_filter(img, (bl, 1.4 * bl))
            img = img + curtain[z][None, :]
            if cap is not None:
                img[: cap.shape[0]] = cap * levels[c][1] / 0.7
            img = ndi.shift(img, drift[z], order=3, mode="nearest")
            img = img[margin:margin + ny, margin:margin + nx]
            img = np.clip(img, 0, None) ** gamma[c] * gain[c]
            if noise > 0:
                if noise_model in ("poisson", "mixed"):
                    dose = 60.0 * kv / noise
                    img = rng.poisson(img * dose) / dose
                if noise_model in ("gaussian", "mixed"):
                    img = img + rng.normal(0, 0.03 * noise, img.shape)
                line = ndi.gaussian_filter1d(rng.standard_normal(img.shape), 3.0, axis=1)
                img = img + 0.02 * noise * line
            raw[z, c] = np.clip(2000 + img * 20000, 0, 65535).astype(np.uint16)
    field = labels[:nz, margin:margin + ny, margin:margin + nx].copy()
    if cap_px:
        field[:, :cap_px] = 255
    return ForeignStack(raw, field, drift, kvs, levels)
