"""Domain-randomised rendering of label volumes: training data indifferent to one look.

After SynthSeg (Billot et al., Medical Image Analysis 86, 2023): a network
trained on label maps rendered with random grey levels, textures, blur and
noise learns the shapes of the phases, not one simulator's appearance. Every
training stack draws, per kV channel,

- the grey level of each phase, in any order: pore darkest / CBD between (the
  usual SE contrast), CBD brighter than AM (as in the real SEM image in
  ``../shared/data/sem_images``), or a free draw with the phases kept apart;
- texture inside each phase: Gaussian-filtered noise at a random scale and
  strength (AM grains, CBD nano-porosity), shared by the channels;
- shine-through: a pore voxel shows the first solid below it through the
  silicone, weighted by exp(-depth / d); d and the strength grow with kV,
  so the channels keep the physical order (higher kV sees deeper);
- an anisotropic Gaussian point spread, wider at higher kV;
- a smooth brightness surface (gradient), curtains along y, charging streaks
  along the scan line, slice-to-slice gain, gamma;
- noise: Poisson, Gaussian or their mixture, plus noise correlated along the
  scan line (x).

The label volumes come from :mod:`fibrecon.simulate` or from anywhere else
(real-geometry volumes), transformed by :func:`transformed` (axis
permutations, flips, 90-degree turns about the milling axis, anisotropic
rescaling, growing or shrinking the CBD). This module is the training
renderer; the benchmarks test on a separately written one
(``benchmarks/foreign.py``).
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy import ndimage as ndi

__all__ = ["LEVEL_ORDERS", "draw_levels", "transformed", "random_crop", "render_randomised"]

#: How the grey levels of (pore, AM, CBD) of a stack are drawn, and how often.
LEVEL_ORDERS = {"usual": 0.5, "cbd_brighter": 0.25, "free": 0.25}

_MIN_SEPARATION = 0.1  # of the grey range, between any two phases in one channel


def draw_levels(n_channels: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Grey levels (0..1) of pore, AM, CBD for each channel; returns (levels (c, 3), order).

    The order (:data:`LEVEL_ORDERS`) is drawn once per stack; each channel
    then draws its own levels within it (with probability 0.5 close to the
    first channel's), at least 0.1 apart.
    """
    order = str(rng.choice(list(LEVEL_ORDERS), p=list(LEVEL_ORDERS.values())))
    levels = []
    for c in range(n_channels):
        for _ in range(100):
            if c and rng.random() < 0.5:
                lv = np.clip(levels[0] + rng.normal(0, 0.06, 3), 0, 1)
            elif order == "usual":
                pore = rng.uniform(0.0, 0.35)
                am = rng.uniform(pore + 0.3, 1.0)
                lv = np.array([pore, am, rng.uniform(pore + 0.1, am - 0.1)])
            elif order == "cbd_brighter":
                pore = rng.uniform(0.0, 0.35)
                am = rng.uniform(pore + 0.15, 0.85)
                lv = np.array([pore, am, rng.uniform(am + 0.1, 1.0)])
            else:
                lv = rng.uniform(0, 1, 3)
            if np.min(np.abs(lv[:, None] - lv[None, :])[np.triu_indices(3, 1)]) >= _MIN_SEPARATION:
                break
        levels.append(lv)
    return np.asarray(levels, np.float32), order


