"""Slice-to-slice drift correction of FIB-SEM stacks.

During milling the stage and beam drift, so the image content of slice ``z``
is displaced against slice 0 by a (y, x) translation that changes slowly,
with occasional jumps. :func:`estimate_drift` measures the shift of every
slice against several previous ones by phase correlation (subpixel,
Guizar-Sicairos et al. 2008) on band-passed, destriped, de-saturated
images, and solves all measurements together as a weighted least-squares
path, so that the error of one pair does not accumulate. Slices with too
little structure are flagged and carried by their neighbours.
:func:`aligned_slices` then shifts every slice into the frame of slice 0,
one slice at a time (the stack is never held in memory).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft
from scipy import ndimage as ndi
from scipy import sparse
from scipy.signal.windows import tukey
from scipy.sparse import linalg as splinalg
from skimage.measure import block_reduce
from skimage.registration import phase_cross_correlation

from fibrecon.settings import StageSettings

__all__ = [
    "AlignSettings",
    "Alignment",
    "register_stack",
    "DriftResult",
    "find_static_band",
    "RegistrationPlan",
    "plan_registration",
    "registration_image",
    "estimate_drift",
    "estimate_drift_consecutive",
    "estimate_drift_spread",
    "common_region",
    "shift_image",
    "aligned_slices",
    "apply_drift",
]


@dataclass(frozen=True, kw_only=True)
class AlignSettings(StageSettings):
    """Settings of the align stage (``align:`` in the config; defaults as in the schema).

    Attributes
    ----------
    references : int
        Each slice is matched to this many previous ones.
    upsample_factor : int
        Subpixel precision is ``downsample / upsample_factor`` pixel.
    downsample : int
        Registration on block-averaged images.
    bandpass_px : tuple of float
        Fine and coarse Gaussian sigmas of the band-pass (registration pixels).
    fiducial_window : "auto", None or tuple of 4 int
        See :func:`plan_registration`.
    trim_top_px : int
        Rows dropped at the top after alignment.
    frame : {"crop", "pad"}
        The aligned stack is the region every slice covers, or the full frame.
    pad_value : float
        No-data value when ``frame`` is ``"pad"``.
    min_quality : float
        Pairs matched worse are ignored; slices without a better one are flagged.
    spread_tiles : int
        Without a fiducial window, the image is also registered as
        ``spread_tiles`` x ``spread_tiles`` independent tiles and their spread
        estimates the drift error (:func:`estimate_drift_spread`); 0 or 1: off.
    """

    SECTION = "align"
    references: int = 3
    upsample_factor: int = 20
    downsample: int = 2
    bandpass_px: tuple = (0.7, 8.0)
    fiducial_window: object = "auto"
    trim_top_px: int = 0
    frame: str = "crop"
    pad_value: float = 0
    min_quality: float = 0.05
    spread_tiles: int = 3


@dataclass
class DriftResult:
    """Drift of every slice and how well it was measured.

    Attributes
    ----------
    drift : ndarray of float, (z, 2)
        (y, x) displacement in pixels of each slice's content relative to
        slice 0: ``stack[z] ~ ndi.shift(frame-0 image, drift[z])``.
    quality : ndarray of float, (z,)
        Best match quality of the slice against its references, 0 (none) to
        1 (perfect); 1 for slice 0.
    flagged : ndarray of bool, (z,)
        Slices with too little structure or no reliable match; their drift is
        interpolated from their neighbours.
    pairs : ndarray, (n, 6)
        Every measurement: slice, reference, shift y, shift x, quality, weight.
    """

    drift: np.ndarray
    quality: np.ndarray
    flagged: np.ndarray
    pairs: np.ndarray


#: Share of each image edge tapered by the registration window (Tukey alpha).
APODISATION = 0.25


def _bandpass_filter(shape, low_sigma: float, high_sigma: float) -> np.ndarray:
    """Fourier-domain difference of Gaussians (keeps scales between the sigmas)."""
    fy = sfft.fftfreq(shape[0])[:, None]
    fx = sfft.fftfreq(shape[1])[None, :]
    f2 = fy**2 + fx**2
    low = np.exp(-2 * np.pi**2 * low_sigma**2 * f2)
    high = np.exp(-2 * np.pi**2 * high_sigma**2 * f2)
    band = (low - high).astype(np.float32)
    band[:, 0] = 0.0  # kx = 0: profiles constant along x carry no x information...
    band[0, :] = 0.0  # ...and the column means (curtains along y) are removed below
    return band


def registration_image(channels: np.ndarray, *, window=None, downsample: int = 2) -> np.ndarray:
    """The image that is registered: channel mean, cropped, de-saturated, destriped, apodised.

    Parameters
    ----------
    channels : ndarray, (c, y, x) or (y, x)
        One slice, any numeric dtype.
    window : tuple of 4 int, optional
        Fiducial region ``(y0, y1, x0, x1)`` in pixels.
    downsample : int
        Block-average factor (registration at half resolution keeps 0.05 px
        precision with a 20-fold upsampled peak and is 4x cheaper).

    Returns
    -------
    ndarray of float32
    """
    img = np.asarray(channels, dtype=np.float32)
    if img.ndim == 3:
        img = img.mean(axis=0)
    if window is not None:
        y0, y1, x0, x1 = window
        img = img[y0:y1, x0:x1]
    if downsample > 1:  # block average, remainder rows/columns dropped
        img = block_reduce(img[: img.shape[0] - img.shape[0] % downsample,
                               : img.shape[1] - img.shape[1] % downsample], downsample, np.mean)
    hi = np.percentile(img, 99.5)
    img = np.minimum(img, hi)  # saturated charging must not dominate the match
    img = img - img.mean(axis=0, keepdims=True)  # curtains run along y
    # a flat-topped (Tukey) taper: a Hann window would weight the centre quarter
    # alone, and on structure (no fiducial) fewer features average the apparent
    # motion of inclined surfaces (drift error 1.0-4.9 px RMS with Hann against
    # 0.7-1.9 px with this, benchmarks/RESULTS.md); the band-pass's zeroed axes
    # keep the image edges out of the match
    wy = tukey(img.shape[0], APODISATION).astype(np.float32)[:, None]
    wx = tukey(img.shape[1], APODISATION).astype(np.float32)[None, :]
    return img * wy * wx


def _fft(img, band):
    return sfft.fft2(img, workers=-1) * band


def estimate_drift(
    stack,
    *,
    upsample_factor: int = AlignSettings.upsample_factor,
    references: int = AlignSettings.references,
    window=None,
    downsample: int = AlignSettings.downsample,
    band_sigmas=AlignSettings.bandpass_px,
    min_quality: float = AlignSettings.min_quality,
    progress=None,
) -> DriftResult:
    """Measure the content displacement of every slice relative to slice 0.

    Parameters
    ----------
    stack : sequence of ndarray
        Anything with ``len()`` whose item ``z`` is one slice, (c, y, x) or
        (y, x): an array or a lazily read stack (:class:`fibrecon.files.RawStack`).
    upsample_factor : int
        Subpixel precision is ``downsample / upsample_factor`` pixel.
    references : int
        Each slice is matched to this many previous slices.
    window : tuple of 4 int, optional
        Fiducial region ``(y0, y1, x0, x1)`` used for registration.
    downsample : int
        Registration resolution (see :func:`registration_image`).
    band_sigmas : tuple of float
        Band-pass (pixels of the downsampled image): finer noise and coarser
        brightness variation are ignored.
    min_quality : float
        Pairs matched worse than this are ignored; a slice with no better
        pair, or with less than a fifth of the median structure, is flagged.
    progress : callable, optional
        Wraps the slice iterator (e.g. ``tqdm.tqdm``).

    Returns
    -------
    DriftResult

    Notes
    -----
    A fiducial window moves with the content: after a first pass, each
    slice's window is cut again where that pass found its content (integer
    pixels, the window shrunk to stay inside the image), so a cap that drifts
    by more than the window's margin stays in it; the offset between two
    slices' windows is added to their measured shift.
    Each pair (z, r) gives ``d_z - d_r = m_zr`` with weight ``q_zr^2``; a weak
    smoothness term ``d_z - d_{z-1} = 0`` (weight 1e-4) keeps flagged slices
    attached. The system is solved by sparse least squares with ``d_0 = 0``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> a = ndi.gaussian_filter(rng.random((96, 96)), 2)
    >>> b = ndi.shift(a, (2.0, -3.0), mode="grid-wrap")
    >>> r = estimate_drift(np.stack([a, b])[:, None], downsample=1)
    >>> np.round(r.drift[1])  # to 0.1 px: (1.9, -2.9); the band-pass costs some at 96 px
    array([ 2., -3.])
    """
    nz = len(stack)
    offsets = np.zeros((nz, 2), dtype=int)
    pairs, structure = _measure_pairs(stack, window, offsets, references, downsample,
                                      upsample_factor, band_sigmas, progress)
    if window is not None and nz > 1 and structure.any():
        # second pass: each slice's window cut where the first pass found its content, inside
        # the image, so that a cap drifting by more than the window's margin stays in it
        first = _solve_path(nz, pairs, _pair_weights(pairs, min_quality))
        offsets = np.rint((first - first[0]) / downsample).astype(int) * downsample
        window = _inset_for(window, offsets, np.shape(stack[0])[-2:], downsample)
        if window is not None:
            pairs, structure = _measure_pairs(stack, window, offsets, references, downsample,
                                              upsample_factor, band_sigmas, progress)
    if nz and not structure.any():
        raise ValueError("every slice is constant: nothing to register (blank or "
                         "saturated images?)")
    quality = np.ones(nz)
    flagged = np.zeros(nz, dtype=bool)
    median_structure = np.median(structure) if nz else 0.0
    for z in range(1, nz):
        q = pairs[pairs[:, 0] == z, 4]
        quality[z] = q.max() if q.size else 0.0
        flagged[z] = quality[z] < min_quality or structure[z] < 0.2 * median_structure
    weights = _pair_weights(pairs, min_quality, flagged)
    drift = _solve_path(nz, pairs, weights)
    return DriftResult(drift, quality, flagged, np.column_stack([pairs, weights]))


#: Stacks with fewer slices are not searched for a static cap (:func:`find_static_band`).
MIN_CAP_SLICES = 16


def find_static_band(stack, *, samples: int = 8, min_rows: int = 8, max_fraction: float = 0.5,
                     far_ratio: float = 1.6, noise_ratio: float = 0.45,
                     min_quality: float = 0.1, min_slices: int = MIN_CAP_SLICES):
    """Rows at the top of every slice that hardly change with z: a protective cap to register on.

    A FIB-SEM cross-section usually shows the protective (Pt) cap above the
    electrode, often with a milled fiducial mark; the cap is extruded along
    the milling direction, so it looks the same in every slice and moves only
    with the stage drift, while the electrode below changes from slice to
    slice. ``samples`` slices spread through the stack, and the slice after
    each, are registered on the top tenth of the rows. Two ratios per row
    tell a static row: the variance across the spread slices over half the
    mean squared difference of neighbouring slices (about 1 where nothing
    changes but noise, large where the structure changes), and the variance
    across the spread slices over the row's noise variance (median absolute
    difference of neighbouring pixels), which must be below ``noise_ratio``
    times that of the median row of the lower half (or 2.5). Where more than
    a quarter of the lower half's rows pass both tests too, the structure
    changes too little over the stack to tell a cap from it: None. Only the top is
    searched: a static band at the bottom is a data bar, which does not
    drift with the sample (:func:`fibrecon.files.detect_databar`).

    Parameters
    ----------
    stack : sequence of ndarray
        Slices (c, y, x) or (y, x), read lazily.
    samples : int
        Slices compared (spread evenly through the stack).
    min_rows : int
        Shorter bands are not used.
    max_fraction : float
        A band may cover at most this share of the height.
    far_ratio, noise_ratio : float
        Limits of the two ratios above.
    min_quality : float
        The top rows must match between slices at least this well (phase
        correlation, 0..1): a featureless band cannot carry registration.
    min_slices : int
        Shorter stacks are not searched: over a few slices the electrode
        itself hardly changes, and a top region of it passed for a cap (8
        slices of 100² simulated images without a cap: rows 0-8 and 0-24 of
        2 of 3 stacks; none from 16 slices on).

    Returns
    -------
    tuple of int or None
        ``(0, rows)``: the static band's rows, or None when there is none.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> cap = ndi.gaussian_filter(rng.random((20, 96)), 2)
    >>> stack = [np.vstack([cap, ndi.gaussian_filter(rng.random((76, 96)), 2)])
    ...          + 0.01 * rng.standard_normal((96, 96)) for _ in range(16)]
    >>> find_static_band(stack)
    (0, 20)
    """
    nz = len(stack)
    if nz < max(4, min_slices):
        return None

    def read(z):
        img = np.asarray(stack[int(z)], dtype=np.float32)
        return img.mean(axis=0) if img.ndim == 3 else img

    picks = np.unique(np.linspace(0, nz - 2, min(samples, nz - 1)).round().astype(int))
    imgs = [read(z) for z in picks]
    ny = imgs[0].shape[0]
    probe = max(min_rows, ny // 10)
    if any(np.ptp(img[:probe]) == 0 for img in imgs):
        return None  # blank top rows carry nothing to register on

    shifts = []

    def onto(ref, img):
        shift, error, _ = phase_cross_correlation(ref[:probe], img[:probe], upsample_factor=4,
                                                  normalization=None)
        shifts.append(abs(shift[0]))
        return ndi.shift(img, shift, order=1, mode="nearest"), 1.0 - error

    moved = [onto(imgs[0], img) for img in imgs[1:]]
    quality = float(np.median([q for _, q in moved]))
    edge = int(np.ceil(max(shifts))) + 2  # top rows the shifts filled from the edge
    spread = np.stack([imgs[0], *(m for m, _ in moved)])
    far = spread.var(axis=0).mean(axis=1)
    near = np.mean([((onto(img, read(z + 1))[0] - img) ** 2).mean(axis=1) / 2.0
                    for img, z in zip(imgs, picks)], axis=0)
    steps = np.diff(spread, axis=2)
    mad = np.median(np.abs(steps - np.median(steps, axis=2, keepdims=True)), axis=2)
    noise = np.median((1.4826 * mad) ** 2 / 2.0, axis=0)
    to_noise = far / np.maximum(noise, 1e-12)
    static = (far < far_ratio * np.maximum(near, 1e-12)) & \
        (to_noise < max(2.5, noise_ratio * float(np.median(to_noise[ny // 2:]))))
    if static[ny // 2:].mean() > 0.25:
        # the electrode below changes as little over the sampled slices (a short stack, or
        # one finely sliced): a static top cannot be told from it
        return None
    for skip in range(edge + 1):  # the first rows may be filled from the edge by the shift
        rows = skip
        while rows < ny and static[rows]:
            rows += 1
        if rows - skip >= min_rows:
            break
    if rows - skip < min_rows or rows > max_fraction * ny or quality < min_quality:
        return None
    return (0, int(rows))


#: What registering on the structure itself costs (benchmarks/RESULTS.md,
#: "Registration without a fiducial"): the drift error is mostly a slow linear lean,
#: the net inclination of the structure in view, which no estimator on the content removes.
STRUCTURE_REGISTRATION_NOTE = (
    "no fiducial window and no static cap found: registering on the structure itself, which "
    "follows inclined particle surfaces as if they were drift; expect a slow lean of about "
    "0.02-0.03 px per slice (1.4-3.5 px RMS over 100-200 slices) on isotropic structure and "
    "more where the structure is inclined as a whole "
    "(benchmarks/RESULTS.md, 'Registration without a fiducial'); set align: fiducial_window to "
    "a region that does not change with z where the images have one")


@dataclass
class RegistrationPlan:
    """Where a stack is registered and which top rows are dropped afterwards.

    Attributes
    ----------
    window : tuple of 4 int or None
        ``(y0, y1, x0, x1)`` registration region, None for the whole image.
    trim_top : int
        Rows dropped at the top after alignment.
    source : str
        ``"config"``, ``"static band"`` (found by :func:`find_static_band`)
        or ``"whole image"``.
    note : str
        A sentence for the log.
    """

    window: tuple | None
    trim_top: int
    source: str
    note: str


def plan_registration(stack, fiducial_window="auto", trim_top_px: int = 0) -> RegistrationPlan:
    """Decide the registration region of a stack and check the settings against its images.

    Parameters
    ----------
    stack : sequence of ndarray
        Slices (c, y, x), read lazily (only a few are read for ``"auto"``).
    fiducial_window : "auto", None or sequence of 4 int
        ``[y0, y1, x0, x1]`` as configured; ``"auto"`` looks for a static
        cap at the top (:func:`find_static_band`), registers on it and drops
        it after alignment (it is not electrode); None registers the whole image.
    trim_top_px : int
        Rows dropped at the top after alignment (added to an auto-detected cap).

    Returns
    -------
    RegistrationPlan

    Raises
    ------
    ValueError
        A window or trim that does not fit the images, naming the setting.
    """
    ny, nx = np.shape(stack[0])[-2:]
    if trim_top_px >= ny - 1:
        raise ValueError(f"align: trim_top_px = {trim_top_px} does not fit images of {ny} rows")
    if fiducial_window == "auto":
        band = find_static_band(stack)
        if band is None:
            note = (f"only {len(stack)} slices, too few to tell a static cap from the electrode "
                    f"(from {MIN_CAP_SLICES} on a cap is searched); "
                    if len(stack) < MIN_CAP_SLICES else "")
            return RegistrationPlan(None, trim_top_px, "whole image",
                                    note + STRUCTURE_REGISTRATION_NOTE)
        rows = band[1]
        return RegistrationPlan((0, rows, 0, nx), max(trim_top_px, rows), "static band",
                                f"static cap found in rows 0-{rows} (they hardly change with z): "
                                f"registering on it and dropping it after alignment")
    if fiducial_window is None:
        return RegistrationPlan(None, trim_top_px, "whole image", STRUCTURE_REGISTRATION_NOTE)
    y0, y1, x0, x1 = (int(v) for v in fiducial_window)
    if not (0 <= y0 < y1 <= ny and 0 <= x0 < x1 <= nx) or y1 - y0 < 8 or x1 - x0 < 8:
        raise ValueError(f"align: fiducial_window {list(fiducial_window)} does not fit the "
                         f"{ny}x{nx} images (need 0 <= y0 < y1 <= {ny}, 0 <= x0 < x1 <= {nx}, "
                         "at least 8 px each way)")
    return RegistrationPlan((y0, y1, x0, x1), trim_top_px, "config",
                            f"registering on the configured fiducial window {[y0, y1, x0, x1]}")


def _pair_weights(pairs: np.ndarray, min_quality: float, flagged=None) -> np.ndarray:
    """Least-squares weight of each pair: its quality squared; 0 below ``min_quality`` or
    where either slice is flagged."""
    usable = pairs[:, 4] >= min_quality
    if flagged is not None:
        usable &= ~flagged[pairs[:, 0].astype(int)] & ~flagged[pairs[:, 1].astype(int)]
    return np.where(usable, pairs[:, 4] ** 2, 0.0)


def _measure_pairs(stack, window, offsets, references, downsample, upsample_factor,
                   band_sigmas, progress):
    """Phase correlation of every slice with its ``references`` previous ones.

    Slice ``z`` is cut at ``window`` moved by ``offsets[z]``; the offset
    between two slices' cuts is added to their measured shift.

    Returns
    -------
    pairs : ndarray, (n, 5)
        slice, reference, content shift y, x (px), quality.
    structure : ndarray, (z,)
        Band-passed signal of each slice (0 for a blank one).
    """
    nz = len(stack)
    cache: deque = deque(maxlen=max(1, references))
    rows, structure = [], np.zeros(nz)
    band = None
    indices = range(nz) if progress is None else progress(range(nz))
    for z in indices:
        cut = None if window is None else _moved(window, offsets[z])
        img = registration_image(stack[z], window=cut, downsample=downsample)
        if band is None:
            band = _bandpass_filter(img.shape, *band_sigmas)
        f = _fft(img, band)
        structure[z] = float(np.sqrt(np.mean(np.abs(f) ** 2)))
        for r, fr in cache:
            shift, error, _ = phase_cross_correlation(
                fr, f, space="fourier", upsample_factor=upsample_factor, normalization=None
            )
            quality = float(np.clip(1.0 - error, 0.0, 1.0))
            moved = offsets[z] - offsets[r]
            rows.append((z, r, -shift[0] * downsample + moved[0],
                         -shift[1] * downsample + moved[1], quality))
        cache.append((z, f))
    return np.array(rows, dtype=float).reshape(-1, 5), structure


def _inset_for(window, offsets, shape_yx, step: int):
    """``window`` shrunk so that it stays inside the image at every offset; None if nothing is left."""
    y0, y1, x0, x1 = window
    ny, nx = shape_yx
    lo, hi = offsets.min(axis=0), offsets.max(axis=0)
    y0, x0 = max(y0, -lo[0]), max(x0, -lo[1])
    y1, x1 = min(y1, ny - hi[0]), min(x1, nx - hi[1])
    y1 -= (y1 - y0) % step
    x1 -= (x1 - x0) % step
    if y1 - y0 < 8 * step or x1 - x0 < 8 * step:
        return None
    return (int(y0), int(y1), int(x0), int(x1))


def _moved(window, offset):
    y0, y1, x0, x1 = window
    return (y0 + offset[0], y1 + offset[0], x0 + offset[1], x1 + offset[1])


def _solve_path(nz: int, pairs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted least-squares drift path from pairwise shift measurements (d_0 = 0)."""
    drift = np.zeros((nz, 2))
    if nz < 2:
        return drift
    n_meas = len(pairs)
    smooth = np.arange(1, nz)
    eq = n_meas + len(smooth)
    row = np.concatenate([np.arange(n_meas)] * 2 + [n_meas + np.arange(len(smooth))] * 2)
    col = np.concatenate([pairs[:, 0], pairs[:, 1], smooth, smooth - 1]).astype(int)
    w = np.sqrt(np.concatenate([weights, np.full(len(smooth), 1e-4)]))
    val = np.concatenate([np.ones(n_meas), -np.ones(n_meas), np.ones(len(smooth)),
                          -np.ones(len(smooth))])
    a = sparse.csr_matrix((val * w[row], (row, col)), shape=(eq, nz))[:, 1:]  # d_0 fixed at 0
    for axis in range(2):
        rhs = np.concatenate([pairs[:, 2 + axis], np.zeros(len(smooth))]) * w
        drift[1:, axis] = splinalg.lsqr(a, rhs, atol=1e-12, btol=1e-12)[0]
    return drift


