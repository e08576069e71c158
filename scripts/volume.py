"""Clean the label volume and write it with its voxel size, plus an orthoslice figure."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # noqa: F821 (conda envs clear PYTHONPATH)

from fibrecon import files  # noqa: E402
from fibrecon.plot import orthoslices, volume_view  # noqa: E402
from fibrecon.runlog import rule_log  # noqa: E402
from fibrecon.volume import VolumeSettings, fraction_warnings, relabel_small_islands  # noqa: E402

settings = VolumeSettings.from_config(snakemake.params.settings)  # noqa: F821
out = snakemake.output  # noqa: F821
with rule_log(snakemake.log[0]) as log:  # noqa: F821
    labels, voxel = files.read_labels(snakemake.input.labels)  # noqa: F821
    clean = relabel_small_islands(labels, settings.min_object_voxels)
    log.info("%d voxels relabelled (islands < %d voxels)", int((clean != labels).sum()),
             settings.min_object_voxels)
    for message in fraction_warnings(clean):
        log.warning("%s: %s", snakemake.wildcards.sample, message)  # noqa: F821
    files.write_volume(out.volume, clean, voxel)
    files.write_ome_tiff(out.ome, clean, voxel)  # napari and Bio-Formats read the scale from it
    files.write_figure(out.figure, orthoslices(clean, voxel, title=snakemake.wildcards.sample))  # noqa: F821
    files.write_image(out.view, volume_view(clean, voxel, title=snakemake.wildcards.sample))  # noqa: F821
