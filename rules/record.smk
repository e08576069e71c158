rule record:
    input:
        unpack(model_used),
        unpack(probability_inputs("uncertainty")),
        unpack(acquisition_figures),
        metrics="results/metrics/{sample}.json",
        acquisition=acquisition_info,
        raw=raw_folder,
        psd="results/metrics/{sample}_psd.png",
        rve_figure="results/metrics/{sample}_rve.png",
        orthoslices="results/volume/{sample}_orthoslices.png",
        view_3d="results/volume/{sample}_3d.png",
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
        parameters=lambda wildcards: {
            **{k: config[k] for k in ("align", "segment", "volume", "metrics")},
            "preprocess": PREPROCESS[wildcards.sample],
        },
    script:
        "../scripts/record.py"