def transformed(labels: np.ndarray, rng: np.random.Generator, *, zoom=(0.6, 1.8),
                max_cbd_change_px: int = 1, fit=None) -> np.ndarray:
    """A random variant of a (z, y, x) label volume (0 pore, 1 AM, 2 CBD).

    Axis permutation (any axis may become the milling axis), flips, a
    90-degree turn about z, anisotropic rescaling by factors drawn
    log-uniformly from ``zoom`` per axis (nearest neighbour), and with
    probability 0.5 the CBD grown into the pore or shrunk into it by up to
    ``max_cbd_change_px`` voxels. With ``fit`` (a (z, y, x) shape), only
    permutations that can hold it are drawn and each factor is raised as far
    as needed for the result to hold it.
    """
    perms = [p for p in itertools.permutations(range(3))
             if fit is None or all(labels.shape[a] * zoom[1] >= n for a, n in zip(p, fit))]
    if not perms:
        raise ValueError(f"label volume {labels.shape} cannot hold {tuple(fit)} voxels at "
                         f"zoom up to {zoom[1]}")
    perm = perms[int(rng.integers(len(perms)))]
    out = np.transpose(labels, perm)
    for ax in range(3):
        if rng.random() < 0.5:
            out = np.flip(out, ax)
    out = np.rot90(out, int(rng.integers(4)), axes=(1, 2))
    factors = np.exp(rng.uniform(np.log(zoom[0]), np.log(zoom[1]), 3))
    if fit is not None:
        factors = np.maximum(factors, (np.asarray(fit) + 0.5) / np.asarray(out.shape))
    out = ndi.zoom(np.ascontiguousarray(out), factors, order=0, mode="nearest", grid_mode=True)
    if max_cbd_change_px and rng.random() < 0.5:
        k = int(rng.integers(1, max_cbd_change_px + 1))
        cbd = out == 2
        if rng.random() < 0.5:
            out = np.where((out == 0) & ndi.binary_dilation(cbd, iterations=k), 2, out)
        else:
            out = np.where(cbd & ~ndi.binary_erosion(cbd, iterations=k), 0, out)
    return np.ascontiguousarray(out, dtype=np.uint8)


def random_crop(labels: np.ndarray, shape, rng: np.random.Generator) -> np.ndarray:
    """A random (z, y, x) block of ``shape`` (an error naming both shapes when it does not fit)."""
    if any(n < s for n, s in zip(labels.shape, shape)):
        raise ValueError(f"label volume {labels.shape} is smaller than the crop {tuple(shape)}")
    start = [int(rng.integers(n - s + 1)) for n, s in zip(labels.shape, shape)]
    return labels[tuple(slice(a, a + s) for a, s in zip(start, shape))]


def _field(shape, sigma, rng) -> np.ndarray:
    """Unit-variance Gaussian-filtered noise."""
    f = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return f / (f.std() + 1e-9)


def _first_solid_below(labels: np.ndarray):
    """Per voxel: slices down to the first solid voxel (0 on solid) and that voxel's phase."""
    depth = np.zeros(labels.shape, np.float32)
    phase = labels.copy()
    far = np.float32(1e6)
    depth[-1] = np.where(labels[-1] > 0, 0, far)
    for z in range(len(labels) - 2, -1, -1):
        solid = labels[z] > 0
        depth[z] = np.where(solid, 0, depth[z + 1] + 1)
        phase[z] = np.where(solid, labels[z], phase[z + 1])
    return depth, phase


