"""Sample sheet and config: loading and validation before any work starts.

The sample sheet (``config/samples.tsv``) has one row per sample: ``sample``
(id), ``raw`` (folder of the acquisition, or ``simulated`` for a demo sample
the workflow generates), ``pattern`` (file-name pattern with ``{slice}`` and
``{kv}`` fields), ``kvs`` (acceleration voltages, comma-separated),
``voxel_x_um``, ``voxel_y_um``, ``voxel_z_um`` (numbers or ``from_metadata``),
and any number of process-parameter columns carried unchanged into the
series table. Both files are checked against JSON schemas (``schemas/``);
every error names the sample, column or key and the file.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from fibrecon import CROSS_SECTION_TILT_DEG

__all__ = [
    "ConfigError",
    "check_particle_h_doubt",
    "check_workflow",
    "selected_kvs",
    "SHEET_COLUMNS",
    "load_schema",
    "validate_config",
    "load_sample_sheet",
    "process_columns",
    "parse_kvs",
    "parse_roi",
    "auto_model",
    "auto_fallback_model",
    "check_fallback_model",
    "kv_stand_in_note",
    "stand_in_model",
    "resolve_preprocess",
    "imported",
    "shipped_model_name",
    "fit_roi",
    "merge_config",
    "read_config",
    "resolve_voxel_size",
    "cross_section_factor",
]

#: Columns of the sample sheet that describe the acquisition; all others are
#: process parameters.
SHEET_COLUMNS = ("sample", "raw", "pattern", "kvs", "voxel_x_um", "voxel_y_um", "voxel_z_um",
                 "roi", "labels")


class ConfigError(ValueError):
    """A config file or sample sheet that cannot be used; the message names where."""


def load_schema(path) -> dict:
    """Read a JSON schema written as YAML or JSON."""
    import yaml

    return yaml.safe_load(Path(path).read_text())


def _with_defaults(validator_class):
    """A validator class that fills in ``default`` values while validating."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = sub["default"]
        yield from validate_properties(validator, properties, instance, schema)

    import jsonschema

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


@functools.cache
def _validator_class():
    """Draft 2020-12 validation that fills defaults (jsonschema imported only when validating)."""
    import jsonschema

    return _with_defaults(jsonschema.Draft202012Validator)


def _where(error) -> str:
    path = "/".join(str(p) for p in error.absolute_path)
    return path or "(top level)"


#: Keys that were renamed, with what the old value means now (named in the error).
RENAMED_KEYS = {
    "particle_h_px": "metrics: particle_h_um (micrometres; 1 voxel at 50 nm = 0.05)",
    "particle_sigma_px": "metrics: particle_sigma_um (micrometres; 1 voxel at 50 nm = 0.05)",
    "particle_h_doubt_px": "metrics: particle_h_doubt_um (micrometres; 0.5 voxel at 50 nm = 0.025)",
}


