"""Write the slices of a sample most worth annotating, with the current segmentation to correct."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # noqa: F821 (conda envs clear PYTHONPATH)

from fibrecon import files  # noqa: E402
from fibrecon.plot import annotation_overview  # noqa: E402
from fibrecon.runlog import rule_log  # noqa: E402
from fibrecon.uncertainty import AnnotateSettings, normalised_entropy, suggest_slices  # noqa: E402

settings = AnnotateSettings.from_config(snakemake.params.settings)  # noqa: F821
inp = snakemake.input  # noqa: F821
sample = snakemake.wildcards.sample  # noqa: F821
GUIDE = """Slices of sample {sample} to annotate, the most uncertain first: {slices}.

For each slice z (napari, step by step in README.md, "Correcting the segmentation"):
  slice_NNNN.tif              the preprocessed kV channels (what the network sees)
  slice_NNNN_labels.tif       the current segmentation: 0 pore, 1 AM, 2 CBD -- correct this
  slice_NNNN_uncertainty.tif  where the network is unsure (entropy, 0..1)
Save the corrected labels as annotations/{sample}/slice_NNNN_labels.tif; paint 255 where
you do not want to say anything (only annotated pixels are trained on). Then fine-tune:
  snakemake --cores all --configfile config/config.yaml config/finetune.yaml
"""
with rule_log(snakemake.log[0]) as log:  # noqa: F821
    if not inp.get("probabilities"):
        raise ValueError(f"sample {sample!r}: the annotate rule needs the network's "
                         "probabilities (segment: method: unet, save_probabilities: true)")
    table = files.read_table(inp.uncertainty)
    chosen = suggest_slices(table, settings.slices, settings.spacing)
    entropy_of = table.set_index("z")["mean_entropy"]
    log.info("suggested slices %s (mean entropy %s)", chosen,
             [round(float(entropy_of[z]), 4) for z in chosen])
    images, labels, entropy = [], [], []
    with files.atomic_dir(snakemake.output.folder) as tmp, \
            files.VolumeReader(inp.stack) as stack, files.VolumeReader(inp.labels) as seg, \
            files.VolumeReader(inp.probabilities) as prob:  # noqa: F821
        for z in chosen:
            ent = normalised_entropy(prob[z])
            files.write_annotation_slice(tmp, z, stack[z], seg[z], ent)
            images.append(stack[z][0]), labels.append(seg[z]), entropy.append(ent)
        ranked = table.assign(suggested=table["z"].isin(chosen)).sort_values(
            "mean_entropy", ascending=False)
        files.write_table(tmp / "suggestions.tsv", ranked)
        files.write_figure(tmp / "overview.png", annotation_overview(
            table, chosen, images, labels, entropy, stack.voxel_size, title=sample))
        (tmp / "README.txt").write_text(GUIDE.format(sample=sample, slices=chosen))
