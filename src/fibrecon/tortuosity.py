"""Tortuosity factors of a conducting phase, as TauFactor defines them.

``tau = eps * D / D_eff`` (Cooper et al. 2016): ``eps`` is the volume
fraction of the phase, ``D_eff / D`` its relative effective diffusivity
from a steady-state diffusion solve with fixed concentrations on the two
faces normal to the flux and no-flux walls elsewhere. A domain without
obstacles gives exactly 1; a phase that does not connect the two faces gives
``inf`` (never a negative value or NaN).

fibrecon solves TauFactor's finite-volume problem itself
(:func:`finite_volume_tau`, conjugate gradients preconditioned with an
aggregation multigrid built from pyamg's aggregation and Gauss-Seidel), for
any voxel shape, in float32 with float64 sums (about 35 bytes per voxel at
30 % porosity); it is checked against
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

import numba
import numpy as np
from pyamg.relaxation.relaxation import gauss_seidel
from scipy import ndimage as ndi
from scipy import sparse

__all__ = ["percolates", "tortuosity_factor", "finite_volume_tau", "taufactor_tau", "SPREAD_TOL"]

#: Stopping tolerance of :func:`finite_volume_tau` for the solves behind error bars (the
#: boundary-shifted volumes of the segmentation sd, the representative-volume sub-volumes):
#: tau within 0.04 % of the default 1e-4 solve on the demo's pore network (z, y, x: 2.4474 vs
#: 2.4482, 2.8174 vs 2.8187, 2.4747 vs 2.4757) in 75-85 % of its time; an error bar is a
#: difference of a few percent of tau.
SPREAD_TOL = 1e-3


def percolates(mask: np.ndarray, axis: int) -> bool:
    """Whether a face-connected path of ``mask`` joins the first and last plane along ``axis``."""
    comp, n = ndi.label(mask)
    if n == 0:
        return False
    first = np.unique(np.take(comp, 0, axis=axis))
    last = np.unique(np.take(comp, -1, axis=axis))
    return bool(np.intersect1d(first[first > 0], last[last > 0]).size)


@numba.njit(cache=True)
def _number_unknowns(comp, keep):
    """Relabel ``comp`` in place: 0..n-1 in C order where ``keep[comp]``, -1 elsewhere."""
    flat = comp.ravel()
    n = 0
    for v in range(flat.size):
        if keep[flat[v]]:
            flat[v] = n
            n += 1
        else:
            flat[v] = -1
    return n


@numba.njit(cache=True)
def _assemble(index, g, n):
    """CSR arrays of the finite-volume matrix (float32), flux weights and linear start."""
    n0, n1, n2 = index.shape
    indptr = np.zeros(n + 1, np.int64)
    for z in range(n0):  # pass 1: entries per row
        for y in range(n1):
            for x in range(n2):
                i = index[z, y, x]
                if i < 0:
                    continue
                k = 1 + (z > 0 and index[z - 1, y, x] >= 0) + (z < n0 - 1 and index[z + 1, y, x] >= 0)
                k += (y > 0 and index[z, y - 1, x] >= 0) + (y < n1 - 1 and index[z, y + 1, x] >= 0)
                k += (x > 0 and index[z, y, x - 1] >= 0) + (x < n2 - 1 and index[z, y, x + 1] >= 0)
                indptr[i + 1] = k
    for i in range(n):
        indptr[i + 1] += indptr[i]
    columns = np.empty(indptr[n], np.int32)
    values = np.empty(indptr[n], np.float32)
    weights = np.zeros(n, np.int8)
    start = np.empty(n, np.float64)
    nb = np.empty(7, np.int64)
    slot_axis = np.array([0, 1, 2, -1, 2, 1, 0])
    for z in range(n0):  # pass 2: (-z, -y, -x, self, +x, +y, +z): increasing column order
        for y in range(n1):
            for x in range(n2):
                i = index[z, y, x]
                if i < 0:
                    continue
                nb[0] = index[z - 1, y, x] if z > 0 else -1
                nb[1] = index[z, y - 1, x] if y > 0 else -1
                nb[2] = index[z, y, x - 1] if x > 0 else -1
                nb[3] = i
                nb[4] = index[z, y, x + 1] if x < n2 - 1 else -1
                nb[5] = index[z, y + 1, x] if y < n1 - 1 else -1
                nb[6] = index[z + 1, y, x] if z < n0 - 1 else -1
                p = indptr[i]
                diag = np.float32(0.0)
                diag_at = p
                for slot in range(7):
                    j = nb[slot]
                    if j < 0:
                        continue
                    columns[p] = j
                    axis = slot_axis[slot]
                    if axis < 0:
                        diag_at = p
                    else:
                        values[p] = -g[axis]
                        diag += g[axis]
                    p += 1
                if nb[0] >= 0:  # interfaces: flux sum of (c_b - c_a) over axis-0 links
                    weights[i] += 1
                if nb[6] >= 0:
                    weights[i] -= 1
                if z == 0:  # half-voxel link to c = 0; inlet flux 2 c
                    diag += 2.0
                    weights[i] += 2
                if z == n0 - 1:  # half-voxel link to c = 1; outlet flux 2 (1 - c)
                    diag += 2.0
                    weights[i] -= 2
                values[diag_at] = diag
                start[i] = (z + 0.5) / n0
    return indptr, columns, values, weights, start


def _system(mask: np.ndarray, spacing):
    """Finite-volume system of the flux-carrying voxels (None if the phase does not percolate).

    Built in two passes over the voxels (no per-direction temporaries), in
    float32: about 9 bytes per unknown and non-zero.

    Returns
    -------
    matrix : scipy.sparse.csr_matrix, float32
    rhs : ndarray of float32
    x0 : ndarray of float64
        The linear start (and the solution vector, updated in place).
    flux_weights, flux_offset : ndarray of int8, float
        ``(flux_weights @ c + flux_offset)`` is the flux summed over the
        ``n0 + 1`` planes normal to axis 0 (the inlet and outlet faces and
        every interface between slices), in units of the axis-0 conductance.
    """
    n0 = mask.shape[0]
    index, n_comp = ndi.label(mask, output=np.int32)
    first, last = np.unique(index[0]), np.unique(index[-1])
    through = np.intersect1d(first[first > 0], last[last > 0])  # clusters joining both faces
    if through.size == 0:
        return None
    keep = np.zeros(n_comp + 1, np.bool_)
    keep[through] = True
    n = _number_unknowns(index, keep)
    h = np.asarray(spacing, dtype=float)
    g = ((h[0] / h) ** 2).astype(np.float32)
    indptr, columns, values, weights, x0 = _assemble(index, g, n)
    outlet = index[-1][index[-1] >= 0]
    del index
    matrix = _csr(indptr, columns, values, n)
    rhs = np.zeros(n, np.float32)
    rhs[outlet] = 2.0
    return matrix, rhs, x0, weights, 2.0 * outlet.size


def _csr(indptr, indices, data, n):
    """Square CSR matrix from int64 ``indptr`` (made int32 when it fits, as ``indices`` are)."""
    if indptr[-1] < 2**31:
        indptr = indptr.astype(np.int32)
    return sparse.csr_matrix((data, indices, indptr), shape=(n, n))


@numba.njit(cache=True)
def _axpy(y, a, x):
    """``y += a * x`` without a temporary (y float64, x float32)."""
    for i in range(y.size):
        y[i] += a * x[i]


@numba.njit(cache=True)
def _dot(a, b):
    """Dot product of float32 vectors accumulated in float64."""
    total = 0.0
    for i in range(a.size):
        total += np.float64(a[i]) * np.float64(b[i])
    return total


@numba.njit(cache=True)
def _galerkin(indptr, indices, data, agg, n_agg):
    """CSR arrays of ``P^T A P`` for the aggregation prolongator ``P[i, agg[i]] = 1``.

    Rows are gathered aggregate by aggregate with a column marker (no
    ``A P`` product held in memory); columns sorted in each row; sums in
    float64, stored as float32.
    """
    n = agg.size
    first = np.zeros(n_agg + 1, np.int64)  # the fine rows of each aggregate
    for i in range(n):
        first[agg[i] + 1] += 1
    for a in range(n_agg):
        first[a + 1] += first[a]
    rows = np.empty(n, np.int32)
    fill = first[:-1].copy()
    for i in range(n):
        rows[fill[agg[i]]] = i
        fill[agg[i]] += 1
    where = np.full(n_agg, -1, np.int64)  # position of a coarse column in the current row
    c_indptr = np.zeros(n_agg + 1, np.int64)
    for a in range(n_agg):  # pass 1: entries per coarse row
        count = 0
        for q in range(first[a], first[a + 1]):
            i = rows[q]
            for p in range(indptr[i], indptr[i + 1]):
                b = agg[indices[p]]
                if where[b] != a:
                    where[b] = a
                    count += 1
        c_indptr[a + 1] = c_indptr[a] + count
    c_indices = np.empty(c_indptr[n_agg], np.int32)
    sums = np.zeros(c_indptr[n_agg], np.float64)
    where[:] = -1
    for a in range(n_agg):  # pass 2: sums, then columns sorted (insertion: rows are short)
        start = c_indptr[a]
        k = start
        for q in range(first[a], first[a + 1]):
            i = rows[q]
            for p in range(indptr[i], indptr[i + 1]):
                b = agg[indices[p]]
                if where[b] < start:
                    where[b] = k
                    c_indices[k] = b
                    k += 1
                sums[where[b]] += data[p]
        for u in range(start + 1, k):
            col, val = c_indices[u], sums[u]
            v = u - 1
            while v >= start and c_indices[v] > col:
                c_indices[v + 1], sums[v + 1] = c_indices[v], sums[v]
                v -= 1
            c_indices[v + 1], sums[v + 1] = col, val
    return c_indptr, c_indices, sums.astype(np.float32)


@numba.njit(cache=True)
def _restrict(r, agg, n_agg):
    """``P^T r``: the residual summed over each aggregate."""
    out = np.zeros(n_agg, r.dtype)
    for i in range(r.size):
        out[agg[i]] += r[i]
    return out


@numba.njit(cache=True)
def _prolong_add(x, agg, coarse):
    """``x += P coarse``."""
    for i in range(x.size):
        x[i] += coarse[agg[i]]


def _aggregate(matrix):
    """pyamg's standard aggregation of the matrix graph; isolated rows become their own aggregate."""
    from pyamg import amg_core

    n = matrix.shape[0]
    agg = np.empty(n, dtype=matrix.indices.dtype)
    roots = np.empty(n, dtype=matrix.indices.dtype)
    n_agg = amg_core.standard_aggregation(n, matrix.indptr, matrix.indices, agg, roots)
    lonely = np.flatnonzero(agg < 0)
    agg[lonely] = n_agg + np.arange(lonely.size, dtype=agg.dtype)
    return agg.astype(np.int32, copy=False), int(n_agg + lonely.size)