def _check(instance, schema, source: str) -> None:
    errors = sorted(_validator_class()(schema).iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{source}: key '{_where(e)}': {e.message}" for e in errors[:10]]
        lines += [f"{source}: '{old}' is now {new}" for old, new in RENAMED_KEYS.items()
                  if any(f"'{old}'" in e.message for e in errors)]
        raise ConfigError("invalid configuration\n  " + "\n  ".join(lines))


def validate_config(config: dict, schema: dict, source: str = "config") -> dict:
    """Validate a config dict in place, filling defaults.

    Parameters
    ----------
    config : dict
        Parsed ``config.yaml``.
    schema : dict
        JSON schema (draft 2020-12).
    source : str
        Name of the file, used in error messages.

    Returns
    -------
    dict
        The same ``config``, with defaults filled in.

    Raises
    ------
    ConfigError
        Naming the file and each offending key (unknown key, wrong type,
        value out of range).
    """
    _check(config, schema, source)
    return config


def merge_config(base: dict, over: dict) -> dict:
    """``over`` merged into ``base`` key by key, as ``snakemake --configfile`` merges files.

    Examples
    --------
    >>> merge_config({"align": {"references": 3, "trim_top_px": 0}}, {"align": {"trim_top_px": 24}})
    {'align': {'references': 3, 'trim_top_px': 24}}
    """
    out = dict(base)
    for key, value in over.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = merge_config(out[key], value) if both else value
    return out


def read_config(*paths) -> dict:
    """YAML config files merged in order (later ones over earlier ones)."""
    import yaml

    config: dict = {}
    for path in paths:
        config = merge_config(config, yaml.safe_load(Path(path).read_text()) or {})
    return config


def parse_kvs(text) -> list[float]:
    """Parse ``"1,3"`` or ``"1;3"`` (or a number) into a list of kV values."""
    if isinstance(text, (int, float, np.number)):
        return [float(text)]
    parts = [p.strip() for p in str(text).replace(";", ",").split(",") if p.strip()]
    return [float(p) for p in parts]


def parse_roi(text) -> tuple:
    """Parse a region of interest ``"z0:z1, y0:y1, x0:x1"`` (numpy slicing; a part may be open).

    ``""`` or ``":, :, :"`` is the whole stack; ``", 100:900, "`` keeps rows
    100-899 of every slice. Indices are those of the raw images (slice numbers
    counted from 0, pixels of the first image after the data bar is cut).

    Returns
    -------
    tuple of 3 (start, stop)
        Each ``None`` where open.

    Raises
    ------
    ValueError
        Not three ranges, a part that is not ``start:stop`` of non-negative
        integers, or a stop not after its start.

    Examples
    --------
    >>> parse_roi("10:50, 100:900, :")
    ((10, 50), (100, 900), (None, None))
    """
    text = "" if text is None or (isinstance(text, float) and np.isnan(text)) else str(text)
    if not text.strip():
        return ((None, None),) * 3
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3:
        raise ValueError(f"{text!r}: give three ranges z, y, x (e.g. ':, 100:900, :')")
    out = []
    for axis, part in zip("zyx", parts):
        if part in ("", ":"):
            out.append((None, None))
            continue
        start, sep, stop = part.partition(":")
        if not sep:
            raise ValueError(f"{text!r}: the {axis} range {part!r} is not start:stop")
        try:
            a = int(start) if start.strip() else None
            b = int(stop) if stop.strip() else None
        except ValueError:
            raise ValueError(f"{text!r}: the {axis} range {part!r} is not start:stop of "
                             "integers") from None
        if (a is not None and a < 0) or (b is not None and b < 0) or \
                (a is not None and b is not None and b <= a):
            raise ValueError(f"{text!r}: the {axis} range {part!r} must be non-negative with "
                             "stop > start")
        out.append((a, b))
    return tuple(out)


def fit_roi(roi: tuple, shape, source: str = "") -> tuple[slice, slice, slice]:
    """The region of interest as slices of a (z, y, x) stack; one that does not fit is an error.

    Raises
    ------
    ConfigError
        A range that reaches beyond the stack, naming ``source``, the range and the size.
    """
    out = []
    for axis, (a, b), n in zip("zyx", roi, shape):
        a, b = 0 if a is None else a, n if b is None else b
        if b > n or a >= n:
            raise ConfigError(f"{source}: roi {axis} range {a}:{b} does not fit the stack's "
                              f"{n} {'slices' if axis == 'z' else 'pixels'} in {axis}")
        out.append(slice(a, b))
    return tuple(out)


def _coerce(value):
    """Cell text -> number where it is one, else stripped text; empty -> None."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip()
    if text == "":
        return None
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number


def load_sample_sheet(path, schema: dict, base_dir=None) -> "pandas.DataFrame":
    """Read and validate the sample sheet.

    Parameters
    ----------
    path : str or Path
        Tab-separated sample sheet.
    schema : dict
        JSON schema of one row (``schemas/samples.schema.yaml``).
    base_dir : str or Path, optional
        Folder against which relative ``raw`` paths are checked (the working
        directory by default).

    Returns
    -------
    pandas.DataFrame
        Indexed by sample id; ``kvs`` parsed into lists of float; defaults filled.

    Raises
    ------
    ConfigError
        Missing file, duplicate sample id, a schema violation (naming the
        sample and column), a raw folder that does not exist or whose file
        names do not give every kV of the sheet without a gap in the slice
        numbering (:func:`fibrecon.files.find_raw_files`), a kV list that does
        not parse, or a process-parameter column that mixes numbers and text.
    """
    import pandas as pd

    from fibrecon.files import RawDataError, find_raw_files

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: sample sheet does not exist")
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, comment="#")
    if "sample" not in table.columns:
        raise ConfigError(f"{path}: no 'sample' column (columns: {list(table.columns)})")
    if table.empty:
        raise ConfigError(f"{path}: the sample sheet has no samples (a header only); add one "
                          "row per sample (config/README.md), or run the demo with make demo")
    dup = table["sample"][table["sample"].duplicated()].tolist()
    if dup:
        raise ConfigError(f"{path}: duplicate sample id(s) {sorted(set(dup))}")
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    rows = []
    for _, row in table.iterrows():
        rec = {k: _coerce(v) for k, v in row.items()}
        rec = {k: v for k, v in rec.items() if v is not None}
        rec["sample"] = str(row["sample"])
        errors = sorted(_validator_class()(schema).iter_errors(rec), key=lambda e: list(e.absolute_path))
        if errors:
            msg = "; ".join(f"column '{_where(e)}': {e.message}" for e in errors[:5])
            raise ConfigError(f"{path}: sample '{rec['sample']}': {msg}")
        rec["labels"] = str(rec.get("labels") or "").strip()
        if rec["labels"]:  # a segmentation made elsewhere: the workflow starts at the volume
            labels = Path(rec["labels"])
            labels = labels if labels.is_absolute() else base / labels
            if not labels.is_file():
                raise ConfigError(f"{path}: sample '{rec['sample']}': column 'labels': "
                                  f"{labels} is not a file")
            rec.setdefault("raw", "")
            rec.setdefault("kvs", "")
        missing = [c for c in ("raw", "kvs") if c not in rec]
        if missing:
            raise ConfigError(f"{path}: sample '{rec['sample']}': column(s) {missing} empty or "
                              "absent; give the acquisition (raw, kvs) or a label volume (labels)")
        try:
            rec["kvs"] = parse_kvs(rec["kvs"])
        except ValueError as exc:
            raise ConfigError(
                f"{path}: sample '{rec['sample']}': column 'kvs': cannot parse {row['kvs']!r} "
                "as comma-separated kV values"
            ) from exc
        rec["roi"] = str(rec.get("roi") or "").strip()
        try:
            parse_roi(rec["roi"])
        except ValueError as exc:
            raise ConfigError(f"{path}: sample '{rec['sample']}': column 'roi': {exc}") from None
        if not rec["labels"] and not rec["kvs"]:
            raise ConfigError(f"{path}: sample '{rec['sample']}': column 'kvs' is empty")
        if not rec["labels"] and "{kv" not in str(rec.get("pattern", "{kv")) and \
                len(rec["kvs"]) != 1:
            raise ConfigError(
                f"{path}: sample '{rec['sample']}': column 'pattern': {rec['pattern']!r} has no "
                f"{{kv}} field, which only a single-kV acquisition may leave out (kvs: "
                f"{rec['kvs']}); name the files by kV, e.g. slice_{{slice:04d}}_{{kv}}kV.tif")
        if rec["raw"] not in ("simulated", ""):
            folder = Path(rec["raw"])
            folder = folder if folder.is_absolute() else base / folder
            if not folder.exists():
                raise ConfigError(
                    f"{path}: sample '{rec['sample']}': raw data folder {folder} does not exist"
                )
            if folder.is_dir():  # the file names alone: no pixel or header is read here
                try:
                    find_raw_files(folder, rec["pattern"], rec["kvs"])
                except RawDataError as exc:
                    raise ConfigError(f"{path}: sample '{rec['sample']}': columns 'raw', "
                                      f"'pattern', 'kvs': {exc}") from None
        rows.append(rec)
    df = pd.DataFrame(rows).set_index("sample", drop=False)
    for col in process_columns(df):
        kinds = {type(v).__name__ for v in df[col] if v is not None and v == v}
        if len(kinds & {"int", "float"}) and "str" in kinds:
            bad = [s for s, v in df[col].items() if isinstance(v, str)]
            raise ConfigError(
                f"{path}: process-parameter column '{col}' mixes numbers and text "
                f"(non-numeric in sample(s) {bad})"
            )
    return df


def process_columns(samples: "pandas.DataFrame") -> list[str]:
    """The process-parameter columns of a sample sheet, in sheet order."""
    return [c for c in samples.columns if c not in SHEET_COLUMNS]


def resolve_voxel_size(sheet: dict, metadata: dict, source: str = "raw data",
                       rtol: float = 0.01) -> tuple[tuple[float, float, float], dict]:
    """Combine the sheet's voxel size with the instrument metadata.

    Parameters
    ----------
    sheet : dict
        ``{"x": v, "y": v, "z": v}``, each a number in µm or ``"from_metadata"``.
    metadata : dict
        From :func:`fibrecon.files.read_sem_metadata` (``pixel_size_um`` = (y, x)).
        When it says ``tilt_corrected: False``, the y size is the pixel
        height divided by the sine of the recorded stage tilt (52 degrees
        where none is recorded; no correction at zero tilt), see
        :func:`cross_section_factor`.
    source : str
        The file the metadata came from, for messages.
    rtol : float
        Relative difference above which a number in the sheet and the metadata
        conflict.

    Returns
    -------
    voxel_size : tuple of float
        (dz, dy, dx) in micrometres.
    origin : dict
        For each axis where its value came from: ``"sample sheet: voxel_z_um"``
        or ``"metadata: <vendor> <tag> in <file>"``.

    Raises
    ------
    ConfigError
        ``from_metadata`` where the metadata has no value, or a sheet value
        that conflicts with the metadata.
    """
    meta, tags = {}, metadata.get("origin", {})
    if "pixel_size_um" in metadata:
        meta["y"], meta["x"] = metadata["pixel_size_um"]
        tag = tags.get("pixel_size_um", "pixel size")
        tags = {"y": tag, "x": tag}
        factor, why = cross_section_factor(metadata)
        if factor != 1.0:
            meta["y"] = meta["y"] * factor
        if why:
            tags["y"] += f" {why}"
    if "slice_thickness_um" in metadata:
        meta["z"] = metadata["slice_thickness_um"]
        tags["z"] = metadata.get("origin", {}).get("slice_thickness_um", "slice thickness")
    values, origin = {}, {}
    for axis in ("z", "y", "x"):
        v = sheet[axis]
        if v == "from_metadata":
            if axis not in meta:
                raise ConfigError(
                    f"{source}: voxel_{axis}_um is 'from_metadata' but the instrument metadata "
                    f"has no {axis} size; give it in the sample sheet"
                )
            values[axis], origin[axis] = float(meta[axis]), f"metadata: {tags[axis]}"
        else:
            values[axis], origin[axis] = float(v), f"sample sheet: voxel_{axis}_um"
            if axis in meta and abs(meta[axis] - values[axis]) > rtol * values[axis]:
                raise ConfigError(
                    f"{source}: voxel_{axis}_um = {values[axis]:g} µm in the sample sheet "
                    f"conflicts with {meta[axis]:g} µm in the instrument metadata "
                    f"({tags[axis]})"
                )
    return (values["z"], values["y"], values["x"]), origin


def cross_section_factor(metadata: dict, min_tilt_deg: float = 1.0) -> tuple[float, str]:
    """Factor on the pixel height of an image of a FIB cross-section, and why.

    A cross-section viewed by the electron beam at stage tilt ``t`` is
    shortened in y by sin ``t`` unless the instrument corrected it
    (FEI ``TiltCorrectionIsOn``, Zeiss ``Tilt Corrn.``). The stage tilt comes
    from the metadata (FEI ``[Stage] StageT``, Zeiss ``Stage at T``); an
    image at zero stage tilt (a top view, not a cross-section) is not
    corrected; without a recorded tilt, the usual 52 degrees
    (:data:`fibrecon.CROSS_SECTION_TILT_DEG`) is assumed.

    Parameters
    ----------
    metadata : dict
        From :func:`fibrecon.files.read_sem_metadata`.
    min_tilt_deg : float
        Stage tilts below this are taken as a view without tilt.

    Returns
    -------
    factor : float
        1, or 1 / sin(tilt).
    why : str
        What was decided, for the voxel size's origin ("" when the
        metadata says nothing of tilt).

    Examples
    --------
    >>> round(float(cross_section_factor({"tilt_corrected": False, "stage_tilt_deg": 52.0})[0]), 4)
    1.269
    >>> cross_section_factor({"tilt_corrected": False, "stage_tilt_deg": 0.0})
    (1.0, '(stage tilt 0.0°: not a tilted cross-section, no y correction)')
    """
    if metadata.get("tilt_corrected") is not False:
        return 1.0, "(instrument tilt-corrected)" if metadata.get("tilt_corrected") else ""
    tilt = metadata.get("stage_tilt_deg")
    if tilt is None:
        return (1.0 / float(np.sin(np.radians(CROSS_SECTION_TILT_DEG))),
                f"/ sin {CROSS_SECTION_TILT_DEG:g}° (image not tilt-corrected; no stage tilt "
                f"recorded, {CROSS_SECTION_TILT_DEG:g}° assumed)")
    if abs(tilt) < min_tilt_deg:
        return 1.0, f"(stage tilt {abs(tilt):.1f}°: not a tilted cross-section, no y correction)"
    return (1.0 / float(np.sin(np.radians(abs(tilt)))),
            f"/ sin {abs(tilt):.4g}° (image not tilt-corrected; stage tilt from the metadata)")


def selected_kvs(config: dict, kvs) -> list[float]:
    """kV values of the channels segmentation uses (``segment: channels``) for a sample's ``kvs``."""
    wanted = config["segment"]["channels"]
    return [float(k) for k in kvs] if wanted == "all" else [float(kv) for kv in wanted]


