"""Slice-to-slice drift correction of FIB-SEM stacks.

During milling the stage and beam drift, so the image content of slice ``z``
is displaced against slice 0 by a (y, x) translation that changes slowly,
with occasional jumps. :func:`estimate_drift` measures it by phase
correlation of consecutive slices (subpixel, Guizar-Sicairos et al. 2008)
and :func:`apply_drift` brings every slice into the frame of slice 0.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.registration import phase_cross_correlation

__all__ = ["estimate_drift", "apply_drift", "common_region"]


def _reference_image(slice_channels: np.ndarray) -> np.ndarray:
    """Mean over kV channels, as float32, for registration."""
    return np.asarray(slice_channels, dtype=np.float32).mean(axis=0)


def estimate_drift(stack: np.ndarray, *, upsample_factor: int = 10, progress=None) -> np.ndarray:
    """Measure the content displacement of every slice relative to slice 0.

    Parameters
    ----------
    stack : ndarray, (z, c, y, x)
        Raw stack, any numeric dtype; channels are averaged for registration.
    upsample_factor : int
        Subpixel precision is ``1 / upsample_factor`` pixel.
    progress : callable, optional
        Wraps the slice iterator (e.g. ``tqdm.tqdm``) to show progress.

    Returns
    -------
    drift : ndarray of float, (z, 2)
        (y, x) displacement in pixels of each slice's content relative to
        slice 0, i.e. ``stack[z] ~ ndi.shift(stack[0] frame, drift[z])``;
        ``drift[0]`` is 0.

    Notes
    -----
    Consecutive-slice registration: each pair's shift is measured with
    :func:`skimage.registration.phase_cross_correlation` and the shifts are
    summed, so errors accumulate as a random walk (the alignment issue
    replaces this with a path solved against several previous slices).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> a = ndi.gaussian_filter(rng.random((64, 64)), 2)
    >>> b = ndi.shift(a, (2.0, -3.0), mode="wrap")
    >>> d = estimate_drift(np.stack([a, b])[:, None])
    >>> np.round(d[1], 1)
    array([ 2., -3.])
    """
    if stack.ndim != 4:
        raise ValueError(f"expected a (z, c, y, x) stack, got shape {stack.shape}")
    nz = stack.shape[0]
    drift = np.zeros((nz, 2))
    indices = range(1, nz)
    if progress is not None:
        indices = progress(indices)
    prev = _reference_image(stack[0])
    for z in indices:
        cur = _reference_image(stack[z])
        # shift that registers `cur` onto `prev` is minus the content displacement
        shift, _, _ = phase_cross_correlation(
            prev, cur, upsample_factor=upsample_factor, normalization=None
        )
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


def apply_drift(stack: np.ndarray, drift: np.ndarray, *, crop: bool = True, progress=None):
    """Shift every slice back into the frame of slice 0.

    Parameters
    ----------
    stack : ndarray, (z, c, y, x)
        Stack to align; the output keeps its dtype.
    drift : ndarray, (z, 2)
        Content displacements from :func:`estimate_drift`.
    crop : bool
        Crop to the region covered by all slices (default); otherwise pixels
        without data are 0.
    progress : callable, optional
        Wraps the slice iterator.

    Returns
    -------
    aligned : ndarray, (z, c, y', x')
    window : tuple of slice
        The crop applied, in slice-0 pixel coordinates.
    """
    out = np.empty(stack.shape, dtype=stack.dtype)
    indices = range(stack.shape[0])
    if progress is not None:
        indices = progress(indices)
    for z in indices:
        for c in range(stack.shape[1]):
            moved = ndi.shift(stack[z, c].astype(np.float32), -drift[z], order=1, cval=0.0)
            if np.issubdtype(stack.dtype, np.integer):
                info = np.iinfo(stack.dtype)
                moved = np.clip(np.rint(moved), info.min, info.max)
            out[z, c] = moved
    window = common_region(drift, stack.shape[2:]) if crop else (slice(None), slice(None))
    return out[:, :, window[0], window[1]], window
