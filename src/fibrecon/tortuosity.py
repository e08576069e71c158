"""Tortuosity factors of a conducting phase, as TauFactor defines them.

``tau = eps * D / D_eff`` (Cooper et al. 2016): ``eps`` is the volume
fraction of the phase, ``D_eff / D`` its relative effective diffusivity
from a steady-state diffusion solve with fixed concentrations on the two
faces normal to the flux and no-flux walls elsewhere. A domain without
obstacles gives exactly 1; a phase that does not connect the two faces gives
``inf`` (never a negative value or NaN).

fibrecon solves TauFactor's finite-volume problem itself
(:func:`finite_volume_tau`, conjugate gradients preconditioned with pyamg's
smoothed-aggregation multigrid), for any voxel shape; it is checked against
taufactor on cubic voxels (tests and benchmarks). On a GPU (``device="cuda"``)
taufactor's solver is used for cubic voxels. taufactor 1.2.1's
``AnisotropicSolver`` is wrong for anisotropic voxels (FIB-SEM slices are
often thicker than the pixel size): a straight channel along the flux gives 2
instead of 1 at spacing (0.05, 0.04, 0.04) and diverges at (0.05, 0.02, 0.02)
(see ``tests/unit/test_tortuosity.py``).
"""

from __future__ import annotations

import contextlib
import io as _io

import numpy as np
from scipy import ndimage as ndi
from scipy import sparse
from scipy.sparse import linalg as splinalg

__all__ = ["percolates", "tortuosity_factor", "finite_volume_tau", "taufactor_tau"]


def percolates(mask: np.ndarray, axis: int) -> bool:
    """Whether a face-connected path of ``mask`` joins the first and last plane along ``axis``."""
    comp, n = ndi.label(mask)
    if n == 0:
        return False
    first = np.unique(np.take(comp, 0, axis=axis))
    last = np.unique(np.take(comp, -1, axis=axis))
    return bool(np.intersect1d(first[first > 0], last[last > 0]).size)


def _system(mask: np.ndarray, spacing):
    """Finite-volume matrix, right-hand side and face indices of the flux-carrying voxels."""
    n0 = mask.shape[0]
    comp, _ = ndi.label(mask)
    touching = np.union1d(np.unique(comp[0]), np.unique(comp[-1]))
    active = np.isin(comp, touching[touching > 0])
    del comp
    index = np.full(mask.shape, -1, dtype=np.int32)
    n = int(active.sum())
    index[active] = np.arange(n, dtype=np.int32)
    h = np.asarray(spacing, dtype=float)
    g = (h[0] / h) ** 2
    diag = np.zeros(n)
    rows, cols, vals = [], [], []
    for axis in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        a, b = index[tuple(lo)], index[tuple(hi)]
        both = (a >= 0) & (b >= 0)
        ia, ib = a[both], b[both]
        rows += [ia, ib]
        cols += [ib, ia]
        vals += [np.full(ia.size, -g[axis])] * 2
        diag += g[axis] * (np.bincount(ia, minlength=n) + np.bincount(ib, minlength=n))
    inlet, outlet = index[0][index[0] >= 0], index[-1][index[-1] >= 0]
    diag[inlet] += 2.0  # half-voxel link to c = 0
    diag[outlet] += 2.0  # half-voxel link to c = 1
    rhs = np.zeros(n)
    rhs[outlet] += 2.0
    ar = np.arange(n, dtype=np.int32)
    matrix = sparse.csr_matrix(
        (np.concatenate(vals + [diag]), (np.concatenate(rows + [ar]), np.concatenate(cols + [ar]))),
        shape=(n, n))
    x0 = (np.nonzero(active)[0] + 0.5) / n0  # linear start
    return matrix, rhs, x0, inlet