def check_particle_h_doubt(h: float, doubt: float) -> None:
    """Refuse a separation doubt the marker height cannot take (``metrics: particle_h_doubt_um``).

    Raises
    ------
    ConfigError
        ``doubt`` negative or not below ``h``: the particles are separated
        again with ``h - doubt``, which must stay positive.

    Examples
    --------
    >>> check_particle_h_doubt(0.05, 0.025)
    >>> check_particle_h_doubt(0.05, 0.05)
    Traceback (most recent call last):
    ...
    fibrecon.samples.ConfigError: metrics: particle_h_doubt_um = 0.05 must be >= 0 and below particle_h_um = 0.05 (the particles are separated again with h -+ the doubt)
    """
    if not 0 <= doubt < h:
        raise ConfigError(f"metrics: particle_h_doubt_um = {doubt} must be >= 0 and below "
                          f"particle_h_um = {h} (the particles are separated again with h -+ "
                          "the doubt)")


def imported(samples, sample: str) -> bool:
    """Whether a sample comes as a label volume made elsewhere (sheet column ``labels``)."""
    return "labels" in samples.columns and bool(samples.at[sample, "labels"])


def check_workflow(config: dict, samples, *, model_path=None,
                   trained_model: str = "results/models/unet.pt", annotated=()) -> None:
    """Everything the workflow checks at start-up, before any job: demo consistency and the model.

    Parameters
    ----------
    config : dict
        The validated config (defaults filled).
    samples : pandas.DataFrame
        From :func:`load_sample_sheet`.
    model_path : str, Path or dict, optional
        The network file ``segment: model`` resolves to (for ``method: unet``),
        or per sample (``segment: model: auto``, :func:`auto_model`).
    trained_model : str
        The path the ``train_model`` rule writes: its card does not exist yet,
        so the configured ``train: kvs`` must match the samples' channels.
    annotated : collection of str
        Samples with annotations (``train: annotations``): each must have
        acquired every kV of ``train: kvs``.

    Raises
    ------
    ConfigError
        A simulated sample without a ``demo: samples`` entry or whose slice
        thickness differs from the simulated one; a sample whose segmentation
        channels were not acquired; a ``train: label_volumes`` file that does
        not exist when the model is to be trained; a particle separation
        doubt that does not fit the marker height (:func:`check_particle_h_doubt`).
    fibrecon.modelcard.ModelCardError
        A model file that is missing, has no card, or whose kV channels or
        receptive field do not fit (naming the model, both kV lists, the tile).
    """
    sheet = config["samples"]
    simulated = [s for s in samples.index if samples.at[s, "raw"] == "simulated"]
    undefined = [s for s in simulated if s not in config["demo"]["samples"]]
    if undefined:
        raise ConfigError(f"{sheet}: sample(s) {undefined} have raw = 'simulated' but no entry "
                          "under demo: samples: in the config (the demo's settings are in "
                          "config/demo/config.yaml: snakemake --configfile config/demo/config.yaml)")
    dz = config["demo"]["voxel_size_um"][0]
    wrong_dz = [s for s in simulated if samples.at[s, "voxel_z_um"] != "from_metadata"
                and abs(float(samples.at[s, "voxel_z_um"]) - dz) > 1e-9]
    if wrong_dz:
        raise ConfigError(f"{sheet}: simulated sample(s) {wrong_dz}: voxel_z_um differs from the "
                          f"simulated slice thickness demo: voxel_size_um[0] = {dz}")
    acquired = [s for s in samples.index if not imported(samples, s)]
    for s in acquired:
        missing = [kv for kv in selected_kvs(config, samples.at[s, "kvs"])
                   if kv not in [float(k) for k in samples.at[s, "kvs"]]]
        if missing:
            raise ConfigError(f"segment: channels: kV {missing} not acquired for sample '{s}' "
                              f"(its kvs: {samples.at[s, 'kvs']})")
    check_particle_h_doubt(config["metrics"]["particle_h_um"],
                           config["metrics"]["particle_h_doubt_um"])
    for s in annotated:
        missing = [float(k) for k in config["train"]["kvs"]
                   if float(k) not in [float(v) for v in samples.at[s, "kvs"]]]
        if missing:
            raise ConfigError(f"train: annotations: sample '{s}' is annotated, but kV {missing} "
                              f"of train: kvs were not acquired for it (its kvs: "
                              f"{samples.at[s, 'kvs']})")
    if config["segment"]["method"] != "unet":
        return
    models = model_path if isinstance(model_path, dict) else \
        {s: model_path for s in acquired}
    trained = [s for s in acquired if Path(models[s]).as_posix() == trained_model]
    if trained:
        absent = [v for v in config["train"].get("label_volumes", []) if not Path(v).is_file()]
        if absent:
            raise ConfigError(f"train: label_volumes: no such file(s) {absent} (relative paths "
                              "are taken from the working directory)")
        kvs = [float(k) for k in config["train"]["kvs"]]
        for s in trained:
            if selected_kvs(config, samples.at[s, "kvs"]) != kvs:
                raise ConfigError(f"sample '{s}': segment channels "
                                  f"{selected_kvs(config, samples.at[s, 'kvs'])} differ from the "
                                  f"kV list the model is trained for (train: kvs: {kvs})")
    from fibrecon.modelcard import ModelCard, ModelCardError

    cards = {}
    for s in acquired:
        path = models[s]
        if s in trained:
            continue
        if path not in cards:
            try:
                cards[path] = ModelCard.read(path)
            except ModelCardError as exc:
                raise ModelCardError(f"segment: model: {exc}") from exc
        cards[path].check(selected_kvs(config, samples.at[s, "kvs"]),
                          config["segment"]["tile_px"], path,
                          stand_in=config["segment"]["model"] == "auto")