def render_randomised(labels: np.ndarray, kvs, rng, *, n_slices: int | None = None) -> tuple:
    """Render a label volume as a multi-kV stack with every appearance drawn at random.

    Parameters
    ----------
    labels : ndarray of uint8, (z, y, x)
        0 pore, 1 AM, 2 CBD. The slices below the first ``n_slices`` only
        feed the shine-through.
    kvs : sequence of float
        One channel each, in increasing order of information depth.
    rng : numpy.random.Generator or int
    n_slices : int, optional
        Slices rendered (default: all but the last quarter, at least 1).

    Returns
    -------
    raw : ndarray of uint16, (n_slices, c, y, x)
    truth : ndarray of uint8, (n_slices, y, x)
    draw : dict
        What was drawn (levels, order, shine-through, blur, noise), for the record.
    """
    rng = np.random.default_rng(rng)
    labels = np.asarray(labels, np.uint8)
    nz = n_slices or max(1, len(labels) - len(labels) // 4)
    nc = len(kvs)
    shape = labels[:nz].shape
    levels, order = draw_levels(nc, rng)
    # texture per phase, shared by the channels (it belongs to the material)
    tex = np.zeros(shape, np.float32)
    for p, (lo, hi) in enumerate(((0.0, 0.06), (0.0, 0.12), (0.0, 0.2))):
        amp = rng.uniform(lo, hi)
        if amp > 0:
            tex += np.where(labels[:nz] == p, amp * _field(shape, rng.uniform(0.5, 4.0), rng), 0)
    # shine-through: depth scale and strength increase with kV
    depth_scale = np.sort(rng.uniform(0.3, 6.0, nc))
    strength = np.sort(rng.uniform(0.0, 0.8, nc)) * (rng.random() < 0.85)
    below_depth, below_phase = _first_solid_below(labels)
    below_depth, below_phase = below_depth[:nz], below_phase[:nz]
    pore = labels[:nz] == 0
    blur = np.sort(rng.uniform(0.3, 1.8, nc))
    aniso = rng.uniform(0.7, 1.6)
    yy, xx = np.meshgrid(np.linspace(-1, 1, shape[1]), np.linspace(-1, 1, shape[2]), indexing="ij")
    noise_model = str(rng.choice(["poisson", "gaussian", "mixed"]))
    dose = np.exp(rng.uniform(np.log(8), np.log(300)))  # counts at grey level 1, lowest kV
    sigma = rng.uniform(0.0, 0.1)
    line = rng.uniform(0.0, 0.05)
    raw = np.empty((nz, nc) + shape[1:], np.uint16)
    lo_out, span = rng.uniform(0, 8000), rng.uniform(4000, 50000)
    draw = {"order": order, "levels": levels.round(3).tolist(),
            "shine_depth_slices": depth_scale.round(2).tolist(),
            "shine_strength": strength.round(2).tolist(), "blur_px": blur.round(2).tolist(),
            "noise_model": noise_model, "dose": round(float(dose), 1)}
    for c in range(nc):
        img = levels[c][labels[:nz]] + tex * (0.5 + rng.random())
        if strength[c] > 0:
            a = strength[c] * np.exp(-below_depth / depth_scale[c])
            seen = levels[c][below_phase]
            img = np.where(pore, (1 - a) * img + a * seen, img)
        img = ndi.gaussian_filter(img, (0, blur[c], blur[c] * aniso))
        # brightness surface (quadratic, drifting slowly through the stack) and slice gain
        coef = rng.normal(0, rng.uniform(0, 0.15), 5)
        surface = 1 + coef[0] * yy + coef[1] * xx + coef[2] * yy * xx + coef[3] * yy ** 2 \
            + coef[4] * xx ** 2
        gain_z = 1 + np.cumsum(rng.normal(0, rng.uniform(0, 0.01), nz))
        img = img * surface[None] * gain_z[:, None, None]
        if rng.random() < 0.6:  # curtains: stripes along y, changing slowly with z
            cur = ndi.gaussian_filter(rng.standard_normal((nz, shape[2])), (3, rng.uniform(0.5, 3)))
            img = img + rng.uniform(0, 0.08) * cur[:, None, :] / (cur.std() + 1e-9)
        if rng.random() < 0.3:  # charging: bright streaks along the scan line from solid edges
            edge = (labels[:nz] > 0) & ~ndi.binary_erosion(labels[:nz] > 0, iterations=1)
            seeds = edge & (rng.random(shape) < rng.uniform(1e-4, 2e-3))
            k = np.exp(-np.arange(int(rng.uniform(10, 80))) / rng.uniform(5, 30))
            streak = ndi.convolve1d(seeds.astype(np.float32), k, axis=2, origin=-(len(k) // 2))
            img = img + rng.uniform(0.1, 0.5) * np.clip(streak, 0, 1)
        img = np.clip(img, 0, None) ** np.exp(rng.uniform(np.log(0.6), np.log(1.6)))
        dose_c = dose * (kvs[c] / kvs[0])  # higher kV: more signal, less noise
        if noise_model in ("poisson", "mixed"):
            img = rng.poisson(np.clip(img, 0, None) * dose_c) / dose_c
        if noise_model in ("gaussian", "mixed"):
            img = img + rng.normal(0, sigma, img.shape)
        if line > 0:
            img = img + line * _field(img.shape, (0, 0, rng.uniform(1, 6)), rng)
        raw[:, c] = np.clip(lo_out + img * span, 0, 65535).astype(np.uint16)
    return raw, labels[:nz].copy(), draw