def _amg_preconditioner(matrix, max_coarse: int = 1000):
    """Aggregation-multigrid W-cycle, one forward / backward Gauss-Seidel sweep per level.

    Plain (unsmoothed) aggregation (pyamg's standard aggregation of the
    matrix graph), the coarse matrices ``P^T A P`` formed here aggregate by
    aggregate (:func:`_galerkin`) and the prolongator kept as one aggregate
    number per row: pyamg's ``smoothed_aggregation_solver`` builds the same
    hierarchy but holds ``A P``, block-sparse copies and the candidate
    vectors on the way (about 20 bytes per voxel more at the peak; same
    iterations, same tau). Gauss-Seidel sweeps are pyamg's. The coarsest
    level (at most ``max_coarse`` unknowns) is solved by a Cholesky factor.

    Returns
    -------
    callable
        ``r -> M r``, symmetric positive definite (a preconditioner for CG).
    """
    from scipy.linalg import cho_factor, cho_solve

    levels = []  # (A, aggregate of each row, number of aggregates)
    a = matrix
    while a.shape[0] > max_coarse:
        agg, n_agg = _aggregate(a)
        if n_agg >= a.shape[0]:  # no coarsening (e.g. a graph without edges)
            break
        indptr, indices, data = _galerkin(a.indptr, a.indices, a.data, agg, n_agg)
        levels.append((a, agg, n_agg))
        a = _csr(indptr, indices, data, n_agg)
    factor = cho_factor(a.toarray().astype(np.float64))

    def coarse_solve(b):
        return cho_solve(factor, b.astype(np.float64)).astype(b.dtype)

    def apply(r):
        if not levels:
            return coarse_solve(r)
        x = np.zeros_like(r)
        _w_cycle(levels, coarse_solve, 0, x, r)
        return x

    return apply


