"""Preprocess an aligned stack in two streaming passes; also write it as OME-TIFF."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # noqa: F821 (conda envs clear PYTHONPATH)

import numpy as np  # noqa: E402

from fibrecon import files  # noqa: E402
from fibrecon.preprocess import (PreprocessParams, charging_summary,  # noqa: E402
                                 estimate_corrections, preprocessed_slices)
from fibrecon.runlog import progress, rule_log  # noqa: E402

params = PreprocessParams.from_config(snakemake.params.settings)  # noqa: F821
with rule_log(snakemake.log[0]) as log, files.VolumeReader(snakemake.input.stack) as stack:  # noqa: F821
    log.info("%s: %s, settings %s", stack.path, stack.shape, params)
    corrections = estimate_corrections(stack, params, progress=progress("estimating"))
    if corrections["charging_fraction"] is not None:
        message, warn = charging_summary(corrections["charging_fraction"])
        (log.warning if warn else log.info)("%s", message)
    files.write_volume_slices(
        snakemake.output.stack,  # noqa: F821
        preprocessed_slices(stack, params, corrections, progress=progress("correcting")),
        stack.shape, np.float32, stack.voxel_size, channels=True)
    with files.VolumeReader(snakemake.output.stack) as done:  # noqa: F821
        files.write_volume_slices(snakemake.output.ome, (done[z] for z in range(len(done))),  # noqa: F821
                               done.shape, done.dtype, done.voxel_size, channels=True, ome=True)
    log.info("wrote %s and its OME-TIFF copy", snakemake.output.stack)  # noqa: F821
