"""The real workflow on a tiny simulated series, in a temporary directory."""

import subprocess

import numpy as np
import pandas as pd
import pytest
from helpers import REPO, assert_stops_before_any_job, snakemake, summary, write_setup

from fibrecon import files as fio
from fibrecon import simulated_files

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def series(tmp_path_factory, finished_series):
    """A copy of the finished tiny series (conftest.py), which these tests edit and rerun."""
    import shutil

    folder = tmp_path_factory.mktemp("series") / "series"
    shutil.copytree(finished_series, folder, symlinks=True)
    return folder


def test_series_table_has_one_row_per_sample_with_process_parameters(series):
    table = pd.read_csv(series / "results" / "series" / "metrics.tsv", sep="\t")
    assert table["sample"].tolist() == ["tiny_a", "tiny_b"]
    assert table["calendering_line_load_N_per_mm"].tolist() == [0, 1000]
    assert (table["binder"] == "PVDF").all()
    # porosity falls as calendering rises, as the simulated truth does
    assert table["volume_fraction_pore"].iloc[0] > table["volume_fraction_pore"].iloc[1]
    for col in ("tau_pore_z", "tau_pore_y", "tau_pore_x"):
        assert (table[col] >= 1.0).all()
    assert (series / "results" / "series" / "volume_fraction_pore.png").stat().st_size > 1000


def test_every_rule_wrote_a_log_and_volumes_keep_their_voxel_size(series):
    for stage in ("demo_stack", "align", "preprocess", "segment", "qc_figure", "volume", "metrics"):
        assert (series / "logs" / stage / "tiny_a.log").is_file(), stage
        if stage not in ("demo_stack", "qc_figure"):
            assert (series / "benchmarks" / stage / "tiny_a.tsv").is_file(), stage
    labels, voxel = fio.read_volume(series / "results" / "volume" / "tiny_a.tif")
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1, 2}
    np.testing.assert_allclose(voxel, (0.05, 0.05, 0.05), rtol=1e-5)
    assert fio.read_ome_scale(series / "results" / "volume" / "tiny_a.ome.tif") == \
        pytest.approx((0.05, 0.05, 0.05), rel=1e-5)
    import tifffile
    np.testing.assert_array_equal(tifffile.imread(series / "results" / "volume" /
                                                  "tiny_a.ome.tif"), labels)
    pre, pre_voxel = fio.read_volume(series / "results" / "preprocessed" / "tiny_a.tif")
    assert fio.read_ome_scale(series / "results" / "preprocessed" / "tiny_a.ome.tif") == \
        pytest.approx(pre_voxel, rel=1e-5)
    ome = tifffile.TiffFile(series / "results" / "preprocessed" / "tiny_a.ome.tif")
    assert ome.series[0].axes == "ZCYX"
    np.testing.assert_array_equal(ome.series[0].asarray(), pre)
    info = fio.read_json(series / "results" / "aligned" / "tiny_a.json")
    assert info["voxel_size_origin"]["z"] == "sample sheet: voxel_z_um"
    assert info["voxel_size_origin"]["x"].startswith("metadata: FEI [Scan] PixelHeight")
    assert not list((series / "results").rglob("*.part"))


def test_editing_a_segment_parameter_reruns_only_segment_and_after(series):
    before = {p: p.stat().st_mtime_ns for stage in ("raw", "aligned", "preprocessed")
              for p in (series / "results" / stage).rglob("*") if p.is_file()}
    write_setup(series, config_edit=lambda c: c["segment"].update(nbins=128))
    plan = summary(series)
    pending = set(plan.loc[plan["plan"] == "update pending", "rule"])
    assert pending == {"segment", "qc_figure", "volume", "metrics", "series", "record"}
    untouched = set(plan.loc[plan["plan"] == "no update", "rule"])
    assert {"demo_stack", "align", "preprocess"} <= untouched
    snakemake(series, "--cores", "2")
    after = {p: p.stat().st_mtime_ns for p in before}
    assert after == before
    plan = summary(series)
    assert (plan["plan"] == "no update").all()


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["segment"].update(nbinz=3), "'nbinz' was unexpected"),
    (lambda c: c["volume"].update(min_object_voxels=-1), "key 'volume/min_object_voxels'"),
])
def test_bad_config_stops_before_any_job(tmp_path, edit, message):
    assert_stops_before_any_job(tmp_path, edit, message)


