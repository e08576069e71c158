rule metrics:
    input:
        unpack(model_used),
        unpack(probability_inputs("probabilities", "uncertainty")),
        volume="results/volume/{sample}.tif",
        code=code("metrics"),
    output:
        metrics="results/metrics/{sample}.json",
        particles="results/metrics/{sample}_particles.tsv",
        aggregates="results/metrics/{sample}_cbd_aggregates.tsv",
        rve="results/metrics/{sample}_rve.tsv",
        psd=report(
            "results/metrics/{sample}_psd.png",
            caption="../report/psd.rst",
            category="Particles",
        ),
        rve_figure=report(
            "results/metrics/{sample}_rve.png",
            caption="../report/rve.rst",
            category="Representative volume",
        ),
    log:
        "logs/metrics/{sample}.log",
    benchmark:
        "benchmarks/metrics/{sample}.tsv"
    conda:
        "../envs/metrics.yaml"
    params:
        settings=config["metrics"],
        volume=config["volume"],  # its island cleaning, applied again to the shifted volumes
    script:
        "../scripts/metrics.py"
