"""Representative volume: how much each metric varies between sub-volumes of growing size.

If the spread of a metric over sub-volumes shrinks towards zero as they grow
to the imaged size, the imaged volume is representative for it; the spread at
half the edge length is the error bar reported with the metric.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fibrecon import AM, CBD, PORE
from fibrecon.cbd import am_surface_coverage, percolating_fraction, thickness_summary
from fibrecon.interfaces import interface_areas
from fibrecon.particles import particle_table, separate_particles, size_summary
from fibrecon.tortuosity import tortuosity_factor

__all__ = ["RVE_METRICS", "rve_metrics", "subvolume_spread"]


def _fractions(sub, voxel_size):
    from fibrecon.metrics import volume_fractions  # (metrics imports this module)

    return {f"volume_fraction_{name}": f for name, f in volume_fractions(sub).items()}


def _cbd_percolation(sub, voxel_size):
    return {"cbd_percolating_fraction": percolating_fraction(sub == CBD)}


def _pore_tortuosity_z(sub, voxel_size):
    return {"tau_pore_z": tortuosity_factor(sub == PORE, 0, voxel_size)["tau"]}


def _particle_d50(sub, voxel_size, h, sigma):
    table = particle_table(separate_particles(sub == AM, voxel_size, h=h, sigma=sigma),
                           voxel_size, sphericity=False)
    return {"d50_um": size_summary(table, sub.size * float(np.prod(voxel_size)))["d50_um"]}


def _thickness(sub, voxel_size):
    return {f"{name}_thickness_mean_um": thickness_summary(sub == phase, min(voxel_size))[0]
            for name, phase in (("cbd", CBD), ("pore", PORE))}


def rve_metrics(*, particle_h: float = 1.0, particle_sigma: float = 1.0) -> dict:
    """Metrics whose spread is measured, with the particle separation's settings.

    Returns
    -------
    dict
        name -> (function of (labels, voxel_size) returning {metric: value},
        largest edge fraction it is computed at, most sub-volumes per size).
        The costly ones stop at half the edge (their error bar): the
        tortuosity solve on every sub-volume, particle separation, local
        thickness and surfaces on 4 of them, which bounds the whole spread to
        about a quarter of the time of the full metric set
        (``benchmarks/RESULTS.md``).
    """
    return {
        "volume fractions": (_fractions, 1.0, None),
        "AM surface coverage": (lambda sub, vs: am_surface_coverage(sub), 1.0, None),
        "CBD percolation": (_cbd_percolation, 1.0, None),
        "pore tortuosity z": (_pore_tortuosity_z, 0.5, None),
        "particle d50": (lambda sub, vs: _particle_d50(sub, vs, particle_h, particle_sigma),
                         0.5, 4),
        "thickness": (_thickness, 0.5, 4),
        "interface areas": (interface_areas, 0.5, 4),
    }


#: The default set (:func:`rve_metrics` with the default particle settings).
RVE_METRICS = rve_metrics()


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
        As :data:`RVE_METRICS` (the default): name -> (function, largest edge
        fraction, most sub-volumes per size or None for ``count``).

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
        for function, largest, most in metrics.values():
            if f > largest + 1e-9:
                continue
            for start in starts[:most]:
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
