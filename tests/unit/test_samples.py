import copy

import pandas as pd
import pytest
import yaml

from fibrecon.samples import (ConfigError, load_sample_sheet, load_schema, process_columns,
                              read_config,
                              resolve_voxel_size, validate_config)
from fibrecon.series import series_table


@pytest.fixture
def config_schema(repo):
    return load_schema(repo / "schemas" / "config.schema.yaml")


@pytest.fixture
def sheet_schema(repo):
    return load_schema(repo / "schemas" / "samples.schema.yaml")


@pytest.fixture
def config(repo):
    """The demo's configuration: config/config.yaml with config/demo/config.yaml over it."""
    return read_config(repo / "config" / "config.yaml", repo / "config" / "demo" / "config.yaml")


def test_shipped_config_is_valid(repo, config, config_schema):
    validate_config(config, config_schema)
    validate_config(yaml.safe_load((repo / "config" / "config.yaml").read_text()), config_schema)


def test_generic_config_carries_no_demo_setting(repo, config_schema):
    """config/config.yaml is for an unknown stack: no fiducial window, no trim, no demo series."""
    generic = validate_config(yaml.safe_load((repo / "config" / "config.yaml").read_text()),
                              config_schema)
    assert generic["align"]["fiducial_window"] == "auto"
    assert generic["align"]["trim_top_px"] == 0
    assert generic["raw"]["databar"] == "auto"
    assert generic["demo"]["samples"] == {}
    assert generic["samples"] == "config/samples.tsv"


def test_template_sheet_without_samples_is_a_named_error(repo, sheet_schema):
    with pytest.raises(ConfigError, match="samples.tsv: the sample sheet has no samples"):
        load_sample_sheet(repo / "config" / "samples.tsv", sheet_schema)


def test_defaults_are_filled(config_schema):
    cfg = validate_config({"samples": "s.tsv"}, config_schema)
    assert cfg["segment"]["nbins"] == 256 and cfg["metrics"]["device"] == "cpu"


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["segment"].update(nbinz=3), "key 'segment'.*'nbinz' was unexpected"),
    (lambda c: c["preprocess"].update(denoise_sigma="strong"), "key 'preprocess/denoise_sigma'"),
    (lambda c: c["align"].update(upsample_factor=0), "key 'align/upsample_factor'"),
    (lambda c: c["demo"].update(voxel_size_um=[0.06, 0, 0.06]), "key 'demo/voxel_size_um/1'"),
    # a key renamed when the particle separation went from voxels to micrometres
    (lambda c: c["metrics"].update(particle_h_px=1.0),
     r"(?s)'particle_h_px' was unexpected.*'particle_h_px' is now metrics: particle_h_um"),
])
def test_bad_config_names_the_key(config, config_schema, edit, message):
    bad = copy.deepcopy(config)
    edit(bad)
    with pytest.raises(ConfigError, match=message):
        validate_config(bad, config_schema, source="config.yaml")


HEADER = "sample\traw\tkvs\tvoxel_x_um\tvoxel_y_um\tvoxel_z_um\tline_load_N_per_mm\tbinder\n"


def _sheet(tmp_path, *rows):
    p = tmp_path / "samples.tsv"
    p.write_text(HEADER + "".join(r + "\n" for r in rows))
    return p


def _raw_folder(folder, *names):
    """A raw folder holding files of these names (empty: the sheet reads names only)."""
    folder.mkdir()
    for name in names:
        (folder / name).write_bytes(b"")


def test_sheet_loads_with_process_columns(tmp_path, sheet_schema):
    _raw_folder(tmp_path / "raw_a", "slice_0000_1kV.tif", "slice_0000_3kV.tif")
    p = _sheet(tmp_path, "a\traw_a\t1,3\t0.01\t0.01\t0.02\t500\tPVDF",
               "b\tsimulated\t2\tfrom_metadata\tfrom_metadata\t0.02\t1000\tPVDF")
    df = load_sample_sheet(p, sheet_schema, base_dir=tmp_path)
    assert df.at["a", "kvs"] == [1.0, 3.0] and df.at["b", "kvs"] == [2.0]
    assert df.at["a", "pattern"] == "slice_{slice:04d}_{kv}kV.tif"
    assert process_columns(df) == ["line_load_N_per_mm", "binder"]


