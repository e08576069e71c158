"""Figures: orthogonal slices of a label volume, metrics against process parameters."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

__all__ = ["PHASE_COLOURS", "orthoslices", "volume_view", "metric_vs_parameters", "series_summary",
           "axis_label", "varying_parameters", "drift_figure",
           "three_panel", "annotation_overview", "size_distribution", "correlation_heatmap",
           "representative_volume"]

#: Display colours of pore, AM, CBD.
PHASE_COLOURS = ListedColormap(["#1f1f3a", "#e0b040", "#3aa0a0"])


def orthoslices(labels: np.ndarray, voxel_size, title: str = ""):
    """Three orthogonal mid-planes of a label volume at true physical scale.

    Parameters
    ----------
    labels : ndarray of uint8, (z, y, x)
    voxel_size : tuple of float
        (dz, dy, dx) in micrometres.
    title : str

    Returns
    -------
    matplotlib.figure.Figure
    """
    dz, dy, dx = voxel_size
    nz, ny, nx = labels.shape
    views = [
        ("xy (slice z = %d)" % (nz // 2), labels[nz // 2], (0, nx * dx, ny * dy, 0), "x", "y"),
        ("xz (y = %d)" % (ny // 2), labels[:, ny // 2], (0, nx * dx, nz * dz, 0), "x", "z"),
        ("yz (x = %d)" % (nx // 2), labels[:, :, nx // 2], (0, ny * dy, nz * dz, 0), "y", "z"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.2), constrained_layout=True)
    for ax, (name, img, extent, xl, yl) in zip(axes, views):
        im = ax.imshow(img, cmap=PHASE_COLOURS, vmin=-0.5, vmax=2.5, extent=extent,
                       interpolation="nearest")
        ax.set_title(name)
        ax.set_xlabel(f"{xl} (µm)")
        ax.set_ylabel(f"{yl} (µm)")
    cb = fig.colorbar(im, ax=axes, ticks=[0, 1, 2], shrink=0.8)
    cb.ax.set_yticklabels(["pore", "AM", "CBD"])
    if title:
        fig.suptitle(title)
    return fig


#: Unit of a metric, from the suffix of its name.
_UNITS = (("_per_um3", "1/µm³"), ("_per_um", "1/µm"), ("_um3", "µm³"), ("_um2", "µm²"),
          ("_um", "µm"), ("_min", "min"), ("_rpm", "rpm"), ("_N_per_mm", "N/mm"),
          ("_percent", "%"))


def axis_label(name: str) -> str:
    """``d50_um`` -> ``d50 (µm)``; a volume fraction, tortuosity or other ratio -> ``(-)``.

    Examples
    --------
    >>> axis_label("specific_area_am_pore_per_um"), axis_label("tau_pore_y")
    ('specific area am pore (1/µm)', 'tau pore y (-)')
    """
    for suffix, unit in _UNITS:
        if name.endswith(suffix):
            return f"{name[: -len(suffix)].replace('_', ' ')} ({unit})"
    return f"{name.replace('_', ' ')} (-)"


def varying_parameters(table: "pandas.DataFrame", parameters, group: str | None = "series"):
    """The numeric process parameters that take two or more values within at least one series."""
    from pandas.api.types import is_numeric_dtype

    groups = [part for _, part in table.groupby(group, sort=False)] if group in table \
        else [table]
    return [p for p in parameters if p != group and p in table and is_numeric_dtype(table[p])
            and any(part[p].dropna().nunique() > 1 for part in groups)]


def _label_points(ax, points):
    """Sample names beside their points, each where it overlaps no other label (else left out)."""
    ax.figure.canvas.draw()  # the axis limits and layout the labels are placed in
    renderer = ax.figure.canvas.get_renderer()
    placed = []
    offsets = [(4, 4), (4, -11), (-4, 4), (-4, -11)]
    for x, y, text in points:
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        for dx, dy in offsets:
            label = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points",
                                fontsize=7, ha="right" if dx < 0 else "left")
            box = label.get_window_extent(renderer).expanded(1.05, 1.1)
            if not any(box.overlaps(other) for other in placed):
                placed.append(box)
                break
            label.remove()


SAMPLING_SPREAD = "sampling spread: ±1 sd of the metric over sub-volumes of half the edge"
SEGMENTATION_SD = ("segmentation: ±1 sd from boundaries moved by the network's calibrated "
                   "uncertainty")


def _error_bars(ax, x, y, part, metric, colour, **kwargs):
    """A metric's points with both error bars: sampling (thin, capped) and segmentation
    (wide, pale), each where the table has it."""
    seg = part.get(f"{metric}_sd_segmentation")
    if seg is not None:
        seg = seg.loc[x.index].replace([np.inf, -np.inf], np.nan)
        if seg.notna().any():
            ax.errorbar(x, y, yerr=seg, fmt="none", ecolor=colour, elinewidth=5, alpha=0.3)
    err = part.get(f"{metric}_sd_half_edge")
    return ax.errorbar(x, y, yerr=None if err is None else err.loc[x.index], color=colour,
                       capsize=3, **kwargs)


def metric_vs_parameters(table: "pandas.DataFrame", metric: str, parameters, group: str | None = "series"):
    """One metric against each process parameter that varies within a series.

    Parameters
    ----------
    table : pandas.DataFrame
        The series table.
    metric : str
        Column to plot on the y axis (its unit read from its name, :func:`axis_label`).
    parameters : sequence of str
        Process-parameter columns; non-numeric ones and those no series varies are
        left out (:func:`varying_parameters`).
    group : str or None
        Column whose values colour the points (one colour and legend entry
        per series, e.g. a calendering and a mixing series in one sheet);
        ignored when the table has no such column.

    Returns
    -------
    matplotlib.figure.Figure
        One panel per varying parameter (a note when there is none); error
        bars = the representative-volume spread (named in the legend), sample
        names where they do not overprint.
    """
    numeric = varying_parameters(table, parameters, group)
    if not numeric:
        fig, ax = plt.subplots(figsize=(4, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, f"{metric}: no process parameter varies", ha="center")
        return fig
    fig, axes = plt.subplots(1, len(numeric), figsize=(3.6 * len(numeric), 3.4),
                             constrained_layout=True, squeeze=False)
    err_col = f"{metric}_sd_half_edge"  # representative-volume spread, where measured
    seg_col = f"{metric}_sd_segmentation"  # segmentation doubt, where probabilities exist
    groups = (list(table.groupby(group, sort=False, dropna=False)) if group in table
              else [(None, table)])
    colours = plt.get_cmap("tab10").colors
    for ax, p in zip(axes[0], numeric):
        points = []
        for i, (name, part) in enumerate(groups):
            y = part[metric].replace([np.inf, -np.inf], np.nan)
            shown = part[p].notna() & y.notna()
            if not shown.any() or part[p][shown].nunique() < 2:
                continue  # this series does not vary this parameter
            _error_bars(ax, part[p][shown], y[shown], part, metric, colours[i % len(colours)],
                        fmt="o", label=None if name is None else str(name))
            points += [(row[p], row[metric], str(row["sample"]))
                       for _, row in part[shown].iterrows()]
        handles, labels = ax.get_legend_handles_labels()
        if err_col in table:
            handles.append(plt.Line2D([], [], color="grey", marker="|", linestyle="none",
                                      markersize=10))
            labels.append("error bar: sampling spread")
        if seg_col in table and table[seg_col].replace([np.inf], np.nan).notna().any():
            handles.append(plt.Line2D([], [], color="grey", lw=5, alpha=0.3))
            labels.append("error bar: segmentation")
        if handles:
            ax.legend(handles, labels, title=group if group in table else None, fontsize=7,
                      title_fontsize=7)
        ax.set_xlabel(axis_label(p))
        ax.set_ylabel(axis_label(metric))
        _label_points(ax, points)
    notes = [n for col, n in ((err_col, SAMPLING_SPREAD), (seg_col, SEGMENTATION_SD))
             if col in table]
    if notes:
        fig.suptitle("\n".join(notes), fontsize=7, color="dimgrey")
    return fig


def series_summary(table: "pandas.DataFrame", metrics, parameters, group: str = "series"):
    """Small multiples: each key metric (columns) against the main parameter of each series (rows).

    A series' main parameter is the process parameter it varies most (relative
    range); error bars are the sampling spread (thin) and the segmentation sd
    (wide, pale).

    Returns
    -------
    matplotlib.figure.Figure
    """
    metrics = [m for m in metrics if m in table]
    groups = [(n, part) for n, part in table.groupby(group, sort=False)] if group in table \
        else [("all samples", table)]
    rows = []
    for name, part in groups:
        varied = varying_parameters(part, parameters, group)
        if varied:
            spread = {p: (part[p].max() - part[p].min()) / (abs(part[p]).max() or 1)
                      for p in varied}
            rows.append((name, part, max(varied, key=spread.get)))
    if not rows or not metrics:
        fig, ax = plt.subplots(figsize=(4, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no series varies a process parameter", ha="center")
        return fig
    fig, axes = plt.subplots(len(rows), len(metrics), figsize=(2.6 * len(metrics),
                                                             2.3 * len(rows)),
                             constrained_layout=True, squeeze=False)
    colours = plt.get_cmap("tab10").colors
    for r, (name, part, p) in enumerate(rows):
        order = part.sort_values(p)
        for c, m in enumerate(metrics):
            ax = axes[r][c]
            y = order[m].replace([np.inf, -np.inf], np.nan)
            _error_bars(ax, order[p], y, order, m, colours[r % len(colours)], fmt="o-",
                        markersize=4)
            ax.set_xlabel(axis_label(p), fontsize=8)
            ax.set_ylabel(axis_label(m), fontsize=8)
            ax.tick_params(labelsize=7)
            if c == 0:
                ax.set_title(str(name), fontsize=9, loc="left")
    fig.suptitle("Key metrics against each series' main process parameter\n(error bars: "
                 "thin = sampling spread, wide pale = segmentation)", fontsize=10)
    return fig


def drift_figure(drift: np.ndarray, quality: np.ndarray, flagged: np.ndarray, title: str = "",
                 sd: np.ndarray | None = None):
    """QC of the alignment: drift path per slice and match quality, flagged slices marked.

    ``sd`` (px per slice, :func:`fibrecon.align.estimate_drift_spread`) draws a band of
    plus and minus 2 sd about each path.
    """
    z = np.arange(len(drift))
    fig, (a, b) = plt.subplots(2, 1, figsize=(7, 5), sharex=True, constrained_layout=True)
    for axis, name in enumerate("yx"):
        line, = a.plot(z, drift[:, axis], label=name)
        if sd is not None:
            a.fill_between(z, drift[:, axis] - 2 * sd, drift[:, axis] + 2 * sd,
                           color=line.get_color(), alpha=0.2, linewidth=0,
                           label=f"{name} ± 2 sd (structure)")
    a.set_ylabel("drift (px)")
    a.legend()
    b.plot(z, quality, color="0.3")
    if flagged.any():
        b.plot(z[flagged], quality[flagged], "rx", label="flagged")
        b.legend()
    b.set_ylim(0, 1.02)
    b.set_xlabel("slice")
    b.set_ylabel("match quality")
    if title:
        fig.suptitle(title)
    return fig


def three_panel(original: np.ndarray, preprocessed: np.ndarray, labels: np.ndarray,
                voxel_size, title: str = "", uncertainty: np.ndarray | None = None,
                uncertain_share: dict | None = None):
    """The stage QC figure: original | preprocessed | segmented (| where the network is unsure),
    one slice at physical scale.

    Parameters
    ----------
    original, preprocessed : ndarray, (y, x)
        The aligned raw slice and the same slice after preprocessing.
    labels : ndarray, (y, x)
        Its segmentation (0 pore, 1 AM, 2 CBD).
    voxel_size : tuple of float
        (dz, dy, dx) in micrometres.
    uncertainty : ndarray, (y, x), optional
        Normalised entropy of the calibrated probabilities (0 certain, 1 a
        three-way tie): a fourth panel, the labels' boundaries drawn over it.
    uncertain_share : dict, optional
        Share of uncertain voxels per phase in the whole volume, printed
        under the fourth panel.
    """
    _, dy, dx = voxel_size
    extent = (0, original.shape[1] * dx, original.shape[0] * dy, 0)
    n = 3 if uncertainty is None else 4
    fig, axes = plt.subplots(1, n, figsize=(4.4 * n, 4.4), constrained_layout=True)
    lo, hi = np.percentile(original, [0.5, 99.5])
    axes[0].imshow(original, cmap="gray", vmin=lo, vmax=hi, extent=extent)
    axes[0].set_title("original (aligned)")
    axes[1].imshow(preprocessed, cmap="gray", vmin=0, vmax=1, extent=extent)
    axes[1].set_title("preprocessed")
    axes[2].imshow(labels, cmap=PHASE_COLOURS, vmin=-0.5, vmax=2.5, extent=extent,
                   interpolation="nearest")
    axes[2].set_title("segmented: pore / AM / CBD")
    if uncertainty is not None:
        im = axes[3].imshow(uncertainty, cmap="magma", vmin=0, vmax=1, extent=extent,
                            interpolation="nearest")
        fig.colorbar(im, ax=axes[3], shrink=0.8, label="entropy (0 sure, 1 tie)")
        axes[3].set_title("where the network is unsure")
        if uncertain_share:
            axes[3].text(0.0, -0.2, "uncertain voxels (p < 0.8): " + ", ".join(
                f"{k.rsplit('_', 1)[-1]} {v:.1%}" for k, v in uncertain_share.items()
                if k != "uncertain_fraction"), transform=axes[3].transAxes, fontsize=7)
    for ax in axes:
        ax.set_xlabel("x (µm)")
    axes[0].set_ylabel("y (µm)")
    if title:
        fig.suptitle(title)
    return fig


def annotation_overview(table: "pandas.DataFrame", suggested, images, labels, entropy,
                        voxel_size, title: str = ""):
    """Which slices to annotate: mean entropy per slice, and each suggested slice.

    Parameters
    ----------
    table : pandas.DataFrame
        Per-slice uncertainty (``z``, ``mean_entropy``).
    suggested : sequence of int
        The suggested slices (marked on the curve, one row each below).
    images, labels, entropy : sequences of ndarray (y, x)
        Of each suggested slice: first preprocessed channel, labels, entropy.
    voxel_size : tuple of float
    """
    _, dy, dx = voxel_size
    n = len(suggested)
    fig = plt.figure(figsize=(10, 2.2 + 2.6 * n), constrained_layout=True)
    grid = fig.add_gridspec(n + 1, 3, height_ratios=[0.8] + [1] * n)
    ax = fig.add_subplot(grid[0, :])
    ax.plot(table["z"], table["mean_entropy"], color="k", lw=1)
    for z in suggested:
        ax.axvline(z, color="tab:red", lw=0.8, ls=":")
    ax.set_xlabel("slice z")
    ax.set_ylabel("mean entropy")
    ax.set_title("uncertainty per slice; red: suggested for annotation (most uncertain, spaced)",
                 fontsize=9)
    for r, (z, img, lab, ent) in enumerate(zip(suggested, images, labels, entropy), start=1):
        extent = (0, img.shape[1] * dx, img.shape[0] * dy, 0)
        panels = ((img, dict(cmap="gray", vmin=0, vmax=1), f"slice {z}: preprocessed"),
                  (lab, dict(cmap=PHASE_COLOURS, vmin=-0.5, vmax=2.5, interpolation="nearest"),
                   "current labels"),
                  (ent, dict(cmap="magma", vmin=0, vmax=1), "entropy"))
        for c, (data, style, name) in enumerate(panels):
            a = fig.add_subplot(grid[r, c])
            a.imshow(data, extent=extent, **style)
            a.set_title(name, fontsize=8)
            a.tick_params(labelsize=6)
            if r == n:
                a.set_xlabel("x (µm)", fontsize=7)
            if c == 0:
                a.set_ylabel("y (µm)", fontsize=7)
    if title:
        fig.suptitle(title)
    return fig


def size_distribution(particles: "pandas.DataFrame", title: str = ""):
    """Histogram of equivalent-sphere diameters, whole and cut particles apart, with d10/d50/d90."""
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    whole = particles.loc[~particles["cut"], "diameter_um"]
    cut = particles.loc[particles["cut"], "diameter_um"]
    top = float(particles["diameter_um"].max()) if len(particles) else 1.0
    bins = np.linspace(0, top * 1.05, 25)
    ax.hist([whole, cut], bins=bins, stacked=True, color=["#1f77b4", "#c7c7c7"],
            label=[f"whole ({len(whole)})", f"cut by the boundary ({len(cut)})"])
    for q in (10, 50, 90):
        if len(whole):
            ax.axvline(np.percentile(whole, q), color="k", ls=":", lw=1)
            ax.text(np.percentile(whole, q), ax.get_ylim()[1] * 0.95, f"d{q}", ha="center",
                    fontsize=8)
    ax.set_xlabel("equivalent-sphere diameter (µm)")
    ax.set_ylabel("particles")
    ax.legend()
    if title:
        ax.set_title(title)
    return fig


def correlation_heatmap(table: "pandas.DataFrame", parameters, metrics):
    """Pearson correlation of every numeric process parameter with every metric across samples.

    With fewer than three samples or a constant column, the cell is blank.
    """
    from pandas.api.types import is_numeric_dtype

    params = [p for p in parameters if is_numeric_dtype(table[p])]
    mets = [m for m in metrics if m in table and is_numeric_dtype(table[m])]
    values = table[params + mets].replace([np.inf, -np.inf], np.nan).astype(float)
    corr = np.full((len(params), len(mets)), np.nan)
    if len(table) >= 3:
        for i, p in enumerate(params):
            for j, m in enumerate(mets):
                a, b = values[p], values[m]
                ok = a.notna() & b.notna()
                if ok.sum() >= 3 and a[ok].std() > 0 and b[ok].std() > 0:
                    corr[i, j] = np.corrcoef(a[ok], b[ok])[0, 1]
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * len(mets), 1.5 + 0.45 * len(params)),
                           constrained_layout=True)
    im = ax.imshow(corr, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks(range(len(mets)), mets, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(params)), params, fontsize=8)
    for (i, j), c in np.ndenumerate(corr):
        if np.isfinite(c):
            ax.text(j, i, f"{c:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=ax, label=f"Pearson r ({len(table)} samples)")
    return fig


def representative_volume(spread: "pandas.DataFrame", title: str = ""):
    """Each metric's relative spread over sub-volumes against their volume.

    Parameters
    ----------
    spread : pandas.DataFrame
        From :func:`fibrecon.rve.subvolume_spread`.
    title : str

    Returns
    -------
    matplotlib.figure.Figure
        One panel per metric group, one line per metric: the standard
        deviation over sub-volumes as a percentage of the mean, at each
        sub-volume size. A line that has fallen to a few per cent well before
        the full volume means the imaged volume is representative for that
        metric; the x axis reaches the whole volume, which has no spread of
        its own (one value). The relative transport and MacMullin numbers are
        left out (they follow the tortuosity factor and the volume fraction).
    """
    groups = list(dict.fromkeys(spread["group"]))
    shown = spread[~spread["metric"].str.match(r"(relative|macmullin)_") & (spread["n"] > 1)]
    cols = min(4, len(groups))
    rows = -(-len(groups) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.9 * rows),
                             constrained_layout=True, squeeze=False)
    for ax, group in zip(axes.ravel(), groups):
        part = shown[shown["group"] == group]
        for name, line in part.groupby("metric", sort=False):  # one line per metric
            ax.plot(line["volume_um3"], 100 * line["sd"] / line["mean"].abs(), "o-", ms=3,
                    label=name)
        ax.set_xscale("log")
        ax.set_xlim(spread["volume_um3"].min() / 1.5, spread["volume_um3"].max() * 1.5)
        ax.set_ylim(bottom=0)
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(group, fontsize=8)
        ax.set_xlabel("sub-volume (um^3)", fontsize=8)
        ax.set_ylabel("sd / mean (%)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=5.5, frameon=False)
    for ax in axes.ravel()[len(groups):]:
        ax.axis("off")
    if title:
        fig.suptitle(f"{title}: representative volume (spread over sub-volumes)", fontsize=9)
    return fig


def volume_view(labels: np.ndarray, voxel_size, *, title: str = "", max_voxels: int = 4_000_000,
                window_px=(900, 720)) -> np.ndarray:
    """A rendered 3D view of a phase volume: AM and CBD as coloured solids, axes in µm.

    Rendered offscreen with PyVista/VTK (no display needed). The pores are
    left transparent; y, the through-plane (electrode thickness) direction of
    a FIB-SEM cross-section, and z, the milling direction, are named on the
    axes. Volumes larger than ``max_voxels`` are shown block-subsampled.

    Parameters
    ----------
    labels : ndarray of int, (z, y, x)
        0 pore, 1 AM, 2 CBD.
    voxel_size : sequence of 3 float
        (dz, dy, dx) in µm.
    title : str
        Printed above the view.

    Returns
    -------
    ndarray of uint8, (height, width, 3)
        The image (write it with :func:`fibrecon.files.write_image`).
    """
    import pyvista as pv

    labels = np.asarray(labels)
    step = max(1, int(np.ceil((labels.size / max_voxels) ** (1 / 3))))
    labels = labels[::step, ::step, ::step]
    spacing = [float(v) * step for v in voxel_size][::-1]  # VTK's (x, y, z)
    grid = pv.ImageData(dimensions=np.array(labels.shape[::-1]) + 1, spacing=spacing)
    grid.cell_data["phase"] = labels.ravel(order="C")  # x varies fastest, as VTK's cells do
    plotter = pv.Plotter(off_screen=True, window_size=list(window_px))
    plotter.set_background("white")
    for phase in (1, 2):
        part = grid.threshold([phase - 0.5, phase + 0.5], scalars="phase")
        if part.n_cells:
            plotter.add_mesh(part.extract_surface(algorithm=None), color=PHASE_COLOURS.colors[phase],
                             smooth_shading=False, show_edges=False)
    plotter.show_bounds(xtitle="x (um)", ytitle="y (um): through-plane",
                        ztitle="z (um): milling", font_size=12, color="black", location="outer")
    plotter.add_text(f"{title}  AM gold, CBD teal, pores clear".strip(), font_size=11,
                     color="black")
    plotter.camera_position = "iso"
    plotter.camera.zoom(0.85)
    image = plotter.screenshot(return_img=True)
    plotter.close()
    return np.asarray(image, dtype=np.uint8)
