rule segment:
    input:
        stack="results/preprocessed/{sample}.tif",
        model=segment_model,
        code=[code("segment"), code("infer"), code("unet")],
    output:
        labels="results/segmented/{sample}.tif",
        **PROBABILITIES_OUTPUT,
    log:
        "logs/segment/{sample}.log",
    benchmark:
        "benchmarks/segment/{sample}.tsv"
    conda:
        "../envs/segment.yaml"
    threads: 2
    params:
        method=config["segment"]["method"],
        channels=segment_channels,
        kvs=sheet_value("kvs"),
        device=config["segment"]["device"],
        tile_px=config["segment"]["tile_px"],
        overlap_px=config["segment"]["overlap_px"],
        batch_size=config["segment"]["batch_size"],
        nbins=config["segment"]["nbins"],
        preprocess=config["preprocess"],
    script:
        "../scripts/segment.py"
