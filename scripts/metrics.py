"""Compute one sample's metrics from its label volume."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # noqa: F821 (conda envs clear PYTHONPATH)

from fibrecon import io  # noqa: E402
from fibrecon.metrics import sample_metrics  # noqa: E402
from fibrecon.runlog import rule_log  # noqa: E402

p = snakemake.params  # noqa: F821
with rule_log(snakemake.log[0]) as log:  # noqa: F821
    labels, voxel = io.read_volume(snakemake.input.volume)  # noqa: F821
    metrics = sample_metrics(labels, voxel, tortuosity_axes=p.tortuosity_axes, device=p.device,
                             conv_crit=p.conv_crit)
    metrics = {"sample": snakemake.wildcards.sample, **metrics}  # noqa: F821
    log.info("%s", {k: v for k, v in metrics.items() if not isinstance(v, list)})
    io.write_json(snakemake.output.metrics, metrics)  # noqa: F821
