"""Segment a preprocessed stack into pore / AM / CBD."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # noqa: F821 (conda envs clear PYTHONPATH)

from fibrecon import io  # noqa: E402
from fibrecon.metrics import volume_fractions  # noqa: E402
from fibrecon.runlog import rule_log  # noqa: E402
from fibrecon.segment import segment_multiotsu  # noqa: E402

p = snakemake.params  # noqa: F821
with rule_log(snakemake.log[0]) as log:  # noqa: F821
    stack, voxel = io.read_volume(snakemake.input.stack)  # noqa: F821
    labels = segment_multiotsu(stack, channels=p.channels, nbins=p.nbins)
    log.info("method %s on channels %s: fractions %s", p.method, p.channels,
             volume_fractions(labels))
    io.write_volume(snakemake.output.labels, labels, voxel)  # noqa: F821
