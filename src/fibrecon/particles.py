"""Active-material particles: separation, sizes and dispersion.

Touching particles are separated by a marker-controlled watershed of the
distance transform (voids inside particles filled first; h-maxima markers), then each
particle is measured: equivalent-sphere diameter, sphericity (Wadell: area
of the equal-volume sphere over the particle's marching-cubes surface),
centroid, and whether the volume boundary cuts it. Cut particles are
reported separately: their size is unknown.
"""

from __future__ import annotations

import contextlib
import hashlib
import io as _io

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from scipy.spatial import cKDTree
from skimage import measure

__all__ = [
    "separate_particles",
    "snow_particles",
    "split_lengths",
    "particle_table",
    "particles_in_box",
    "BOX_COLUMNS",
    "size_summary",
    "nearest_neighbour_distances",
    "local_fraction_cv",
    "two_point_correlation",
    "correlation_length",
]


#: The particle split's lengths, micrometres (1 and 1 voxel at 50 nm): the marker height and
#: the distance-map smoothing (``metrics:`` ``particle_h_um``, ``particle_sigma_um``); and the
#: crack closing (``metrics: particle_close_um``), 0: none, enclosed voids are filled only
#: (0.1 um, the default until 2026-12-04, bridged the necks of pressed and small particles:
#: see :func:`separate_particles`).
H_UM, SIGMA_UM, CLOSE_UM = 0.05, 0.05, 0.0


def coarse_voxel_scale(voxel_size, h_um: float = H_UM) -> float:
    """The factor (>= 1) that brings the marker height ``h_um`` up to one voxel.

    A digitised distance map has no heights finer than a voxel: below one
    voxel the markers seed spurious maxima and the split breaks particles up
    (a simulated electrode at 200 nm voxels, d50 4.9 um: h of a quarter voxel
    gave 335 particles and d50 0.39 um, one voxel 148 and 4.58 um, the truth
    141). The metrics stage multiplies the marker heights and the smoothing
    by this factor and logs it (:func:`fibrecon.metrics.sample_metrics`).

    Examples
    --------
    >>> coarse_voxel_scale((0.05, 0.05, 0.05)), coarse_voxel_scale((0.2, 0.2, 0.2))
    (1.0, 4.0)
    """
    return max(1.0, float(min(voxel_size)) / float(h_um))


def split_lengths(voxel_size, h_um: float, sigma_um: float, doubt_um: float) -> dict:
    """The particle split's lengths as the metrics stage uses them on ``voxel_size``.

    Marker height, smoothing and height doubt, each multiplied by
    :func:`coarse_voxel_scale` (>= 1, so no height is finer than a voxel).

    Examples
    --------
    >>> split_lengths((0.2, 0.2, 0.2), 0.05, 0.05, 0.025)
    {'scale': 4.0, 'h': 0.2, 'sigma': 0.2, 'doubt': 0.1}
    """
    scale = coarse_voxel_scale(voxel_size, h_um)
    return {"scale": scale, "h": h_um * scale, "sigma": sigma_um * scale,
            "doubt": doubt_um * scale}


