"""Tortuosity factors of a conducting phase, as TauFactor defines them.

``tau = eps * D / D_eff`` (Cooper et al. 2016): ``eps`` is the volume
fraction of the phase, ``D_eff / D`` its relative effective diffusivity
from a steady-state diffusion solve with fixed concentrations on the two
faces normal to the flux and no-flux walls elsewhere. A domain without
obstacles gives exactly 1; a phase that does not connect the two faces gives
``inf`` (never a negative value or NaN).

fibrecon solves TauFactor's finite-volume problem itself
(:func:`finite_volume_tau`, conjugate gradients preconditioned with pyamg's
aggregation multigrid), for any voxel shape; it is checked against
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
    """Finite-volume system of the flux-carrying voxels (None if the phase does not percolate).

    Returns
    -------
    matrix, rhs, x0 : sparse matrix and vectors of the linear system
    flux_weights, flux_offset : ndarray, float
        ``(flux_weights @ c + flux_offset)`` is the flux summed over the
        ``n0 + 1`` planes normal to axis 0 (the inlet and outlet faces and
        every interface between slices), in units of the axis-0 conductance.
    """
    n0 = mask.shape[0]
    comp, _ = ndi.label(mask)
    first, last = np.unique(comp[0]), np.unique(comp[-1])
    through = np.intersect1d(first[first > 0], last[last > 0])  # clusters joining both faces
    if through.size == 0:
        return None
    active = np.isin(comp, through)
    del comp
    index = np.full(mask.shape, -1, dtype=np.int32)
    n = int(active.sum())
    index[active] = np.arange(n, dtype=np.int32)
    h = np.asarray(spacing, dtype=float)
    g = (h[0] / h) ** 2
    # CSR row by row: neighbours in increasing column order (-z, -y, -x, self, +x, +y, +z)
    columns = np.empty((n, 7), dtype=np.int32)
    values = np.zeros((n, 7))
    neighbours = {0: (0, -1), 1: (1, -1), 2: (2, -1), 4: (2, 1), 5: (1, 1), 6: (0, 1)}
    for k, (axis, step) in neighbours.items():
        shifted = np.full(mask.shape, -1, dtype=np.int32)
        src = [slice(None)] * 3
        dst = [slice(None)] * 3
        src[axis], dst[axis] = (slice(0, -1), slice(1, None)) if step < 0 else \
            (slice(1, None), slice(0, -1))
        shifted[tuple(dst)] = index[tuple(src)]  # the neighbour's index, -1 where none
        columns[:, k] = shifted[active]
        values[:, k] = np.where(columns[:, k] >= 0, -g[axis], 0.0)
    del shifted
    has = columns >= 0
    diag = -values.sum(axis=1)
    flux_weights = has[:, 0].astype(float) - has[:, 6]  # interfaces: sum of (c_b - c_a)
    inlet, outlet = index[0][index[0] >= 0], index[-1][index[-1] >= 0]
    diag[inlet] += 2.0  # half-voxel link to c = 0
    diag[outlet] += 2.0  # half-voxel link to c = 1
    flux_weights[inlet] += 2.0  # inlet flux 2 c, outlet flux 2 (1 - c)
    flux_weights[outlet] -= 2.0
    columns[:, 3] = np.arange(n, dtype=np.int32)
    values[:, 3] = diag
    has[:, 3] = True
    indptr = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(has.sum(axis=1), out=indptr[1:])
    matrix = sparse.csr_matrix((values[has], columns[has], indptr), shape=(n, n))
    rhs = np.zeros(n)
    rhs[outlet] += 2.0
    x0 = (np.nonzero(active)[0] + 0.5) / n0  # linear start
    return matrix, rhs, x0, flux_weights, 2.0 * outlet.size


def _amg_preconditioner(matrix):
    """Aggregation-multigrid W-cycle (pyamg hierarchy), one forward / backward Gauss-Seidel sweep.

    Plain (unsmoothed) aggregation: its set-up takes a few seconds where
    smoothed aggregation needs half a minute at 256^3, and its W-cycle keeps
    the iteration count nearly independent of the size
    (benchmarks/RESULTS.md). The cycle is run here rather than through
    pyamg's ``solve``, which computes two extra fine-level residual norms
    per call.

    Returns
    -------
    callable
        ``r -> M r``, symmetric positive definite (a preconditioner for CG).
    """
    import pyamg

    state = np.random.get_state()  # pyamg may draw random vectors from numpy's global
    np.random.seed(0)               # generator: seed it so that the same volume gives
    try:                            # bit-identical results
        ml = pyamg.smoothed_aggregation_solver(
            matrix, symmetry="symmetric", smooth=None, improve_candidates=None, max_coarse=1000,
            presmoother=("gauss_seidel", {"sweep": "forward"}),
            postsmoother=("gauss_seidel", {"sweep": "backward"}))
    finally:
        np.random.set_state(state)
    levels = ml.levels
    for level in levels:  # pyamg builds coarse levels as 1x1-block BSR: CSR relaxes 3x faster
        for name in ("A", "P", "R"):
            if sparse.issparse(getattr(level, name, None)):
                setattr(level, name, getattr(level, name).tocsr())
    coarsest = len(levels) - 1
    if coarsest == 0:  # small enough for the direct coarse solver alone
        return lambda r: ml.coarse_solver(levels[0].A, r)

    def cycle(lvl, x, b):
        level = levels[lvl]
        level.presmoother(level.A, x, b)
        coarse_b = level.R @ (b - level.A @ x)
        if lvl + 1 == coarsest:
            coarse_x = ml.coarse_solver(levels[-1].A, coarse_b)
        else:
            coarse_x = np.zeros_like(coarse_b)
            cycle(lvl + 1, coarse_x, coarse_b)  # W: two coarse cycles
            cycle(lvl + 1, coarse_x, coarse_b)
        x += level.P @ coarse_x
        level.postsmoother(level.A, x, b)

    def apply(r):
        x = np.zeros_like(r)
        cycle(0, x, r)
        return x

    return apply


def finite_volume_tau(mask: np.ndarray, spacing=(1.0, 1.0, 1.0), *, tol: float = 1e-4,
                      maxiter: int = 5_000, preconditioner: str = "amg") -> float:
    """Tortuosity factor along axis 0 by a finite-volume solve (preconditioned conjugate gradients).

    Parameters
    ----------
    mask : ndarray of bool, (n0, n1, n2)
        Conducting voxels; flux along axis 0.
    spacing : tuple of float
        Voxel size along axes 0, 1, 2 (any unit).
    tol : float
        Conjugate gradients stop when the mean flux changes by less than
        ``tol`` (relative) in two successive iterations.
    maxiter : int
        Iteration cap.
    preconditioner : str
        ``"amg"`` (aggregation algebraic multigrid, pyamg: iterations nearly
        independent of the volume size) or ``"jacobi"``.

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
    ``D_eff / D = J * n0 / (n1 * n2)`` with ``J`` the scaled flux. ``J`` is
    the mean over all ``n0 + 1`` planes normal to the flux (equal at the
    exact solution); its error is second order in the solver's error, so it
    is accurate to 0.01 % long before the flux through one face is.
    Clusters that do not join both faces carry no flux and are left out of
    the solve; they still count in ``eps``, as in TauFactor.
    """
    mask = np.asarray(mask, dtype=bool)
    n0, n1, n2 = mask.shape
    eps = float(mask.mean())
    system = _system(mask, spacing)
    if system is None:
        return float("inf")
    matrix, rhs, c, weights, offset = system
    if preconditioner == "amg":
        precond = _amg_preconditioner(matrix)
    elif preconditioner == "jacobi":
        inverse_diagonal = 1.0 / matrix.diagonal()

        def precond(r):
            return inverse_diagonal * r
    else:
        raise ValueError(f"preconditioner must be 'amg' or 'jacobi', got {preconditioner!r}")

    def mean_flux(x):
        return (weights @ x + offset) / (n0 + 1)

    r = rhs - matrix @ c
    z = precond(r)
    p, rz = z.copy(), r @ z
    flux, calm = mean_flux(c), 0
    tiny = 1e-12 * np.linalg.norm(rhs)  # the start is already the solution (straight channels)
    for _ in range(maxiter):
        if np.linalg.norm(r) <= tiny:
            break
        q = matrix @ p
        alpha = rz / (p @ q)
        c += alpha * p
        r -= alpha * q
        new = mean_flux(c)
        calm = calm + 1 if abs(new - flux) <= tol * abs(new) else 0
        flux = new
        if calm == 2:
            break
        z = precond(r)
        rz, rz_old = r @ z, rz
        p *= rz / rz_old
        p += z
    else:
        raise RuntimeError(f"finite-volume tortuosity did not converge in {maxiter} iterations")
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
    spacing = [float(voxel_size[axis])] + [float(voxel_size[a]) for a in range(3) if a != axis]
    cubic = np.allclose(spacing, spacing[0], rtol=1e-6)
    on_gpu = device.startswith("cuda") and cubic
    # the finite-volume solve labels the phase once and decides percolation itself
    if on_gpu and not percolates(mask, axis):
        return {"tau": float("inf"), "epsilon": eps, "D_rel": 0.0, "percolates": False,
                "solver": "percolation check"}
    moved = np.ascontiguousarray(np.moveaxis(mask, axis, 0))
    if on_gpu:
        tau, name = taufactor_tau(moved, device=device, conv_crit=conv_crit,
                                  iter_limit=iter_limit), "taufactor"
    else:
        tau, name = finite_volume_tau(moved, spacing), "finite volume, AMG-CG (fibrecon)"
    if not np.isfinite(tau) or tau <= 0:
        return {"tau": float("inf"), "epsilon": eps, "D_rel": 0.0, "percolates": False,
                "solver": name}
    return {"tau": tau, "epsilon": eps, "D_rel": eps / tau, "percolates": True, "solver": name}
