"""Join all samples' metrics with their process parameters; plot each metric."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # noqa: F821 (conda envs clear PYTHONPATH)

import pandas as pd  # noqa: E402

from fibrecon import files  # noqa: E402
from fibrecon.plot import correlation_heatmap, metric_vs_parameters, series_summary  # noqa: E402
from fibrecon.runlog import rule_log  # noqa: E402
from fibrecon.series import mixed_models_warning, series_table  # noqa: E402

p = snakemake.params  # noqa: F821
out = snakemake.output  # noqa: F821
with rule_log(snakemake.log[0]) as log:  # noqa: F821
    metrics = {s: files.read_json(f) for s, f in zip(p.samples, snakemake.input.metrics)}  # noqa: F821
    sheet = pd.DataFrame.from_dict(p.sheet, orient="index")
    table = series_table(metrics, sheet, p.process_columns)
    files.write_table(out.table, table)
    files.write_table(out.csv, table, sep=",")
    log.info("series of %d samples, %d columns", len(table), table.shape[1])
    mixed = mixed_models_warning(table)
    if mixed:
        log.warning("%s", mixed)
    files.write_figure(out.summary, series_summary(table, p.summary_metrics, p.process_columns))
    for metric, path in zip(p.metrics, out.plots):
        files.write_figure(path, metric_vs_parameters(table, metric, p.process_columns))
    files.write_figure(out.heatmap, correlation_heatmap(table, p.process_columns, p.metrics))