def test_duplicate_sample_id(tmp_path, sheet_schema):
    p = _sheet(tmp_path, *["a\tsimulated\t1\t1\t1\t1\t0\tx"] * 2)
    with pytest.raises(ConfigError, match=r"duplicate sample id\(s\) \['a'\]"):
        load_sample_sheet(p, sheet_schema)


def test_missing_raw_folder_names_sample_and_folder(tmp_path, sheet_schema):
    p = _sheet(tmp_path, "a\tnot_there\t1\t1\t1\t1\t0\tx")
    with pytest.raises(ConfigError, match="sample 'a': raw data folder .*not_there does not exist"):
        load_sample_sheet(p, sheet_schema, base_dir=tmp_path)


def test_raw_files_that_do_not_fit_the_sheet_stop_at_start_up(tmp_path, sheet_schema):
    """The file names are checked when the sheet is read, before any job: a kV the folder
    does not hold, a gap in the slice numbering, an empty folder."""
    _raw_folder(tmp_path / "raw_a", *(f"slice_{z:04d}_{kv}kV.tif" for z in (0, 1, 3)
                                      for kv in (1, 5)))
    p = _sheet(tmp_path, "a\traw_a\t1,3\t0.01\t0.01\t0.02\t0\tx")
    with pytest.raises(ConfigError, match=r"sample 'a': columns 'raw', 'pattern', 'kvs': .*"
                                          r"for 3 kV; files of the pattern exist at 5 kV"):
        load_sample_sheet(p, sheet_schema, base_dir=tmp_path)
    p = _sheet(tmp_path, "a\traw_a\t1,5\t0.01\t0.01\t0.02\t0\tx")
    with pytest.raises(ConfigError, match=r"sample 'a': .*slice\(s\) \[2\] missing"):
        load_sample_sheet(p, sheet_schema, base_dir=tmp_path)
    (tmp_path / "raw_b").mkdir()
    p = _sheet(tmp_path, "b\traw_b\t1\t0.01\t0.01\t0.02\t0\tx")
    with pytest.raises(ConfigError, match=r"sample 'b': .*the folder is empty"):
        load_sample_sheet(p, sheet_schema, base_dir=tmp_path)


def test_bad_voxel_size_names_column(tmp_path, sheet_schema):
    p = _sheet(tmp_path, "a\tsimulated\t1\t-0.01\t1\t1\t0\tx")
    with pytest.raises(ConfigError, match="sample 'a': column 'voxel_x_um'"):
        load_sample_sheet(p, sheet_schema)


def test_non_numeric_process_parameter(tmp_path, sheet_schema):
    p = _sheet(tmp_path, "a\tsimulated\t1\t1\t1\t1\t500\tx", "b\tsimulated\t1\t1\t1\t1\thigh\tx")
    with pytest.raises(ConfigError, match=r"'line_load_N_per_mm' mixes numbers and text.*\['b'\]"):
        load_sample_sheet(p, sheet_schema)


def test_bad_kv_list(tmp_path, sheet_schema):
    p = _sheet(tmp_path, "a\tsimulated\t1,x\t1\t1\t1\t0\tx")
    with pytest.raises(ConfigError, match="column 'kvs'"):
        load_sample_sheet(p, sheet_schema)


def test_voxel_size_from_metadata_and_conflict():
    meta = {"pixel_size_um": (0.0394, 0.03),
            "origin": {"pixel_size_um": "FEI [Scan] PixelHeight, PixelWidth in f.tif"}}
    voxel, origin = resolve_voxel_size({"x": "from_metadata", "y": "from_metadata", "z": 0.05},
                                       meta)
    assert voxel == (0.05, 0.0394, 0.03)
    assert origin == {"z": "sample sheet: voxel_z_um",
                      "y": "metadata: FEI [Scan] PixelHeight, PixelWidth in f.tif",
                      "x": "metadata: FEI [Scan] PixelHeight, PixelWidth in f.tif"}
    with pytest.raises(ConfigError, match="0.04 µm in the sample sheet conflicts with 0.03 µm in "
                       r"the instrument metadata \(FEI \[Scan\] PixelHeight"):
        resolve_voxel_size({"x": 0.04, "y": "from_metadata", "z": 0.05}, meta, source="f.tif")
    with pytest.raises(ConfigError, match="voxel_z_um is 'from_metadata'"):
        resolve_voxel_size({"x": 0.03, "y": 0.0394, "z": "from_metadata"}, meta)