def finite_volume_tau(mask: np.ndarray, spacing=(1.0, 1.0, 1.0), *, rtol: float = 1e-5,
                      maxiter: int = 5_000, preconditioner: str = "amg") -> float:
    """Tortuosity factor along axis 0 by a finite-volume solve (preconditioned conjugate gradients).

    Parameters
    ----------
    mask : ndarray of bool, (n0, n1, n2)
        Conducting voxels; flux along axis 0.
    spacing : tuple of float
        Voxel size along axes 0, 1, 2 (any unit).
    rtol : float
        Relative residual at which conjugate gradients stop.
    maxiter : int
        Iteration cap.
    preconditioner : str
        ``"amg"`` (smoothed-aggregation algebraic multigrid, pyamg: iterations
        nearly independent of the volume size) or ``"jacobi"``.

    Returns
    -------
    float
        ``tau = eps / (D_eff / D)``; ``inf`` if the phase does not percolate.

    Notes
    -----
    The same discretisation as TauFactor: concentration 0 and 1 held on the
    outer faces of the first and last plane (half a voxel from their
    centres), face conductance ``(h0 / h_i)^2`` between neighbours along
    axis ``i`` (conductances scaled by ``h1 h2 / h0``), and
    ``D_eff / D = J * n0 / (n1 * n2)`` with ``J`` the scaled flux. Clusters
    that touch neither face carry no flux and are left out of the solve;
    they still count in ``eps``, as in TauFactor.
    """
    mask = np.asarray(mask, dtype=bool)
    n0, n1, n2 = mask.shape
    eps = float(mask.mean())
    if not percolates(mask, 0):
        return float("inf")
    matrix, rhs, x0, inlet = _system(mask, spacing)
    if preconditioner == "amg":
        import pyamg

        state = np.random.get_state()  # pyamg draws random vectors (spectral radius
        np.random.seed(0)               # estimates) from numpy's global generator: seed it so
        try:                            # that the same volume gives bit-identical results
            precond = pyamg.smoothed_aggregation_solver(
                matrix, symmetry="symmetric", max_coarse=1000).aspreconditioner(cycle="V")
        finally:
            np.random.set_state(state)
    elif preconditioner == "jacobi":
        precond = sparse.diags(1.0 / matrix.diagonal())
    else:
        raise ValueError(f"preconditioner must be 'amg' or 'jacobi', got {preconditioner!r}")
    c, info = splinalg.cg(matrix, rhs, x0=x0, rtol=rtol, maxiter=maxiter, M=precond)
    if info != 0:
        raise RuntimeError(f"finite-volume tortuosity did not converge in {maxiter} iterations")
    flux = 2.0 * c[inlet].sum()
    d_rel = flux * n0 / (n1 * n2)
    return eps / d_rel if d_rel > 0 else float("inf")


def taufactor_tau(mask: np.ndarray, *, device: str = "cpu", conv_crit: float = 1e-2,
                  iter_limit: int = 100_000) -> float:
    """Tortuosity factor along axis 0 from taufactor's ``Solver`` (cubic voxels).

    The reference that :func:`finite_volume_tau` is checked against, and the
    GPU path of :func:`tortuosity_factor`.
    """
    import taufactor

    with contextlib.redirect_stdout(_io.StringIO()):
        solver = taufactor.Solver(np.asarray(mask, dtype=np.float32), device=device)
        solver.solve(iter_limit=iter_limit, verbose=False, conv_crit=conv_crit)
    tau = solver.tau.cpu().numpy() if hasattr(solver.tau, "cpu") else np.asarray(solver.tau)
    return float(np.ravel(tau)[0])


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
        (dz, dy, dx).
    device : str
        ``"cpu"``: :func:`finite_volume_tau` (algebraic-multigrid preconditioned
        conjugate gradients; faster than taufactor's CPU solver, see
        benchmarks/RESULTS.md); ``"cuda"``: taufactor's GPU solver for cubic
        voxels (anisotropic voxels always use :func:`finite_volume_tau`).
    conv_crit, iter_limit
        taufactor's convergence criterion and iteration cap (GPU only).

    Returns
    -------
    dict
        ``tau`` (inf if the phase does not percolate), ``epsilon`` (volume
        fraction), ``D_rel`` (relative effective diffusivity ``epsilon /
        tau``, 0 if not percolating), ``percolates`` (bool), ``solver``.

    References
    ----------
    Cooper, Bertei, Shearing, Kilner & Brandon (2016), "TauFactor: an
    open-source application for calculating tortuosity factors from
    tomographic data", SoftwareX 5, 203-210.

    Examples
    --------
    >>> m = np.zeros((8, 8, 8), bool); m[:, 2:5, 2:5] = True
    >>> tortuosity_factor(m, 0)["tau"]
    1.0
    """
    mask = np.asarray(mask, dtype=bool)
    eps = float(mask.mean())
    if mask.all():
        return {"tau": 1.0, "epsilon": 1.0, "D_rel": 1.0, "percolates": True, "solver": "exact"}
    if not percolates(mask, axis):
        return {"tau": float("inf"), "epsilon": eps, "D_rel": 0.0, "percolates": False,
                "solver": "percolation check"}
    moved = np.ascontiguousarray(np.moveaxis(mask, axis, 0))
    spacing = [float(voxel_size[axis])] + [float(voxel_size[a]) for a in range(3) if a != axis]
    cubic = np.allclose(spacing, spacing[0], rtol=1e-6)
    if device.startswith("cuda") and cubic:
        tau, name = taufactor_tau(moved, device=device, conv_crit=conv_crit,
                                  iter_limit=iter_limit), "taufactor"
    else:
        tau, name = finite_volume_tau(moved, spacing), "finite volume, AMG-CG (fibrecon)"
    if not np.isfinite(tau) or tau <= 0:
        return {"tau": float("inf"), "epsilon": eps, "D_rel": 0.0, "percolates": False,
                "solver": name}
    return {"tau": tau, "epsilon": eps, "D_rel": eps / tau, "percolates": True, "solver": name}
