"""Read a raw acquisition slice by slice, resolve its voxel size, correct drift, write."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # noqa: F821 (conda envs clear PYTHONPATH)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from fibrecon import files  # noqa: E402
from fibrecon.align import AlignSettings, aligned_slices, register_stack  # noqa: E402
from fibrecon.plot import drift_figure  # noqa: E402
from fibrecon.runlog import progress, rule_log  # noqa: E402
from fibrecon.samples import resolve_voxel_size  # noqa: E402

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
    try:
        alignment = register_stack(raw, settings, progress=progress("registering"))
    except ValueError as exc:
        raise ValueError(f"{raw_dir}: {exc}") from exc
    plan, result, (rows, cols) = alignment.plan, alignment.result, alignment.window
    # the whole image (structure registration) and a detected cap (rows dropped) are worth a look
    (log.info if plan.source == "config" else log.warning)("%s", plan.note)
    drift = result.drift
    if result.flagged.any():
        log.warning("flagged slices (too little structure or no reliable match): %s",
                    np.flatnonzero(result.flagged).tolist())
    log.info("drift y %.2f..%.2f px, x %.2f..%.2f px; output rows %s, columns %s",
             drift[:, 0].min(), drift[:, 0].max(), drift[:, 1].min(), drift[:, 1].max(),
             rows, cols)
    nz, nc = raw.shape[:2]
    shape = (nz, nc, rows.stop - rows.start, cols.stop - cols.start)
    files.write_volume_slices(
        out.stack, aligned_slices(raw, drift, (rows, cols), fill=settings.pad_value,
                                  progress=progress("shifting")),
        shape, raw.dtype, voxel, channels=True)
    files.write_table(out.shifts, pd.DataFrame({
        "slice": range(nz), "drift_y_px": drift[:, 0], "drift_x_px": drift[:, 1],
        "quality": result.quality, "flagged": result.flagged}))
    files.write_json(out.info, {
        "kvs": p.kvs,
        "voxel_size_um": voxel,
        "voxel_size_origin": origin,
        "frame": settings.frame,
        "pad_value": settings.pad_value if settings.frame == "pad" else None,
        "origin_yx": [rows.start, cols.start],
        "databar": raw.databar,
        "registration": {"window": plan.window, "source": plan.source,
                         "trim_top_px": plan.trim_top},
        "flagged_slices": np.flatnonzero(result.flagged).tolist(),
        "instrument": raw.metadata,
    })
    files.write_figure(out.qc, drift_figure(drift, result.quality, result.flagged,
                                         title=snakemake.wildcards.sample))  # noqa: F821