def test_series_table_carries_process_parameters_first():
    sheet = pd.DataFrame({"sample": ["a", "b"], "load": [0, 500]}).set_index("sample", drop=False)
    metrics = {"a": {"volume_fraction_pore": 0.4, "porosity_profile_z": [0.4]},
               "b": {"volume_fraction_pore": 0.3, "porosity_profile_z": [0.3]}}
    table = series_table(metrics, sheet, ["load"])
    assert list(table.columns) == ["sample", "load", "volume_fraction_pore"]
    assert table["load"].tolist() == [0, 500]
    with pytest.raises(KeyError, match="'c'"):
        series_table({"c": {}}, sheet, ["load"])


def test_series_plot_colours_each_series_and_skips_parameters_it_does_not_vary():
    from fibrecon.plot import metric_vs_parameters

    table = pd.DataFrame({"sample": ["p40", "p30", "m10", "m90"],
                          "series": ["calendering", "calendering", "mixing", "mixing"],
                          "porosity_target": [0.40, 0.30, None, None],
                          "mixing_time_min": [None, None, 10, 90],
                          "volume_fraction_pore": [0.40, 0.31, 0.35, 0.36],
                          "volume_fraction_pore_sd_half_edge": [0.01, 0.01, 0.02, 0.02]})
    fig = metric_vs_parameters(table, "volume_fraction_pore",
                               ["series", "porosity_target", "mixing_time_min"])
    calendering, mixing = [ax for ax in fig.axes if ax.get_legend()]
    assert calendering.get_xlabel() == "porosity target (-)"
    assert mixing.get_xlabel() == "mixing time (min)"
    assert [t.get_text() for t in calendering.get_legend().get_texts()] == [
        "calendering", "error bar: sampling spread"]
    assert [t.get_text() for t in mixing.get_legend().get_texts()][0] == "mixing"
    colours = {ax.get_xlabel(): ax.lines[0].get_color() for ax in fig.axes if ax.lines}
    assert colours["porosity target (-)"] != colours["mixing time (min)"]
    assert calendering.get_ylabel() == "volume fraction pore (-)"