def test_duplicate_sample_and_missing_folder_stop_before_any_job(tmp_path):
    row = ["x", "simulated", "s_{slice:03d}_{kv}kV.tif", "1", "0.1", "0.1", "0.1", "0", "a"]
    write_setup(tmp_path, sheet_rows=[row, row])
    result = snakemake(tmp_path, "--cores", "1", check=False)
    assert result.returncode != 0 and "duplicate sample id(s) ['x']" in result.stderr
    missing = ["y", "data/none", "s_{slice:03d}_{kv}kV.tif", "1", "0.1", "0.1", "0.1", "0", "a"]
    write_setup(tmp_path, sheet_rows=[missing])
    result = snakemake(tmp_path, "--cores", "1", check=False)
    assert "sample 'y': raw data folder" in result.stderr and "does not exist" in result.stderr
    assert not (tmp_path / "results").exists()


def test_record_is_valid_and_carries_units_checksums_and_model(series):
    import jsonschema

    from fibrecon.record import metric_unit

    record = fio.read_json(series / "results" / "records" / "tiny_a.json")
    jsonschema.validate(record, fio.read_json(REPO / "schemas" / "record.schema.json"))
    assert record["sample"] == "tiny_a"
    assert record["process_parameters"] == {"calendering_line_load_N_per_mm": 0, "binder": "PVDF"}
    raw = series / "results" / "raw" / "tiny_a"
    assert record["inputs"]["s_000_1kV.tif"] == fio.file_sha256(raw / "s_000_1kV.tif")
    assert len(record["inputs"]) == 20  # 10 slices x 2 kV, nothing else
    assert record["instrument"]["voxel_size_origin"]["z"] == "sample sheet: voxel_z_um"
    channels = record["instrument"]["channels"]
    assert [c["kv"] for c in channels] == [1.0, 3.0]
    assert channels[1]["origin"]["kv"] == "FEI [EBeam] HV in s_000_3kV.tif"
    assert channels[0]["date"] and record["instrument"]["origin"]["detector"].startswith("FEI")
    assert record["segmentation_model"]["card"]["kvs"] == [1.0, 3.0]
    m = record["metrics"]
    assert m["d50_um"]["unit"] == "um" and m["number_density_per_um3"]["unit"] == "1/um^3"
    assert m["volume_fraction_pore"]["error"] is not None
    assert metric_unit("specific_area_am_pore_per_um") == "1/um"
    for path in record["figures"].values():
        assert (series / path).is_file()


