"""Classical phase segmentation: multi-Otsu thresholds on the preprocessed stack.

The baseline that the neural network of the segmentation issue must beat.
Grey levels of silicone-filled pores are lowest, CBD intermediate, NCA
highest, so three Otsu classes map in order of brightness to pore, CBD, AM.
"""

from __future__ import annotations

import numpy as np
from skimage.filters import threshold_multiotsu

from fibrecon import AM, CBD, PORE

__all__ = ["multiotsu_thresholds", "segment_multiotsu"]


def _combined(stack: np.ndarray, channels) -> np.ndarray:
    if stack.ndim != 4:
        raise ValueError(f"expected a (z, c, y, x) stack, got shape {stack.shape}")
    idx = list(range(stack.shape[1])) if channels is None else list(channels)
    bad = [c for c in idx if not 0 <= c < stack.shape[1]]
    if bad:
        raise ValueError(f"channel index {bad} out of range for {stack.shape[1]} channel(s)")
    return stack[:, idx].mean(axis=1, dtype=np.float32)


def multiotsu_thresholds(image: np.ndarray, *, nbins: int = 256, max_samples: int = 2_000_000,
                         rng=None) -> np.ndarray:
    """Two multi-Otsu thresholds splitting ``image`` into three classes.

    Parameters
    ----------
    image : ndarray
        Grey values, any shape.
    nbins : int
        Histogram bins.
    max_samples : int
        Larger images are subsampled (seeded) for the histogram.
    rng : numpy.random.Generator, optional
        For the subsample; seed 0 by default.

    Returns
    -------
    ndarray of 2 float
    """
    values = image.ravel()
    if values.size > max_samples:
        rng = rng if rng is not None else np.random.default_rng(0)
        values = rng.choice(values, max_samples, replace=False)
    return threshold_multiotsu(values, classes=3, nbins=nbins)


def segment_multiotsu(stack: np.ndarray, *, channels=None, nbins: int = 256) -> np.ndarray:
    """Label a preprocessed multi-kV stack as pore / AM / CBD.

    Parameters
    ----------
    stack : ndarray, (z, c, y, x)
        Preprocessed stack.
    channels : sequence of int, optional
        Channel indices averaged before thresholding (all by default).
    nbins : int
        Histogram bins for the thresholds.

    Returns
    -------
    ndarray of uint8, (z, y, x)
        0 pore (darkest class), 2 CBD (middle), 1 AM (brightest).

    References
    ----------
    Liao, Chen & Chung (2001), "A fast algorithm for multilevel thresholding",
    J. Inf. Sci. Eng. 17, 713-727.
    """
    image = _combined(stack, channels)
    t_low, t_high = multiotsu_thresholds(image, nbins=nbins)
    labels = np.full(image.shape, CBD, dtype=np.uint8)
    labels[image <= t_low] = PORE
    labels[image > t_high] = AM
    return labels
