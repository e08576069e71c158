"""Compute one sample's metrics from its label volume."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # noqa: F821 (conda envs clear PYTHONPATH)

from fibrecon import AM, CBD, io  # noqa: E402
from fibrecon.metrics import sample_metrics  # noqa: E402
from fibrecon.plot import representative_volume, size_distribution  # noqa: E402
from fibrecon.runlog import rule_log  # noqa: E402

cfg = snakemake.params.settings  # noqa: F821
out = snakemake.output  # noqa: F821
sample = snakemake.wildcards.sample  # noqa: F821
with rule_log(snakemake.log[0]) as log:  # noqa: F821
    labels, voxel = io.read_labels(snakemake.input.volume)  # noqa: F821
    electronic = (CBD,) if cfg["electronic_network"] == "cbd" else (AM, CBD)
    metrics, particles, aggregates, spread = sample_metrics(
        labels, voxel, tortuosity_axes=cfg["tortuosity_axes"], electronic_phases=electronic,
        device=cfg["device"], conv_crit=cfg["conv_crit"], particle_h=cfg["particle_h_px"],
        particle_sigma=cfg["particle_sigma_px"], dispersion_block_um=cfg["dispersion_block_um"])
    metrics = {"sample": sample, **metrics}
    log.info("%s", {k: v for k, v in metrics.items() if not isinstance(v, list)})
    io.write_table(out.particles, particles)
    io.write_table(out.aggregates, aggregates)
    io.write_table(out.rve, spread)
    io.write_json(out.metrics, metrics)
    io.write_figure(out.psd, size_distribution(particles, title=sample))
    io.write_figure(out.rve_figure, representative_volume(spread, title=sample))