#: Smallest tile edge (px of the registration image) :func:`estimate_drift_spread` uses.
MIN_SPREAD_TILE_PX = 32


def estimate_drift_spread(stack, tiles: int = 2, *, min_tile_px: int = MIN_SPREAD_TILE_PX,
                          progress=None, **kwargs) -> np.ndarray | None:
    """How far a registration on the structure may be off: the spread of tile registrations.

    Without a fiducial, the measured drift is the true drift plus the mean
    apparent motion of the structures in view (inclined surfaces seem to move
    from slice to slice), an error that accumulates along z. The image is cut
    into ``tiles`` x ``tiles`` windows, each registered on its own
    (:func:`estimate_drift`, same settings): each tile sees other structures,
    so their drift paths differ by their own errors, and the spread of the
    tiles' paths about their mean estimates the error of the whole-image path,
    slice by slice (the whole image averages the structures of all tiles).

    Parameters
    ----------
    stack : sequence of ndarray
        Slices (c, y, x) or (y, x), as for :func:`estimate_drift`.
    tiles : int
        Tiles per image axis (at least 2).
    min_tile_px : int
        Smallest tile edge in pixels of the registration image (after
        ``downsample``); smaller images give None.
    progress : callable, optional
        Wraps each tile's slice loop.
    **kwargs
        Passed to :func:`estimate_drift` (not ``window``).

    Returns
    -------
    ndarray of float, (z,) or None
        Standard deviation (px, length of the 2D error) of the whole-image
        drift of each slice, 0 at slice 0; None where the images are too
        small for the tiles.

    Notes
    -----
    With ``K = tiles**2`` paths ``d_k``, ``sd(z)^2 = sum_axes var_k(d_k(z)) / K``
    (sample variance, ``K - 1`` degrees of freedom). It sees only what differs
    between parts of the image: a structure inclined as a whole (every tile
    leaning the same way) looks like drift in every tile and is not in the
    estimate. Against the true error on 21 fiducial-free stacks whose
    structure does not lean as a whole (``benchmarks/registration.py --spread``;
    RESULTS.md, "Registration without a fiducial: estimated error"), 3 x 3 tiles
    gave 0.62-3.6x the true RMS error (median 1.8) with the true error within
    2 sd at 95-100 % of the slices: conservative, for a warning.

    Examples
    --------
    A static texture moved by a known drift has no structure of its own to
    follow, so the tiles agree:

    >>> rng = np.random.default_rng(1)
    >>> img = ndi.gaussian_filter(rng.random((160, 160)), 2)
    >>> stack = np.stack([ndi.shift(img, (0.3 * z, -0.2 * z), mode="grid-wrap")
    ...                   for z in range(6)])
    >>> sd = estimate_drift_spread(stack, downsample=1)
    >>> bool(sd.max() < 0.05)
    True
    """
    if tiles < 2:
        raise ValueError(f"estimate_drift_spread: tiles = {tiles}, need at least 2")
    kwargs.pop("window", None)
    ny, nx = np.shape(stack[0])[-2:]
    ds = int(kwargs.get("downsample", AlignSettings.downsample))
    if min(ny, nx) // (tiles * ds) < min_tile_px:
        return None
    paths = []
    for i in range(tiles):
        for j in range(tiles):
            window = (i * ny // tiles, (i + 1) * ny // tiles, j * nx // tiles,
                      (j + 1) * nx // tiles)
            paths.append(estimate_drift(stack, window=window, progress=progress,
                                        **kwargs).drift)
    paths = np.asarray(paths)
    return np.sqrt(paths.var(axis=0, ddof=1).sum(axis=-1) / len(paths))


def estimate_drift_consecutive(stack, *, upsample_factor: int = 20, progress=None) -> np.ndarray:
    """Naive baseline: phase correlation of consecutive raw slices, shifts summed.

    Errors accumulate as a random walk; kept as the reference the multi-slice
    path of :func:`estimate_drift` is measured against.
    """
    nz = len(stack)
    drift = np.zeros((nz, 2))
    prev = np.asarray(stack[0], dtype=np.float64).reshape(-1, *np.shape(stack[0])[-2:]).mean(0)
    indices = range(1, nz) if progress is None else progress(range(1, nz))
    for z in indices:
        cur = np.asarray(stack[z], dtype=np.float64).reshape(-1, *np.shape(stack[z])[-2:]).mean(0)
        shift, _, _ = phase_cross_correlation(prev, cur, upsample_factor=upsample_factor,
                                              normalization=None)
        drift[z] = drift[z - 1] - shift
        prev = cur
    return drift


def common_region(drift: np.ndarray, shape_yx) -> tuple[slice, slice]:
    """The (y, x) window that every slice covers after alignment.

    Parameters
    ----------
    drift : ndarray, (z, 2)
        Content displacements as returned by :func:`estimate_drift`.
    shape_yx : tuple of int
        Image height and width.

    Returns
    -------
    tuple of slice
        Crop of the slice-0 frame that holds valid data in every slice.
    """
    ny, nx = shape_yx
    # slice z holds data at y when 0 <= y + drift <= ny - 1 (likewise x)
    lo = np.ceil(np.maximum(-drift.min(axis=0), 0)).astype(int)
    hi = np.ceil(np.maximum(drift.max(axis=0), 0)).astype(int)
    y0, x0 = lo
    y1, x1 = ny - hi[0], nx - hi[1]
    if y1 - y0 < 2 or x1 - x0 < 2:
        raise ValueError(f"drift {np.abs(drift).max():.1f} px leaves no common region")
    return slice(int(y0), int(y1)), slice(int(x0), int(x1))


def shift_image(image: np.ndarray, shift, fill: float = 0.0) -> np.ndarray:
    """Bilinear subpixel translation: ``out(y, x) = image(y - shift_y, x - shift_x)``.

    Same result as ``ndi.shift(image, shift, order=1, mode="grid-constant", cval=fill)``
    (pixels half outside blend with ``fill``), several
    times faster on large images (four weighted slices instead of a generic
    interpolator).

    Examples
    --------
    >>> a = np.arange(12.0).reshape(3, 4)
    >>> b = ndi.shift(a, (0.5, -1.0), order=1, mode="grid-constant")
    >>> bool(np.allclose(shift_image(a, (0.5, -1.0)), b))
    True
    """
    img = np.asarray(image, dtype=np.float32)
    ny, nx = img.shape
    sy, sx = float(shift[0]), float(shift[1])
    iy, ix = int(np.floor(sy)), int(np.floor(sx))
    fy, fx = sy - iy, sx - ix
    def taken(dy, dx):
        # value at (y - iy - dy, x - ix - dx) for every output pixel, fill outside
        src = np.full((ny, nx), fill, dtype=np.float32)
        y0, x0 = iy + dy, ix + dx
        ys, xs = slice(max(0, y0), min(ny, ny + y0)), slice(max(0, x0), min(nx, nx + x0))
        yd, xd = slice(max(0, -y0), min(ny, ny - y0)), slice(max(0, -x0), min(nx, nx - x0))
        if ys.stop > ys.start and xs.stop > xs.start:
            src[ys, xs] = img[yd, xd]
        return src

    return (1 - fy) * (1 - fx) * taken(0, 0) + (1 - fy) * fx * taken(0, 1) \
        + fy * (1 - fx) * taken(1, 0) + fy * fx * taken(1, 1)


def aligned_slices(stack, drift: np.ndarray, window, *, fill: float = 0.0, dtype=None,
                   progress=None, z: slice | None = None):
    """Yield every slice shifted into the frame of slice 0 and cut to ``window``.

    Parameters
    ----------
    stack : sequence of ndarray
        Slices (c, y, x), read one at a time.
    drift : ndarray, (z, 2)
        From :func:`estimate_drift`.
    window : tuple of slice
        Output region in slice-0 pixels (:func:`common_region` to crop, or the
        whole image to pad with ``fill``).
    fill : float
        Value where a slice has no data (padding mode).
    dtype : numpy dtype, optional
        Output dtype (the input's by default; integers are rounded and clipped).
    progress : callable, optional
        Wraps the slice iterator.
    z : slice, optional
        The slices to yield (all by default; the region of interest's z range).

    Yields
    ------
    ndarray, (c, y', x')
    """
    indices = range(len(stack))[z or slice(None)]
    indices = indices if progress is None else progress(indices)
    for z in indices:
        channels = np.asarray(stack[z])
        channels = channels[None] if channels.ndim == 2 else channels
        out_dtype = np.dtype(dtype or channels.dtype)
        moved = np.stack([shift_image(ch, -drift[z], fill=fill) for ch in channels])
        moved = moved[:, window[0], window[1]]
        if np.issubdtype(out_dtype, np.integer):
            info = np.iinfo(out_dtype)
            moved = np.clip(np.rint(moved), info.min, info.max)
        yield moved.astype(out_dtype)


def apply_drift(stack: np.ndarray, drift: np.ndarray, *, crop: bool = True, progress=None):
    """Shift a whole in-memory (z, c, y, x) stack into the frame of slice 0.

    Returns
    -------
    aligned : ndarray, (z, c, y', x')
    window : tuple of slice
        The crop applied, in slice-0 pixel coordinates (everything if ``crop``
        is False; pixels without data are then 0).
    """
    window = common_region(drift, stack.shape[2:]) if crop else (slice(0, stack.shape[2]),
                                                                  slice(0, stack.shape[3]))
    return np.stack(list(aligned_slices(stack, drift, window, progress=progress))), window


@dataclass
class Alignment:
    """What :func:`register_stack` found: the plan, the drift and the output window.

    Attributes
    ----------
    plan : RegistrationPlan
    result : DriftResult
    window : tuple of slice
        Output region (rows, columns) in the frame of slice 0.
    fill_borders : dict or None
        Where slices carry borders of one fill value (a stack aligned
        elsewhere before, or padded): ``slices`` (how many), ``widest_px``
        and the ``window`` [y0, y1, x0, x1] of the slice-0 frame that holds
        no border in any slice (the output window was cut to it in crop
        mode); None when no slice has one.
    drift_sd : ndarray of float, (z,), or None
        Estimated error (px) of each slice's drift when the whole image was
        registered (:func:`estimate_drift_spread`); None with a fiducial
        window, with ``spread_tiles`` off or for images too small to tile.
    """

    plan: RegistrationPlan
    result: DriftResult
    window: tuple
    fill_borders: dict | None = None
    drift_sd: np.ndarray | None = None


def fill_border(image: np.ndarray, share: float = 0.9) -> tuple[int, int, int, int]:
    """Rows (top, bottom) and columns (left, right) of a border filled with one value.

    A stack aligned by other software before (Fiji's registration plugins,
    PyStack3D) or padded carries, per slice, strips of a single fill value at
    its edges, which would be segmented as pore. A row (column) at an edge
    belongs to the border while at least ``share`` of its pixels hold the
    value of the edge's corner pixels, in every channel; real image rows
    practically never do (a saturated charging row of the shared real SEM
    image reaches 0.51 of one value).

    Parameters
    ----------
    image : ndarray, (y, x) or (c, y, x)
    share : float

    Returns
    -------
    tuple of int
        (top, bottom, left, right) border widths; zeros for an image without one.

    Examples
    --------
    >>> img = np.arange(48.0).reshape(6, 8)
    >>> img[:, :2] = 0.0; img[-1] = 0.0
    >>> fill_border(img)
    (0, 1, 2, 0)
    """
    img = np.asarray(image)
    img = img[None] if img.ndim == 2 else img
    ny, nx = img.shape[-2:]

    def run(lines, value):
        """Leading lines (each (c, n)) whose share of ``value`` reaches ``share`` in every channel."""
        n = 0
        for line in lines:
            if not ((line == value[:, None]).mean(axis=1) >= share).all():
                break
            n += 1
        return n

    widths = []
    for lines, corner in ((img.transpose(1, 0, 2), img[:, 0, 0]),
                          (img.transpose(1, 0, 2)[::-1], img[:, -1, -1]),
                          (img.transpose(2, 0, 1), img[:, 0, 0]),
                          (img.transpose(2, 0, 1)[::-1], img[:, -1, -1])):
        widths.append(run(lines, corner))
    top, bottom, left, right = widths
    if top + bottom >= ny or left + right >= nx:  # a blank slice: its own check flags it
        return 0, 0, 0, 0
    return top, bottom, left, right


class _BorderWatch:
    """A lazy stack whose slices' fill borders are measured as the registration reads them."""

    def __init__(self, stack):
        self.stack, self.borders = stack, {}

    def __len__(self):
        return len(self.stack)

    def __getitem__(self, z):
        image = self.stack[z]
        z = int(z) % len(self.stack)
        if z not in self.borders:
            self.borders[z] = fill_border(image)
        return image

    def __getattr__(self, name):
        return getattr(self.stack, name)


def _without_fill_borders(watch: _BorderWatch, drift: np.ndarray, shape_yx):
    """The slice-0 frame window free of every slice's fill border, and what was found."""
    ny, nx = shape_yx
    for z in range(len(watch)):  # slices the registration did not read (none, as written)
        if z not in watch.borders:
            watch[z]
    b = np.array([watch.borders[z] for z in range(len(watch))], float)  # top, bottom, left, right
    if not b.any():
        return None
    # slice z's raw pixel y + drift shows at frame pixel y: its content rows [t, ny - b) lie at
    # [t - dy, ny - b - dy) of the frame
    y0 = int(np.ceil(np.max(b[:, 0] - drift[:, 0])))
    y1 = int(np.floor(np.min(ny - b[:, 1] - drift[:, 0])))
    x0 = int(np.ceil(np.max(b[:, 2] - drift[:, 1])))
    x1 = int(np.floor(np.min(nx - b[:, 3] - drift[:, 1])))
    return {"slices": int((b.sum(axis=1) > 0).sum()), "widest_px": int(b.max()),
            "window": [max(y0, 0), min(y1, ny), max(x0, 0), min(x1, nx)]}


#: Estimated drift error (px RMS over the slices) above which the align log warns: the
#: accuracy issue 19 asks of a registration without a fiducial.
DRIFT_SD_WARN_PX = 0.5


def drift_sd_summary(drift_sd, tiles: int) -> dict | None:
    """The estimated drift error for the aligned JSON: ``rms_px``, ``max_px``, ``max_slice``,
    ``tiles``; None when it was not estimated.

    Examples
    --------
    >>> drift_sd_summary(np.array([0.0, 0.3, 0.4]), 2)
    {'rms_px': 0.289, 'max_px': 0.4, 'max_slice': 2, 'tiles': 2}
    """
    if drift_sd is None:
        return None
    sd = np.asarray(drift_sd, float)
    return {"rms_px": round(float(np.sqrt(np.mean(sd**2))), 3),
            "max_px": round(float(sd.max()), 3), "max_slice": int(sd.argmax()),
            "tiles": int(tiles)}


def drift_sd_message(summary: dict | None) -> tuple[bool, str] | None:
    """(warn, sentence) for the align log from :func:`drift_sd_summary`; None if not estimated.

    Examples
    --------
    >>> drift_sd_message({"rms_px": 1.2, "max_px": 2.0, "max_slice": 63, "tiles": 2})[0]
    True
    """
    if summary is None:
        return None
    warn = summary["rms_px"] > DRIFT_SD_WARN_PX
    t = summary["tiles"]
    return warn, (
        f"estimated drift error of the registration on the structure: {summary['rms_px']:.2f} px "
        f"RMS, {summary['max_px']:.2f} px at slice {summary['max_slice']} (spread of {t}x{t} "
        f"tiles registered on their own; column drift_sd_px of the shifts table)"
        + (f"; above {DRIFT_SD_WARN_PX} px the drift correction may be off by about that much "
           "(this estimate ran 0.6-3.6x the true error on 21 benchmark stacks): give a fiducial "
           "window if the images have a region that does not change with z" if warn else "")
        + ". A lean of the structure as a whole is not in this estimate")


def fill_border_warning(fill_borders: dict | None, frame: str, n_slices: int) -> str | None:
    """The align log's warning about fill borders (:attr:`Alignment.fill_borders`), or None."""
    if not fill_borders:
        return None
    what = ("the output is cut to it" if frame == "crop"
            else "kept (frame: pad), they will be segmented as pore")
    return (f"{fill_borders['slices']} of {n_slices} slices carry borders of one fill value (up "
            f"to {fill_borders['widest_px']} px; a stack aligned or padded before?): {what}, "
            f"window [y0, y1, x0, x1] {fill_borders['window']} free of them")


def roi_window(window, roi_rows: slice, roi_cols: slice):
    """The output window cut to a region of interest, and what the region lost to it.

    Parameters
    ----------
    window : tuple of slice
        Rows and columns every slice covers (:attr:`Alignment.window`).
    roi_rows, roi_cols : slice
        The sheet's region of interest (:func:`fibrecon.samples.fit_roi`).

    Returns
    -------
    window : tuple of slice
    lost : list of str
        Where the region reaches beyond the covered window, each with both
        ranges (for a warning); empty when it fits.

    Raises
    ------
    ValueError
        The region lies wholly outside the covered window.

    Examples
    --------
    >>> roi_window((slice(3, 60), slice(0, 64)), slice(0, 40), slice(10, 20))
    ((slice(3, 40, None), slice(10, 20, None)), ['rows 0:40 -> 3:40'])
    """
    cut = tuple(slice(max(a.start, r.start), min(a.stop, r.stop))
                for a, r in zip(window, (roi_rows, roi_cols)))
    if any(c.stop <= c.start for c in cut):
        raise ValueError(f"the region of interest (rows {roi_rows.start}:{roi_rows.stop}, "
                         f"columns {roi_cols.start}:{roi_cols.stop}) lies outside rows "
                         f"{window[0].start}:{window[0].stop}, columns {window[1].start}:"
                         f"{window[1].stop} that every slice covers after the drift correction")
    lost = [f"{axis} {r.start}:{r.stop} -> {c.start}:{c.stop}"
            for axis, r, c in zip(("rows", "columns"), (roi_rows, roi_cols), cut)
            if (r.start, r.stop) != (c.start, c.stop)]
    return cut, lost


def register_stack(stack, settings: AlignSettings | None = None, *, progress=None) -> Alignment:
    """The align stage: plan the registration, measure the drift, choose the output window.

    Parameters
    ----------
    stack : sequence of ndarray
        Slices (c, y, x), read lazily (:class:`fibrecon.files.RawStack`).
    settings : AlignSettings, optional
        Defaults as in the workflow's config schema.
    progress : callable, optional
        Wraps the slice loops.

    Returns
    -------
    Alignment
        Shift the slices with :func:`aligned_slices` (``alignment.result.drift``,
        ``alignment.window``).

    Raises
    ------
    ValueError
        A window or trim that does not fit the images; a stack without structure.
    """
    s = settings or AlignSettings()
    watch = _BorderWatch(stack)
    plan = plan_registration(watch, s.fiducial_window, s.trim_top_px)
    kwargs = dict(upsample_factor=s.upsample_factor, references=s.references,
                  downsample=s.downsample, band_sigmas=tuple(s.bandpass_px),
                  min_quality=s.min_quality, progress=progress)
    result = estimate_drift(watch, window=plan.window, **kwargs)
    drift_sd = None
    if plan.window is None and s.spread_tiles >= 2:  # on the structure: how far off may it be?
        drift_sd = estimate_drift_spread(stack, s.spread_tiles, **kwargs)
    ny, nx = np.shape(stack[0])[-2:]
    rows, cols = (common_region(result.drift, (ny, nx)) if s.frame == "crop"
                  else (slice(0, ny), slice(0, nx)))
    rows = slice(max(rows.start, plan.trim_top), rows.stop)
    borders = _without_fill_borders(watch, result.drift, (ny, nx))
    if borders is not None and s.frame == "crop":
        y0, y1, x0, x1 = borders["window"]
        rows = slice(max(rows.start, y0), min(rows.stop, y1))
        cols = slice(max(cols.start, x0), min(cols.stop, x1))
        if rows.stop - rows.start < 2 or cols.stop - cols.start < 2:
            raise ValueError(f"the fill borders of {borders['slices']} slices (up to "
                             f"{borders['widest_px']} px) leave no region that every slice "
                             "covers; set align: frame: pad to keep them")
    return Alignment(plan, result, (rows, cols), borders, drift_sd)
