"""Write the characterization record of one sample, validated against its schema."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")  # noqa: F821 (conda envs clear PYTHONPATH)

from pathlib import Path  # noqa: E402

import jsonschema  # noqa: E402

from fibrecon import files  # noqa: E402
from fibrecon.record import build_record  # noqa: E402
from fibrecon.runlog import rule_log  # noqa: E402
from fibrecon.uncertainty import uncertain_fractions  # noqa: E402

inp = snakemake.input  # noqa: F821
with rule_log(snakemake.log[0]) as log:  # noqa: F821
    # the network that segmented the sample, its card and the probe that chose it (segment)
    model = files.read_json(inp.model_used) if inp.get("model_used") else None
    raw = Path(inp.raw)
    raw_files = (sorted(p for p in raw.rglob("*") if p.is_file() and not p.name.startswith("."))
                 if raw.is_dir() else [raw])
    inputs = {str(p.relative_to(raw) if raw.is_dir() else p.name): files.file_sha256(p)
              for p in raw_files}
    log.info("%d input files checksummed", len(inputs))
    uncertainty = None
    if inp.get("uncertainty"):
        uncertainty = uncertain_fractions(files.read_table(inp.uncertainty))
    record = build_record(
        snakemake.wildcards.sample, snakemake.params.process,  # noqa: F821
        files.read_json(inp.acquisition), snakemake.params.parameters,  # noqa: F821
        files.read_json(inp.metrics), model=model, inputs=inputs,
        figures={k: inp[k] for k in ("qc", "psd", "rve_figure", "orthoslices", "view_3d",
                                     "drift") if inp.get(k)},
        uncertainty=uncertainty)
    jsonschema.validate(record, files.read_json(inp.schema))
    files.write_json(snakemake.output.record, record)  # noqa: F821
