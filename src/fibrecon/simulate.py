"""Synthetic NCA cathodes and their FIB-SEM images, with ground truth.

Two steps, each a pure function of arrays and a random generator:

1. :func:`generate_microstructure` builds a 3D phase volume (0 pore filled
   with silicone, 1 NCA active material (AM), 2 carbon-binder domain (CBD)):
   polydisperse near-spherical particles placed by random sequential addition
   with limited overlap, grown to the target AM fraction (so compaction
   flattens contacts), and CBD laid in necks and as films on the particles
   where the smoothed AM indicator is highest, to the target CBD fraction.
2. :func:`image_stack` images it slice by slice as a FIB-SEM would, per
   acceleration voltage: phase signal, edge brightening, shine-through of
   structure below the silicone with a kV-dependent information depth,
   point-spread blur, stage drift (random walk), curtaining stripes, a
   macroscopic brightness gradient, slice-to-slice gain and shot/detector
   noise. Each artifact has a strength; zero switches it off.

:func:`simulate_sample` runs both and returns the raw 16-bit stack with its
truth. ``python -m fibrecon.simulate --help`` writes a sample to disk as an
instrument would.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "ARTIFACTS",
    "Microstructure",
    "SimulatedSample",
    "generate_microstructure",
    "image_stack",
    "kv_response",
    "simulate_sample",
]

#: Artifact names and their default strengths (1 = typical, 0 = off).
ARTIFACTS = {
    "noise": 1.0,
    "drift": 1.0,
    "shine_through": 1.0,
    "edge": 1.0,
    "blur": 1.0,
    "curtaining": 1.0,
    "gradient": 1.0,
    "slice_gain": 1.0,
}

#: Mean secondary-electron signal per phase (pore = silicone, AM, CBD).
PHASE_SIGNAL = np.array([0.08, 0.80, 0.40], dtype=np.float32)


@dataclass
class Microstructure:
    """A 3D phase volume with its particles.

    Attributes
    ----------
    labels : ndarray of uint8, (z, y, x)
        0 pore, 1 AM, 2 CBD.
    instances : ndarray of int32, (z, y, x)
        Particle id (1..n) on AM voxels, 0 elsewhere.
    diameters_um : ndarray of float
        Equivalent-sphere diameter of each particle as placed (index i-1 for id i).
    voxel_size : tuple of float
        (dz, dy, dx) in micrometres.
    """

    labels: np.ndarray
    instances: np.ndarray
    diameters_um: np.ndarray
    voxel_size: tuple


@dataclass
class SimulatedSample:
    """A simulated acquisition and its truth.

    Attributes
    ----------
    raw : ndarray of uint16, (z, c, y, x)
        The images, one channel per acceleration voltage.
    kvs : list of float
        Acceleration voltage of each channel.
    labels : ndarray of uint8, (z, y, x)
        Truth phases in the frame of slice 0 (the imaged region).
    drift_px : ndarray of float, (z, 2)
        Displacement (y, x) in pixels of the image content of each slice
        relative to slice 0: ``raw[z] ~ ndi.shift(ideal[z], drift_px[z])``.
    voxel_size : tuple of float
        (dz, dy, dx) in micrometres.
    truth : dict
        True volume fractions and simulation parameters.
    """

    raw: np.ndarray
    kvs: list
    labels: np.ndarray
    drift_px: np.ndarray
    voxel_size: tuple
    truth: dict = field(default_factory=dict)


def _place_particles(shape_um, d50_um, sigma_log, target_fraction, rng, tries_per_particle=60,
                     rounds=6):
    """Random sequential addition of spheres that may overlap a little.

    Radii are drawn log-normally until their volume exceeds the target by a
    margin, then placed largest first; a sphere that finds no free place in
    ``tries_per_particle`` attempts is dropped, and new radii are drawn (up
    to ``rounds`` times) while the placed volume is short of the target.
    Centres may lie up to half a radius outside the box so that cut
    particles appear at its faces.
    """
    box = np.asarray(shape_um, dtype=float)
    vol = float(np.prod(box))
    centres = np.empty((0, 3))
    radii = np.empty(0)
    for _ in range(rounds):
        placed = float(np.sum(4.0 / 3.0 * np.pi * radii**3))
        if placed >= 1.1 * target_fraction * vol:
            break
        pool, total = [], placed
        while total < 1.3 * target_fraction * vol:
            r = min(float(rng.lognormal(np.log(d50_um / 2), sigma_log)), 0.45 * box.max())
            pool.append(r)
            total += 4.0 / 3.0 * np.pi * r**3
        for r in sorted(pool, reverse=True):
            for _ in range(tries_per_particle):
                c = rng.uniform(-0.5 * r, box + 0.5 * r)
                if len(radii) == 0 or np.all(
                    np.linalg.norm(centres - c, axis=1) >= 0.8 * (radii + r)
                ):
                    centres = np.vstack([centres, c])
                    radii = np.append(radii, r)
                    break
    return centres, radii


def generate_microstructure(
    shape,
    voxel_size,
    *,
    porosity: float,
    cbd_fraction: float = 0.10,
    d50_um: float = 2.5,
    sigma_log: float = 0.25,
    cbd_smoothing_um: float = 0.25,
    roi=None,
    rng: np.random.Generator,
) -> Microstructure:
    """Build a 3D NCA/CBD/pore phase volume with exact target fractions.

    Parameters
    ----------
    shape : tuple of int
        (nz, ny, nx) in voxels.
    voxel_size : tuple of float
        (dz, dy, dx) in micrometres.
    porosity : float
        Target pore (silicone) volume fraction, 0 < porosity < 1.
    cbd_fraction : float
        Target CBD volume fraction.
    d50_um : float
        Median particle diameter (log-normal size distribution).
    sigma_log : float
        Log-normal shape parameter of the diameters.
    cbd_smoothing_um : float
        Length over which the CBD gathers in necks and crevices.
    roi : tuple of slice, optional
        Region in which the fractions are exact (the imaged field of view when
        the volume carries margins); the whole volume by default.
    rng : numpy.random.Generator
        Source of randomness.

    Returns
    -------
    Microstructure
        Labels, particle instances and the placed particles' diameters.

    Notes
    -----
    Particles are spheres placed by random sequential addition (overlap up to
    20 % of the radii sum). The AM region is ``min_i |x - c_i| / r_i <= s``
    with ``s`` the quantile that gives exactly ``1 - porosity - cbd_fraction``,
    so denser electrodes have grown, flattened contacts, as calendering does.
    """
    shape = tuple(int(n) for n in shape)
    vs = np.asarray(voxel_size, dtype=float)
    am_target = 1.0 - porosity - cbd_fraction
    if not (0 < am_target < 1 and 0 <= cbd_fraction < 1 and 0 < porosity < 1):
        raise ValueError(
            f"fractions out of range: porosity={porosity}, cbd_fraction={cbd_fraction}"
        )
    shape_um = np.asarray(shape) * vs
    centres, radii = _place_particles(shape_um, d50_um, sigma_log, am_target, rng)

    # Normalised distance to the nearest particle centre, and which particle.
    fnorm = np.full(shape, np.inf, dtype=np.float32)
    owner = np.zeros(shape, dtype=np.int32)
    reach = 3.0  # how far (in radii) a particle may grow
    for i, (c, r) in enumerate(zip(centres, radii), start=1):
        lo = np.maximum(np.floor((c - reach * r) / vs).astype(int), 0)
        hi = np.minimum(np.ceil((c + reach * r) / vs).astype(int) + 1, shape)
        if np.any(hi <= lo):
            continue
        zz, yy, xx = np.ogrid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        d = np.sqrt(
            ((zz + 0.5) * vs[0] - c[0]) ** 2
            + ((yy + 0.5) * vs[1] - c[1]) ** 2
            + ((xx + 0.5) * vs[2] - c[2]) ** 2
        ).astype(np.float32) / np.float32(r)
        sub = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
        closer = d < fnorm[sub]
        fnorm[sub][closer] = d[closer]
        owner[sub][closer] = i
    fnorm[np.isinf(fnorm)] = 1e3  # beyond every particle's reach
    roi = roi if roi is not None else (slice(None),) * 3
    s = np.quantile(fnorm[roi], am_target)
    am = fnorm <= s

    # CBD: the non-AM voxels where a smoothed AM indicator is highest (necks,
    # crevices, then films), modulated by a random texture.
    sigma = cbd_smoothing_um / vs
    score = ndi.gaussian_filter(am.astype(np.float32), sigma)
    texture = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 1.0)
    texture /= texture.std() + 1e-12
    score = score * (1.0 + 0.15 * texture)
    score[am] = -np.inf
    roi_scores = score[roi].ravel()
    n_cbd = int(round(cbd_fraction * roi_scores.size))
    labels = am.astype(np.uint8)
    if n_cbd:
        threshold = np.partition(roi_scores, -n_cbd)[-n_cbd]
        labels[score >= threshold] = 2
    instances = np.where(am, owner, 0).astype(np.int32)
    return Microstructure(labels, instances, 2.0 * radii * s, tuple(vs))


def kv_response(kv: float) -> dict:
    """Imaging constants of one acceleration voltage.

    Parameters
    ----------
    kv : float
        Acceleration voltage in kV.

    Returns
    -------
    dict
        ``depth_um``: information depth below the cut face (grows about as
        kV^1.7, after the Kanaya-Okayama range); ``blur_px``: point-spread
        sigma; ``dose``: detected electrons per unit signal (shot noise);
        ``read_noise``: detector noise in signal units.
    """
    return {
        "depth_um": 0.02 * kv**1.7,
        "blur_px": 0.6 + 0.12 * kv,
        "dose": 25.0 * kv,
        "read_noise": 0.02,
    }


def _depth_to_solid(labels: np.ndarray, max_depth: int):
    """For each voxel: slices to the first non-pore voxel at or below it, and its phase."""
    nz = labels.shape[0]
    depth = np.full(labels.shape, max_depth + 1, dtype=np.int16)
    hit = np.zeros(labels.shape, dtype=np.uint8)
    next_depth = np.full(labels.shape[1:], max_depth + 1, dtype=np.int16)
    next_hit = np.zeros(labels.shape[1:], dtype=np.uint8)
    for z in range(nz - 1, -1, -1):
        solid = labels[z] > 0
        next_depth = np.where(solid, 0, np.minimum(next_depth + 1, max_depth + 1)).astype(np.int16)
        next_hit = np.where(solid, labels[z], next_hit)
        depth[z] = next_depth
        hit[z] = next_hit
    return depth, hit


def image_stack(
    labels: np.ndarray,
    voxel_size,
    kvs,
    *,
    n_slices: int,
    margin: int,
    artifacts: dict | None = None,
    rng: np.random.Generator,
):
    """Image a phase volume slice by slice as a FIB-SEM does.

    Parameters
    ----------
    labels : ndarray of uint8, (z, y, x)
        Phase volume with ``margin`` extra voxels on each side in y and x (room
        for drift) and extra slices below the last imaged one (for shine-through).
    voxel_size : tuple of float
        (dz, dy, dx) in micrometres.
    kvs : sequence of float
        Acceleration voltages, one output channel each.
    n_slices : int
        Number of slices imaged (from the top of ``labels``).
    margin : int
        Lateral margin in pixels around the imaged field of view.
    artifacts : dict, optional
        Strength of each artifact in :data:`ARTIFACTS` (missing keys take the
        default, 0 switches one off).
    rng : numpy.random.Generator
        Source of randomness.

    Returns
    -------
    raw : ndarray of uint16, (n_slices, len(kvs), ny, nx)
    drift_px : ndarray of float, (n_slices, 2)
        Content displacement (y, x) of each slice relative to slice 0.
    """
    strength = dict(ARTIFACTS)
    if artifacts:
        unknown = set(artifacts) - set(ARTIFACTS)
        if unknown:
            raise ValueError(f"unknown artifact(s) {sorted(unknown)}; known: {sorted(ARTIFACTS)}")
        strength.update(artifacts)
    dz = voxel_size[0]
    nzl, nyp, nxp = labels.shape
    ny, nx = nyp - 2 * margin, nxp - 2 * margin

    # Stage drift: a random walk with occasional jumps, starting at zero.
    steps = rng.normal(0.0, 0.25, size=(n_slices, 2))
    jumps = rng.random(n_slices) < 0.03
    steps[jumps] += rng.normal(0.0, 2.0, size=(int(jumps.sum()), 2))
    steps[0] = 0.0
    drift = np.cumsum(steps, axis=0) * strength["drift"]
    drift = np.clip(drift, -margin + 1, margin - 1)

    # Phase-texture: grains in AM, fluffy CBD (fixed per voxel, shared by kVs).
    tex = ndi.gaussian_filter(rng.standard_normal(labels.shape).astype(np.float32), 0.8)
    tex /= tex.std() + 1e-12
    max_depth = int(np.ceil(3 * max(kv_response(k)["depth_um"] for k in kvs) / dz)) + 1
    depth, hit = _depth_to_solid(labels, max_depth)

    # Macroscopic brightness gradient (a tilted plane drifting slowly) and
    # per-slice gain, shared by all kV channels.
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32)
    yy, xx = yy / ny - 0.5, xx / nx - 0.5
    g0 = rng.normal(0.0, 0.25, size=2)
    g_walk = np.cumsum(rng.normal(0.0, 0.01, size=(n_slices, 2)), axis=0)
    gain = 1.0 + strength["slice_gain"] * rng.normal(0.0, 0.03, size=n_slices)
    # Curtaining: stripes along y (the milling direction), varying along x.
    stripe_profile = ndi.gaussian_filter1d(rng.standard_normal(nxp), 1.5)
    stripe_profile /= np.abs(stripe_profile).max() + 1e-12

    raw = np.zeros((n_slices, len(kvs), ny, nx), dtype=np.uint16)
    amp = np.array([0.0, 0.05, 0.12], dtype=np.float32)  # texture amplitude per phase
    for z in range(n_slices):
        lab = labels[z]
        base = PHASE_SIGNAL[lab] + tex[z] * amp[lab]
        for c, kv in enumerate(kvs):
            resp = kv_response(kv)
            img = base.copy()
            # Shine-through: solid below the silicone, attenuated with depth.
            pore = lab == 0
            if strength["shine_through"] > 0:
                d_um = depth[z].astype(np.float32) * dz
                seen = PHASE_SIGNAL[hit[z]] * np.exp(-d_um / resp["depth_um"])
                seen[depth[z] > max_depth] = 0.0
                img[pore] += strength["shine_through"] * 0.8 * seen[pore]
            if strength["edge"] > 0:
                img += strength["edge"] * 0.5 * ndi.gaussian_gradient_magnitude(
                    PHASE_SIGNAL[lab], 1.0
                )
            if strength["blur"] > 0:
                img = ndi.gaussian_filter(img, strength["blur"] * resp["blur_px"])
            if strength["curtaining"] > 0:
                img = img + strength["curtaining"] * 0.04 * stripe_profile[None, :]
            shifted = ndi.shift(img, drift[z], order=1, mode="nearest")
            img = shifted[margin : margin + ny, margin : margin + nx]
            if strength["gradient"] > 0:
                g = g0 + g_walk[z]
                img = img * (1.0 + strength["gradient"] * (g[0] * yy + g[1] * xx))
            img = img * gain[z]
            if strength["noise"] > 0:
                counts = rng.poisson(np.clip(img, 0, None) * resp["dose"] / strength["noise"])
                img = counts / (resp["dose"] / strength["noise"])
                img = img + rng.normal(0.0, strength["noise"] * resp["read_noise"], img.shape)
            raw[z, c] = np.clip(2000 + img * 40000, 0, 65535).astype(np.uint16)
    return raw, drift


def simulate_sample(
    shape=(64, 160, 160),
    voxel_size=(0.06, 0.06, 0.06),
    kvs=(1.0, 3.0),
    *,
    porosity: float = 0.35,
    cbd_fraction: float = 0.10,
    d50_um: float = 2.5,
    artifacts: dict | None = None,
    seed: int = 0,
) -> SimulatedSample:
    """Simulate one FIB-SEM acquisition of an NCA cathode, with its truth.

    Parameters
    ----------
    shape : tuple of int
        (slices, height, width) of the acquisition.
    voxel_size : tuple of float
        (dz, dy, dx) in micrometres; dz is the FIB slice thickness.
    kvs : sequence of float
        Acceleration voltages imaged at each slice.
    porosity, cbd_fraction, d50_um
        Microstructure targets (see :func:`generate_microstructure`).
    artifacts : dict, optional
        Artifact strengths (see :data:`ARTIFACTS`).
    seed : int
        Seed of the random generator; the same seed gives the same sample.

    Returns
    -------
    SimulatedSample

    Examples
    --------
    >>> s = simulate_sample((8, 48, 48), kvs=(1.0, 3.0), porosity=0.35, seed=1)
    >>> s.raw.shape, s.raw.dtype
    ((8, 2, 48, 48), dtype('uint16'))
    """
    rng = np.random.default_rng(seed)
    nz, ny, nx = (int(n) for n in shape)
    kvs = [float(k) for k in kvs]
    margin = 8
    extra = int(np.ceil(3 * max(kv_response(k)["depth_um"] for k in kvs) / voxel_size[0])) + 2
    micro = generate_microstructure(
        (nz + extra, ny + 2 * margin, nx + 2 * margin),
        voxel_size,
        porosity=porosity,
        cbd_fraction=cbd_fraction,
        d50_um=d50_um,
        roi=(slice(0, nz), slice(margin, margin + ny), slice(margin, margin + nx)),
        rng=rng,
    )
    raw, drift = image_stack(
        micro.labels, voxel_size, kvs, n_slices=nz, margin=margin, artifacts=artifacts, rng=rng
    )
    labels = micro.labels[:nz, margin : margin + ny, margin : margin + nx].copy()
    fractions = np.bincount(labels.ravel(), minlength=3) / labels.size
    truth = {
        "seed": seed,
        "target_porosity": porosity,
        "target_cbd_fraction": cbd_fraction,
        "d50_um_placed": float(np.median(micro.diameters_um)) if len(micro.diameters_um) else None,
        "volume_fraction_pore": float(fractions[0]),
        "volume_fraction_am": float(fractions[1]),
        "volume_fraction_cbd": float(fractions[2]),
        "kvs": kvs,
        "voxel_size_um": list(voxel_size),
        "artifacts": {**ARTIFACTS, **(artifacts or {})},
    }
    return SimulatedSample(raw, kvs, labels, drift, tuple(voxel_size), truth)


def main(argv=None) -> None:
    """Command line: write a simulated sample as an instrument would, plus its truth."""
    from fibrecon import io  # the CLI writes files; the functions above do not

    ap = argparse.ArgumentParser(
        prog="python -m fibrecon.simulate",
        description="Simulate a FIB-SEM acquisition of an NCA cathode with ground truth.",
    )
    ap.add_argument("raw_dir", help="folder for the per-slice TIFFs")
    ap.add_argument("truth_dir", help="folder for labels.tif, drift.tsv and truth.json")
    ap.add_argument("--shape", type=int, nargs=3, default=[64, 160, 160], metavar=("Z", "Y", "X"))
    ap.add_argument("--voxel-size", type=float, nargs=3, default=[0.06, 0.06, 0.06],
                    metavar=("DZ", "DY", "DX"), help="micrometres")
    ap.add_argument("--kv", type=float, nargs="+", default=[1.0, 3.0])
    ap.add_argument("--porosity", type=float, default=0.35)
    ap.add_argument("--cbd-fraction", type=float, default=0.10)
    ap.add_argument("--d50", type=float, default=2.5, help="median particle diameter, µm")
    ap.add_argument("--pattern", default="slice_{slice:04d}_{kv}kV.tif")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    sample = simulate_sample(
        tuple(args.shape), tuple(args.voxel_size), args.kv, porosity=args.porosity,
        cbd_fraction=args.cbd_fraction, d50_um=args.d50, seed=args.seed,
    )
    io.write_simulated_sample(args.raw_dir, args.truth_dir, sample, args.pattern)


if __name__ == "__main__":
    main()
