rule record:
    input:
        unpack(probability_inputs("uncertainty")),
        metrics="results/metrics/{sample}.json",
        acquisition="results/aligned/{sample}.json",
        raw=raw_folder,
        model=segment_model,
        qc="results/qc/{sample}.png",
        psd="results/metrics/{sample}_psd.png",
        rve_figure="results/metrics/{sample}_rve.png",
        orthoslices="results/volume/{sample}_orthoslices.png",
        view_3d="results/volume/{sample}_3d.png",
        drift="results/aligned/{sample}_drift.png",
        schema=str(SCHEMAS / "record.schema.json"),
        code=code("record"),
    output:
        record="results/records/{sample}.json",
    log:
        "logs/record/{sample}.log",
    conda:
        "../envs/series.yaml"
    params:
        process=lambda wildcards: {
            c: SAMPLES.at[wildcards.sample, c] for c in PROCESS_COLUMNS
        },
        parameters={
            k: config[k]
            for k in ("align", "preprocess", "segment", "volume", "metrics")
        },
    script:
        "../scripts/record.py"
