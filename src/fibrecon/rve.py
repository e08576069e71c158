"""Representative volume: how much a metric varies between sub-volumes of growing size.

If the spread of a metric over sub-volumes shrinks towards zero as they grow
to the imaged size, the imaged volume is representative for it; the spread at
half the edge length is the error bar reported with the metric.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fibrecon import PHASES

__all__ = ["subvolume_spread"]


def subvolume_spread(labels: np.ndarray, voxel_size, *, fractions=(0.25, 0.5, 0.75, 1.0),
                     count: int = 8, seed: int = 0) -> pd.DataFrame:
    """Volume fractions on random sub-volumes of growing edge length.

    Parameters
    ----------
    labels : ndarray of int, (z, y, x)
        Phase labels.
    voxel_size : tuple of float
        (dz, dy, dx) in micrometres.
    fractions : sequence of float
        Sub-volume edge lengths as fractions of the volume's (each axis).
    count : int
        Sub-volumes per size (placed at seeded random positions).
    seed : int
        Seed of the positions.

    Returns
    -------
    pandas.DataFrame
        One row per size and metric: ``edge_fraction``, ``volume_um3``,
        ``metric`` (``volume_fraction_<phase>``), ``mean``, ``sd``.

    Examples
    --------
    >>> v = np.zeros((8, 8, 8), np.uint8); v[:, :, 4:] = 1
    >>> t = subvolume_spread(v, (1, 1, 1), fractions=(1.0,))
    >>> float(t.loc[t.metric == "volume_fraction_am", "mean"].iloc[0])
    0.5
    """
    rng = np.random.default_rng(seed)
    shape = np.asarray(labels.shape)
    rows = []
    for f in fractions:
        edge = np.maximum(1, np.round(f * shape).astype(int))
        n = 1 if np.all(edge == shape) else count
        values = {p: [] for p in PHASES}
        for _ in range(n):
            start = [int(rng.integers(0, s - e + 1)) for s, e in zip(shape, edge)]
            sub = labels[tuple(slice(a, a + e) for a, e in zip(start, edge))]
            counts = np.bincount(sub.ravel(), minlength=len(PHASES))[: len(PHASES)]
            for p in PHASES:
                values[p].append(counts[p] / sub.size)
        for p, name in PHASES.items():
            v = np.asarray(values[p])
            rows.append({"edge_fraction": float(f),
                         "volume_um3": float(np.prod(edge * np.asarray(voxel_size))),
                         "metric": f"volume_fraction_{name}", "mean": float(v.mean()),
                         "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0})
    return pd.DataFrame(rows)
