rule segment:
    input:
        stack="results/preprocessed/{sample}.tif",
        model=segment_model,
        code=code("segment"),
    output:
        **PROBABILITIES_OUTPUT,
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
        method=config["segment"]["method"],
        channels=segment_channels,
        kvs=sheet_value("kvs"),
        device=config["segment"]["device"],
        tile_px=config["segment"]["tile_px"],
        overlap_px=config["segment"]["overlap_px"],
        flip_average=config["segment"]["flip_average"],
        batch_size=config["segment"]["batch_size"],
        nbins=config["segment"]["nbins"],
        preprocess=config["preprocess"],
    script:
        "../scripts/segment.py"