#: Where the shipped models lie in the workflow, named by their kV channels
#: (``unet_1kV.pt``, ``unet_1kV_3kV.pt``): ``segment: model: auto`` picks by a sample's channels.
SHIPPED_MODELS = "resources/models"


def shipped_model_name(kvs) -> str:
    """File name of the shipped model for these kV channels, e.g. ``unet_1kV_3kV.pt``."""
    return "unet_" + "_".join(f"{float(k):g}kV" for k in kvs) + ".pt"


def _shipped_kvs(folder: Path) -> dict:
    """{file name: kV list} of the shipped models, read from their names (``unet_1kV_3kV.pt``)."""
    out = {}
    for path in sorted(folder.glob("unet_*kV.pt")):
        try:
            out[path.name] = [float(k[:-2]) for k in path.stem.split("_")[1:]]
        except ValueError:
            continue
    return out


def stand_in_model(kvs, shipped: dict) -> str | None:
    """The shipped model that stands in for kV channels none was trained for, or None.

    A model with as many channels, each channel taken in rising kV order, is
    chosen by the smallest summed ``|log(kV_data / kV_model)|``; channels that
    are not in rising order (or no model with that many) get None.
    Measured (``benchmarks/kv_mismatch.py``): the 1 kV model at 1.5-2 kV and
    the 1 + 3 kV model at 1 + 5 and 1.5 + 3 kV lose 0.01 IoU or less on the
    simulator's stacks; at 3 or 5 kV alone and at 2 + 3 or 2 + 5 kV more (pore
    -0.15 and CBD -0.17 at 5 kV), always above multi-Otsu in pore and AM.

    Examples
    --------
    >>> shipped = {"unet_1kV.pt": [1.0], "unet_1kV_3kV.pt": [1.0, 3.0]}
    >>> stand_in_model([2.0], shipped), stand_in_model([2.0, 5.0], shipped)
    ('unet_1kV.pt', 'unet_1kV_3kV.pt')
    >>> stand_in_model([3.0, 1.0], shipped) is None, stand_in_model([1, 3, 5], shipped) is None
    (True, True)
    """
    from fibrecon.modelcard import kvs_can_stand_in

    kvs = [float(k) for k in kvs]
    fits = {name: float(np.abs(np.log(np.asarray(kvs) / np.asarray(m))).sum())
            for name, m in shipped.items() if kvs_can_stand_in(kvs, m)}
    return min(fits, key=fits.get) if fits else None


