rule segment:
    input:
        stack="results/preprocessed/{sample}.tif",
        model=segment_model,
        fallback=segment_fallback,
        code=code("segment"),
    output:
        **PROBABILITIES_OUTPUT,
        **MODEL_USED_OUTPUT,
        labels="results/segmented/{sample}.tif",
    log:
        "logs/segment/{sample}.log",
    benchmark:
        "benchmarks/segment/{sample}.tsv"
    conda:
        "../envs/segment.yaml"
    threads: 2
    resources:
        gpu=1 if config["segment"]["method"] == "unet" else 0,
    params:
        settings=config["segment"],
        channels=segment_channels,
        kvs=sheet_value("kvs"),
        preprocess=preprocess_settings,
    script:
        "../scripts/segment.py"
