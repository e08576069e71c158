"""Draw original | preprocessed | segmented (| uncertainty) for the middle slice of a sample."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # noqa: F821 (conda envs clear PYTHONPATH)

from pathlib import Path  # noqa: E402

from fibrecon import files  # noqa: E402
from fibrecon.plot import three_panel  # noqa: E402
from fibrecon.runlog import rule_log  # noqa: E402
from fibrecon.uncertainty import normalised_entropy, uncertain_fractions  # noqa: E402

c = snakemake.params.channel  # noqa: F821
inp = snakemake.input  # noqa: F821
with rule_log(snakemake.log[0]) as log, files.VolumeReader(inp.aligned) as aligned, \
        files.VolumeReader(inp.preprocessed) as pre, files.VolumeReader(inp.labels) as labels:
    z = len(aligned) // 2
    entropy = share = None
    if inp.get("probabilities"):
        with files.VolumeReader(inp.probabilities) as prob:
            entropy = normalised_entropy(prob[z])
        share = uncertain_fractions(files.read_table(inp.uncertainty))
    title = f"{snakemake.wildcards.sample}, slice {z}"  # noqa: F821
    if inp.get("model_used"):  # the network that segmented it (the model or its fallback)
        used = files.read_json(inp.model_used)
        title += f", segmented by {Path(used['path']).name}"
        if (used.get("probe") or {}).get("switched"):
            title += " (the fallback: the stack looked unlike the model's training data)"
    log.info("QC figure: %s", title)
    fig = three_panel(aligned[z][c], pre[z][c], labels[z], aligned.voxel_size,
                      title=title,
                      uncertainty=entropy, uncertain_share=share)
    files.write_figure(snakemake.output.figure, fig)  # noqa: F821
