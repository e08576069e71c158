"""Read a raw acquisition slice by slice, resolve its voxel size, correct drift, write."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # noqa: F821 (conda envs clear PYTHONPATH)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from fibrecon import MIN_EDGE_VOXELS, files  # noqa: E402
from fibrecon.align import (MIN_SPREAD_TILE_PX, AlignSettings, aligned_slices,  # noqa: E402
                            drift_sd_message, drift_sd_summary, fill_border_warning,
                            register_stack, roi_window)
from fibrecon.plot import drift_figure  # noqa: E402
from fibrecon.runlog import progress, rule_log  # noqa: E402
from fibrecon.samples import fit_roi, parse_roi, resolve_voxel_size  # noqa: E402

p = snakemake.params  # noqa: F821
settings = AlignSettings.from_config(p.settings)
out = snakemake.output  # noqa: F821
with rule_log(snakemake.log[0]) as log:  # noqa: F821
    raw_dir = snakemake.input.raw  # noqa: F821
    raw = files.RawStack(raw_dir, p.pattern, p.kvs, databar=p.databar)
    for warning in raw.metadata.get("warnings", []):
        log.warning("metadata: %s", warning)
    for note in raw.notes:
        log.info("raw files: %s", note)
    voxel, origin = resolve_voxel_size(p.voxel, raw.metadata, source=raw_dir)
    log.info("%s: %s %s, voxel (dz, dy, dx) = %s um from %s", raw_dir, raw.shape, raw.dtype,
             voxel, origin)
    # a detected band is a guess from the pixels: say it louder than a value from the metadata
    (log.warning if raw.databar["origin"].startswith("detected") else log.info)(
        "data bar: %d rows cut at the bottom (%s); set raw: databar to a number or none if "
        "this is wrong", raw.databar["rows"], raw.databar["origin"])
    extent = (raw.shape[0], *raw.shape[2:])
    if min(extent) < MIN_EDGE_VOXELS:
        log.warning("%s: a stack of %s (z, y, x) voxels: the 3D metrics need at least %d on "
                    "every axis, so the metrics job of this sample will stop; alignment, "
                    "segmentation, the QC figure and the volume are made (e.g. snakemake "
                    "results/qc/%s.png results/volume/%s.tif for a single image)", raw_dir,
                    extent, MIN_EDGE_VOXELS, snakemake.wildcards.sample,  # noqa: F821
                    snakemake.wildcards.sample)  # noqa: F821
    # the region of interest is checked against the images before any work
    roi_z, roi_y, roi_x = fit_roi(parse_roi(p.roi), extent,
                                  source=f"{raw_dir} (sample sheet column roi {p.roi!r})")
    try:
        alignment = register_stack(raw, settings, progress=progress("registering"))
    except ValueError as exc:
        raise ValueError(f"{raw_dir}: {exc}") from exc
    plan, result, (rows, cols) = alignment.plan, alignment.result, alignment.window
    border_warning = fill_border_warning(alignment.fill_borders, settings.frame, len(raw))
    if border_warning:
        log.warning("%s", border_warning)
    if p.roi:  # registered on whole slices, written for the region of interest only
        try:
            (rows, cols), lost = roi_window((rows, cols), roi_y, roi_x)
        except ValueError as exc:
            raise ValueError(f"{raw_dir}: roi {p.roi!r}: {exc}") from exc
        if lost:
            log.warning("roi %r reaches beyond the region every slice covers after the drift "
                        "correction; cut to it: %s", p.roi, "; ".join(lost))
        log.info("region of interest %r: slices %d:%d, rows %d:%d, columns %d:%d of the raw "
                 "images", p.roi, roi_z.start, roi_z.stop, rows.start, rows.stop, cols.start,
                 cols.stop)
    # the whole image (structure registration) and a detected cap (rows dropped) are worth a look
    (log.info if plan.source == "config" else log.warning)("%s", plan.note)
    drift = result.drift
    spread = drift_sd_summary(alignment.drift_sd, settings.spread_tiles)
    message = drift_sd_message(spread)
    if message is not None:
        (log.warning if message[0] else log.info)("%s", message[1])
    elif plan.window is None and settings.spread_tiles >= 2:
        log.info("images too small for %dx%d tiles of at least %d px (after align: downsample "
                 "%d): the drift error of the registration on the structure is not estimated",
                 settings.spread_tiles, settings.spread_tiles, MIN_SPREAD_TILE_PX,
                 settings.downsample)
    if result.flagged.any():
        log.warning("flagged slices (too little structure or no reliable match): %s",
                    np.flatnonzero(result.flagged).tolist())
    log.info("drift y %.2f..%.2f px, x %.2f..%.2f px; output rows %s, columns %s",
             drift[:, 0].min(), drift[:, 0].max(), drift[:, 1].min(), drift[:, 1].max(),
             rows, cols)
    nc = raw.shape[1]
    shape = (roi_z.stop - roi_z.start, nc, rows.stop - rows.start, cols.stop - cols.start)
    files.write_volume_slices(
        out.stack, aligned_slices(raw, drift, (rows, cols), fill=settings.pad_value,
                                  progress=progress("shifting"), z=roi_z),
        shape, raw.dtype, voxel, channels=True)
    files.write_table(out.shifts, pd.DataFrame({
        "slice": range(len(drift)), "drift_y_px": drift[:, 0], "drift_x_px": drift[:, 1],
        "quality": result.quality, "flagged": result.flagged,
        "drift_sd_px": (np.full(len(drift), np.nan) if alignment.drift_sd is None
                        else alignment.drift_sd)}))
    files.write_json(out.info, {
        "kvs": p.kvs,
        "voxel_size_um": voxel,
        "voxel_size_origin": origin,
        "frame": settings.frame,
        "pad_value": settings.pad_value if settings.frame == "pad" else None,
        "origin_yx": [rows.start, cols.start],
        "roi": {"requested": p.roi, "slices": [roi_z.start, roi_z.stop],
                "rows": [rows.start, rows.stop], "columns": [cols.start, cols.stop]},
        "databar": raw.databar,
        "registration": {"window": plan.window, "source": plan.source,
                         "trim_top_px": plan.trim_top, "drift_sd": spread},
        "fill_borders": alignment.fill_borders,
        "flagged_slices": np.flatnonzero(result.flagged).tolist(),
        "instrument": raw.metadata,
    })
    files.write_figure(out.qc, drift_figure(drift, result.quality, result.flagged,
                                         title=snakemake.wildcards.sample,  # noqa: F821
                                         sd=alignment.drift_sd))
