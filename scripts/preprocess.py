"""Denoise and normalise an aligned stack."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # noqa: F821 (conda envs clear PYTHONPATH)

from fibrecon import io  # noqa: E402
from fibrecon.preprocess import preprocess_stack  # noqa: E402
from fibrecon.runlog import progress, rule_log  # noqa: E402

p = snakemake.params  # noqa: F821
with rule_log(snakemake.log[0]) as log:  # noqa: F821
    stack, voxel = io.read_volume(snakemake.input.stack)  # noqa: F821
    out = preprocess_stack(stack, denoise_sigma=p.denoise_sigma,
                           background_order=p.background_order,
                           percentiles=tuple(p.percentiles), progress=progress("preprocessing"))
    io.write_volume(snakemake.output.stack, out, voxel, channels=True)  # noqa: F821
