rule series:
    input:
        metrics=expand("results/metrics/{sample}.json", sample=SAMPLES.index),
        code=code("series"),
    output:
        table=report(
            "results/series/metrics.tsv",
            caption="../report/series.rst",
            category="Series",
        ),
        csv="results/series/metrics.csv",
        summary=report(
            "results/series/summary.png",
            caption="../report/summary.rst",
            # the report lists categories alphabetically: this one leads
            category="A series summary",
        ),
        plots=expand("results/series/{metric}.png", metric=SERIES_METRICS),
        heatmap=report(
            "results/series/correlations.png",
            caption="../report/correlations.rst",
            category="Series",
        ),
    log:
        "logs/series/series.log",
    localrule: True
    conda:
        "../envs/series.yaml"
    params:
        samples=list(SAMPLES.index),
        sheet=SAMPLES.to_dict(orient="index"),
        process_columns=PROCESS_COLUMNS,
        metrics=SERIES_METRICS,
        summary_metrics=SUMMARY_METRICS,
    script:
        "../scripts/series.py"