def auto_model(kvs, workflow_dir, sample: str = "") -> str:
    """The shipped model for a sample's segmentation channels (``segment: model: auto``).

    The model trained for exactly these kV channels; where there is none, the
    shipped model with as many channels at the nearest kV stands in
    (:func:`stand_in_model`; the segment log warns, :func:`kv_stand_in_note`).

    Raises
    ------
    ConfigError
        No shipped model takes as many channels in rising kV order; names the
        sample, the channels and the models there are.
    """
    folder = Path(workflow_dir) / SHIPPED_MODELS
    path = folder / shipped_model_name(kvs)
    if path.is_file():
        return str(path)
    shipped = _shipped_kvs(folder)
    stand_in = stand_in_model(kvs, shipped)
    if stand_in is not None:
        return str(folder / stand_in)
    raise ConfigError(
        f"segment: model: auto: no shipped model takes the kV channels {list(kvs)} of sample "
        f"'{sample}' (shipped: {sorted(shipped)}; one with as many channels stands in for "
        "other kV values when they are listed in rising order); choose segment: channels that "
        "one of them takes, give segment: model a model of yours, or train one (rule "
        "train_model), or use segment: method: multiotsu")


def auto_fallback_model(model_path) -> str | None:
    """The shipped domain-randomised model beside a shipped model, or None (``fallback_model: auto``).

    ``resources/models/unet_1kV_3kV.pt`` -> ``resources/models/unet_1kV_3kV_randomised.pt``
    where that file exists; the segment stage switches to it when the model's
    probe finds most of its CBD uncertain (:func:`fibrecon.uncertainty.uncertain_cbd_share`).

    Examples
    --------
    >>> auto_fallback_model("/nonexistent/unet_1kV_3kV.pt") is None
    True
    """
    path = Path(model_path)
    candidate = path.with_name(f"{path.stem}_randomised.pt")
    return str(candidate) if candidate.is_file() else None


