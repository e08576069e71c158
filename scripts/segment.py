"""Segment a preprocessed stack into pore / AM / CBD, one slice at a time."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # noqa: F821 (conda envs clear PYTHONPATH)

import numpy as np  # noqa: E402

from fibrecon import io  # noqa: E402
from fibrecon.runlog import progress, rule_log  # noqa: E402
from fibrecon.segment import (combine_channels, label_slice, multiotsu_thresholds,  # noqa: E402
                              sample_voxels)

p = snakemake.params  # noqa: F821
with rule_log(snakemake.log[0]) as log, io.VolumeReader(snakemake.input.stack) as stack:  # noqa: F821
    thresholds = multiotsu_thresholds(sample_voxels(stack, p.channels), nbins=p.nbins)
    log.info("method %s on channels %s: thresholds %s", p.method, p.channels, thresholds)
    labels = (label_slice(combine_channels(stack[z], p.channels), thresholds)
              for z in progress("labelling")(range(len(stack))))
    nz, _, ny, nx = stack.shape
    io.write_volume_slices(snakemake.output.labels, labels, (nz, ny, nx), np.uint8,  # noqa: F821
                           stack.voxel_size)
