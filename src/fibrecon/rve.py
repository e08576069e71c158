"""Representative volume: how much each metric varies between sub-volumes of growing size.

If the spread of a metric over sub-volumes shrinks towards zero as they grow
to the imaged size, the imaged volume is representative for it; the spread at
half the edge length is the error bar reported with the metric.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fibrecon import CBD, PORE
from fibrecon.cbd import am_surface_coverage, percolating_fraction
from fibrecon.tortuosity import tortuosity_factor

__all__ = ["RVE_METRICS", "subvolume_spread"]


def _fractions(sub, voxel_size):
    from fibrecon.metrics import volume_fractions  # (metrics imports this module)

    return {f"volume_fraction_{name}": f for name, f in volume_fractions(sub).items()}


def _cbd_percolation(sub, voxel_size):
    return {"cbd_percolating_fraction": percolating_fraction(sub == CBD)}


def _pore_tortuosity_z(sub, voxel_size):
    return {"tau_pore_z": tortuosity_factor(sub == PORE, 0, voxel_size)["tau"]}


#: Metrics whose spread is measured: name -> (function of (labels, voxel_size)
#: returning {metric: value}, largest edge fraction it is computed at). The
#: tortuosity solve stops at half the edge (its error bar) to bound the cost.
RVE_METRICS = {
    "volume fractions": (_fractions, 1.0),
    "AM surface coverage": (lambda sub, vs: am_surface_coverage(sub), 1.0),
    "CBD percolation": (_cbd_percolation, 1.0),
    "pore tortuosity z": (_pore_tortuosity_z, 0.5),
}


def subvolume_spread(labels: np.ndarray, voxel_size, *, fractions=(0.25, 0.5, 0.75, 1.0),
                     count: int = 8, seed: int = 0, metrics=None) -> pd.DataFrame:
    """Metrics on random sub-volumes of growing edge length: mean and spread.

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
    metrics : dict, optional
        As :data:`RVE_METRICS` (the default).

    Returns
    -------
    pandas.DataFrame
        One row per size and metric: ``edge_fraction``, ``volume_um3``,
        ``metric``, ``mean``, ``sd`` (over the sub-volumes; NaN and infinite
        values, e.g. a sub-volume where the pores do not percolate, are left
        out and counted in ``excluded``), ``n``.

    Examples
    --------
    >>> v = np.zeros((8, 8, 8), np.uint8); v[:, :, 4:] = 1
    >>> t = subvolume_spread(v, (1, 1, 1), fractions=(1.0,))
    >>> float(t.loc[t.metric == "volume_fraction_am", "mean"].iloc[0])
    0.5
    """
    metrics = RVE_METRICS if metrics is None else metrics
    rng = np.random.default_rng(seed)
    shape = np.asarray(labels.shape)
    rows = []
    for f in fractions:
        edge = np.maximum(1, np.round(f * shape).astype(int))
        n = 1 if np.all(edge == shape) else count
        starts = [[int(rng.integers(0, s - e + 1)) for s, e in zip(shape, edge)]
                  for _ in range(n)]
        values: dict[str, list] = {}
        for function, largest in metrics.values():
            if f > largest + 1e-9:
                continue
            for start in starts:
                sub = labels[tuple(slice(a, a + e) for a, e in zip(start, edge))]
                for name, value in function(sub, voxel_size).items():
                    values.setdefault(name, []).append(float(value))
        for name, v in values.items():
            v = np.asarray(v)
            finite = v[np.isfinite(v)]
            rows.append({"edge_fraction": float(f),
                         "volume_um3": float(np.prod(edge * np.asarray(voxel_size))),
                         "metric": name,
                         "mean": float(finite.mean()) if finite.size else float("nan"),
                         "sd": float(finite.std(ddof=1)) if finite.size > 1 else
                         (0.0 if v.size == 1 and finite.size else float("nan")),
                         "n": int(finite.size), "excluded": int(v.size - finite.size)})
    return pd.DataFrame(rows)