def check_fallback_model(model_path, fallback_path, sample: str = "") -> None:
    """A fallback model must take the same kV channels and preprocessing as the model it
    stands in for (the segment stage hands it the same preprocessed stack).

    Raises
    ------
    ConfigError
        Naming both files and what differs.
    """
    from fibrecon.modelcard import ModelCard, ModelCardError
    from fibrecon.preprocess import PreprocessParams

    where = f" (sample '{sample}')" if sample else ""
    if not Path(fallback_path).is_file():
        raise ConfigError(f"segment: fallback_model{where}: {fallback_path}: no such model file "
                          "(auto finds the shipped randomised model beside a shipped model; "
                          "none switches the fallback off)")
    try:
        primary, fallback = ModelCard.read(model_path).data, ModelCard.read(fallback_path).data
    except ModelCardError as exc:
        raise ConfigError(f"segment: fallback_model: {exc}") from exc
    if [float(k) for k in primary["kvs"]] != [float(k) for k in fallback["kvs"]]:
        raise ConfigError(f"segment: fallback_model{where}: {fallback_path} takes kV "
                          f"{fallback['kvs']}, the model it stands in for ({model_path}) "
                          f"{primary['kvs']}; they must be the same")
    differ = PreprocessParams.from_record(primary.get("preprocess", {})).differences(
        fallback.get("preprocess", {}))
    if differ:
        raise ConfigError(f"segment: fallback_model{where}: {fallback_path} was trained with "
                          f"other preprocessing than {model_path} (fallback, model): {differ}; "
                          "the stack is preprocessed for the model, so they must agree")


