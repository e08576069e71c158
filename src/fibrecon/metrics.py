"""Microstructure metrics of a 3D phase volume.

Volume fractions and their profiles, and the tortuosity factors of
:mod:`fibrecon.tortuosity`, collected per sample.
"""

from __future__ import annotations

import numpy as np

from fibrecon import PHASES
from fibrecon.tortuosity import tortuosity_factor

__all__ = ["AXES", "volume_fractions", "fraction_profile", "sample_metrics"]

#: Axis names in (z, y, x) order.
AXES = {"z": 0, "y": 1, "x": 2}


def volume_fractions(labels: np.ndarray) -> dict:
    """Volume fraction of each phase.

    Parameters
    ----------
    labels : ndarray of int
        Phase labels 0 pore, 1 AM, 2 CBD.

    Returns
    -------
    dict
        ``{"pore": f0, "am": f1, "cbd": f2}``, summing to 1.

    Examples
    --------
    >>> volume_fractions(np.array([0, 0, 1, 2]))
    {'pore': 0.5, 'am': 0.25, 'cbd': 0.25}
    """
    counts = np.bincount(np.asarray(labels).ravel(), minlength=len(PHASES))
    if counts.size > len(PHASES):
        raise ValueError(f"unexpected label values {np.nonzero(counts[len(PHASES):])[0] + 3}")
    return {name: float(counts[p] / labels.size) for p, name in PHASES.items()}


def fraction_profile(labels: np.ndarray, phase: int, axis: int) -> np.ndarray:
    """Fraction of ``phase`` in each plane perpendicular to ``axis``."""
    other = tuple(a for a in range(labels.ndim) if a != axis)
    return (labels == phase).mean(axis=other)


def sample_metrics(labels: np.ndarray, voxel_size, *, tortuosity_axes=("z", "y", "x"),
                   device: str = "cpu", conv_crit: float = 1e-2) -> dict:
    """The walking-skeleton metric set of one sample.

    Parameters
    ----------
    labels : ndarray of uint8, (z, y, x)
        Phase volume.
    voxel_size : tuple of float
        (dz, dy, dx) in micrometres.
    tortuosity_axes : sequence of str
        Directions in which the pore tortuosity factor is computed.
    device, conv_crit
        Passed to :func:`tortuosity_factor`.

    Returns
    -------
    dict
        ``volume_fraction_<phase>``, ``porosity_profile_z`` (list),
        ``tortuosity_pore_<axis>`` and ``voxel_size_um``, ``shape``.
    """
    out = {"shape": list(labels.shape), "voxel_size_um": [float(v) for v in voxel_size]}
    for name, f in volume_fractions(labels).items():
        out[f"volume_fraction_{name}"] = f
    out["porosity_profile_z"] = fraction_profile(labels, 0, 0).tolist()
    for ax in tortuosity_axes:
        res = tortuosity_factor(labels == 0, AXES[ax], voxel_size, device=device,
                                conv_crit=conv_crit)
        out[f"tortuosity_pore_{ax}"] = res["tau"]
    return out
