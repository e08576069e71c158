rule preprocess:
    input:
        stack="results/aligned/{sample}.tif",
        code=code("preprocess"),
    output:
        stack="results/preprocessed/{sample}.tif",
        ome="results/preprocessed/{sample}.ome.tif",
    log:
        "logs/preprocess/{sample}.log",
    benchmark:
        "benchmarks/preprocess/{sample}.tsv"
    conda:
        "../envs/preprocess.yaml"
    params:
        settings=preprocess_settings,
    script:
        "../scripts/preprocess.py"