def kv_stand_in_note(data_kvs, model_kvs, model_path) -> str | None:
    """The segment log's warning when a model runs on kV channels it was not trained for.

    Examples
    --------
    >>> kv_stand_in_note([1.0], [1.0], "m.pt") is None
    True
    >>> "2 kV -> 1 kV" in kv_stand_in_note([2.0], [1.0], "m.pt")
    True
    """
    data_kvs, model_kvs = [float(k) for k in data_kvs], [float(k) for k in model_kvs]
    if data_kvs == model_kvs:
        return None
    pairs = ", ".join(f"{a:g} kV -> {b:g} kV" for a, b in zip(data_kvs, model_kvs))
    return (f"no shipped model was trained for kV {data_kvs}: {model_path} (trained for "
            f"{model_kvs}) stands in, channel by channel ({pairs}). Measured on simulated "
            "stacks (benchmarks/RESULTS.md, 'Shipped models at other kV'): within 0.01 IoU of "
            "the trained kV at 1.5-2 kV (one channel) and at 1 + 5 or 1.5 + 3 kV; 0.15 lower "
            "pore and 0.17 lower CBD IoU at 5 kV alone. For the best accuracy at your kV, "
            "fine-tune on a few annotated slices (README, 'Correcting the segmentation') or "
            "train a model (rule train_model, train: kvs)")


