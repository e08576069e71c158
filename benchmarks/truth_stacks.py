"""Helpers shared by the benchmarks that compare preprocessed simulated stacks with their truth."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from fibrecon.align import aligned_slices, common_region

__all__ = ["CAP", "aligned_with_true_drift", "phase_masks", "cnr"]

#: Rows of Pt cap (with a fiducial) of the benchmarks' simulated stacks.
CAP = 32


def aligned_with_true_drift(sample, region=None):
    """A simulated stack shifted by its true drift, cap removed, and its labels' window.

    Parameters
    ----------
    sample : fibrecon.simulate.SimulatedSample
        Simulated with ``cap_px=CAP``.
    region : tuple of slice, optional
        (y, x) window of the aligned frame; by default the common region of
        its own drift.

    Returns
    -------
    stack : ndarray of float32, (z, c, y, x)
    ty, tx : slice
        The same window in ``sample.labels``.
    """
    wy, wx = region or common_region(sample.drift_px, sample.raw.shape[2:])
    y0 = max(wy.start, CAP)
    stack = np.stack(list(aligned_slices(sample.raw.astype(np.float32), sample.drift_px,
                                         (slice(y0, wy.stop), wx))))
    return stack, slice(y0 - CAP, wy.stop - CAP), wx


def phase_masks(labels):
    """Voxels of AM and of pore three voxels away from any other phase (no edge blur)."""
    am = np.stack([ndi.binary_erosion(s == 1, iterations=3) for s in labels])
    pore = np.stack([ndi.binary_erosion(s == 0, iterations=3) for s in labels])
    return am, pore


def cnr(img, am, pore):
    """Contrast between AM and pore over their pooled within-phase standard deviation."""
    a, p = img[am], img[pore]
    return float((a.mean() - p.mean()) / np.sqrt(0.5 * (a.var() + p.var())))