def _w_cycle(levels, coarse_solve, lvl, x, b):
    """One W-cycle from level ``lvl`` on ``A x = b``, updating ``x`` in place.

    A module function, not a closure that calls itself: such a closure is a
    reference cycle that keeps the whole hierarchy alive until the garbage
    collector runs (it held 60 bytes per voxel over three tortuosity solves).
    """
    a, agg, n_agg = levels[lvl]
    gauss_seidel(a, x, b, iterations=1, sweep="forward")
    t = a @ x
    np.subtract(b, t, out=t)
    coarse_b = _restrict(t, agg, n_agg)
    del t
    if lvl + 1 == len(levels):
        coarse_x = coarse_solve(coarse_b)
    else:
        coarse_x = np.zeros_like(coarse_b)
        _w_cycle(levels, coarse_solve, lvl + 1, coarse_x, coarse_b)  # W: two coarse cycles
        _w_cycle(levels, coarse_solve, lvl + 1, coarse_x, coarse_b)
    _prolong_add(x, agg, coarse_x)
    gauss_seidel(a, x, b, iterations=1, sweep="backward")


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
        return (_dot(weights, x) + offset) / (n0 + 1)

    # float32 matrix and work vectors (the memory budget); the solution c and all sums in float64
    r = rhs - matrix @ c.astype(np.float32)
    del rhs
    z = precond(r)
    p, rz = z.copy(), _dot(r, z)
    flux, calm = mean_flux(c), 0
    tiny = 1e-6 * np.sqrt(2.0 * offset)  # |rhs|: the start is the solution (straight channels)
    for _ in range(maxiter):
        if np.sqrt(_dot(r, r)) <= tiny:
            break
        q = matrix @ p
        alpha = rz / _dot(p, q)
        _axpy(c, alpha, p)
        q *= np.float32(alpha)
        r -= q
        del q
        new = mean_flux(c)
        calm = calm + 1 if abs(new - flux) <= tol * abs(new) else 0
        flux = new
        if calm == 2:
            break
        z = precond(r)
        rz, rz_old = _dot(r, z), rz
        p *= np.float32(rz / rz_old)
        p += z
        del z  # dead until the next preconditioning: room for q
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
    tol: float = 1e-4,
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
    tol : float
        :func:`finite_volume_tau`'s stopping tolerance (CPU and anisotropic
        voxels); :data:`SPREAD_TOL` for the solves behind error bars.

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
        tau, name = finite_volume_tau(moved, spacing, tol=tol), "finite volume, AMG-CG (fibrecon)"
    if not np.isfinite(tau) or tau <= 0:
        return {"tau": float("inf"), "epsilon": eps, "D_rel": 0.0, "percolates": False,
                "solver": name}
    return {"tau": tau, "epsilon": eps, "D_rel": eps / tau, "percolates": True, "solver": name}