def resolve_preprocess(preprocess: dict, method: str = "unet", card_preprocess=None) -> dict:
    """The preprocessing of a sample, with ``denoise: auto`` decided (the config's otherwise).

    ``auto`` is the denoising the segmentation model was trained with (its
    card's ``preprocess``: the filter and its size), so that the network sees
    what it learned on: none for the shipped 1 + 3 kV model, Gaussian for the
    1 kV one (on simulated 1 kV stacks its CBD IoU is 0.53-0.60 without and
    0.78-0.80 with it). For ``multiotsu``: Gaussian. For a model that does not
    exist yet (trained by the workflow) and no card: none, the training default.

    Examples
    --------
    >>> resolve_preprocess({"denoise": "auto", "denoise_sigma": 2.0}, "unet",
    ...                    {"denoise": "gaussian", "denoise_sigma": 1.5})
    {'denoise': 'gaussian', 'denoise_sigma': 1.5}
    >>> resolve_preprocess({"denoise": "auto"}, "multiotsu")["denoise"]
    'gaussian'
    >>> resolve_preprocess({"denoise": "median"}, "unet", {"denoise": "none"})["denoise"]
    'median'
    """
    out = dict(preprocess)
    if out.get("denoise") != "auto":
        return out
    out["denoise"] = "gaussian" if method != "unet" else "none"
    if method == "unet" and card_preprocess:
        out.update({k: card_preprocess[k] for k in ("denoise", "denoise_sigma", "denoise_radius_px")
                    if k in card_preprocess})
    return out
