"""Synthetic NCA cathodes and their FIB-SEM images, with ground truth.

Two steps, each a pure function of arrays and a random generator:

1. :func:`generate_microstructure` builds a 3D phase volume (0 pore filled
   with silicone, 1 NCA active material (AM), 2 carbon-binder domain (CBD)).
   Secondary particles: log-normal sizes, placed by random sequential
   addition with limited overlap, rough surfaces, made of primary grains
   (Voronoi cells), some with internal cracks and voids, grown to the exact
   target AM fraction (so dense electrodes have flattened contacts).
   Calendering flattens particles along the through-plane axis and cracks
   more of them. CBD is laid as films and neck bridges on the AM (well
   dispersed) or as clusters in the pore space (agglomerated), to the exact
   target CBD fraction.
2. :func:`image_stack` images it slice by slice as a FIB-SEM does, per
   acceleration voltage: phase signal with grain (channelling) contrast and
   grain-boundary lines, textured nano-porous CBD, edge brightening,
   shine-through of structure below the silicone with a kV-dependent
   information depth, point-spread blur, charging (bright smears and
   saturated patches, stronger at low kV), curtaining stripes along the
   milling direction, a macroscopic brightness gradient that changes slowly
   from slice to slice, slice-to-slice gain, shot and detector noise, stage
   drift (random walk with jumps) and optional 52 degree cross-section
   foreshortening. Each artifact has a strength; zero switches it off.

:func:`simulate_sample` runs both and returns the raw 16-bit stack with its
truth. ``python -m fibrecon.simulate --help`` writes a sample to disk as an
instrument would (per-slice TIFFs with FEI or Zeiss metadata) plus a truth
folder.

References
----------
Kanaya & Okayama (1972), "Penetration and energy-loss theory of electrons in
solid targets", J. Phys. D 5, 43 (electron range growing about as kV^1.67).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from fibrecon import AM, CBD, CROSS_SECTION_TILT_DEG, PORE

__all__ = [
    "ARTIFACTS",
    "PHASE_SIGNAL",
    "Microstructure",
    "SimulatedSample",
    "generate_microstructure",
    "image_stack",
    "kv_response",
    "simulate_sample",
    "main",
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
    "charging": 1.0,
    "grain_contrast": 1.0,
}

#: Mean secondary-electron signal per phase (pore = silicone, AM, CBD).
PHASE_SIGNAL = np.array([0.08, 0.80, 0.40], dtype=np.float32)

#: Median secondary-particle diameter (µm) of a simulated sample unless one is given (the
#: schema's demo.d50_um default; the demo series sets its own in config/demo/config.yaml).
DEMO_D50_UM = 3.0

#: Grey value of signal 0 and gain of the 16-bit detector output.
OFFSET, SCALE = 2000.0, 40000.0



@dataclass
class Microstructure:
    """A 3D phase volume with its particles.

    Attributes
    ----------
    labels : ndarray of uint8, (z, y, x)
        0 pore, 1 AM, 2 CBD.
    instances : ndarray of int32, (z, y, x)
        Particle id (1..n) on AM voxels, 0 elsewhere.
    grains : ndarray of int32, (z, y, x)
        Primary-grain id on AM voxels, 0 elsewhere.
    particles : dict of ndarray
        Per particle (index i-1 for id i): ``diameter_um`` (equivalent-sphere
        diameter of its AM voxels in the volume), ``voxels``, ``cracked``.
    voxel_size : tuple of float
        (dz, dy, dx) in micrometres.
    """

    labels: np.ndarray
    instances: np.ndarray
    grains: np.ndarray
    particles: dict
    voxel_size: tuple


@dataclass
class SimulatedSample:
    """A simulated acquisition and its truth.

    Attributes
    ----------
    raw : ndarray of uint16, (z, c, y, x)
        The images, one channel per acceleration voltage (y shortened by
        sin 52 degrees when ``tilt_corrected`` is False).
    kvs : list of float
        Acceleration voltage of each channel.
    labels, instances : ndarray, (z, y, x)
        Truth phases and particle ids in the frame of slice 0 (the imaged region).
    drift_px : ndarray of float, (z, 2)
        Displacement (y, x) in pixels of the image content of each slice
        relative to slice 0: ``raw[z] ~ ndi.shift(ideal[z], drift_px[z])``.
    voxel_size : tuple of float
        (dz, dy, dx) in micrometres of the truth volume.
    particles : dict of ndarray
        Per particle id: ``id``, ``diameter_um``, ``cut`` (touches the imaged
        region's faces), ``cracked``.
    fields : dict of ndarray
        The artifact fields applied: ``gain`` (z), ``gradient`` (z, 2) plane
        coefficients, ``curtain`` (z, x) stripe profile, ``charging`` (z, c,
        y, x) bool mask.
    truth : dict
        True volume fractions and simulation parameters.
    tilt_corrected : bool
        Whether the images are corrected for the cross-section tilt.
    """

    raw: np.ndarray
    kvs: list
    labels: np.ndarray
    instances: np.ndarray
    drift_px: np.ndarray
    voxel_size: tuple
    particles: dict = field(default_factory=dict)
    fields: dict = field(default_factory=dict)
    truth: dict = field(default_factory=dict)
    tilt_corrected: bool = True


# --------------------------------------------------------------------------
# Microstructure
# --------------------------------------------------------------------------


def _smooth_noise(shape, sigma_vox, rng, coarsen: int = 1) -> np.ndarray:
    """Gaussian-filtered white noise of unit standard deviation (float32).

    With ``coarsen > 1`` the noise is made on a grid that much coarser and
    enlarged by linear interpolation (same look, a fraction of the cost).
    """
    coarse = tuple(int(np.ceil(n / coarsen)) + 1 for n in shape)
    noise = rng.standard_normal(coarse, dtype=np.float32)
    noise = ndi.gaussian_filter(noise, np.asarray(sigma_vox, float) / coarsen)
    if coarsen > 1:
        noise = ndi.zoom(noise, coarsen, order=1, grid_mode=False)
    noise = noise[tuple(slice(0, n) for n in shape)]
    noise -= noise.mean()
    noise /= noise.std() + 1e-12
    return noise


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


def _grain_map(shape, voxel_size, grain_size_um, rng) -> np.ndarray:
    """Voronoi cells of mean size ``grain_size_um`` (int32 ids from 1)."""
    vs = np.asarray(voxel_size, float)
    k = max(1, int(grain_size_um / (8 * vs.min())))  # >= 8 coarse voxels per grain
    coarse_shape = tuple(int(np.ceil(n / k)) for n in shape)
    n_cells = int(np.prod(coarse_shape))
    coarse_voxel = float(np.prod(vs * k))
    n_seeds = max(1, int(n_cells * coarse_voxel / grain_size_um**3))
    seeds = np.ones(coarse_shape, dtype=bool)
    flat = rng.choice(n_cells, size=min(n_seeds, n_cells), replace=False)
    seeds.ravel()[flat] = False
    ids = np.zeros(coarse_shape, dtype=np.int32)
    ids.ravel()[flat] = np.arange(1, flat.size + 1, dtype=np.int32)
    _, nearest = ndi.distance_transform_edt(seeds, sampling=vs * k, return_indices=True)
    cells = ids[tuple(nearest)]
    for axis in range(3):
        cells = np.repeat(cells, k, axis=axis)
    return cells[tuple(slice(0, n) for n in shape)]


def generate_microstructure(
    shape,
    voxel_size,
    *,
    porosity: float,
    cbd_fraction: float = 0.10,
    d50_um: float = DEMO_D50_UM,
    sigma_log: float = 0.25,
    calendering: float = 0.5,
    cbd_dispersion: float = 0.8,
    grain_size_um: float = 0.8,
    roughness: float = 0.04,
    crack_probability: float | None = None,
    flatten_axis: int = 1,
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
        Target CBD volume fraction (the CBD's own nano-pores count as CBD).
    d50_um : float
        Median secondary-particle diameter (log-normal size distribution).
    sigma_log : float
        Log-normal shape parameter of the diameters.
    calendering : float
        Degree of compaction, 0 (none) to 1 (strong): particles flattened
        along ``flatten_axis`` by up to 25 %, and more of them cracked.
    cbd_dispersion : float
        Share of the CBD laid as films and neck bridges on the AM (1 = well
        dispersed); the rest forms clusters in the pore space (agglomerated).
    grain_size_um : float
        Mean primary-grain size inside the particles.
    roughness : float
        Relative amplitude of the particle-surface roughness.
    crack_probability : float, optional
        Share of particles with internal cracks; ``0.1 + 0.6 * calendering``
        by default.
    flatten_axis : int
        The electrode's through-plane axis (the calendering direction).
    roi : tuple of slice, optional
        Region in which the fractions are exact (the imaged field of view when
        the volume carries margins); the whole volume by default.
    rng : numpy.random.Generator
        Source of randomness.

    Returns
    -------
    Microstructure

    Notes
    -----
    The AM region is ``min_i d_i(x) (1 + roughness n(x)) <= s``, with ``d_i``
    the ellipsoidal distance to particle ``i`` in units of its radius,
    ``n`` smooth noise, and ``s`` the quantile that gives exactly
    ``1 - porosity - cbd_fraction`` inside ``roi``: denser electrodes have
    grown particles with flattened contacts, as calendering does.
    Cracks (one-voxel sheets through the particle centre) and voids (small
    spheres) are silicone-filled pore inside the particles.
    """
    shape = tuple(int(n) for n in shape)
    vs = np.asarray(voxel_size, dtype=float)
    am_target = 1.0 - porosity - cbd_fraction
    if not (0 < am_target < 1 and 0 <= cbd_fraction < 1 and 0 < porosity < 1):
        raise ValueError(
            f"fractions out of range: porosity={porosity}, cbd_fraction={cbd_fraction}"
        )
    if not 0 <= calendering <= 1 or not 0 <= cbd_dispersion <= 1:
        raise ValueError(f"calendering and cbd_dispersion must be in [0, 1], got "
                         f"{calendering}, {cbd_dispersion}")
    roi = roi if roi is not None else (slice(None),) * 3
    p_crack = 0.1 + 0.6 * calendering if crack_probability is None else crack_probability
    shape_um = np.asarray(shape) * vs
    centres, radii = _place_particles(shape_um, d50_um, sigma_log, am_target, rng)

    # Ellipsoid semi-axes (volume kept): flattened along the calendering axis.
    flat = 1.0 - 0.25 * calendering
    axes_scale = np.full(3, flat ** -0.5)
    axes_scale[flatten_axis] = flat

    coarsen = max(1, int(0.15 / vs.min()))
    rough = _smooth_noise(shape, 0.15 / vs, rng, coarsen=coarsen)
    fnorm = np.full(shape, 1e3, dtype=np.float32)
    owner = np.zeros(shape, dtype=np.int32)
    excluded = np.zeros(shape, dtype=bool)  # cracks and voids: never AM, never CBD
    cracked = np.zeros(len(radii), dtype=bool)
    reach = 1.5
    for i, (c, r) in enumerate(zip(centres, radii), start=1):
        semi = r * axes_scale
        lo = np.maximum(np.floor((c - reach * semi) / vs).astype(int), 0)
        hi = np.minimum(np.ceil((c + reach * semi) / vs).astype(int) + 1, shape)
        if np.any(hi <= lo):
            continue
        zz, yy, xx = np.ogrid[lo[0]: hi[0], lo[1]: hi[1], lo[2]: hi[2]]
        rel = [((g + 0.5) * vs[a] - c[a]) for a, g in enumerate((zz, yy, xx))]
        d = np.sqrt(sum((rel[a] / semi[a]) ** 2 for a in range(3))).astype(np.float32)
        sub = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
        d *= 1.0 + roughness * rough[sub]
        closer = d < fnorm[sub]
        fnorm[sub][closer] = d[closer]
        owner[sub][closer] = i
        inside = d < 0.9
        if rng.random() < p_crack:  # one or two cracks through the core
            cracked[i - 1] = True
            for _ in range(int(rng.integers(1, 3))):
                normal = rng.normal(size=3)
                normal /= np.linalg.norm(normal)
                offset = rng.uniform(-0.3, 0.3) * r
                dist = np.abs(sum(rel[a] * normal[a] for a in range(3)) - offset)
                excluded[sub] |= inside & (dist < 0.55 * vs.min())
        if rng.random() < 0.3:  # internal voids near the centre
            for _ in range(int(rng.integers(1, 4))):
                vc = rng.normal(0.0, 0.3 * r, size=3)
                vr = rng.uniform(0.05, 0.12) * r
                dist2 = sum((rel[a] - vc[a]) ** 2 for a in range(3))
                excluded[sub] |= inside & (dist2 < vr**2)
    del rough
    _fill_unreached(fnorm, owner, centres, radii[:, None] * axes_scale[None, :], vs)
    fnorm[excluded] = 1e3
    s = np.quantile(fnorm[roi], am_target)
    am = fnorm <= s
    del fnorm

    # CBD: films/necks where the smoothed AM indicator is highest, and
    # agglomerates where a smooth random field is highest in the pore space.
    free = ~am & ~excluded
    roi_free = free[roi]
    n_cbd = int(round(cbd_fraction * roi_free.size))
    n_film = int(round(cbd_dispersion * n_cbd))
    labels = am.astype(np.uint8)
    score = ndi.gaussian_filter(am.astype(np.float32), 0.25 / vs)
    score *= 1.0 + 0.15 * _smooth_noise(shape, 1.0, rng)
    _assign_top(labels, score, free, roi, n_film)
    if n_cbd - n_film:
        clusters = _smooth_noise(shape, 0.4 / vs, rng, coarsen=coarsen)
        _assign_top(labels, clusters, free & (labels == PORE), roi, n_cbd - n_film)

    instances = np.where(am, owner, 0).astype(np.int32)
    grains = np.where(am, _grain_map(shape, vs, grain_size_um, rng), 0).astype(np.int32)
    counts = np.bincount(instances.ravel(), minlength=len(radii) + 1)[1:]
    diameters = (6.0 * counts * float(np.prod(vs)) / np.pi) ** (1.0 / 3.0)
    particles = {"diameter_um": diameters, "voxels": counts, "cracked": cracked}
    return Microstructure(labels, instances, grains, particles, tuple(vs))


def _fill_unreached(fnorm, owner, centres, semi_axes, vs, chunk=200_000):
    """Normalised distance to the nearest particle for voxels no window reached."""
    far = np.flatnonzero(fnorm >= 1e3)
    if far.size == 0 or len(centres) == 0:
        return
    for start in range(0, far.size, chunk):
        idx = far[start: start + chunk]
        pos = (np.stack(np.unravel_index(idx, fnorm.shape), axis=1) + 0.5) * vs
        d = np.sqrt((((pos[:, None, :] - centres[None]) / semi_axes[None]) ** 2).sum(axis=2))
        nearest = d.argmin(axis=1)
        fnorm.ravel()[idx] = d[np.arange(idx.size), nearest]
        owner.ravel()[idx] = nearest + 1


def _assign_top(labels, score, allowed, roi, n):
    """Label the ``n`` highest-scoring allowed voxels of ``roi`` (and beyond it) CBD."""
    if n <= 0:
        return
    values = np.where(allowed, score, -np.inf)
    roi_values = values[roi].ravel()
    threshold = np.partition(roi_values, -n)[-n]
    labels[(values >= threshold) & allowed] = CBD


# --------------------------------------------------------------------------
# Image formation
# --------------------------------------------------------------------------


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
        ``read_noise``: detector noise in signal units; ``charging``: how
        likely charging is per slice (stronger at low kV).
    """
    return {
        "depth_um": 0.02 * kv**1.7,
        "blur_px": 0.6 + 0.12 * kv,
        "dose": 40.0 * kv,
        "read_noise": 0.02,
        "charging": min(1.0, 0.5 / kv),
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


def _charging(shape, am_edge, strength, p, rng):
    """Additive charging signal of one image: bright smears along the scan and saturated patches.

    The random draws do not depend on ``strength`` (it only scales the result),
    so switching charging off changes nothing else.
    """
    ny, nx = shape
    out = np.zeros(shape, dtype=np.float32)
    ys, xs = np.nonzero(am_edge)
    x = np.arange(nx)
    for _ in range(rng.poisson(2.0 * p)):  # smears trailing to the right of an AM edge
        k, half = rng.integers(max(ys.size, 1)), int(rng.integers(2, 8))
        length, amp = rng.uniform(15, 80), rng.uniform(0.3, 0.9)
        if ys.size == 0:
            continue
        y0, x0 = ys[k], xs[k]
        trail = np.where(x >= x0, np.exp(-(x - x0) / length), 0.0)
        out[max(0, y0 - half): min(ny, y0 + half + 1)] += (amp * trail).astype(np.float32)
    if rng.random() < 0.5 * p:  # a saturated patch
        yc, xc, sigma = rng.uniform(0, ny), rng.uniform(0, nx), rng.uniform(4, 15)
        yy, xx = np.ogrid[0:ny, 0:nx]
        out += (3.0 * np.exp(-((yy - yc) ** 2 + (xx - xc) ** 2) / (2 * sigma**2))).astype(
            np.float32)
    return strength * out


def _cap_image(rows: int, cols: int, rng) -> np.ndarray:
    """A platinum cap with a milled X fiducial and the sample surface below it."""
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    cap = 0.6 * (1.0 + 0.08 * _smooth_noise((rows, cols), 1.0, rng))
    xc = float(rng.uniform(0.3, 0.7) * cols)
    yc = rows - 0.5 * min(rows, 40)
    arm = 0.4 * min(rows, 40)
    for sign in (1.0, -1.0):  # the two strokes of the X
        dist = np.abs((xx - xc) - sign * (yy - yc)) / np.sqrt(2.0)
        inside = (np.abs(yy - yc) < arm) & (dist < 1.5)
        cap[inside] = 0.15
    cap[-2:] = 0.25  # the interface with the electrode
    return cap.astype(np.float32)


def image_stack(
    labels: np.ndarray,
    voxel_size,
    kvs,
    *,
    n_slices: int,
    margin: int,
    grains: np.ndarray | None = None,
    artifacts: dict | None = None,
    tilt_corrected: bool = True,
    cap_px: int = 0,
    rng: np.random.Generator,
    progress=None,
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
    grains : ndarray of int, (z, y, x), optional
        Primary-grain ids (grain contrast and boundaries in the AM).
    artifacts : dict, optional
        Strength of each artifact in :data:`ARTIFACTS` (missing keys take the
        default, 0 switches one off).
    tilt_corrected : bool
        If False, the image height is shortened by sin 52 degrees, as an SEM
        viewing the FIB cross-section at 52 degrees records it.
    cap_px : int
        Rows of protective platinum cap imaged above the electrode, with a
        milled fiducial mark; it does not change from slice to slice (it is
        extruded along the milling direction) and drifts with the sample, as
        the fiducial of a Slice & View acquisition does.
    rng : numpy.random.Generator
        Source of randomness.
    progress : callable, optional
        Wraps the slice iterator.

    Returns
    -------
    raw : ndarray of uint16, (n_slices, len(kvs), ny', nx)
    drift_px : ndarray of float, (n_slices, 2)
        Content displacement (y, x) of each slice relative to slice 0, in
        pixels of the tilt-corrected frame.
    fields : dict
        ``gain``, ``gradient``, ``curtain``, ``charging`` (see
        :class:`SimulatedSample`).
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
    ny_field = ny + cap_px
    ny_rec = ny_field if tilt_corrected else \
        int(round(ny_field * np.sin(np.radians(CROSS_SECTION_TILT_DEG))))
    # One random stream per effect, so that switching one artifact off leaves
    # every other one exactly as it was.
    streams = ["drift", "texture", "grains", "gradient", "gain", "curtain", "charging", "noise",
               "cap"]
    rngs = dict(zip(streams, (np.random.default_rng(s) for s in
                              rng.integers(0, 2**63, size=len(streams)))))

    # Stage drift: a random walk with occasional jumps, starting at zero.
    steps = rngs["drift"].normal(0.0, 0.25, size=(n_slices, 2))
    jumps = rngs["drift"].random(n_slices) < 0.03
    steps[jumps] += rngs["drift"].normal(0.0, 2.0, size=(int(jumps.sum()), 2))
    steps[0] = 0.0
    drift = np.clip(np.cumsum(steps, axis=0) * strength["drift"], -margin + 1, margin - 1)

    # Textures fixed per voxel, shared by all kVs: CBD fluff and nano-pores.
    tex = _smooth_noise(labels.shape, 0.8, rngs["texture"])
    nanopore = _smooth_noise(labels.shape, 0.6, rngs["texture"]) > 0.5  # about 30 % of the CBD
    max_depth = int(np.ceil(3 * max(kv_response(k)["depth_um"] for k in kvs) / dz)) + 1
    depth, hit = _depth_to_solid(labels, max_depth)
    n_grains = int(grains.max()) + 1 if grains is not None else 1
    grain_gain = 1.0 + 0.06 * strength["grain_contrast"] * rngs["grains"].standard_normal(n_grains)

    # Brightness gradient (a tilted plane drifting slowly) and per-slice gain.
    yy, xx = np.mgrid[0:ny_rec, 0:nx].astype(np.float32)
    yy, xx = yy / ny_rec - 0.5, xx / nx - 0.5
    g0 = rngs["gradient"].normal(0.0, 0.25, size=2)
    gradient = (g0 + np.cumsum(rngs["gradient"].normal(0.0, 0.01, size=(n_slices, 2)), axis=0)) \
        * strength["gradient"]
    gain = 1.0 + strength["slice_gain"] * rngs["gain"].normal(0.0, 0.03, size=n_slices)
    # Curtaining: stripes along y (the milling direction) whose profile
    # across x changes slowly from slice to slice (AR(1) in z).
    curtain = np.empty((n_slices, nxp), dtype=np.float32)
    prof = ndi.gaussian_filter1d(rngs["curtain"].standard_normal(nxp), 1.5)
    for z in range(n_slices):
        new = ndi.gaussian_filter1d(rngs["curtain"].standard_normal(nxp), 1.5)
        prof = 0.97 * prof + np.sqrt(1 - 0.97**2) * new
        curtain[z] = prof
    curtain *= strength["curtaining"] * 0.04 / (curtain.std() + 1e-12)
    fade = (1.0 - 0.5 * np.linspace(0, 1, nyp))[:, None].astype(np.float32)  # stronger at top

    cap = _cap_image(margin + cap_px, nxp, rngs["cap"]) if cap_px else None
    raw = np.zeros((n_slices, len(kvs), ny_rec, nx), dtype=np.uint16)
    charging = np.zeros((n_slices, len(kvs), ny_rec, nx), dtype=bool)
    slices = range(n_slices) if progress is None else progress(range(n_slices))
    for z in slices:
        lab = labels[z]
        base = PHASE_SIGNAL[lab].copy()
        cbd = lab == CBD
        base[cbd] *= (1.0 + 0.25 * tex[z][cbd]) * np.where(nanopore[z][cbd], 0.45, 1.0)
        if grains is not None and strength["grain_contrast"] > 0:
            g = grains[z]
            am = lab == AM
            base[am] *= grain_gain[g[am]]
            boundary = am & ((ndi.maximum_filter(g, 3) != g) | (ndi.minimum_filter(g, 3) != g))
            base[boundary] *= 1.0 - 0.25 * strength["grain_contrast"]
        edges = ndi.gaussian_gradient_magnitude(PHASE_SIGNAL[lab], 1.0)
        am_edge = (lab == AM) & (edges > 0.05)
        for c, kv in enumerate(kvs):
            resp = kv_response(kv)
            img = base.copy()
            if strength["shine_through"] > 0:  # solid below the silicone, attenuated
                pore = lab == PORE
                d_um = depth[z][pore].astype(np.float32) * dz
                seen = PHASE_SIGNAL[hit[z][pore]] * np.exp(-d_um / resp["depth_um"])
                seen[depth[z][pore] > max_depth] = 0.0
                img[pore] += strength["shine_through"] * 0.8 * seen
            if strength["edge"] > 0:
                img += strength["edge"] * 0.5 * edges
            if strength["blur"] > 0:
                img = ndi.gaussian_filter(img, strength["blur"] * resp["blur_px"])
            img = img + curtain[z][None, :] * fade
            edge_mask = am_edge
            if cap is not None:  # the cap replaces what lies above the electrode
                img = np.vstack([cap, img[margin:]])
                edge_mask = np.vstack([np.zeros(cap.shape, bool), am_edge[margin:]])
            shifted = ndi.shift(img, drift[z], order=1, mode="nearest")
            img = shifted[margin: margin + ny_field, margin: margin + nx]
            charge = _charging((ny_field, nx),
                               edge_mask[margin: margin + ny_field, margin: margin + nx],
                               strength["charging"], resp["charging"], rngs["charging"])
            img = img + charge
            if not tilt_corrected:
                img = ndi.zoom(img, (ny_rec / ny_field, 1.0), order=1)
                charge = ndi.zoom(charge, (ny_rec / ny_field, 1.0), order=1)
            charging[z, c] = charge > 0.05
            img = img * (1.0 + gradient[z, 0] * yy + gradient[z, 1] * xx) * gain[z]
            if strength["noise"] > 0:
                dose = resp["dose"] / strength["noise"]
                img = rngs["noise"].poisson(np.clip(img, 0, None) * dose) / dose
                img = img + rngs["noise"].normal(0.0, strength["noise"] * resp["read_noise"],
                                                 img.shape)
            raw[z, c] = np.clip(OFFSET + img * SCALE, 0, 65535).astype(np.uint16)
    fields = {"gain": gain, "gradient": gradient,
              "curtain": curtain[:, margin: margin + nx], "charging": charging}
    return raw, drift, fields


# --------------------------------------------------------------------------
# A whole sample
# --------------------------------------------------------------------------


def simulate_sample(
    shape=(64, 160, 160),
    voxel_size=(0.05, 0.05, 0.05),
    kvs=(1.0, 3.0),
    *,
    porosity: float = 0.35,
    cbd_fraction: float = 0.10,
    d50_um: float = DEMO_D50_UM,
    sigma_log: float = 0.25,
    calendering: float = 0.5,
    cbd_dispersion: float = 0.8,
    grain_size_um: float = 0.8,
    artifacts: dict | None = None,
    tilt_corrected: bool = True,
    cap_px: int = 0,
    seed: int = 0,
    progress=None,
) -> SimulatedSample:
    """Simulate one FIB-SEM acquisition of an NCA cathode, with its truth.

    Parameters
    ----------
    shape : tuple of int
        (slices, height, width) of the acquisition (height before any tilt
        foreshortening).
    voxel_size : tuple of float
        (dz, dy, dx) in micrometres; dz is the FIB slice thickness.
    kvs : sequence of float
        Acceleration voltages imaged at each slice.
    porosity, cbd_fraction, d50_um, sigma_log, calendering, cbd_dispersion, grain_size_um
        Microstructure (see :func:`generate_microstructure`).
    artifacts : dict, optional
        Artifact strengths (see :data:`ARTIFACTS`).
    tilt_corrected : bool
        False records y shortened by sin 52 degrees (metadata says so).
    cap_px : int
        Rows of protective cap with a fiducial mark above the electrode
        (see :func:`image_stack`); the truth starts at that row of the image.
    seed : int
        Seed of the random generator; the same seed gives the same sample.
    progress : callable, optional
        Wraps the imaging loop (e.g. ``tqdm.tqdm``).

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
    margin = max(8, int(round(0.04 * max(ny, nx))))
    extra = int(np.ceil(3 * max(kv_response(k)["depth_um"] for k in kvs) / voxel_size[0])) + 2
    roi = (slice(0, nz), slice(margin, margin + ny), slice(margin, margin + nx))
    micro = generate_microstructure(
        (nz + extra, ny + 2 * margin, nx + 2 * margin), voxel_size, porosity=porosity,
        cbd_fraction=cbd_fraction, d50_um=d50_um, sigma_log=sigma_log, calendering=calendering,
        cbd_dispersion=cbd_dispersion, grain_size_um=grain_size_um, roi=roi, rng=rng,
    )
    raw, drift, fields = image_stack(
        micro.labels, voxel_size, kvs, n_slices=nz, margin=margin, grains=micro.grains,
        artifacts=artifacts, tilt_corrected=tilt_corrected, cap_px=cap_px, rng=rng,
        progress=progress,
    )
    labels = micro.labels[roi].copy()
    instances = micro.instances[roi].copy()
    ids = np.unique(instances)
    ids = ids[ids > 0]
    faces = np.zeros(instances.shape, dtype=bool)
    faces[[0, -1]] = True
    faces[:, [0, -1]] = True
    faces[:, :, [0, -1]] = True
    cut = np.isin(ids, np.unique(instances[faces]))  # cut by the imaged region
    particles = {
        "id": ids,
        "diameter_um": micro.particles["diameter_um"][ids - 1],
        "cut": cut,
        "cracked": micro.particles["cracked"][ids - 1],
    }
    fractions = np.bincount(labels.ravel(), minlength=3) / labels.size
    whole = ~cut
    truth = {
        "seed": seed,
        "target_porosity": porosity,
        "target_cbd_fraction": cbd_fraction,
        "d50_um_target": d50_um,
        "calendering": calendering,
        "cbd_dispersion": cbd_dispersion,
        "volume_fraction_pore": float(fractions[0]),
        "volume_fraction_am": float(fractions[1]),
        "volume_fraction_cbd": float(fractions[2]),
        "particles_in_view": int(ids.size),
        "particles_whole": int(whole.sum()),
        "d50_um_whole_particles": float(np.median(particles["diameter_um"][whole]))
        if whole.any() else None,
        "kvs": kvs,
        "voxel_size_um": list(voxel_size),
        "tilt_corrected": tilt_corrected,
        "cap_rows": cap_px,
        "artifacts": {**ARTIFACTS, **(artifacts or {})},
    }
    return SimulatedSample(raw, kvs, labels, instances, drift, tuple(voxel_size), particles,
                           fields, truth, tilt_corrected)


def _artifact_option(text: str):
    name, _, value = text.partition("=")
    if name not in ARTIFACTS or not value:
        raise argparse.ArgumentTypeError(
            f"expected NAME=STRENGTH with NAME one of {sorted(ARTIFACTS)}, got {text!r}")
    return name, float(value)


def main(argv=None) -> None:
    """Command line: write a simulated sample as an instrument would, plus its truth."""
    from fibrecon import files  # the CLI writes files; the functions above do not
    from fibrecon import simulated_files

    ap = argparse.ArgumentParser(
        prog="python -m fibrecon.simulate",
        description="Simulate a FIB-SEM acquisition of a silicone-backfilled NCA cathode "
                    "(multi-kV per-slice TIFFs with instrument metadata) and its ground truth.",
    )
    ap.add_argument("raw_dir", help="folder for the per-slice TIFFs")
    ap.add_argument("truth_dir", help="folder for labels, instances, drift, fields and truth.json")
    ap.add_argument("--shape", type=int, nargs=3, default=[64, 160, 160], metavar=("Z", "Y", "X"))
    ap.add_argument("--voxel-size", type=float, nargs=3, default=[0.05, 0.05, 0.05],
                    metavar=("DZ", "DY", "DX"), help="micrometres (default 0.05 0.05 0.05)")
    ap.add_argument("--kv", type=float, nargs="+", default=[1.0, 3.0], help="kV values")
    ap.add_argument("--porosity", type=float, default=0.35)
    ap.add_argument("--cbd-fraction", type=float, default=0.10)
    ap.add_argument("--d50", type=float, default=DEMO_D50_UM, help="median particle diameter, µm")
    ap.add_argument("--calendering", type=float, default=0.5, help="0 (none) to 1 (strong)")
    ap.add_argument("--cbd-dispersion", type=float, default=0.8,
                    help="1 = CBD as films and necks, 0 = agglomerated clusters")
    ap.add_argument("--artifact", type=_artifact_option, action="append", default=[],
                    metavar="NAME=STRENGTH", help=f"artifact strength, NAME in {sorted(ARTIFACTS)}")
    ap.add_argument("--no-tilt-correction", action="store_true",
                    help="record y foreshortened by sin 52 degrees")
    ap.add_argument("--cap", type=int, default=0, metavar="ROWS",
                    help="rows of protective cap with a fiducial mark above the electrode")
    ap.add_argument("--vendor", choices=["FEI", "Zeiss"], default="FEI",
                    help="instrument metadata written into the TIFF tags")
    ap.add_argument("--pattern", default="slice_{slice:04d}_{kv}kV.tif")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    sample = simulate_sample(
        tuple(args.shape), tuple(args.voxel_size), args.kv, porosity=args.porosity,
        cbd_fraction=args.cbd_fraction, d50_um=args.d50, calendering=args.calendering,
        cbd_dispersion=args.cbd_dispersion, artifacts=dict(args.artifact),
        tilt_corrected=not args.no_tilt_correction, cap_px=args.cap, seed=args.seed,
    )
    simulated_files.write_simulated_sample(args.raw_dir, args.truth_dir, sample, args.pattern,
                              vendor=args.vendor)


if __name__ == "__main__":
    main()