def separate_particles(am: np.ndarray, voxel_size, *, h: float = H_UM, sigma: float = SIGMA_UM,
                       close_um: float = CLOSE_UM) -> np.ndarray:
    """Split the active-material phase into particles by marker-controlled watershed.

    Parameters
    ----------
    am : ndarray of bool, (z, y, x)
        Active-material voxels.
    voxel_size : tuple of float
        (dz, dy, dx) in micrometres; the distance transform is computed in
        these units, so anisotropic voxels are handled, and every length
        below is physical: the same microstructure imaged at 20 or 50 nm is
        split alike.
    h : float or sequence of float
        Minimum height (micrometres of distance) of a distance-transform
        maximum to seed its own particle: larger merges more. Several heights
        share the distance map and one flooding for the markers
        (:func:`fibrecon.extrema.h_maxima`).
    sigma : float
        Gaussian smoothing (micrometres, per axis in voxels of that axis) of
        the distance transform before the maxima are found (rough surfaces
        make spurious maxima); outside the solid the smoothed map is 0, so
        that two pieces of solid apart never compete through the blur in the
        gap between them.
    close_um : float
        Voids enclosed by a particle are always filled before the distance
        transform; with ``close_um`` > 0, cracks open to the surface are
        closed first (morphological closing with an ellipsoid of this radius
        in micrometres), so that a cracked particle stays one particle. The
        labels are restricted to the AM again. Default 0: a closing bridges
        the necks between pressed or small particles too (see Notes).

    Returns
    -------
    ndarray of int32, (z, y, x), or list of them (one per ``h`` of a sequence)
        Particle ids 1..n, 0 outside the AM.

    Notes
    -----
    The defaults of ``h`` and ``sigma`` are one voxel at 50 nm. Set in voxels
    instead, they (with the 0.1 um closing then in use) split one simulated
    microstructure (d50 1.5 um) into 0.275 particles per um^3 at 20 nm pixels
    and 0.195 at 50 nm (40 % more, a finer grid resolving more spurious
    saddles); in micrometres 0.206 and 0.195 (``benchmarks/voxel_size.py``).
    Closing cracks of 0.1 um (the default until 2026-12-04) against filling
    enclosed voids only, d50 error against the true particles (whole found /
    true; ``benchmarks/packings.py --close-um 0.1`` against the default):
    calendered packings at d50 1.2 um +22.0 % (249 / 585) against +11.2 %
    (402 / 585), agglomerates at 1.2 um +10.2 % against +5.4 %, bimodal
    +0.6 % against +0.1 % (91 % against 98 % of particles recovered); the
    simulator at d50 1.2 um +4.3 % against +0.7 %, the U-Net segmentation of
    a simulated stack at 50 nm +13.9 % against +8.6 %
    (``benchmarks/voxel_size.py``). Worse without the closing: one simulator
    stack holding 3 whole particles, -1.2 % against -8.1 % (a crack open to
    the surface splits a particle), and the dense agglomerates at 2 um,
    +0.3 % against -2.8 % (119 / 109).
    Measured on simulator stacks with known particles (``benchmarks/metrics.py``,
    200 x 300 x 300 voxels): d50 -0.7 % (124 of 126 whole particles) at d50
    2 um and -5.4 % (27 for 23: cracked particles split) at 3 um, where
    porespy's SNOW partitioning (Gostick 2017, default ``r_max=4,
    sigma=0.4``) over-segments cracked, rough particles (d50 33-51 % low);
    SNOW stays the cross-check in the tests.
    The distance transform is the ``edt`` package's (float32, multi-threaded;
    scipy's holds a 12-byte-per-voxel feature transform), the markers come
    from :func:`fibrecon.extrema.h_maxima` (scikit-image's result at a
    quarter of its memory), the flooding is :func:`fibrecon.extrema.watershed`
    (scikit-image's, in half its time): about 35 bytes per voxel in all.
    """
    import edt
    from skimage.draw import ellipsoid

    from fibrecon import extrema

    am = np.asarray(am, dtype=bool)
    heights = list(np.atleast_1d(h))
    if not am.any():
        empty = [np.zeros(am.shape, dtype=np.int32) for _ in heights]
        return empty if np.ndim(h) else empty[0]
    vs = np.asarray(voxel_size, float)
    if vs.shape != (3,) or not np.all(vs > 0):
        raise ValueError(f"voxel_size must be three positive lengths (dz, dy, dx) in um, got "
                         f"{voxel_size}")
    solid = am
    if close_um > 0:
        # an ellipsoid of close_um in each axis's voxels (skimage.morphology.ball(2) at 0.1 um
        # and 50 nm)
        solid = ndi.binary_closing(am, ellipsoid(*(close_um / vs))) | am
    solid = ndi.binary_fill_holes(solid)
    dt = edt.edt(solid, anisotropy=tuple(vs / vs.min()), parallel=0)  # float32, all cores
    smooth = ndi.gaussian_filter(dt, tuple(sigma / vs)) if sigma > 0 else dt.copy()
    smooth[~solid] = 0  # the floor, which h_maxima need not flood: solid apart is apart
    peaks = extrema.h_maxima(smooth, [float(v) / vs.min() for v in heights])  # in dt's units
    del smooth
    np.negative(dt, out=dt)
    out = []
    for mask in peaks:
        markers, _ = ndi.label(mask)
        labels = extrema.watershed(dt, markers, solid)
        del markers
        labels[~am] = 0
        out.append(labels.astype(np.int32, copy=False))
    return out if np.ndim(h) else out[0]