def test_a_stack_the_probe_finds_unlike_the_training_data_goes_to_the_fallback_model(
        tmp_path, finished_series):
    """segment.fallback_model: auto. Every record names the network that segmented the sample
    and the probe that chose it; with fallback_above 0 every probe is 'unlike the training
    data': segment warns and switches to the shipped randomised model, and the metrics (its
    card's calibration, the series table's segmentation_model column) and the record follow
    it."""
    import shutil

    from fibrecon.modelcard import ModelCard

    series = tmp_path / "series"
    shutil.copytree(finished_series, series, symlinks=True)
    record = fio.read_json(series / "results" / "records" / "tiny_a.json")
    probe = record["segmentation_model"]["probe"]
    assert probe["switched"] == (probe["uncertain_fraction_cbd"] > 0.5)
    # the two networks' agreement on the probe's CBD, logged; a warning only below the bound
    from fibrecon.uncertainty import AGREEMENT_CBD_WARN_BELOW

    assert 0.0 <= probe["agreement_cbd_iou"] <= 1.0
    log = (finished_series / "logs" / "segment" / "tiny_a.log").read_text()
    assert f"label its CBD with an IoU of {probe['agreement_cbd_iou']:.3f}" in log
    assert ("two networks trained apart disagree" in log) == \
        (probe["agreement_cbd_iou"] < AGREEMENT_CBD_WARN_BELOW)
    assert record["segmentation_model"]["path"] == probe["fallback" if probe["switched"]
                                                         else "model"]
    # the other network's reading of the probe slices is a term of every segmentation sd
    other = "model" if probe["switched"] else "fallback"
    reading = fio.read_json(finished_series / "results" / "metrics" / "tiny_a.json")[
        "segmentation_doubt"]["other_network"]
    assert reading["name"] == probe[other].rsplit("/", 1)[-1]
    assert reading["slices"] == probe["slices"]
    assert reading["fractions_other"] == probe[f"fractions_{other}"]
    assert abs(sum(probe["fractions_model"]) - 1) < 1e-3
    fallback = REPO / "resources" / "models" / "unet_1kV_3kV_randomised.pt"
    assert probe["fallback"] == str(fallback)
    table = fio.read_table(series / "results" / "series" / "metrics.tsv")
    names = [fio.read_json(series / "results" / "records" / f"{s}.json")["segmentation_model"]
             ["path"].rsplit("/", 1)[-1] for s in table["sample"]]
    assert table["segmentation_model"].tolist() == names  # which network made each row
    write_setup(series, config_edit=lambda c: c["segment"].update(fallback_above=0.0))
    snakemake(series, "--cores", "2", "results/records/tiny_a.json")
    log = (series / "logs" / "segment" / "tiny_a.log").read_text()
    assert "WARNING" in log and f"the fallback model {fallback} segments this sample" in log
    record = fio.read_json(series / "results" / "records" / "tiny_a.json")
    used = record["segmentation_model"]
    assert used["path"] == str(fallback) and used["probe"]["switched"] is True
    assert used["sha256"] == fio.file_sha256(fallback)
    card = ModelCard.read(fallback)
    assert used["card"]["calibration"] == card.data["calibration"]
    assert str(card.boundary_shift_sd) in (series / "logs" / "metrics" / "tiny_a.log").read_text()
    metrics = fio.read_json(series / "results" / "metrics" / "tiny_a.json")
    assert metrics["segmentation_model"] == "unet_1kV_3kV_randomised.pt"
    reading = metrics["segmentation_doubt"]["other_network"]  # now the shipped model's reading
    assert reading["name"] == "unet_1kV_3kV.pt"
    assert reading["fractions_other"] == used["probe"]["fractions_model"]
    assert any(n.startswith("unet_1kV_3kV.pt reads") for n in metrics["notes"])
    snakemake(series, "--cores", "2", "results/qc/tiny_a.png")
    assert "segmented by unet_1kV_3kV_randomised.pt (the fallback" in \
        (series / "logs" / "qc_figure" / "tiny_a.log").read_text()


def test_switching_on_charging_removal_reruns_from_preprocess_and_is_logged(series):
    write_setup(series, config_edit=lambda c: c["preprocess"].update(charging=True))
    plan = summary(series)
    pending = set(plan.loc[plan["plan"] == "update pending", "rule"])
    assert pending == {"preprocess", "segment", "qc_figure", "volume", "metrics", "series",
                       "record"}
    snakemake(series, "--cores", "2")
    assert "charging removal replaced" in (series / "logs" / "preprocess" / "tiny_a.log").read_text()
    # the shipped network was trained without it: said, not refused
    assert "'charging': (False, True)" in (series / "logs" / "segment" / "tiny_a.log").read_text()


