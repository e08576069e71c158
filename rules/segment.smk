rule segment:
    input:
        stack="results/preprocessed/{sample}.tif",
        code=code("segment"),
    output:
        labels="results/segmented/{sample}.tif",
    log:
        "logs/segment/{sample}.log",
    benchmark:
        "benchmarks/segment/{sample}.tsv"
    conda:
        "../envs/segment.yaml"
    params:
        method=config["segment"]["method"],
        channels=segment_channels,
        nbins=config["segment"]["nbins"],
    script:
        "../scripts/segment.py"
