"""Preprocessing of aligned FIB-SEM stacks: denoising and brightness normalisation.

Each slice and kV channel is denoised (Gaussian filter) and divided by a
smooth polynomial surface fitted to its brightest phase (removing the
macroscopic brightness gradient that detector geometry and charging cause,
and the slice-to-slice gain with it); each channel is then stretched so that
its robust low and high percentiles over the stack map to 0 and 1. The
alignment/preprocessing issue deepens each step.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

__all__ = ["fit_background", "fit_bright_phase_background", "normalize_percentiles",
           "preprocess_stack"]


def _design_matrix(ny: int, nx: int, order: int, step: int):
    yy, xx = np.mgrid[0:ny:step, 0:nx:step].astype(np.float64)
    yy, xx = yy / ny - 0.5, xx / nx - 0.5
    terms = [yy**i * xx**j for i in range(order + 1) for j in range(order + 1 - i)]
    return np.stack([t.ravel() for t in terms], axis=1)


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
    ny, nx = image.shape
    a = _design_matrix(ny, nx, order, step)
    b = image[::step, ::step].astype(np.float64).ravel()
    if mask is not None:
        keep = mask[::step, ::step].ravel()
        if keep.sum() > 4 * a.shape[1]:  # enough pixels to fit
            a, b = a[keep], b[keep]
    coef, *_ = np.linalg.lstsq(a, b, rcond=None)
    full = _design_matrix(ny, nx, order, 1)
    return (full @ coef).reshape(ny, nx).astype(np.float32)


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
        level (a polynomial extrapolated into a region without particles
        must not approach zero); ``image / surface`` is about 1 on the
        bright phase.
    """
    bright = image > threshold_otsu(image)
    level = float(np.median(image[bright]))
    if level <= 0:
        return np.ones(image.shape, dtype=np.float32)
    surface = np.clip(fit_background(image, order, mask=bright), 0.25 * level, 4 * level)
    for _ in range(iterations):
        flat = image / surface
        bright = flat > threshold_otsu(flat)
        surface = np.clip(fit_background(image, order, mask=bright), 0.25 * level, 4 * level)
    return surface


def normalize_percentiles(image: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Map the ``low`` and ``high`` percentiles of an image to 0 and 1 (float32, not clipped)."""
    lo, hi = np.percentile(image, [low, high])
    if hi <= lo:
        return np.zeros(image.shape, dtype=np.float32)
    return ((image - lo) / (hi - lo)).astype(np.float32)


def preprocess_stack(
    stack: np.ndarray,
    *,
    denoise_sigma: float = 2.0,
    background_order: int = 2,
    percentiles=(1.0, 99.0),
    progress=None,
) -> np.ndarray:
    """Denoise and normalise every slice and channel of an aligned stack.

    Parameters
    ----------
    stack : ndarray, (z, c, y, x)
        Aligned stack, any numeric dtype.
    denoise_sigma : float
        Gaussian filter sigma in pixels; 0 switches denoising off.
    background_order : int or None
        Degree of the polynomial brightness surface divided out of each
        slice; ``None`` switches it off.
    percentiles : tuple of float
        Percentiles (over the whole stack, per channel) mapped to 0 and 1.
    progress : callable, optional
        Wraps the slice iterator (e.g. ``tqdm.tqdm``).

    Returns
    -------
    ndarray of float32, (z, c, y, x)
    """
    if stack.ndim != 4:
        raise ValueError(f"expected a (z, c, y, x) stack, got shape {stack.shape}")
    out = np.empty(stack.shape, dtype=np.float32)
    indices = range(stack.shape[0])
    if progress is not None:
        indices = progress(indices)
    for z in indices:
        for c in range(stack.shape[1]):
            img = stack[z, c].astype(np.float32)
            if denoise_sigma > 0:
                img = ndi.gaussian_filter(img, denoise_sigma)
            if background_order is not None:
                img = img / fit_bright_phase_background(img, background_order)
            out[z, c] = img
    for c in range(stack.shape[1]):  # one grey-level mapping per channel for the stack
        out[:, c] = normalize_percentiles(out[:, c], *percentiles)
    return out