def test_a_user_sheet_without_a_cap_runs_on_the_generic_config_with_no_demo_setting(tmp_path):
    """config/config.yaml as shipped, a user's own acquisition (no cap, Zeiss metadata with a
    tilt-corrected image): no fiducial window or trim of the demo is applied, the log says
    that the registration follows the structure, the JSON says what was cut and why."""
    import yaml

    from fibrecon.simulate import simulate_sample

    s = simulate_sample((8, 100, 100), porosity=0.35, seed=3)  # 33 px spread tiles
    simulated_files.write_acquisition(tmp_path / "data" / "user_a", s.raw, s.kvs, "img_{slice:03d}_{kv}kV.tif",
                          0.05, vendor="Zeiss")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text((REPO / "config" / "config.yaml").read_text())
    (tmp_path / "config" / "samples.tsv").write_text(
        "sample\traw\tpattern\tkvs\tvoxel_x_um\tvoxel_y_um\tvoxel_z_um\tline_load\n"
        "user_a\tdata/user_a\timg_{slice:03d}_{kv}kV.tif\t1,3\tfrom_metadata\tfrom_metadata\t"
        "0.05\t10\n")
    assert "fiducial_window: auto" in (tmp_path / "config" / "config.yaml").read_text()
    snakemake(tmp_path, "--cores", "1", "results/aligned/user_a.json")
    info = fio.read_json(tmp_path / "results" / "aligned" / "user_a.json")
    spread = info["registration"].pop("drift_sd")
    assert info["registration"] == {"window": None, "source": "whole image", "trim_top_px": 0}
    # on the structure, the drift error is estimated from 2x2 tiles and written per slice
    assert spread["tiles"] == 3 and spread["rms_px"] >= 0
    shifts = fio.read_table(tmp_path / "results" / "aligned" / "user_a_shifts.tsv")
    assert shifts["drift_sd_px"].iloc[0] == 0 and shifts["drift_sd_px"].notna().all()
    assert info["databar"]["rows"] == 0 and "none detected" in info["databar"]["origin"]
    assert info["origin_yx"][0] < 8  # no demo trim of 24 rows
    log = (tmp_path / "logs" / "align" / "user_a.log").read_text()
    assert "registering on the structure itself" in log and "WARNING" in log
    assert "estimated drift error of the registration on the structure" in log
    assert yaml.safe_load((tmp_path / "config" / "config.yaml").read_text())["align"][
        "trim_top_px"] == 0


def test_a_region_of_interest_is_cut_after_registration_and_one_that_does_not_fit_stops(
        tmp_path):
    """roi "2:7, 10:50, :" keeps slices 2-6 and rows 10-49 (registered on whole slices); the
    JSON says what was kept; a roi beyond the images stops naming it, before registration."""
    from fibrecon.simulate import simulate_sample

    s = simulate_sample((8, 72, 64), porosity=0.35, seed=3)
    simulated_files.write_acquisition(tmp_path / "data" / "user_a", s.raw, s.kvs,
                                      "img_{slice:03d}_{kv}kV.tif", 0.05, vendor="Zeiss")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text((REPO / "config" / "config.yaml").read_text())
    sheet = tmp_path / "config" / "samples.tsv"

    def write(roi):
        sheet.write_text("sample\traw\tpattern\tkvs\tvoxel_x_um\tvoxel_y_um\tvoxel_z_um\troi\n"
                         f"user_a\tdata/user_a\timg_{{slice:03d}}_{{kv}}kV.tif\t1,3\t"
                         f"from_metadata\tfrom_metadata\t0.05\t{roi}\n")

    write("2:7, 10:50, :")
    snakemake(tmp_path, "--cores", "1", "results/aligned/user_a.json")
    info = fio.read_json(tmp_path / "results" / "aligned" / "user_a.json")
    assert info["roi"]["slices"] == [2, 7] and info["roi"]["rows"] == [10, 50]
    assert info["origin_yx"][0] == 10
    with fio.VolumeReader(tmp_path / "results" / "aligned" / "user_a.tif") as vol:
        assert vol.shape[:3] == (5, 2, 40)
    assert len(fio.read_table(tmp_path / "results" / "aligned" / "user_a_shifts.tsv")) == 8
    align_log = (tmp_path / "logs" / "align" / "user_a.log").read_text()
    assert "region of interest" in align_log
    # 72 x 64 px images: 3x3 tiles of 21 px are too small to estimate the drift error, said so
    assert "the drift error of the registration on the structure is not estimated" in align_log
    assert fio.read_table(tmp_path / "results" / "aligned" / "user_a_shifts.tsv")[
        "drift_sd_px"].isna().all()
    write(":, 10:500, :")
    result = snakemake(tmp_path, "--cores", "1", "--forceall", "results/aligned/user_a.json",
                       check=False)
    assert result.returncode != 0
    log = (tmp_path / "logs" / "align" / "user_a.log").read_text()
    assert "roi y range 10:500 does not fit the stack's 72 pixels in y" in log
    assert "drift y" not in log  # stopped before the registration


