"""Generate one demo sample: raw per-slice TIFFs as an instrument writes them, and truth."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # noqa: F821 (conda envs clear PYTHONPATH)

from fibrecon import files  # noqa: E402
from fibrecon import simulated_files  # noqa: E402
from fibrecon.runlog import progress, rule_log  # noqa: E402
from fibrecon.simulate import simulate_sample  # noqa: E402

p = snakemake.params  # noqa: F821
with rule_log(snakemake.log[0]) as log:  # noqa: F821
    log.info("simulating %s: shape %s, voxel %s um, kV %s, %s", snakemake.wildcards.sample,  # noqa: F821
             p.shape, p.voxel_size, p.kvs, p.sample)
    sample = simulate_sample(
        tuple(p.shape), tuple(p.voxel_size), p.kvs, cbd_fraction=p.cbd_fraction,
        d50_um=p.d50_um, artifacts=p.artifacts, tilt_corrected=p.tilt_corrected, cap_px=p.cap_px,
        progress=progress("imaging"), **p.sample,
    )
    simulated_files.write_simulated_sample(snakemake.output.raw, snakemake.output.truth, sample,  # noqa: F821
                              p.pattern, vendor=p.vendor)
    log.info("true fractions: pore %.4f, AM %.4f, CBD %.4f; %d particles in view",
             sample.truth["volume_fraction_pore"], sample.truth["volume_fraction_am"],
             sample.truth["volume_fraction_cbd"], sample.truth["particles_in_view"])
