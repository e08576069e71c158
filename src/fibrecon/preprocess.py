"""Preprocessing of aligned FIB-SEM stacks, slice by slice, every step switchable.

Per slice and kV channel, in this order:

1. **Denoising**: Gaussian (default), median, or non-local means
   (Buades et al. 2005; slow, best edges).
2. **Curtaining removal**: wavelet-FFT destriping (Münch et al., Opt.
   Express 17, 8567, 2009): the vertical detail coefficients of a 2D
   wavelet decomposition are damped near zero frequency along the
   stripes (y, the milling direction).
3. **Macroscopic brightness removal**: a polynomial surface fitted to the
   brightest phase (the active material) only, by iterated Otsu
   thresholding of the flattened image, so that it follows the
   illumination and not where particles lie; its coefficients are
   smoothed across slices, and each slice is divided by it.
4. **Slice-to-slice grey-level normalisation and contrast**: robust low and
   high percentiles of every slice (smoothed across slices) are mapped to 0
   and 1; optionally CLAHE.

Steps 3 and 4 need per-slice estimates from the whole stack:
:func:`estimate_corrections` measures them in a first streaming pass on a
downsampled copy, :func:`preprocessed_slices` applies everything in a second
pass. Memory holds a few slices, never the stack.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pywt
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

__all__ = [
    "PreprocessParams",
    "denoise",
    "destripe",
    "fit_background",
    "fit_bright_phase_background",
    "surface_coefficients",
    "surface_from_coefficients",
    "normalize_percentiles",
    "estimate_corrections",
    "preprocessed_slices",
    "preprocess_stack",
]


@dataclass
class PreprocessParams:
    """Settings of every preprocessing step (each switchable).

    Attributes
    ----------
    denoise : str
        ``"gaussian"``, ``"median"``, ``"nlm"`` or ``"none"``.
    denoise_sigma : float
        Gaussian sigma / median radius / NLM noise scale, pixels.
    destripe : bool
        Wavelet-FFT curtaining removal.
    destripe_levels : int
        Wavelet decomposition levels.
    destripe_sigma : float
        Width (in Fourier samples along y) of the damped band around zero.
    background_order : int or None
        Polynomial degree of the brightness surface; None = off.
    background_smoothing : float
        Gaussian sigma (slices) applied along z to the surface shape (the
        coefficients relative to the constant term; the level stays per slice).
    percentiles : tuple of float
        Low and high percentiles mapped to 0 and 1 per slice.
    percentile_smoothing : float
        Gaussian sigma (slices) applied to the per-slice percentiles.
    clahe : bool
        Contrast-limited adaptive histogram equalisation after the stretch.
    """

    denoise: str = "gaussian"
    denoise_sigma: float = 2.0
    destripe: bool = True
    destripe_levels: int = 4
    destripe_sigma: float = 2.0
    background_order: int | None = 2
    background_smoothing: float = 2.0
    percentiles: tuple = (1.0, 99.0)
    percentile_smoothing: float = 2.0
    clahe: bool = False

    @classmethod
    def from_config(cls, settings: dict) -> "PreprocessParams":
        """From the ``preprocess:`` section of the config (``percentile_low``/``_high`` keys)."""
        cfg = dict(settings)
        cfg["percentiles"] = (cfg.pop("percentile_low", 1.0), cfg.pop("percentile_high", 99.0))
        return cls(**cfg)


def denoise(image: np.ndarray, method: str = "gaussian", sigma: float = 2.0) -> np.ndarray:
    """Denoise one image (float32 out).

    Parameters
    ----------
    image : ndarray, (y, x)
    method : str
        ``"gaussian"``, ``"median"`` (radius ``round(sigma)``), ``"nlm"``
        (non-local means with noise scale ``sigma`` in grey levels estimated
        from the image if ``sigma`` <= 0) or ``"none"``.
    sigma : float
    """
    img = np.asarray(image, dtype=np.float32)
    if method == "none" or sigma <= 0 and method != "nlm":
        return img
    if method == "gaussian":
        return ndi.gaussian_filter(img, sigma, truncate=3.0)
    if method == "median":
        return ndi.median_filter(img, size=2 * max(1, int(round(sigma))) + 1)
    if method == "nlm":
        from skimage.restoration import denoise_nl_means, estimate_sigma

        noise = float(estimate_sigma(img))
        return denoise_nl_means(img, h=0.8 * noise, sigma=noise, patch_size=5,
                                patch_distance=6, fast_mode=True).astype(np.float32)
    raise ValueError(f"unknown denoising method {method!r} (gaussian, median, nlm, none)")


def destripe(image: np.ndarray, levels: int = 4, sigma: float = 2.0,
             wavelet: str = "db4") -> np.ndarray:
    """Remove vertical stripes (constant along y) by wavelet-FFT filtering.

    Parameters
    ----------
    image : ndarray, (y, x)
    levels : int
        Decomposition levels (stripes wider than ``2**levels`` pixels survive).
    sigma : float
        Gaussian width of the damping around zero frequency along y.
    wavelet : str
        PyWavelets wavelet name.

    Returns
    -------
    ndarray of float32, same shape

    References
    ----------
    Münch, Trtik, Marone & Stampanoni (2009), "Stripe and ring artifact
    removal with combined wavelet-Fourier filtering", Opt. Express 17, 8567.

    Examples
    --------
    >>> img = np.tile(np.sin(np.arange(128) / 2.0), (128, 1))  # pure vertical stripes
    >>> float(np.abs(destripe(img)[8:-8, 8:-8]).max()) < 0.1 * float(np.abs(img).max())
    True
    """
    img = np.asarray(image, dtype=np.float32)
    levels = max(1, min(levels, pywt.dwt_max_level(min(img.shape), wavelet)))
    approx, details = img, []
    for _ in range(levels):
        approx, detail = _dwt2(approx, wavelet)
        details.append(detail)
    for c_h, c_v, c_d in reversed(details):
        spectrum = np.fft.rfft(c_v, axis=0)
        k = np.arange(spectrum.shape[0], dtype=np.float32)[:, None]
        spectrum *= 1.0 - np.exp(-(k**2) / (2.0 * sigma**2))
        c_v = np.fft.irfft(spectrum, n=c_v.shape[0], axis=0).astype(np.float32)
        approx = _idwt2(approx[: c_h.shape[0], : c_h.shape[1]], (c_h, c_v, c_d), wavelet)
    return approx[: img.shape[0], : img.shape[1]].astype(np.float32)


def _dwt2(image, wavelet):
    """One level of ``pywt.dwt2`` (symmetric mode), each 1D pass along contiguous memory.

    PyWavelets' transform along axis 0 walks strided columns and takes 5x as
    long as along axis 1; transposing in between gives the same coefficients
    (``tests/unit/test_preprocess_segment_volume.py``) in a third of the time.
    """
    low_x, high_x = pywt.dwt(image, wavelet, axis=1)
    aa, da = pywt.dwt(np.ascontiguousarray(low_x.T), wavelet, axis=1)
    ad, dd = pywt.dwt(np.ascontiguousarray(high_x.T), wavelet, axis=1)
    return aa.T, (da.T, ad.T, dd.T)


def _idwt2(approx, details, wavelet):
    """Inverse of :func:`_dwt2` (``pywt.idwt2``), contiguous passes."""
    c_h, c_v, c_d = details
    low_x = pywt.idwt(np.ascontiguousarray(approx.T), np.ascontiguousarray(c_h.T), wavelet,
                      axis=1)
    high_x = pywt.idwt(np.ascontiguousarray(c_v.T), np.ascontiguousarray(c_d.T), wavelet,
                       axis=1)
    return pywt.idwt(np.ascontiguousarray(low_x.T), np.ascontiguousarray(high_x.T), wavelet,
                     axis=1)


def _design_matrix(ny: int, nx: int, order: int, step: int = 1):
    yy, xx = np.mgrid[0:ny:step, 0:nx:step].astype(np.float64)
    yy, xx = (yy + 0.5) / ny - 0.5, (xx + 0.5) / nx - 0.5
    terms = [yy**i * xx**j for i in range(order + 1) for j in range(order + 1 - i)]
    return np.stack([t.ravel() for t in terms], axis=1)


def surface_coefficients(image: np.ndarray, order: int = 2, step: int = 4, mask=None):
    """Least-squares polynomial coefficients of a smooth surface (coordinates scaled to ±0.5).

    Parameters
    ----------
    image : ndarray, (y, x)
    order : int
        Total degree (0 constant, 1 plane, 2 quadric).
    step : int
        Fit on every ``step``-th pixel.
    mask : ndarray of bool, optional
        Fit only these pixels (ignored if too few).

    Returns
    -------
    ndarray of float
        Coefficients, resolution-independent (see :func:`surface_from_coefficients`).
    """
    ny, nx = image.shape
    a = _design_matrix(ny, nx, order, step)
    b = image[::step, ::step].astype(np.float64).ravel()
    if mask is not None:
        keep = mask[::step, ::step].ravel()
        if keep.sum() > 4 * a.shape[1]:
            a, b = a[keep], b[keep]
    coef, *_ = np.linalg.lstsq(a, b, rcond=None)
    return coef


def surface_from_coefficients(coef, shape, order: int) -> np.ndarray:
    """Evaluate a surface of :func:`surface_coefficients` on an image of ``shape``.

    Separable: ``sum_ij c_ij y^i x^j = Y C X^T``, so a 1024 x 1024 surface
    costs two small matrix products, not a 1M-row design matrix.
    """
    ny, nx = shape
    y = (np.arange(ny) + 0.5) / ny - 0.5
    x = (np.arange(nx) + 0.5) / nx - 0.5
    c = np.zeros((order + 1, order + 1))
    k = 0
    for i in range(order + 1):
        for j in range(order + 1 - i):
            c[i, j] = coef[k]
            k += 1
    ypow = y[:, None] ** np.arange(order + 1)[None, :]
    xpow = x[:, None] ** np.arange(order + 1)[None, :]
    return (ypow @ c @ xpow.T).astype(np.float32)


def fit_background(image: np.ndarray, order: int = 2, step: int = 4, mask=None) -> np.ndarray:
    """Fit a smooth polynomial surface to an image by least squares.

    Parameters
    ----------
    image : ndarray, (y, x)
        One slice, any numeric dtype.
    order : int
        Total degree of the polynomial (0 = constant, 1 = plane, 2 = quadric).
    step : int
        Fit on every ``step``-th pixel in y and x (the surface is smooth).
    mask : ndarray of bool, (y, x), optional
        Fit only these pixels (e.g. one phase); all pixels by default.

    Returns
    -------
    ndarray of float32, (y, x)
        The fitted surface.

    Examples
    --------
    >>> yy, xx = np.mgrid[0:32, 0:32]
    >>> plane = 1.0 + 0.01 * yy + 0.02 * xx
    >>> bool(np.allclose(fit_background(plane, order=1, step=1), plane, atol=1e-5))
    True
    """
    coef = surface_coefficients(image, order, step, mask)
    return surface_from_coefficients(coef, image.shape, order)


def _otsu(image: np.ndarray) -> float:
    """scikit-image's Otsu threshold on a 256-bin histogram counted with ``bincount``.

    ``threshold_otsu(image)`` builds the same histogram with ``np.histogram``
    at three times the cost; bins differ only for values on a bin edge.
    """
    lo, hi = float(image.min()), float(image.max())
    if not hi > lo:
        return lo
    index = ((image - lo) * (256.0 / (hi - lo))).astype(np.intp)
    np.minimum(index, 255, out=index)
    counts = np.bincount(index.ravel(), minlength=256)
    return float(threshold_otsu(hist=(counts, lo + (np.arange(256) + 0.5) * (hi - lo) / 256)))


def _block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor`` x ``factor`` blocks (remainder rows and columns dropped).

    Rows summed first (contiguous), then columns: three times faster than
    ``skimage.measure.block_reduce(image, factor, np.mean)``, same values.
    """
    ny, nx = image.shape[0] // factor * factor, image.shape[1] // factor * factor
    rows = image[:ny, :nx].reshape(ny // factor, factor, nx).sum(axis=1)
    return rows.reshape(ny // factor, nx // factor, factor).sum(axis=2) / (factor * factor)


def _bright_phase_coefficients(image: np.ndarray, order: int, iterations: int = 3):
    """Surface coefficients of the brightest phase and its median level."""
    bright = image > _otsu(image)
    level = float(np.median(image[bright]))
    if level <= 0:
        return None, level
    coef = surface_coefficients(image, order, mask=bright)
    for _ in range(iterations):
        surface = np.clip(surface_from_coefficients(coef, image.shape, order),
                          0.25 * level, 4 * level)
        flat = image / surface
        bright = flat > _otsu(flat)
        coef = surface_coefficients(image, order, mask=bright)
    return coef, level


def fit_bright_phase_background(image: np.ndarray, order: int = 2, iterations: int = 3):
    """Fit the brightness surface of the brightest phase (the active material).

    A surface fitted to all pixels follows where particles happen to lie;
    fitting only the pixels above an Otsu threshold of the flattened image,
    and repeating with the refined surface, follows the illumination instead.

    Parameters
    ----------
    image : ndarray, (y, x)
    order : int
        Polynomial degree.
    iterations : int
        Rounds of threshold-and-refit.

    Returns
    -------
    ndarray of float32, (y, x)
        The surface, kept within a factor 4 of the bright phase's median
        level; ``image / surface`` is about 1 on the bright phase.
    """
    coef, level = _bright_phase_coefficients(image, order, iterations)
    if coef is None:
        return np.ones(image.shape, dtype=np.float32)
    return np.clip(surface_from_coefficients(coef, image.shape, order), 0.25 * level, 4 * level)


def normalize_percentiles(image: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Map the ``low`` and ``high`` percentiles of an image to 0 and 1 (float32, not clipped)."""
    lo, hi = np.percentile(image, [low, high])
    if hi <= lo:
        return np.zeros(image.shape, dtype=np.float32)
    return ((image - lo) / (hi - lo)).astype(np.float32)


def _filtered(image, p: PreprocessParams) -> np.ndarray:
    img = denoise(image, p.denoise, p.denoise_sigma)
    if p.destripe:
        img = destripe(img, p.destripe_levels, p.destripe_sigma)
    return img


def _smooth_along_z(values: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0 or len(values) < 2:
        return values
    return ndi.gaussian_filter1d(values, sigma, axis=0, mode="nearest")


def estimate_corrections(stack, params: PreprocessParams, *, downsample: int | None = None,
                         progress=None) -> dict:
    """First pass: brightness-surface coefficients and grey-level percentiles of every slice.

    Parameters
    ----------
    stack : sequence of ndarray
        Slices (c, y, x), read one at a time.
    params : PreprocessParams
    downsample : int, optional
        The estimates are smooth in space; they are made on a block-averaged
        copy (filters scaled to match): by default 1 below 512 pixels, up to 4
        for 1024 and more.
    progress : callable, optional
        Wraps the slice iterator.

    Returns
    -------
    dict
        ``coefficients`` (z, c, terms) smoothed along z (None if background
        removal is off), ``levels`` (z, c), ``percentiles`` (z, c, 2)
        smoothed along z.
    """
    p = params
    if downsample is None:
        downsample = int(np.clip(min(np.shape(stack[0])[-2:]) // 256, 1, 4))
    small = PreprocessParams(**{**p.__dict__, "denoise_sigma": p.denoise_sigma / downsample,
                                "destripe_levels": max(1, p.destripe_levels - 2)})
    nz = len(stack)

    def one(channel):
        if downsample > 1:
            channel = _block_mean(channel, downsample)
        img = _filtered(channel, small)
        coef = level = None
        if p.background_order is not None:
            coef, level = _bright_phase_coefficients(img, p.background_order)
            if coef is None:  # no bright phase: leave the slice as it is
                coef = np.zeros(len(_design_matrix(1, 1, p.background_order)[0]))
                coef[0], level = 1.0, 1.0
            surface = np.clip(surface_from_coefficients(coef, img.shape, p.background_order),
                              0.25 * level, 4 * level)
            img = img / surface
        return coef, level, np.percentile(img, p.percentiles)

    coefs, levels, pcts = [], [], []
    indices = range(nz) if progress is None else progress(range(nz))
    with ThreadPoolExecutor(max_workers=2) as pool:  # channels in parallel
        for z in indices:
            per_channel = list(pool.map(one, np.asarray(stack[z], dtype=np.float32)))
            coefs.append([c for c, _, _ in per_channel])
            levels.append([lv for _, lv, _ in per_channel])
            pcts.append([pc for _, _, pc in per_channel])
    out = {"percentiles": _smooth_along_z(np.asarray(pcts, float), p.percentile_smoothing)}
    if p.background_order is not None:
        # smooth the shape of the surface along z, not its level: the level carries
        # the slice-to-slice gain, which must stay per slice
        coefs = np.asarray(coefs, float)
        level = coefs[..., :1]
        level = np.where(np.abs(level) > 1e-12, level, 1.0)
        shape = _smooth_along_z(coefs / level, p.background_smoothing)
        out["coefficients"] = shape * level
        out["levels"] = np.asarray(levels, float)
    else:
        out["coefficients"] = out["levels"] = None
    return out


def preprocessed_slices(stack, params: PreprocessParams, corrections: dict, *, progress=None):
    """Second pass: yield every slice preprocessed, float32 (c, y, x), about 0..1.

    Parameters
    ----------
    stack : sequence of ndarray
        Slices (c, y, x), read one at a time.
    params : PreprocessParams
    corrections : dict
        From :func:`estimate_corrections` on the same stack.
    progress : callable, optional
        Wraps the slice iterator.
    """
    p = params

    def one(z, c, channel):
        img = _filtered(channel, p)
        if p.background_order is not None:
            level = corrections["levels"][z, c]
            surface = surface_from_coefficients(corrections["coefficients"][z, c], img.shape,
                                                p.background_order)
            img = img / np.clip(surface, 0.25 * level, 4 * level)
        lo, hi = corrections["percentiles"][z, c]
        img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
        if p.clahe:
            from skimage.exposure import equalize_adapthist

            img = equalize_adapthist(np.clip(img, 0, 1)).astype(np.float32)
        return img.astype(np.float32)

    indices = range(len(stack)) if progress is None else progress(range(len(stack)))
    with ThreadPoolExecutor(max_workers=2) as pool:  # channels in parallel (filters drop the GIL)
        for z in indices:
            channels = np.asarray(stack[z], dtype=np.float32)
            yield np.stack(list(pool.map(lambda cc: one(z, *cc), enumerate(channels))))


def preprocess_stack(stack: np.ndarray, params: PreprocessParams | None = None, *,
                     progress=None, **overrides) -> np.ndarray:
    """Preprocess a whole in-memory (z, c, y, x) stack (both passes).

    Parameters
    ----------
    stack : ndarray, (z, c, y, x)
    params : PreprocessParams, optional
        Defaults; keyword ``overrides`` replace single fields.

    Returns
    -------
    ndarray of float32, (z, c, y, x)
    """
    if stack.ndim != 4:
        raise ValueError(f"expected a (z, c, y, x) stack, got shape {stack.shape}")
    p = PreprocessParams(**{**(params or PreprocessParams()).__dict__, **overrides})
    corrections = estimate_corrections(stack, p)
    return np.stack(list(preprocessed_slices(stack, p, corrections, progress=progress)))
