# Sample sheet and config: loaded and validated before any job starts.
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from fibrecon.samples import (  # noqa: E402
    check_model_settings,
    load_sample_sheet,
    load_schema,
    model_card_path,
    process_columns,
    validate_config,
)
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

_undefined_demo = [
    s
    for s in SAMPLES.index
    if SAMPLES.at[s, "raw"] == "simulated" and s not in config["demo"]["samples"]
]
_dz = config["demo"]["voxel_size_um"][0]
_wrong_dz = [
    s
    for s in SAMPLES.index
    if SAMPLES.at[s, "raw"] == "simulated"
    and SAMPLES.at[s, "voxel_z_um"] != "from_metadata"
    and abs(float(SAMPLES.at[s, "voxel_z_um"]) - _dz) > 1e-9
]
if _wrong_dz:
    raise ValueError(
        f"{config['samples']}: simulated sample(s) {_wrong_dz}: voxel_z_um differs from "
        f"the simulated slice thickness demo: voxel_size_um[0] = {_dz}"
    )
if _undefined_demo:
    raise ValueError(
        f"{config['samples']}: sample(s) {_undefined_demo} have raw = 'simulated' but no "
        "entry under demo: samples: in the config"
    )


def code(script):
    """The library files a rule's script imports, transitively (fibrecon's own import graph),
    declared as inputs so that editing any of them reruns the rule's jobs."""
    base = Path(workflow.basedir)
    return code_inputs(
        base / "scripts" / f"{script}.py", package=base / "src" / "fibrecon"
    )


def raw_folder(wildcards):
    """Raw data of a sample: the sheet's folder, or the demo_stack output."""
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
    kvs = SAMPLES.at[sample, "kvs"]
    wanted = config["segment"]["channels"]
    return kvs if wanted == "all" else [float(kv) for kv in wanted]


def segment_channels(wildcards):
    """Channel indices of the configured kV values (all channels by default)."""
    kvs = SAMPLES.at[wildcards.sample, "kvs"]
    missing = [kv for kv in selected_kvs(wildcards.sample) if kv not in kvs]
    if missing:
        raise ValueError(
            f"segment: channels: kV {missing} not acquired for sample "
            f"'{wildcards.sample}' (its kvs: {kvs})"
        )
    return [kvs.index(kv) for kv in selected_kvs(wildcards.sample)]


def resolve_model_path(path):
    """A model path as given, or, when not found there, inside the workflow (shipped models)."""
    shipped = Path(workflow.basedir) / path
    return str(shipped) if not Path(path).exists() and shipped.exists() else path


MODEL = resolve_model_path(config["segment"]["model"])


def segment_model(wildcards):
    """The network file the segment rule reads (none for the classical method)."""
    return MODEL if config["segment"]["method"] == "unet" else []


# Class probabilities are an extra output of segment only when asked for.
PROBABILITIES_OUTPUT = (
    {"probabilities": "results/segmented/{sample}_probabilities.tif"}
    if config["segment"]["save_probabilities"]
    else {}
)


def user_slices_folder(wildcards):
    folder = config["train"]["user_slices"]
    return ancient(folder) if folder else []


def init_model_file(wildcards):
    model = config["train"]["init_model"]
    return ancient(model) if model else []


# The model's kV channels and receptive field, checked against every sample
# before any job (the segment job checks the model file itself again).
if config["segment"]["method"] == "unet":
    _model = Path(MODEL)
    if _model.as_posix() != "results/models/unet.pt":
        if not _model.is_file():
            raise ValueError(
                f"segment: model: {_model}: model file not found (set it to the shipped "
                "resources/models/unet_1kV_3kV.pt, or to results/models/unet.pt to train one)"
            )
        if not model_card_path(_model).is_file():
            raise ValueError(
                f"{_model}: its model card {model_card_path(_model)} is missing"
            )
        _card = json.loads(model_card_path(_model).read_text())
        for _s in SAMPLES.index:
            check_model_settings(
                _card, selected_kvs(_s), config["segment"]["tile_px"], _model
            )
    else:
        _trained = [float(k) for k in config["train"]["kvs"]]
        for _s in SAMPLES.index:
            if [float(k) for k in selected_kvs(_s)] != _trained:
                raise ValueError(
                    f"sample '{_s}': segment channels {selected_kvs(_s)} differ from the kV "
                    f"list the model is trained for (train: kvs: {_trained})"
                )


SERIES_METRICS = (
    [
        "volume_fraction_pore",
        "volume_fraction_am",
        "volume_fraction_cbd",
        "d50_um",
        "am_local_fraction_cv",
        "cbd_percolating_fraction",
        "cbd_aggregate_d50_um",
        "am_surface_cbd_fraction",
        "specific_area_am_pore_per_um",
    ]
    + [f"tau_pore_{ax}" for ax in config["metrics"]["tortuosity_axes"]]
    + [f"tau_electronic_{ax}" for ax in config["metrics"]["tortuosity_axes"]]
)
