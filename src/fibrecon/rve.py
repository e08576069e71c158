"""Representative volume: how much each metric varies between sub-volumes of growing size.

If the spread of a metric over sub-volumes shrinks towards zero as they grow
to the imaged size, the imaged volume is representative for it; the spread at
half the edge length is the error bar reported with the metric.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["subvolume_spread"]


def subvolume_spread(labels: np.ndarray, voxel_size, metrics: dict, *,
                     fractions=(0.25, 0.5, 0.75, 1.0), count: int = 8, seed: int = 0,
                     whole: dict | None = None) -> pd.DataFrame:
    """Metrics on random sub-volumes of growing edge length: mean and spread.

    Parameters
    ----------
    labels : ndarray of int, (z, y, x)
        Phase labels.
    voxel_size : tuple of float
        (dz, dy, dx) in micrometres.
    metrics : dict
        Group name -> (function of (labels of the sub-volume, voxel_size, its
        box: a (z, y, x) tuple of slices into ``labels``) returning {metric:
        value}, largest edge fraction below the whole volume it is computed
        at, most sub-volumes per size or None for ``count``), e.g.
        :func:`fibrecon.metrics.rve_metrics`.
    fractions : sequence of float
        Sub-volume edge lengths as fractions of the volume's (each axis),
        ascending.
    count : int
        Sub-volumes per size (placed at seeded random positions).
    seed : int
        Seed of the positions.
    whole : dict, optional
        The metrics of the whole volume, already computed: at the full edge
        every metric seen at the smaller sizes is taken from here instead of
        computed again (including the groups that stop below the full edge).

    Returns
    -------
    pandas.DataFrame
        One row per size and metric: ``edge_fraction``, ``volume_um3``,
        ``group``, ``metric``, ``mean``, ``sd`` (over the sub-volumes; NaN and infinite
        values, e.g. a sub-volume where the pores do not percolate, are left
        out and counted in ``excluded``), ``n``.

    Examples
    --------
    >>> v = np.zeros((8, 8, 8), np.uint8); v[:, :, 4:] = 1
    >>> am = {"AM fraction": (lambda sub, vs, box: {"am": float(sub.mean())}, 1.0, None)}
    >>> t = subvolume_spread(v, (1, 1, 1), am, fractions=(0.5, 1.0))
    >>> t.loc[t.edge_fraction == 1.0, ["mean", "sd", "n"]].iloc[0].tolist()
    [0.5, 0.0, 1.0]
    >>> int(t.loc[t.edge_fraction == 0.5, "n"].iloc[0])  # 8 sub-volumes of half the edge
    8
    """
    rng = np.random.default_rng(seed)
    shape = np.asarray(labels.shape)
    group_of: dict[str, str] = {}  # metric -> group, in the order first seen
    rows = []
    for f in fractions:
        edge = np.maximum(1, np.round(f * shape).astype(int))
        full = bool(np.all(edge == shape))
        n = 1 if full else count
        starts = [[int(rng.integers(0, s - e + 1)) for s, e in zip(shape, edge)]
                  for _ in range(n)]
        values: dict[str, list] = {}
        if full and whole is not None and group_of:
            values = {name: [whole[name]] for name in group_of if name in whole}
        else:
            for group, (function, largest, most) in metrics.items():
                if f > largest + 1e-9:
                    continue
                for start in starts[:most]:
                    box = tuple(slice(a, a + e) for a, e in zip(start, edge))
                    for name, value in function(labels[box], voxel_size, box).items():
                        group_of.setdefault(name, group)
                        values.setdefault(name, []).append(float(value))
        for name, v in values.items():
            v = np.asarray(v, float)
            finite = v[np.isfinite(v)]
            rows.append({"edge_fraction": float(f),
                         "volume_um3": float(np.prod(edge * np.asarray(voxel_size))),
                         "group": group_of[name], "metric": name,
                         "mean": float(finite.mean()) if finite.size else float("nan"),
                         "sd": float(finite.std(ddof=1)) if finite.size > 1 else
                         (0.0 if v.size == 1 and finite.size else float("nan")),
                         "n": int(finite.size), "excluded": int(v.size - finite.size)})
    return pd.DataFrame(rows)
