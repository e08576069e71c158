rule annotate:
    input:
        unpack(probability_inputs("probabilities", "uncertainty")),
        stack="results/preprocessed/{sample}.tif",
        labels="results/segmented/{sample}.tif",
        code=code("annotate"),
    output:
        folder=directory("results/annotate/{sample}"),
    log:
        "logs/annotate/{sample}.log",
    conda:
        "../envs/volume.yaml"
    params:
        settings=config["annotate"],
    script:
        "../scripts/annotate.py"
