# fibrecon: FIB-SEM stacks of battery cathodes -> 3D phase volumes -> metrics
# -> a series table joined with each sample's process parameters.
# Wiring only; helpers live in rules/common.smk, algorithms in src/fibrecon.


from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "rules/common.smk"


wildcard_constraints:
    sample="|".join(SAMPLES.index),


include: "rules/demo.smk"
include: "rules/align.smk"
include: "rules/preprocess.smk"
include: "rules/train.smk"
include: "rules/segment.smk"
include: "rules/qc.smk"
include: "rules/annotate.smk"
include: "rules/volume.smk"
include: "rules/metrics.smk"
include: "rules/series.smk"
include: "rules/record.smk"


rule all:
    default_target: True
    input:
        "results/series/metrics.tsv",
        expand("results/volume/{sample}_orthoslices.png", sample=SAMPLES.index),
        expand("results/qc/{sample}.png", sample=ACQUIRED),
        expand("results/records/{sample}.json", sample=SAMPLES.index),
    localrule: True