def test_a_single_image_is_segmented_with_the_auto_model_and_its_metrics_stop_by_name(
        tmp_path, shared_data):
    """One real SEM image, single kV (2 kV, for which no model was trained), a file name
    without kV: segment: model: auto takes the shipped 1 kV model as a stand-in and the log
    says so, the QC figure and volume are made, the segment log warns that the voxels labelled
    AM form two grey populations (the network takes this image's bright CBD for AM), the align
    log warns that the 3D metrics need 8 slices, and the metrics job stops naming the sample and
    its shape."""
    import shutil

    image = shared_data / "sem_images" / "nmc_cathode_sem_682x1024.tif"
    (tmp_path / "data" / "sem").mkdir(parents=True)
    shutil.copy(image, tmp_path / "data" / "sem" / image.name)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text((REPO / "config" / "config.yaml").read_text())
    (tmp_path / "config" / "samples.tsv").write_text(
        "sample\traw\tpattern\tkvs\tvoxel_x_um\tvoxel_y_um\tvoxel_z_um\n"
        f"sem1\tdata/sem\t{image.name}\t2\t0.02\t0.02\t0.02\n")
    snakemake(tmp_path, "--cores", "2", "results/qc/sem1.png", "results/volume/sem1.tif")
    segment_log = (tmp_path / "logs" / "segment" / "sem1.log").read_text()
    assert "unet_1kV.pt" in segment_log
    assert "WARNING" in segment_log and "2 kV -> 1 kV" in segment_log
    assert "WARNING the voxels labelled am" in segment_log
    assert "two grey populations" in segment_log
    assert "the 3D metrics need at least 8" in (tmp_path / "logs" / "align" / "sem1.log").read_text()
    result = snakemake(tmp_path, "--cores", "1", "results/metrics/sem1.json", check=False)
    assert result.returncode != 0
    assert "(sample sem1): a volume of (1, 682, 1024)" in \
        (tmp_path / "logs" / "metrics" / "sem1.log").read_text()


def test_a_label_volume_made_elsewhere_goes_from_the_volume_stage_to_the_series_table(
        tmp_path, shared_data):
    """Sheet column labels: a real-geometry NMC volume (MATBOX, values 0/1/2 written as
    0/128/255, voxel size from its ImageJ calibration) runs volume -> metrics -> record ->
    series with no acquisition stage; its record is valid and names the source file."""
    import tifffile

    vol = tifffile.imread(shared_data / "nmc_label_volumes" / "matbox_nmc1_251x301x301.tif")
    vol = np.array([0, 128, 255], np.uint8)[vol[:32, :48, :48]]
    (tmp_path / "data").mkdir()
    tifffile.imwrite(tmp_path / "data" / "seg.tif", vol, imagej=True,
                     resolution=(1 / 0.04, 1 / 0.04), metadata={"unit": "um", "spacing": 0.05})
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text((REPO / "config" / "config.yaml").read_text())
    (tmp_path / "config" / "samples.tsv").write_text(
        "sample\tlabels\tvoxel_x_um\tvoxel_y_um\tvoxel_z_um\troi\tline_load\n"
        "seg1\tdata/seg.tif\tfrom_metadata\tfrom_metadata\tfrom_metadata\t:, :, 0:40\t10\n")
    snakemake(tmp_path, "--cores", "2")
    table = fio.read_table(tmp_path / "results" / "series" / "metrics.tsv")
    assert list(table["sample"]) == ["seg1"] and table["line_load"].tolist() == [10]
    fractions = [(vol[:, :, :40] == v).mean() for v in (0, 128, 255)]
    assert table["volume_fraction_pore"].iloc[0] == pytest.approx(fractions[0], abs=0.01)
    record = fio.read_json(tmp_path / "results" / "records" / "seg1.json")
    assert record["instrument"]["voxel_size_um"] == {"z": 0.05, "y": 0.04, "x": 0.04}
    assert list(record["inputs"]) == ["seg.tif"] and "qc" not in record["figures"]
    assert record["instrument"]["roi"]["columns"] == [0, 40]
    assert fio.read_json(tmp_path / "results" / "metrics" / "seg1.json")["shape"] == [32, 48, 40]
    assert not (tmp_path / "results" / "aligned").exists()
    assert not (tmp_path / "results" / "segmented").exists()


