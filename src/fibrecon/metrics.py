"""Microstructure metrics of a 3D phase volume.

Volume fractions and their profiles, and tortuosity factors as TauFactor
defines them (tau = eps * D / D_eff, Cooper et al. 2016), computed with
taufactor's finite-difference solver. A domain without obstacles gives
exactly 1; a phase that does not connect the two faces gives ``inf``.
"""

from __future__ import annotations

import contextlib
import io as _io

import numpy as np
from scipy import ndimage as ndi

from fibrecon import PHASES

__all__ = ["AXES", "volume_fractions", "fraction_profile", "percolates", "tortuosity_factor",
           "sample_metrics"]

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


def percolates(mask: np.ndarray, axis: int) -> bool:
    """Whether a face-connected path of ``mask`` joins the first and last plane along ``axis``."""
    comp, n = ndi.label(mask)
    if n == 0:
        return False
    first = np.unique(np.take(comp, 0, axis=axis))
    last = np.unique(np.take(comp, -1, axis=axis))
    return bool(np.intersect1d(first[first > 0], last[last > 0]).size)


def tortuosity_factor(
    mask: np.ndarray,
    axis: int,
    voxel_size=(1.0, 1.0, 1.0),
    *,
    device: str = "cpu",
    conv_crit: float = 1e-2,
    iter_limit: int = 100_000,
) -> dict:
    """Tortuosity factor of the conducting phase ``mask`` along one axis.

    Parameters
    ----------
    mask : ndarray of bool, (z, y, x)
        True where the phase conducts.
    axis : int
        Direction of flux (0 z, 1 y, 2 x).
    voxel_size : tuple of float
        (dz, dy, dx); anisotropic voxels use taufactor's ``AnisotropicSolver``.
    device : str
        ``"cpu"`` or ``"cuda"`` (passed to taufactor).
    conv_crit, iter_limit
        Solver convergence criterion and iteration cap.

    Returns
    -------
    dict
        ``tau`` (inf if the phase does not percolate), ``epsilon`` (volume
        fraction), ``D_rel`` (effective relative diffusivity D_eff/D =
        epsilon/tau, 0 if not percolating), ``percolates`` (bool).

    References
    ----------
    Cooper, Bertei, Shearing, Kilner & Brandon (2016), "TauFactor: an
    open-source application for calculating tortuosity factors from
    tomographic data", SoftwareX 5, 203-210.
    """
    import taufactor

    mask = np.asarray(mask, dtype=bool)
    eps = float(mask.mean())
    if mask.all():
        return {"tau": 1.0, "epsilon": 1.0, "D_rel": 1.0, "percolates": True}
    if not percolates(mask, axis):
        return {"tau": float("inf"), "epsilon": eps, "D_rel": 0.0, "percolates": False}
    img = np.ascontiguousarray(np.moveaxis(mask, axis, 0)).astype(np.float32)
    spacing = [float(voxel_size[axis])] + [float(voxel_size[a]) for a in range(3) if a != axis]
    quiet = _io.StringIO()
    with contextlib.redirect_stdout(quiet):
        if len(set(spacing)) == 1:
            solver = taufactor.Solver(img, device=device)
        else:
            solver = taufactor.AnisotropicSolver(img, spacing=tuple(spacing), device=device)
        solver.solve(iter_limit=iter_limit, verbose=False, conv_crit=conv_crit)
    tau = solver.tau.cpu().numpy() if hasattr(solver.tau, "cpu") else np.asarray(solver.tau)
    tau = float(np.ravel(tau)[0])
    if not np.isfinite(tau) or tau <= 0:
        return {"tau": float("inf"), "epsilon": eps, "D_rel": 0.0, "percolates": False}
    return {"tau": tau, "epsilon": eps, "D_rel": eps / tau, "percolates": True}


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