def test_series_plots_leave_out_parameters_no_series_varies_and_labels_do_not_overprint():
    from fibrecon.plot import metric_vs_parameters, series_summary

    table = pd.DataFrame({"sample": [f"s{i}" for i in range(6)],
                          "series": ["cal"] * 3 + ["mix"] * 3,
                          "line_load_N_per_mm": [0, 500, 1000, 500, 500, 500],
                          "mixing_time_min": [30, 30, 30, 10, 30, 90],
                          "solid_content": [0.65] * 6,  # the same everywhere: no panel
                          "d50_um": [1.50, 1.501, 1.502, 1.4, 1.5, 1.6],  # near-identical y
                          "d50_um_sd_half_edge": [0.1] * 6})
    fig = metric_vs_parameters(table, "d50_um", ["series", "line_load_N_per_mm",
                                                 "mixing_time_min", "solid_content"])
    panels = [ax for ax in fig.axes if ax.get_xlabel()]
    assert [ax.get_xlabel() for ax in panels] == ["line load (N/mm)", "mixing time (min)"]
    assert all(ax.get_ylabel() == "d50 (µm)" for ax in panels)
    for ax in panels:  # labels placed where they overlap no other label
        fig.canvas.draw()
        boxes = [t.get_window_extent() for t in ax.texts]
        assert all(not a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    summary = series_summary(table, ["d50_um"], ["line_load_N_per_mm", "mixing_time_min",
                                                  "solid_content"])
    xlabels = [ax.get_xlabel() for ax in summary.axes]
    assert xlabels == ["line load (N/mm)", "mixing time (min)"]  # each series' main parameter


def _sheet_rows(tmp_path, sheet_schema, *rows):
    p = tmp_path / "s.tsv"
    p.write_text("sample\traw\tpattern\tkvs\tvoxel_x_um\tvoxel_y_um\tvoxel_z_um\n"
                 + "".join("\t".join(r) + "\n" for r in rows))
    return load_sample_sheet(p, sheet_schema, base_dir=tmp_path)


def test_check_workflow_names_what_does_not_fit(repo, tmp_path, config, config_schema,
                                                sheet_schema):
    """The start-up checks, called directly (rules/common.smk calls the same function)."""
    from fibrecon.modelcard import ModelCardError
    from fibrecon.samples import check_workflow

    cfg = validate_config(copy.deepcopy(config), config_schema)
    shipped = repo / "resources" / "models" / "unet_1kV_3kV.pt"
    row = ["demo_p40", "simulated", "s_{slice}_{kv}kV.tif", "1,3", "from_metadata",
           "from_metadata", "0.05"]
    check_workflow(cfg, _sheet_rows(tmp_path, sheet_schema, row), model_path=shipped)
    with pytest.raises(ConfigError, match=r"sample\(s\) \['ghost'\] have raw = 'simulated' but "
                                          "no entry under demo: samples"):
        check_workflow(cfg, _sheet_rows(tmp_path, sheet_schema, ["ghost", *row[1:]]),
                       model_path=shipped)
    with pytest.raises(ConfigError, match="voxel_z_um differs from the simulated slice"):
        check_workflow(cfg, _sheet_rows(tmp_path, sheet_schema, [*row[:6], "0.03"]),
                       model_path=shipped)
    one_kv = [*row[:3], "1", *row[4:]]
    with pytest.raises(ModelCardError, match=r"the model expects kV channels \[1.0, 3.0\]"):
        check_workflow(cfg, _sheet_rows(tmp_path, sheet_schema, one_kv), model_path=shipped)
    cfg["segment"]["channels"] = [5]
    with pytest.raises(ConfigError, match=r"segment: channels: kV \[5.0\] not acquired for "
                                          "sample 'demo_p40'"):
        check_workflow(cfg, _sheet_rows(tmp_path, sheet_schema, row), model_path=shipped)
    cfg["segment"]["channels"] = "all"
    cfg["metrics"]["particle_h_doubt_um"] = 0.075  # h - doubt < 0: refused before any job
    with pytest.raises(ConfigError, match=r"particle_h_doubt_um = 0.075 must be >= 0 and below "
                                          r"particle_h_um = 0.05"):
        check_workflow(cfg, _sheet_rows(tmp_path, sheet_schema, row), model_path=shipped)
    cfg["metrics"]["particle_h_doubt_um"] = 0.025
    with pytest.raises(ModelCardError, match="segment: model: .*nowhere.pt: model file not found"):
        check_workflow(cfg, _sheet_rows(tmp_path, sheet_schema, row),
                       model_path=tmp_path / "nowhere.pt")
    cfg["segment"]["method"] = "multiotsu"  # no model needed
    check_workflow(cfg, _sheet_rows(tmp_path, sheet_schema, row), model_path=None)
    cfg["segment"]["method"] = "unet"  # a model to train from label volumes that do not exist
    cfg["train"]["label_volumes"] = [str(tmp_path / "no_such_volume.tif")]
    with pytest.raises(ConfigError, match=r"train: label_volumes: no such file.*no_such_volume"):
        check_workflow(cfg, _sheet_rows(tmp_path, sheet_schema, row),
                       model_path="results/models/unet.pt")


def test_a_pattern_without_kv_is_for_a_single_kv_acquisition_only(tmp_path, sheet_schema):
    _raw_folder(tmp_path / "raw_a", "slice_0000.tif", "slice_0001.tif")
    p = tmp_path / "samples.tsv"
    p.write_text("sample\traw\tpattern\tkvs\tvoxel_x_um\tvoxel_y_um\tvoxel_z_um\n"
                 "a\traw_a\tslice_{slice:04d}.tif\t2\t0.01\t0.01\t0.02\n")
    assert load_sample_sheet(p, sheet_schema, base_dir=tmp_path).at["a", "kvs"] == [2.0]
    p.write_text("sample\traw\tpattern\tkvs\tvoxel_x_um\tvoxel_y_um\tvoxel_z_um\n"
                 "a\traw_a\tslice_{slice:04d}.tif\t1,3\t0.01\t0.01\t0.02\n")
    with pytest.raises(ConfigError, match=r"sample 'a': column 'pattern'.*no \{kv\} field"):
        load_sample_sheet(p, sheet_schema, base_dir=tmp_path)


@pytest.mark.parametrize("roi, message", [("1:2, 3:4", "three ranges"), ("a:b, :, :", "integers"),
                                          ("5:5, :, :", "stop > start"), (":, 10, :", "start:stop")])
def test_a_malformed_roi_names_the_sample_and_column(tmp_path, sheet_schema, roi, message):
    (tmp_path / "raw_a").mkdir()
    p = tmp_path / "samples.tsv"
    p.write_text("sample\traw\tkvs\tvoxel_x_um\tvoxel_y_um\tvoxel_z_um\troi\n"
                 f"a\traw_a\t1\t0.01\t0.01\t0.02\t{roi}\n")
    with pytest.raises(ConfigError, match=f"sample 'a': column 'roi': .*{message}"):
        load_sample_sheet(p, sheet_schema, base_dir=tmp_path)


def test_roi_is_not_a_process_parameter_and_fits_or_is_named(tmp_path, sheet_schema):
    from fibrecon.samples import fit_roi, parse_roi

    _raw_folder(tmp_path / "raw_a", "slice_0000_1kV.tif")
    p = tmp_path / "samples.tsv"
    p.write_text("sample\traw\tkvs\tvoxel_x_um\tvoxel_y_um\tvoxel_z_um\troi\tload\n"
                 "a\traw_a\t1\t0.01\t0.01\t0.02\t:, 100:900, \t5\n"
                 "b\traw_a\t1\t0.01\t0.01\t0.02\t\t7\n")
    df = load_sample_sheet(p, sheet_schema, base_dir=tmp_path)
    assert process_columns(df) == ["load"] and df.at["b", "roi"] == ""
    assert fit_roi(parse_roi(df.at["a", "roi"]), (10, 1000, 800)) == \
        (slice(0, 10), slice(100, 900), slice(0, 800))
    with pytest.raises(ConfigError, match="sample a: roi y range 100:900 does not fit"):
        fit_roi(parse_roi(df.at["a", "roi"]), (10, 512, 800), source="sample a")


def test_model_auto_picks_the_shipped_model_of_each_samples_channels(repo, tmp_path,
                                                                    sheet_schema, config,
                                                                    config_schema):
    """segment: model: auto (the default): 1 kV -> unet_1kV.pt, 1 + 3 kV -> unet_1kV_3kV.pt,
    both accepted by check_workflow per sample; other kV values get the model with as many
    channels as a stand-in; channels no shipped model can take are named."""
    from fibrecon.modelcard import ModelCardError
    from fibrecon.samples import auto_model, check_workflow

    assert auto_model([1.0], repo).endswith("resources/models/unet_1kV.pt")
    assert auto_model([1.0, 3.0], repo).endswith("resources/models/unet_1kV_3kV.pt")
    # other kV values: the shipped model with as many channels stands in (the log warns)
    assert auto_model([2.0], repo).endswith("resources/models/unet_1kV.pt")
    assert auto_model([2.0, 5.0], repo).endswith("resources/models/unet_1kV_3kV.pt")
    with pytest.raises(ConfigError, match=r"no shipped model takes the kV channels \[3.0, 1.0\] "
                                          r"of sample 'x' \(shipped: \['unet_1kV.pt'"):
        auto_model([3.0, 1.0], repo, "x")  # not in rising order: which channel is which?
    with pytest.raises(ConfigError, match=r"kV channels \[1.0, 2.0, 5.0\]"):
        auto_model([1.0, 2.0, 5.0], repo, "x")
    cfg = validate_config(copy.deepcopy(config), config_schema)
    assert cfg["segment"]["model"] == "auto"
    rows = [["a", "simulated", "s_{slice}_{kv}kV.tif", "1,3", "from_metadata", "from_metadata",
             "0.05"], ["b", "simulated", "s_{slice}_{kv}kV.tif", "1", "from_metadata",
                       "from_metadata", "0.05"]]
    sheet = _sheet_rows(tmp_path, sheet_schema, *rows)
    cfg["demo"]["samples"] = {"a": {"porosity": 0.4, "seed": 1}, "b": {"porosity": 0.3, "seed": 2}}
    models = {s: auto_model(sheet.at[s, "kvs"], repo, s) for s in sheet.index}
    check_workflow(cfg, sheet, model_path=models)
    # a 2 + 5 kV sample passes with the stand-in under auto, not with the model named
    rows[0][3] = "2,5"
    sheet = _sheet_rows(tmp_path, sheet_schema, *rows)
    models = {s: auto_model(sheet.at[s, "kvs"], repo, s) for s in sheet.index}
    check_workflow(cfg, sheet, model_path=models)
    with pytest.raises(ModelCardError, match=r"expects kV channels \[1.0, 3.0\]"):
        check_workflow({**cfg, "segment": {**cfg["segment"], "model": models["a"]}}, sheet,
                       model_path=models)


def test_the_fallback_model_is_the_shipped_randomised_one_and_must_fit_its_model(repo, tmp_path):
    """segment: fallback_model: auto finds the randomised model beside the 1 + 3 kV model and
    none beside the 1 kV one; a fallback with other kV channels or other preprocessing stops
    at start-up naming both files."""
    from fibrecon.modelcard import ModelCard
    from fibrecon.samples import auto_fallback_model, check_fallback_model
    from fibrecon.unet import load_model, save_model

    models = repo / "resources" / "models"
    fallback = auto_fallback_model(models / "unet_1kV_3kV.pt")
    assert fallback == str(models / "unet_1kV_3kV_randomised.pt")
    assert auto_fallback_model(models / "unet_1kV.pt") is None
    check_fallback_model(models / "unet_1kV_3kV.pt", fallback, "a")
    with pytest.raises(ConfigError, match=r"sample 'a'.*unet_1kV.pt takes kV \[1.0\].*"
                                          r"unet_1kV_3kV.pt\) \[1.0, 3.0\]"):
        check_fallback_model(models / "unet_1kV_3kV.pt", models / "unet_1kV.pt", "a")
    net, card = load_model(fallback)
    card = ModelCard(dict(card, preprocess={**card["preprocess"], "denoise": "gaussian"}))
    save_model(tmp_path / "other.pt", net, card)
    with pytest.raises(ConfigError, match=r"other.pt was trained with other preprocessing.*"
                                          r"denoise"):
        check_fallback_model(models / "unet_1kV_3kV.pt", tmp_path / "other.pt")
    with pytest.raises(ConfigError, match=r"fallback_model \(sample 'b'\): nope.pt: no such"):
        check_fallback_model(models / "unet_1kV_3kV.pt", "nope.pt", "b")
    assert ModelCard.read(fallback).boundary_shift_sd is not None  # calibrated: its sd exist


def test_series_table_names_each_samples_network_and_a_mixed_series_is_a_warning():
    """A sample the fallback model segmented sits in the series beside samples the model
    segmented: the table says which network made each row, and the series log warns."""
    from fibrecon.series import mixed_models_warning

    sheet = pd.DataFrame({"sample": ["a", "b", "c"], "load": [0, 500, 1000]}).set_index(
        "sample", drop=False)
    metrics = {s: {"volume_fraction_pore": 0.3, "segmentation_model": "unet_1kV_3kV.pt"}
               for s in "abc"}
    table = series_table(metrics, sheet, ["load"])
    assert list(table.columns) == ["sample", "load", "segmentation_model", "volume_fraction_pore"]
    assert mixed_models_warning(table) is None
    metrics["b"]["segmentation_model"] = "unet_1kV_3kV_randomised.pt"
    message = mixed_models_warning(series_table(metrics, sheet, ["load"]))
    assert "unet_1kV_3kV.pt: a, c; unet_1kV_3kV_randomised.pt: b" in message
    assert "segment.fallback_model: none" in message
