rule qc_figure:
    input:
        unpack(model_used),
        unpack(probability_inputs("probabilities", "uncertainty")),
        aligned="results/aligned/{sample}.tif",
        preprocessed="results/preprocessed/{sample}.tif",
        labels="results/segmented/{sample}.tif",
        code=code("qc_figure"),
    output:
        figure=report(
            "results/qc/{sample}.png",
            caption="../report/qc.rst",
            category="Quality control",
        ),
    log:
        "logs/qc_figure/{sample}.log",
    conda:
        "../envs/volume.yaml"
    params:
        channel=0,
    script:
        "../scripts/qc_figure.py"
