"""Read a raw acquisition, resolve its voxel size, correct drift, write the aligned stack."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # noqa: F821 (conda envs clear PYTHONPATH)

import pandas as pd  # noqa: E402

from fibrecon import io  # noqa: E402
from fibrecon.align import apply_drift, estimate_drift  # noqa: E402
from fibrecon.runlog import progress, rule_log  # noqa: E402
from fibrecon.samples import resolve_voxel_size  # noqa: E402

p = snakemake.params  # noqa: F821
out = snakemake.output  # noqa: F821
with rule_log(snakemake.log[0]) as log:  # noqa: F821
    raw_dir = snakemake.input.raw  # noqa: F821
    stack, meta = io.read_raw_stack(raw_dir, p.pattern, p.kvs)
    voxel, origin = resolve_voxel_size(p.voxel, meta, source=raw_dir)
    log.info("read %s: %s %s, voxel (dz, dy, dx) = %s um from %s", raw_dir, stack.shape,
             stack.dtype, voxel, origin)
    drift = estimate_drift(stack, upsample_factor=p.upsample_factor,
                           progress=progress("registering"))
    aligned, window = apply_drift(stack, drift, crop=p.crop, progress=progress("shifting"))
    log.info("drift range y %.2f..%.2f px, x %.2f..%.2f px; crop %s", drift[:, 0].min(),
             drift[:, 0].max(), drift[:, 1].min(), drift[:, 1].max(), window)
    io.write_volume(out.stack, aligned, voxel, channels=True)
    io.write_table(out.shifts, pd.DataFrame({"slice": range(len(drift)),
                                             "drift_y_px": drift[:, 0],
                                             "drift_x_px": drift[:, 1]}))
    io.write_json(out.info, {
        "kvs": p.kvs,
        "voxel_size_um": voxel,
        "voxel_size_origin": origin,
        "crop_yx": [[window[0].start, window[0].stop], [window[1].start, window[1].stop]],
        "instrument": meta,
    })
