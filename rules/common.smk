# Sample sheet and config: loaded and validated before any job starts.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from fibrecon.metrics import series_metrics, summary_metrics  # noqa: E402
from fibrecon.samples import (  # noqa: E402
    auto_fallback_model,
    auto_model,
    check_fallback_model,
    check_workflow,
    imported,
    resolve_preprocess,
    load_sample_sheet,
    load_schema,
    process_columns,
    selected_kvs as _selected_kvs,
    validate_config,
)
from fibrecon.files.labelled import annotation_files  # noqa: E402
from fibrecon.workflow import code_inputs  # noqa: E402

SCHEMAS = Path(workflow.basedir) / "schemas"
validate_config(
    config,
    load_schema(SCHEMAS / "config.schema.yaml"),
    source="config (config/config.yaml)",
)
SAMPLES = load_sample_sheet(
    config["samples"], load_schema(SCHEMAS / "samples.schema.yaml")
)
PROCESS_COLUMNS = process_columns(SAMPLES)


def code(script):
    """The library files a rule's script imports, transitively (fibrecon's own import graph),
    declared as inputs so that editing any of them reruns the rule's jobs."""
    base = Path(workflow.basedir)
    return code_inputs(
        base / "scripts" / f"{script}.py", package=base / "src" / "fibrecon"
    )


# Samples given as a label volume made elsewhere (sheet column labels): they start at
# the volume stage; everything before it (align .. segment, QC figure) is not theirs.
IMPORTED = [s for s in SAMPLES.index if imported(SAMPLES, s)]
ACQUIRED = [s for s in SAMPLES.index if s not in IMPORTED]


def raw_folder(wildcards):
    """Raw data of a sample: the sheet's folder, the demo_stack output, or its label volume."""
    if wildcards.sample in IMPORTED:
        return ancient(SAMPLES.at[wildcards.sample, "labels"])
    raw = SAMPLES.at[wildcards.sample, "raw"]
    if raw == "simulated":
        return f"results/raw/{wildcards.sample}"
    return ancient(raw)


def sheet_value(column):
    """A params function returning one sample-sheet cell."""
    return lambda wildcards: SAMPLES.at[wildcards.sample, column]


def voxel_from_sheet(wildcards):
    row = SAMPLES.loc[wildcards.sample]
    return {axis: row[f"voxel_{axis}_um"] for axis in ("x", "y", "z")}


def selected_kvs(sample):
    """kV values of the channels segmentation uses (config segment: channels)."""
    return _selected_kvs(config, SAMPLES.at[sample, "kvs"])


def segment_channels(wildcards):
    """Channel indices of the configured kV values (all channels by default)."""
    kvs = [float(k) for k in SAMPLES.at[wildcards.sample, "kvs"]]
    return [kvs.index(kv) for kv in selected_kvs(wildcards.sample)]


def resolve_model_path(path):
    """A model path as given, or, when not found there, inside the workflow (shipped models)."""
    shipped = Path(workflow.basedir) / path
    return str(shipped) if not Path(path).exists() and shipped.exists() else path


def model_for(sample):
    """The network file of a sample: segment: model, or with auto the shipped one for its channels."""
    if config["segment"]["model"] == "auto":
        return auto_model(selected_kvs(sample), workflow.basedir, sample)
    return resolve_model_path(config["segment"]["model"])


MODELS = (
    {s: model_for(s) for s in ACQUIRED} if config["segment"]["method"] == "unet" else {}
)


def fallback_for(sample):
    """The model segment switches to when its probe finds most of the CBD uncertain, or None
    (segment: fallback_model; auto: the shipped randomised model beside a shipped model).
    """
    setting = config["segment"]["fallback_model"]
    if setting == "none":
        return None
    if setting == "auto":
        return (
            auto_fallback_model(MODELS[sample])
            if config["segment"]["model"] == "auto"
            else None
        )
    return resolve_model_path(setting)


FALLBACKS = {s: f for s in MODELS if (f := fallback_for(s)) is not None}
for _s, _f in FALLBACKS.items():
    if Path(MODELS[_s]).is_file():  # not a model train_model is still to write
        check_fallback_model(MODELS[_s], _f, _s)


def card_preprocess(path):
    """A model file's training preprocessing (its card), or None where it does not exist yet."""
    if not path or not Path(path).is_file():
        return None
    from fibrecon.modelcard import ModelCard

    return ModelCard.read(path).data.get("preprocess")


