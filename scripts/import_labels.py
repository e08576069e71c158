"""Read a label volume segmented elsewhere, resolve its voxel size, write it as fibrecon's."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # noqa: F821 (conda envs clear PYTHONPATH)

import numpy as np  # noqa: E402

from fibrecon import PHASES, files, phase_counts  # noqa: E402
from fibrecon.runlog import rule_log  # noqa: E402
from fibrecon.samples import fit_roi, parse_roi, resolve_voxel_size  # noqa: E402

out = snakemake.output  # noqa: F821
with rule_log(snakemake.log[0]) as log:  # noqa: F821
    path = snakemake.input.labels  # noqa: F821
    labels = files.read_label_volume(path, all_phases=False)
    roi, kept = snakemake.params.roi, None  # noqa: F821
    if roi:  # the sheet's region of interest, in the volume's voxels
        box = fit_roi(parse_roi(roi), labels.shape, source=f"{path} (roi {roi!r})")
        labels = labels[box]
        kept = {"requested": roi, **{k: [b.start, b.stop] for k, b in
                                     zip(("slices", "rows", "columns"), box)}}
        log.info("region of interest %r: %s voxels kept", roi, labels.shape)
    meta = files.read_sem_metadata(path)
    for warning in meta.get("warnings", []):
        log.warning("metadata: %s", warning)
    voxel, origin = resolve_voxel_size(snakemake.params.voxel, meta, source=path)  # noqa: F821
    counts = phase_counts(labels, path)
    log.info("%s: %s labels, voxel (dz, dy, dx) = %s um from %s; fractions %s", path,
             labels.shape, voxel, origin,
             {PHASES[k]: round(float(counts[k]) / labels.size, 4) for k in PHASES})
    files.write_volume(out.labels, labels.astype(np.uint8), voxel)
    files.write_json(out.info, {
        "kvs": [], "voxel_size_um": voxel, "voxel_size_origin": origin,
        "source": str(path), "source_sha256": files.file_sha256(path), "roi": kept,
        "instrument": meta,
    })
