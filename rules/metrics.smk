rule metrics:
    input:
        volume="results/volume/{sample}.tif",
        code=code("metrics"),
    output:
        metrics="results/metrics/{sample}.json",
    log:
        "logs/metrics/{sample}.log",
    benchmark:
        "benchmarks/metrics/{sample}.tsv"
    conda:
        "../envs/metrics.yaml"
    params:
        tortuosity_axes=config["metrics"]["tortuosity_axes"],
        device=config["metrics"]["device"],
        conv_crit=config["metrics"]["conv_crit"],
    script:
        "../scripts/metrics.py"
