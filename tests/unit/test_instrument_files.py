"""Real FEI and Zeiss instrument TIFFs (../shared/data/instrument_tiffs, RosettaSciIO's
test data, GPL-3.0): pixel size, tilt, data bar and bad metadata, checked against
RosettaSciIO's own reader."""

import shutil

import numpy as np
import pytest
import tifffile

from fibrecon import files
from fibrecon import simulated_files
from fibrecon.samples import ConfigError, resolve_voxel_size

#: file -> (pixel size in µm that RosettaSciIO's tests expect, data-bar rows, kV)
REAL = {
    "FEI-Helios-Ebeam-16bits.tif": (3.3724, 29, 5),
    "FEI-Helios-navcam-with-no-IRBeam.tif": (None, 39, 5),
    "test_tiff_Zeiss_SEM_512pix.tif": (0.011650, 34, 5),
    "test_tiff_Zeiss_SEM_1k.tif": (2.615, 77, 25),
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_file_pixel_size_is_that_of_the_image_as_saved(shared_data, name):
    meta = files.read_sem_metadata(shared_data / "instrument_tiffs" / name)
    expected = REAL[name][0]
    if expected is None:
        assert "pixel_size_um" not in meta
    else:
        np.testing.assert_allclose(meta["pixel_size_um"], (expected, expected), rtol=1e-3)


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_file_pixel_size_agrees_with_rosettasciio(shared_data, name):
    rsciio_tiff = pytest.importorskip("rsciio.tiff")
    path = shared_data / "instrument_tiffs" / name
    signal = rsciio_tiff.file_reader(str(path))[0]
    axes = {a["name"]: a for a in signal["axes"]}
    meta = files.read_sem_metadata(path)
    if axes["width"].get("units") != "m":  # RosettaSciIO found no scale either
        assert "pixel_size_um" not in meta
        return
    ours = np.array(meta["pixel_size_um"])
    theirs = np.array([axes["height"]["scale"], axes["width"]["scale"]]) * 1e6
    np.testing.assert_allclose(ours, theirs, rtol=2e-4)


def test_zeiss_store_resolution_pixel_size_is_not_taken_for_a_half_size_image(shared_data):
    meta = files.read_sem_metadata(shared_data / "instrument_tiffs" / "test_tiff_Zeiss_SEM_512pix.tif")
    # the Pixel Size tag says 5.825 nm (the 1024-px store); the 512-px image has 11.65 nm
    assert meta["pixel_size_um"][1] == pytest.approx(5.965 / 512, rel=1e-6)
    assert "AP_WIDTH" in meta["origin"]["pixel_size_um"]


def test_image_at_zero_stage_tilt_is_not_divided_by_sin52(shared_data):
    meta = files.read_sem_metadata(shared_data / "instrument_tiffs" / "FEI-Helios-Ebeam-16bits.tif")
    assert meta["tilt_corrected"] is False and abs(meta["stage_tilt_deg"]) < 0.01
    voxel, origin = resolve_voxel_size({"x": "from_metadata", "y": "from_metadata", "z": 0.05},
                                       meta)
    assert voxel[1] == pytest.approx(voxel[2])
    assert "not a tilted cross-section" in origin["y"]


def test_tilted_uncorrected_cross_section_uses_the_recorded_tilt():
    meta = {"pixel_size_um": (0.01, 0.01), "tilt_corrected": False, "stage_tilt_deg": 54.0,
            "origin": {"pixel_size_um": "Zeiss AP_WIDTH in a.tif"}}
    voxel, origin = resolve_voxel_size({"x": "from_metadata", "y": "from_metadata", "z": 0.05},
                                       meta)
    assert voxel[1] == pytest.approx(0.01 / np.sin(np.radians(54.0)))
    assert "54" in origin["y"]


def test_empty_metadata_values_are_absent_with_a_warning_naming_file_and_tag(shared_data):
    path = shared_data / "instrument_tiffs" / "FEI-Helios-navcam-with-no-IRBeam.tif"
    meta = files.read_sem_metadata(path)  # no bare ValueError
    assert "kv" not in meta and "pixel_size_um" not in meta
    assert any(path.name in w and "[Beam] HV" in w for w in meta["warnings"])
    with pytest.raises(ConfigError, match="voxel_._um is 'from_metadata' but the instrument metadata has no"):
        resolve_voxel_size({"x": "from_metadata", "y": "from_metadata", "z": 0.05}, meta,
                           source=str(path))


def test_malformed_number_is_absent_with_a_warning(tmp_path):
    simulated_files.write_sem_slice(tmp_path / "a.tif", np.zeros((16, 16), np.uint16), pixel_size_um=0.01,
                       kv=1.0)
    with tifffile.TiffFile(tmp_path / "a.tif") as tif:
        text = tif.pages.first.tags[34682].value
        image = tif.asarray()
    if isinstance(text, dict):  # tifffile parsed it: write the raw text again
        text = None
    bad = simulated_files._fei_text(0.01, 1.0, 4.0, "TLD", True).replace("PixelWidth=1e-08",
                                                             "PixelWidth=notafloat")
    assert "notafloat" in bad
    tifffile.imwrite(tmp_path / "b.tif", image, extratags=[(34682, "s", 0, bad, True)])
    meta = files.read_sem_metadata(tmp_path / "b.tif")
    assert "pixel_size_um" not in meta
    assert any("b.tif" in w and "[Scan] PixelWidth" in w and "notafloat" in w
               for w in meta["warnings"])


@pytest.mark.parametrize("name", sorted(REAL))
def test_databar_is_cut_from_metadata_or_detected(shared_data, tmp_path, name):
    kv = REAL[name][2]
    for z in range(2):
        shutil.copy(shared_data / "instrument_tiffs" / name, tmp_path / f"s_{z:04d}_{kv}kV.tif")
    rows = tifffile.imread(tmp_path / f"s_0000_{kv}kV.tif").shape[0]
    stack = files.RawStack(tmp_path, "s_{slice:04d}_{kv}kV.tif", [kv], databar="auto")
    assert stack.databar["rows"] == REAL[name][1], stack.databar
    assert stack.shape[2] == rows - REAL[name][1] and stack[0].shape[1] == rows - REAL[name][1]
    kept = files.RawStack(tmp_path, "s_{slice:04d}_{kv}kV.tif", [kv], databar="none")
    assert kept.shape[2] == rows
    fixed = files.RawStack(tmp_path, "s_{slice:04d}_{kv}kV.tif", [kv], databar=10)
    assert fixed.shape[2] == rows - 10 and "config" in fixed.databar["origin"]


def test_databar_that_does_not_fit_is_a_named_error(tmp_path):
    simulated_files.write_sem_slice(tmp_path / "s_0_1kV.tif", np.zeros((16, 16), np.uint16),
                       pixel_size_um=0.01, kv=1.0)
    with pytest.raises(files.RawDataError, match="databar = 40 rows does not fit"):
        files.RawStack(tmp_path, "s_{slice}_{kv}kV.tif", [1], databar=40)


def test_simulated_images_have_no_databar_detected(tmp_path):
    from fibrecon.simulate import simulate_sample

    s = simulate_sample((2, 64, 64), porosity=0.35, seed=1)
    simulated_files.write_acquisition(tmp_path / "raw", s.raw, s.kvs, "s_{slice}_{kv}kV.tif", 0.05)
    stack = files.RawStack(tmp_path / "raw", "s_{slice}_{kv}kV.tif", s.kvs)
    assert stack.databar["rows"] == 0 and stack.shape[2] == 64


def test_zeiss_multipage_is_read_in_slice_index_order(tmp_path):
    with tifffile.TiffWriter(tmp_path / "stack_1kV.tif") as tif:
        for index in (5, 2, 9):
            text = simulated_files._zeiss_text(0.01, 1.0, 4.0, "InLens", True).replace(
                "END", f"AP_FIB_SLICE_INDEX\r\nSlice Index = {index}\r\nEND")
            tif.write(np.full((12, 12), index, np.uint8), photometric="minisblack",
                      extratags=[(34118, "s", 0, text, True)])
    stack = files.RawStack(tmp_path, "stack_{kv}kV.tif", [1], databar="none")
    assert [int(stack[z][0, 0, 0]) for z in range(3)] == [2, 5, 9]


def test_metadata_of_a_broken_file_is_a_named_error(tmp_path):
    (tmp_path / "empty.tif").write_bytes(b"II*\x00\x08\x00\x00\x00\x00\x00")  # a header, no page
    with pytest.raises(files.RawDataError, match="empty.tif: cannot be read as TIFF"):
        files.read_sem_metadata(tmp_path / "empty.tif")


# --------------------------------------------------------------- TIFFs without vendor metadata
@pytest.mark.parametrize("unit, factor", [("micron", 1.0), ("\\u00B5m", 1.0), ("nm", 1e-3)])
def test_imagej_scale_is_read_where_no_vendor_metadata_exists(tmp_path, unit, factor):
    """A stack saved from Fiji keeps its calibration: pixel size from the resolution tags, z
    from ``spacing``; the micrometre case agrees with RosettaSciIO's ImageJ reader."""
    path = tmp_path / "stack_1kV.tif"
    tifffile.imwrite(path, np.zeros((5, 32, 48), np.uint8), imagej=True,
                     resolution=(1 / (12 / factor / 1e3), 1 / (10 / factor / 1e3)),
                     metadata={"unit": unit, "spacing": 20 / factor / 1e3, "axes": "ZYX"})
    meta = files.read_sem_metadata(path)
    assert meta["vendor"] == "ImageJ" and not meta["warnings"]
    np.testing.assert_allclose(meta["pixel_size_um"], (0.010, 0.012), rtol=1e-6)
    assert meta["slice_thickness_um"] == pytest.approx(0.020)
    assert "spacing" in meta["origin"]["slice_thickness_um"]
    voxel, origin = resolve_voxel_size(dict.fromkeys("xyz", "from_metadata"), meta)
    np.testing.assert_allclose(voxel, (0.020, 0.010, 0.012), rtol=1e-6)
    assert "ImageJ" in origin["y"] and "sin" not in origin["y"]  # no tilt known: as saved
    if unit == "micron":
        rsciio_tiff = pytest.importorskip("rsciio.tiff")
        axes = {a["name"]: a for a in rsciio_tiff.file_reader(str(path))[0]["axes"]}
        np.testing.assert_allclose(meta["pixel_size_um"],
                                   (axes["height"]["scale"], axes["width"]["scale"]), rtol=1e-6)


def test_ome_tiff_physical_size_is_read_with_its_units(tmp_path):
    path = tmp_path / "stack_1kV.ome.tif"
    tifffile.imwrite(path, np.zeros((4, 32, 48), np.uint16), metadata={
        "axes": "ZYX", "PhysicalSizeX": 12.0, "PhysicalSizeXUnit": "nm", "PhysicalSizeY": 0.010,
        "PhysicalSizeYUnit": "µm", "PhysicalSizeZ": 20.0, "PhysicalSizeZUnit": "nm"})
    meta = files.read_sem_metadata(path)
    assert meta["vendor"] == "OME-TIFF"
    np.testing.assert_allclose(meta["pixel_size_um"], (0.010, 0.012), rtol=1e-9)
    assert meta["slice_thickness_um"] == pytest.approx(0.020)
    assert files.read_ome_scale(path) == pytest.approx((0.020, 0.010, 0.012))


def test_uncalibrated_or_unknown_unit_scale_is_absent(tmp_path):
    tifffile.imwrite(tmp_path / "px.tif", np.zeros((8, 8), np.uint8), imagej=True,
                     metadata={"unit": "pixel"})
    tifffile.imwrite(tmp_path / "inch.tif", np.zeros((8, 8), np.uint8), resolution=(72, 72),
                     resolutionunit="INCH")  # a default 72 dpi says nothing of the sample
    tifffile.imwrite(tmp_path / "odd.tif", np.zeros((8, 8), np.uint8), imagej=True,
                     resolution=(2.0, 2.0), metadata={"unit": "furlong"})
    for name in ("px.tif", "inch.tif"):
        meta = files.read_sem_metadata(tmp_path / name)
        assert "pixel_size_um" not in meta and not meta["warnings"], name
    odd = files.read_sem_metadata(tmp_path / "odd.tif")
    assert "pixel_size_um" not in odd
    assert any("odd.tif" in w and "furlong" in w for w in odd["warnings"])


def _tescan_tag(blocks) -> bytes:
    """Tescan's tag 50431 as Gwyddion's reader documents it: (uint32 size, uint16 type, text)."""
    out = b""
    for kind, text in blocks:
        body = text.encode("latin-1")
        out += (len(body) + 2).to_bytes(4, "little") + kind.to_bytes(2, "little") + body
    return out + (2).to_bytes(4, "little") + (0).to_bytes(2, "little")


def test_tescan_metadata_gives_pixel_size_kv_and_tilt_not_the_fib_beam(tmp_path):
    main = "AccFrames=8\r\nDate=2025-03-04\r\nDevice=TESCAN AMBER X\r\nPixelSizeX=1.25e-08\r\n" \
           "PixelSizeY=1.25e-08\r\nTime=10:11:12\r\n"
    sem = "HV=2000.0\r\nWD=0.0051\r\nStageTilt=55.0\r\nDetector=E-T\r\n"
    fib = "HV=30000.0\r\nWD=0.01\r\n"  # the ion beam's: never the electron kV
    path = tmp_path / "s_0000_2kV.tif"
    tifffile.imwrite(path, np.zeros((16, 16), np.uint8),
                     extratags=[(files.TESCAN_TAG, "B", 0,
                                 _tescan_tag([(2, main), (3, sem), (5, fib)]), True)])
    meta = files.read_sem_metadata(path)
    assert meta["vendor"] == "Tescan" and not meta["warnings"]
    np.testing.assert_allclose(meta["pixel_size_um"], (0.0125, 0.0125))
    assert meta["kv"] == pytest.approx(2.0) and meta["working_distance_mm"] == pytest.approx(5.1)
    assert meta["stage_tilt_deg"] == 55.0 and meta["detector"] == "E-T"
    assert "PixelSizeX" in meta["origin"]["pixel_size_um"] and path.name in meta["origin"]["kv"]
    voxel, origin = resolve_voxel_size({"x": "from_metadata", "y": "from_metadata", "z": 0.02},
                                       meta)
    assert voxel == pytest.approx((0.02, 0.0125, 0.0125))  # tilt correction unknown: as saved
    # a file configured as another kV is refused by its metadata, as for FEI and Zeiss
    path.rename(tmp_path / "s_0000_5kV.tif")
    with pytest.raises(files.RawDataError, match="says 2 kV"):
        files.RawStack(tmp_path, "s_{slice:04d}_{kv}kV.tif", [5])


def test_tescan_sidecar_hdr_and_malformed_values(tmp_path):
    path = tmp_path / "img.tif"
    tifffile.imwrite(path, np.zeros((16, 16), np.uint8))
    (tmp_path / "img.hdr").write_text("[MAIN]\nPixelSizeX=2e-08\nPixelSizeY=notafloat\n"
                                      "[SEM]\nHV=5000\n")
    meta = files.read_sem_metadata(path)
    assert meta["vendor"] == "Tescan" and meta["kv"] == pytest.approx(5.0)
    assert "pixel_size_um" not in meta  # y is malformed: absent, with a warning
    assert any("img.tif" in w and "PixelSizeY" in w for w in meta["warnings"])