# Each sample's preprocessing: the config's, with denoise: auto taken from its model's card.
_CARD_PREPROCESS = {m: card_preprocess(m) for m in set(MODELS.values())}
PREPROCESS = {
    s: resolve_preprocess(
        config["preprocess"],
        config["segment"]["method"],
        _CARD_PREPROCESS.get(MODELS.get(s)),
    )
    for s in SAMPLES.index
}
# What train_model preprocesses its simulated stacks with: as its initial model was trained
TRAIN_PREPROCESS = resolve_preprocess(
    config["preprocess"],
    "unet",
    card_preprocess(resolve_model_path(config["train"]["init_model"] or "")),
)


def preprocess_settings(wildcards):
    """A params function: the sample's preprocessing (denoise: auto decided)."""
    return PREPROCESS[wildcards.sample]


def segment_model(wildcards):
    """The network file the segment rule reads (none for the classical method)."""
    return MODELS.get(wildcards.sample, [])


def segment_fallback(wildcards):
    """The fallback network file the segment rule may switch to (none where there is none)."""
    return FALLBACKS.get(wildcards.sample, [])


# Which network segmented a sample (its path, checksum, card and the probe that chose it):
# written by segment (method unet), read by metrics (calibration) and record.
MODEL_USED_OUTPUT = (
    {"model_used": "results/segmented/{sample}_model.json"}
    if config["segment"]["method"] == "unet"
    else {}
)


def model_used(wildcards):
    """An input function: the sample's MODEL_USED_OUTPUT (none when no network segmented it)."""
    if wildcards.sample in IMPORTED:
        return {}
    return {k: v.format(sample=wildcards.sample) for k, v in MODEL_USED_OUTPUT.items()}


# The network's calibrated class probabilities and its per-slice uncertainty table:
# outputs of segment (method unet, save_probabilities) that the metrics' segmentation
# sd, the QC figure, the record and the annotate rule read.
PROBABILITIES_OUTPUT = (
    {
        "probabilities": "results/segmented/{sample}_probabilities.tif",
        "uncertainty": "results/segmented/{sample}_uncertainty.tsv",
    }
    if config["segment"]["method"] == "unet" and config["segment"]["save_probabilities"]
    else {}
)


def probability_inputs(*keys):
    """An input function: the named PROBABILITIES_OUTPUT files of a sample (none when the
    segmentation gives no probabilities)."""
    return lambda wildcards: {
        k: PROBABILITIES_OUTPUT[k].format(sample=wildcards.sample)
        for k in keys
        if k in PROBABILITIES_OUTPUT and wildcards.sample not in IMPORTED
    }


def segmented_labels(wildcards):
    """The label volume the volume stage cleans: the segment output, or an imported one."""
    if wildcards.sample in IMPORTED:
        return f"results/imported/{wildcards.sample}.tif"
    return f"results/segmented/{wildcards.sample}.tif"


def acquisition_info(wildcards):
    """The aligned JSON (voxel size, instrument), or the imported volume's JSON."""
    if wildcards.sample in IMPORTED:
        return f"results/imported/{wildcards.sample}.json"
    return f"results/aligned/{wildcards.sample}.json"


def acquisition_figures(wildcards):
    """The QC and drift figures of an acquired sample (an imported one has neither)."""
    if wildcards.sample in IMPORTED:
        return {}
    return {
        "qc": f"results/qc/{wildcards.sample}.png",
        "drift": f"results/aligned/{wildcards.sample}_drift.png",
    }


# Annotations for fine-tuning (train: annotations): by sample, checked at start-up.
ANNOTATIONS = (
    annotation_files(config["train"]["annotations"], set(SAMPLES.index))
    if config["train"]["annotations"]
    else {}
)


def annotation_inputs(wildcards):
    """The annotation files and the preprocessed stacks of the samples they annotate."""
    return {
        "annotations": [str(p) for items in ANNOTATIONS.values() for _, p in items],
        "stacks": [f"results/preprocessed/{s}.tif" for s in ANNOTATIONS],
    }


def init_model_file(wildcards):
    model = config["train"]["init_model"]
    return ancient(resolve_model_path(model)) if model else []


# Demo consistency, channels and the model's card, checked against every sample
# before any job (the segment job checks the model file itself again).
check_workflow(config, SAMPLES, model_path=MODELS, annotated=ANNOTATIONS)


SERIES_METRICS = series_metrics(config["metrics"]["tortuosity_axes"])
SUMMARY_METRICS = summary_metrics(config["metrics"]["tortuosity_axes"])