def snow_particles(am: np.ndarray, *, sigma: float = 0.4, r_max: int = 4) -> np.ndarray:
    """porespy's SNOW partitioning of the AM (the reference method, for cross-checks)."""
    import porespy as ps

    am = np.asarray(am, dtype=bool)
    with contextlib.redirect_stdout(_io.StringIO()), contextlib.redirect_stderr(_io.StringIO()):
        snow = ps.filters.snow_partitioning(am, r_max=r_max, sigma=sigma)
    return (snow.regions * am).astype(np.int32)


#: Bounding-box columns of :func:`particle_table` (voxels, half-open: first, one past last).
BOX_COLUMNS = [f"box_{a}{e}" for a in "zyx" for e in (0, 1)]


#: Sphericity of particle shapes already meshed in this process, by shape and voxel size:
#: the volumes behind the segmentation sd share most particles with the sample's own.
_SPHERICITY: dict = {}
_SPHERICITY_MAX = 500_000


def _sphericity(image: np.ndarray, vs: np.ndarray, volume: float) -> float:
    """Wadell sphericity of one particle's voxel mask (marching cubes), cached by shape."""
    key = (image.shape, tuple(vs), hashlib.blake2b(np.packbits(image).tobytes(),
                                                    digest_size=16).digest())
    if key not in _SPHERICITY:
        if len(_SPHERICITY) >= _SPHERICITY_MAX:
            _SPHERICITY.clear()
        verts, faces, _, _ = measure.marching_cubes(np.pad(image, 1).astype(np.float32), 0.5,
                                                    spacing=tuple(vs))
        area = measure.mesh_surface_area(verts, faces)
        _SPHERICITY[key] = float(np.pi ** (1 / 3) * (6 * volume) ** (2 / 3) / area) \
            if area > 0 else np.nan
    return _SPHERICITY[key]


def particle_table(instances: np.ndarray, voxel_size=(1.0, 1.0, 1.0), *,
                   sphericity: bool = True) -> pd.DataFrame:
    """Measure every particle of a labelled volume.

    Parameters
    ----------
    instances : ndarray of int, (z, y, x)
        Particle ids (0 = background).
    voxel_size : tuple of float
        (dz, dy, dx) in micrometres.
    sphericity : bool
        Compute the Wadell sphericity from a marching-cubes surface (slower).

    Returns
    -------
    pandas.DataFrame
        One row per particle: ``id``, ``volume_um3``, ``diameter_um``
        (equivalent sphere), ``sphericity``, ``centroid_z_um`` / ``_y_`` /
        ``_x_``, ``cut`` (touches the volume boundary), and the bounding box
        in voxels, ``box_z0`` .. ``box_x1`` (half-open: first and one past the
        last voxel along each axis).
    """
    vs = np.asarray(voxel_size, float)
    rows = []
    for region in measure.regionprops(instances):
        sl = region.slice
        cut = any(s.start == 0 or s.stop == n for s, n in zip(sl, instances.shape))
        volume = region.area * float(np.prod(vs))
        diameter = (6.0 * volume / np.pi) ** (1.0 / 3.0)
        sph = _sphericity(region.image, vs, volume) if sphericity and region.area >= 27 \
            else np.nan
        cz, cy, cx = (np.asarray(region.centroid) * vs)
        rows.append({"id": region.label, "volume_um3": volume, "diameter_um": diameter,
                     "sphericity": sph, "centroid_z_um": cz, "centroid_y_um": cy,
                     "centroid_x_um": cx, "cut": cut,
                     **{f"box_{a}0": b.start for a, b in zip("zyx", sl)},
                     **{f"box_{a}1": b.stop for a, b in zip("zyx", sl)}})
    columns = ["id", "volume_um3", "diameter_um", "sphericity", "centroid_z_um",
               "centroid_y_um", "centroid_x_um", "cut", *BOX_COLUMNS]
    return pd.DataFrame(rows, columns=columns)