def test_editing_a_library_module_reruns_every_rule_that_imports_it(tmp_path):
    """Editing extrema.py (imported by particles.py, imported by metrics.py) in a copy of
    the workflow makes metrics and everything after it pending, and nothing before.
    (Snakemake 9.18+ compares input checksums, so a bare touch is not an edit.)"""
    import shutil
    import subprocess
    import sys

    copy = tmp_path / "fibrecon"
    shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns(
        ".git", ".venv", "results", "logs", ".snakemake", "__pycache__", "benchmarks", "tests",
        "*.egg-info", ".bench"))
    work = tmp_path / "work"
    write_setup(work, config_edit=lambda c: c["demo"].update(
        samples={"tiny_a": {"porosity": 0.40, "seed": 1}}, shape=[8, 48, 64]),
        sheet_rows=[["tiny_a", "simulated", "s_{slice:03d}_{kv}kV.tif", "1,3", "from_metadata",
                     "from_metadata", "0.05", "0", "PVDF"]])
    command = [sys.executable, "-m", "snakemake", "-s", str(copy / "Snakefile"), "--directory",
               str(work)]
    run = subprocess.run([*command, "--cores", "2"], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    with open(copy / "src" / "fibrecon" / "extrema.py", "a") as module:
        module.write("\n# an edit\n")
    out = subprocess.run([*command, "--summary"], check=True, capture_output=True, text=True)
    import io

    plan = pd.read_csv(io.StringIO(out.stdout[out.stdout.index("output_file"):]), sep="\t")
    pending = set(plan.loc[plan["plan"] == "update pending", "rule"])
    assert pending == {"metrics", "series", "record"}, plan[["rule", "plan"]]


def _chromium():
    """Debian's chromium, installed when missing and root; None (the test is skipped) otherwise."""
    import os
    import shutil

    found = shutil.which("chromium")
    if found or os.geteuid() != 0:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"],
                   capture_output=True, env=env)
    return shutil.which("chromium")


def test_report_opens_in_a_real_browser_with_its_figures_and_table(series, tmp_path):
    """snakemake --report of the tiny series, opened in headless Chromium: no script error,
    the result categories, the series table and every sample's 3D view are there, and the
    screenshot is not blank."""
    import matplotlib.image

    browser = _chromium()
    if browser is None:
        pytest.skip("chromium not installed and not root to install it (apt-get install chromium)")
    snakemake(series, "--report", "report.html")
    page = f"file://{series / 'report.html'}"
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1000",
             "--virtual-time-budget=15000", "--enable-logging=stderr", "--v=0"]
    dom = subprocess.run([*flags, "--dump-dom", page], capture_output=True, text=True,
                         timeout=180)
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
    errors = [line for line in console if "Uncaught" in line or "ERROR:CONSOLE" in line]
    assert not errors, errors
    for category in ("A series summary", "Alignment", "Quality control", "Series", "Volumes"):
        assert f">{category}<" in dom.stdout, category
    # the summary figure leads the report's results
    assert dom.stdout.index(">A series summary<") < dom.stdout.index(">Alignment<")
    assert "metrics.tsv" in dom.stdout  # the series table
    for sample in ("tiny_a", "tiny_b"):
        assert f"{sample}_3d.png" in dom.stdout and f"{sample}_orthoslices.png" in dom.stdout
    shot = tmp_path / "report.png"
    subprocess.run([*flags, f"--screenshot={shot}", page], capture_output=True, timeout=180)
    image = matplotlib.image.imread(shot)[..., :3]
    drawn = (image.mean(axis=2) < 0.95).mean()  # text, icons and the rule graph on white
    colours = len(np.unique((image * 255).astype(np.uint8).reshape(-1, 3), axis=0))
    assert image.std() > 0.05 and drawn > 0.01 and colours > 50, (image.std(), drawn, colours)
