"""Compute one sample's metrics from its label volume."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # noqa: F821 (conda envs clear PYTHONPATH)

import contextlib  # noqa: E402
from pathlib import Path  # noqa: E402

from fibrecon import files  # noqa: E402
from fibrecon.modelcard import ModelCard  # noqa: E402
from fibrecon.metrics import (MetricsSettings, check_edges, metrics_of,  # noqa: E402
                              other_network)
from fibrecon.plot import representative_volume, size_distribution  # noqa: E402
from fibrecon.runlog import rule_log  # noqa: E402
from fibrecon.uncertainty import uncertain_fractions  # noqa: E402
from fibrecon.volume import VolumeSettings  # noqa: E402

settings = MetricsSettings.from_config(snakemake.params.settings)  # noqa: F821
out = snakemake.output  # noqa: F821
sample = snakemake.wildcards.sample  # noqa: F821
with rule_log(snakemake.log[0]) as log:  # noqa: F821
    inp = snakemake.input  # noqa: F821
    labels, voxel = files.read_labels(inp.volume)
    # the network that segmented the sample (the model or its fallback), as segment wrote it
    used = files.read_json(inp.model_used) if inp.get("model_used") else None
    card = ModelCard(used["card"]) if used else None
    shift_sd = card.boundary_shift_sd if card else None
    # the probe's second network: its reading of the probe slices widens the segmentation sd
    other = other_network((used or {}).get("probe"))
    with contextlib.ExitStack() as stack:
        prob = None
        if inp.get("probabilities"):
            prob = stack.enter_context(files.VolumeReader(inp.probabilities))
            log.info("segmentation sd: boundaries moved by the model's calibrated shift %s "
                     "(log-probability units) along two directions", shift_sd)
        # before any work; its segmentation, QC figure and volume are made all the same
        check_edges(labels.shape, f"{inp.volume} (sample {sample})")
        metrics, particles, aggregates, spread = metrics_of(
            labels, voxel, settings, probabilities=prob, boundary_shift_sd=shift_sd,
            family_scale=card.family_scale if card else None,
            # the share the segment stage counted (its table), against the card's
            uncertain_share=uncertain_fractions(files.read_table(inp.uncertainty))[
                "uncertain_fraction"] if inp.get("uncertainty") else None,
            calibration_uncertain_share=card.uncertain_share if card else None,
            other_network=other,
            min_object_voxels=VolumeSettings.from_config(
                snakemake.params.volume).min_object_voxels)  # noqa: F821
    metrics = {"sample": sample, **metrics}
    if used:  # which network segmented it: the series table shows it beside the metrics
        metrics["segmentation_model"] = Path(used["path"]).name
    log.info("%s", {k: v for k, v in metrics.items() if not isinstance(v, list)})
    files.write_table(out.particles, particles)
    files.write_table(out.aggregates, aggregates)
    files.write_table(out.rve, spread)
    files.write_json(out.metrics, metrics)
    files.write_figure(out.psd, size_distribution(particles, title=sample))
    files.write_figure(out.rve_figure, representative_volume(spread, title=sample))