def particles_in_box(table: pd.DataFrame, box) -> pd.DataFrame:
    """The particles of a table that reach into a sub-volume, as that sub-volume sees them.

    Parameters
    ----------
    table : pandas.DataFrame
        From :func:`particle_table` of the whole volume.
    box : tuple of slice
        The sub-volume, (z, y, x) voxel slices with explicit starts and stops.

    Returns
    -------
    pandas.DataFrame
        Rows of particles whose bounding box overlaps the sub-volume; ``cut``
        is true where a particle was cut by the whole volume or reaches
        beyond the sub-volume. Sizes and shapes are those measured in the
        whole volume, so a sub-volume's statistics differ from the whole
        volume's by which particles it holds, not by a separation redone at
        its faces.
    """
    lo = np.array([b.start for b in box])
    hi = np.array([b.stop for b in box])
    start = table[BOX_COLUMNS[0::2]].to_numpy()
    stop = table[BOX_COLUMNS[1::2]].to_numpy()
    overlaps = np.all((start < hi) & (stop > lo), axis=1)
    inside = np.all((start >= lo) & (stop <= hi), axis=1)
    out = table[overlaps].copy()
    out["cut"] = out["cut"].to_numpy() | ~inside[overlaps]
    return out


def size_summary(table: pd.DataFrame, total_volume_um3: float) -> dict:
    """d10/d50/d90 (number-weighted) and volume-weighted d50 of whole particles.

    Parameters
    ----------
    table : pandas.DataFrame
        From :func:`particle_table`.
    total_volume_um3 : float
        Volume analysed, for the number density.

    Returns
    -------
    dict
        ``particles_whole``, ``particles_cut``, ``d10_um``, ``d50_um``,
        ``d90_um``, ``d50_volume_weighted_um``, ``sphericity_mean``,
        ``number_density_per_um3`` (whole + half of the cut ones). NaN when no
        particle is whole.
    """
    whole = table[~table["cut"]]
    out = {"particles_whole": int(len(whole)), "particles_cut": int(table["cut"].sum())}
    if len(whole):
        d = np.sort(whole["diameter_um"].to_numpy())
        out.update({f"d{q}_um": float(np.percentile(d, q)) for q in (10, 50, 90)})
        w = (d**3) / (d**3).sum()
        out["d50_volume_weighted_um"] = float(d[np.searchsorted(np.cumsum(w), 0.5)])
        out["sphericity_mean"] = float(whole["sphericity"].mean())
    else:
        out.update({k: float("nan") for k in ("d10_um", "d50_um", "d90_um",
                                              "d50_volume_weighted_um", "sphericity_mean")})
    out["number_density_per_um3"] = (len(whole) + 0.5 * out["particles_cut"]) / total_volume_um3
    return out


def nearest_neighbour_distances(table: pd.DataFrame) -> np.ndarray:
    """Distance (µm) from each particle centroid to the nearest other one."""
    xyz = table[["centroid_z_um", "centroid_y_um", "centroid_x_um"]].to_numpy()
    if len(xyz) < 2:
        return np.array([])
    d, _ = cKDTree(xyz).query(xyz, k=2)
    return d[:, 1]


def local_fraction_cv(mask: np.ndarray, block: int) -> float:
    """Coefficient of variation of the phase fraction over non-overlapping cubic blocks.

    A measure of how evenly a phase (e.g. the AM) is dispersed at the scale
    ``block`` (voxels). NaN if fewer than two blocks fit.
    """
    nz, ny, nx = (n // block for n in mask.shape)
    if nz * ny * nx < 2:
        return float("nan")
    m = mask[: nz * block, : ny * block, : nx * block].astype(np.float32)
    f = m.reshape(nz, block, ny, block, nx, block).mean(axis=(1, 3, 5))
    return float(f.std() / f.mean()) if f.mean() > 0 else float("nan")


def _lag_products(mask: np.ndarray, axis: int, max_lag: int, chunk_voxels: int = 2**22
                  ) -> np.ndarray:
    """``sum_i m[i] * m[i + k]`` along ``axis`` for k = 0..max_lag (exact, non-periodic).

    Zero-padded FFT autocorrelation of every line along ``axis``, summed over
    the lines; lines are processed in chunks of about ``chunk_voxels`` so the
    memory stays bounded.
    """
    from scipy import fft

    lines = np.moveaxis(mask, axis, -1).reshape(-1, mask.shape[axis])
    n = lines.shape[1]
    size = fft.next_fast_len(2 * n, real=True)
    out = np.zeros(max_lag + 1)
    step = max(1, chunk_voxels // n)
    for start in range(0, lines.shape[0], step):
        spectrum = fft.rfft(lines[start:start + step].astype(np.float64), n=size, axis=1,
                            workers=-1)
        power = (spectrum.real**2 + spectrum.imag**2).sum(axis=0)  # summed over the lines
        out += fft.irfft(power, n=size)[: max_lag + 1]
    return np.rint(out)  # integer counts


def two_point_correlation(mask: np.ndarray, voxel_size, max_r_um: float | None = None
                          ) -> pd.DataFrame:
    """Two-point correlation S2(r) of a phase, averaged over the three axis directions.

    ``S2(r)`` is the probability that two points a distance ``r`` apart both
    lie in the phase: ``eps`` at r = 0, tending to ``eps^2`` for an
    uncorrelated (well-dispersed) structure. Computed exactly along z, y
    and x (lags in voxels times each axis' voxel size; pair counts from a
    zero-padded FFT of every line, equal to the direct sum, which the tests
    check) and averaged on the common distances. Unlike porespy's
    ``two_point_correlation`` (periodic FFT, radially binned), it is not
    periodic and keeps the axis directions, so anisotropic voxels are exact.

    Parameters
    ----------
    mask : ndarray of bool, (z, y, x)
    voxel_size : tuple of float
        (dz, dy, dx) in micrometres.
    max_r_um : float, optional
        Largest distance (default: half the longest side; each direction
        contributes up to half its own extent).

    Returns
    -------
    pandas.DataFrame
        ``r_um``, ``s2``.
    """
    m = np.asarray(mask, dtype=bool)
    vs = np.asarray(voxel_size, float)
    half = 0.5 * np.asarray(m.shape) * vs  # each axis reaches half its own extent
    max_r = half.max() if max_r_um is None else max_r_um
    r = np.arange(0.0, max_r + 1e-9, vs.max())
    total, count = np.zeros(r.size), np.zeros(r.size)
    for axis in range(3):
        lags = np.arange(0, int(min(max_r, half[axis]) / vs[axis]) + 1)
        s2 = _lag_products(m, axis, lags[-1]) / ((m.shape[axis] - lags) * (m.size // m.shape[axis]))
        covered = r <= lags[-1] * vs[axis] + 1e-9
        total[covered] += np.interp(r[covered], lags * vs[axis], s2)
        count[covered] += 1
    keep = count > 0
    return pd.DataFrame({"r_um": r[keep], "s2": total[keep] / count[keep]})


def correlation_length(s2: pd.DataFrame, fraction: float) -> float:
    """Distance at which S2 has fallen by 1 - 1/e of the way from eps to eps^2 (NaN if never)."""
    target = fraction**2 + (fraction - fraction**2) / np.e
    below = np.flatnonzero(s2["s2"].to_numpy() <= target)
    return float(s2["r_um"].iloc[below[0]]) if below.size else float("nan")
