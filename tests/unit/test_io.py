import numpy as np
import pytest
import tifffile

from fibrecon import files
from fibrecon import simulated_files


def test_volume_round_trip_keeps_anisotropic_voxel_size(tmp_path):
    data = np.arange(4 * 5 * 6, dtype=np.uint8).reshape(4, 5, 6)
    files.write_volume(tmp_path / "v.tif", data, (0.05, 0.03, 0.02))
    back, voxel = files.read_volume(tmp_path / "v.tif")
    np.testing.assert_array_equal(back, data)
    np.testing.assert_allclose(voxel, (0.05, 0.03, 0.02), rtol=1e-6)


def test_channel_stack_round_trip(tmp_path):
    data = np.random.default_rng(0).random((3, 2, 8, 9)).astype(np.float32)
    files.write_volume(tmp_path / "s.tif", data, (0.1, 0.1, 0.1), channels=True)
    back, _ = files.read_volume(tmp_path / "s.tif")
    np.testing.assert_array_equal(back, data)


def test_write_volume_rejects_nonpositive_voxel(tmp_path):
    with pytest.raises(ValueError, match="voxel size must be positive"):
        files.write_volume(tmp_path / "v.tif", np.zeros((2, 2, 2), np.uint8), (0, 1, 1))
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(RuntimeError):
        with files.atomic_path(tmp_path / "out.tif") as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def _acquisition(folder, nz=3, kvs=(1, 3), pattern="slice_{slice:04d}_{kv}kV.tif"):
    raw = np.random.default_rng(1).integers(0, 60000, (nz, len(kvs), 16, 20)).astype(np.uint16)
    simulated_files.write_acquisition(folder, raw, kvs, pattern, pixel_size_um=0.035)
    return raw


def test_raw_stack_and_fei_metadata(tmp_path):
    raw = _acquisition(tmp_path / "raw")
    stack, meta = files.read_raw_stack(tmp_path / "raw", "slice_{slice:04d}_{kv}kV.tif", [1, 3])
    np.testing.assert_array_equal(stack, raw)
    assert meta["vendor"] == "FEI"
    np.testing.assert_allclose(meta["pixel_size_um"], (0.035, 0.035))
    assert meta["kv"] == 1.0


def test_multipage_per_kv(tmp_path):
    raw = _acquisition(tmp_path / "raw", pattern="stack_{kv}kV.tif")
    stack, _ = files.read_raw_stack(tmp_path / "raw", "stack_{kv}kV.tif", [1, 3])
    np.testing.assert_array_equal(stack, raw)


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(files.RawDataError, match="nowhere: raw data folder does not exist"):
        files.find_raw_files(tmp_path / "nowhere", "s_{slice}_{kv}kV.tif", [1])


def test_gap_in_slices_is_named(tmp_path):
    _acquisition(tmp_path / "raw", nz=4)
    (tmp_path / "raw" / "slice_0002_3kV.tif").unlink()
    (tmp_path / "raw" / "slice_0002_1kV.tif").unlink()
    with pytest.raises(files.RawDataError, match=r"gap in slice numbering at 1 kV: slice\(s\) \[2\]"):
        files.find_raw_files(tmp_path / "raw", "slice_{slice:04d}_{kv}kV.tif", [1, 3])
    _acquisition(tmp_path / "even", nz=1)  # slices 0, 2, 4, 6: a constant step, said so
    for z in (2, 4, 6):
        for kv in (1, 3):
            (tmp_path / "even" / f"slice_{z:04d}_{kv}kV.tif").write_bytes(
                (tmp_path / "even" / f"slice_0000_{kv}kV.tif").read_bytes())
    with pytest.raises(files.RawDataError, match=r"\[1, 3, 5\] missing \(3 in all between 0 "
                       r"and 6\); the numbers go up by 2 throughout: every 2nd slice saved\? "
                       r"then number them consecutively and set the sheet's voxel_z_um"):
        files.find_raw_files(tmp_path / "even", "slice_{slice:04d}_{kv}kV.tif", [1, 3])


def test_missing_kv_channel_for_some_slices(tmp_path):
    _acquisition(tmp_path / "raw", nz=4)
    (tmp_path / "raw" / "slice_0003_3kV.tif").unlink()
    with pytest.raises(files.RawDataError, match="kV channel is missing"):
        files.find_raw_files(tmp_path / "raw", "slice_{slice:04d}_{kv}kV.tif", [1, 3])


def test_no_file_for_a_kv(tmp_path):
    _acquisition(tmp_path / "raw", kvs=(1,))
    with pytest.raises(files.RawDataError, match="for 5 kV"):
        files.find_raw_files(tmp_path / "raw", "slice_{slice:04d}_{kv}kV.tif", [1, 5])


def test_shape_mismatch_names_file(tmp_path):
    _acquisition(tmp_path / "raw")
    tifffile.imwrite(tmp_path / "raw" / "slice_0001_1kV.tif", np.zeros((10, 10), np.uint16))
    with pytest.raises(files.RawDataError, match="slice_0001_1kV.tif: shape"):
        files.read_raw_stack(tmp_path / "raw", "slice_{slice:04d}_{kv}kV.tif", [1, 3])


def test_corrupt_tiff_names_file(tmp_path):
    _acquisition(tmp_path / "raw")
    (tmp_path / "raw" / "slice_0002_3kV.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(files.RawDataError, match="slice_0002_3kV.tif: cannot be read"):
        files.read_raw_stack(tmp_path / "raw", "slice_{slice:04d}_{kv}kV.tif", [1, 3])


def test_raw_stack_reads_one_slice_at_a_time(tmp_path):
    raw = _acquisition(tmp_path / "raw", nz=4)
    stack = files.RawStack(tmp_path / "raw", "slice_{slice:04d}_{kv}kV.tif", [1, 3])
    assert stack.shape == (4, 2, 16, 20) and len(stack) == 4
    np.testing.assert_array_equal(stack[2], raw[2])
    with pytest.raises(IndexError):
        stack[4]


def test_raw_stack_checks_every_header_before_reading(tmp_path):
    _acquisition(tmp_path / "raw", nz=4)
    tifffile.imwrite(tmp_path / "raw" / "slice_0003_3kV.tif", np.zeros((16, 20), np.float32))
    with pytest.raises(files.RawDataError, match="slice_0003_3kV.tif: shape .* float32 differs"):
        files.RawStack(tmp_path / "raw", "slice_{slice:04d}_{kv}kV.tif", [1, 3])


def test_colour_images_are_refused_by_name_before_work(tmp_path):
    folder = tmp_path / "raw"
    folder.mkdir()
    img = np.zeros((8, 8, 3), np.uint8)
    img[..., 0] = 200  # red: not a grey detector image
    for z in range(2):
        tifffile.imwrite(folder / f"s_{z}_1kV.tif", img, photometric="rgb")
    with pytest.raises(files.RawDataError,
                       match=r"s_0_1kV.tif \(first slice\): a colour image .* differ in 100.0%"):
        files.RawStack(folder, "s_{slice}_{kv}kV.tif", [1])


def test_greyscale_saved_as_rgb_is_read_as_one_plane_and_colour_is_a_named_error(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 255, (3, 24, 32)).astype(np.uint8)
    for z, img in enumerate(grey):
        tifffile.imwrite(tmp_path / f"s_{z}_1kV.tif", np.repeat(img[..., None], 3, -1),
                         photometric="rgb")
    stack = files.RawStack(tmp_path, "s_{slice}_{kv}kV.tif", [1], databar="none")
    assert stack.shape == (3, 1, 24, 32) and any("greyscale" in n for n in stack.notes)
    np.testing.assert_array_equal(stack[2][0], grey[2])
    colour = np.repeat(grey[1][..., None], 3, -1)
    colour[:4, :, 2] = 255 - colour[:4, :, 2]  # a false-colour overlay in one slice
    tifffile.imwrite(tmp_path / "s_1_1kV.tif", colour, photometric="rgb")
    with pytest.raises(files.RawDataError, match=r"s_1_1kV.tif \(slice 1\): a colour image"):
        stack[1]


def test_streamed_volume_round_trip(tmp_path):
    data = np.random.default_rng(3).integers(0, 3, (5, 7, 9)).astype(np.uint8)
    files.write_volume_slices(tmp_path / "v.tif", iter(data), data.shape, data.dtype, (0.1, 0.2, 0.3))
    with files.VolumeReader(tmp_path / "v.tif") as vol:
        assert vol.shape == data.shape and not vol.channels
        np.testing.assert_array_equal(vol[3], data[3])
        np.testing.assert_allclose(vol.voxel_size, (0.1, 0.2, 0.3), rtol=1e-6)


def test_streamed_write_that_fails_leaves_nothing(tmp_path):
    def slices():
        yield np.zeros((4, 4), np.uint8)
        raise RuntimeError("killed mid-stack")

    with pytest.raises(RuntimeError):
        files.write_volume_slices(tmp_path / "v.tif", slices(), (3, 4, 4), np.uint8, (1, 1, 1))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="got 1 slices, expected 3"):
        files.write_volume_slices(tmp_path / "v.tif", iter([np.zeros((4, 4))]), (3, 4, 4),
                               np.uint8, (1, 1, 1))
    assert list(tmp_path.iterdir()) == []


def test_a_hyperstack_of_several_channels_is_refused_not_read_as_slices(tmp_path):
    data = np.zeros((3, 2, 16, 16), np.uint8)  # z, c, y, x as Fiji saves a two-channel stack
    tifffile.imwrite(tmp_path / "stack_1kV.tif", data, imagej=True, metadata={"axes": "ZCYX"})
    with pytest.raises(files.RawDataError, match="stack_1kV.tif: a hyperstack of 2 channels"):
        files.RawStack(tmp_path, "stack_{kv}kV.tif", [1])
    tifffile.imwrite(tmp_path / "one_1kV.tif", data[:, 0], imagej=True,
                     metadata={"axes": "ZYX"})
    assert files.RawStack(tmp_path, "one_{kv}kV.tif", [1], databar="none").shape == (3, 1, 16, 16)


def test_single_kv_files_named_without_kv_are_read(tmp_path):
    for z in range(3):
        tifffile.imwrite(tmp_path / f"slice_{z:04d}.tif", np.full((8, 8), z, np.uint8))
    stack = files.RawStack(tmp_path, "slice_{slice:04d}.tif", [2], databar="none")
    assert stack.shape == (3, 1, 8, 8) and int(stack[2][0, 0, 0]) == 2
    with pytest.raises(files.RawDataError, match=r"no \{kv\} field.*single-kV"):
        files.RawStack(tmp_path, "slice_{slice:04d}.tif", [1, 3])


def test_a_file_holding_a_zcyx_array_is_refused_not_read_as_slices(tmp_path):
    """tifffile.imwrite of a (z, c, y, x) array gives z * c pages: read as slices they would
    interleave the kV channels."""
    tifffile.imwrite(tmp_path / "stack_1kV.tif", np.zeros((3, 2, 16, 16), np.uint8))
    with pytest.raises(files.RawDataError, match=r"stack_1kV.tif: holds a \(3, 2, 16, 16\) array"):
        files.RawStack(tmp_path, "stack_{kv}kV.tif", [1])


@pytest.mark.parametrize("compression", ["lzw", "zstd", "deflate"])
def test_compressed_instrument_and_label_tiffs_are_read(tmp_path, compression):
    """LZW is what many instrument exports, Fiji and Bio-Formats write; tifffile decodes it
    (and zstd, JPEG) only with imagecodecs, a pinned dependency (requirements.txt, envs/)."""
    raw = np.random.default_rng(3).integers(0, 60000, (3, 1, 16, 20)).astype(np.uint16)
    for z in range(3):
        tifffile.imwrite(tmp_path / f"slice_{z:04d}.tif", raw[z, 0], compression=compression)
    stack = files.RawStack(tmp_path, "slice_{slice:04d}.tif", [2], databar="none")
    np.testing.assert_array_equal(np.stack([stack[z] for z in range(3)]), raw)
    tifffile.imwrite(tmp_path / "stack.tif", raw[:, 0], compression=compression,
                     photometric="minisblack")
    stack = files.RawStack(tmp_path, "stack.tif", [2], databar="none")
    np.testing.assert_array_equal(np.stack([stack[z] for z in range(3)]), raw)
    assert not [w for w in stack.metadata["warnings"] if "lossy" in w]  # lossless: no word
    labels = np.random.default_rng(4).choice(np.array([0, 128, 255], np.uint8), (4, 8, 8))
    tifffile.imwrite(tmp_path / "labels.tif", labels, compression=compression,
                     photometric="minisblack")
    back = files.read_label_volume(tmp_path / "labels.tif")
    np.testing.assert_array_equal(back, np.searchsorted([0, 128, 255], labels))


def test_one_subfolder_per_kv_is_named_by_the_pattern(tmp_path):
    """A layout instruments and users write (one folder per kV run); a pattern without the
    folder says where the images are."""
    raw = np.random.default_rng(5).integers(0, 60000, (3, 2, 16, 20)).astype(np.uint16)
    for c, kv in enumerate((1, 3)):
        (tmp_path / f"{kv}kV").mkdir()
        for z in range(3):
            tifffile.imwrite(tmp_path / f"{kv}kV" / f"slice_{z:04d}.tif", raw[z, c])
    stack = files.RawStack(tmp_path, "{kv}kV/slice_{slice:04d}.tif", [1, 3], databar="none")
    np.testing.assert_array_equal(np.stack([stack[z] for z in range(3)]), raw)
    assert [c["file"] for c in stack.metadata["channels"]] == ["1kV/slice_0000.tif",
                                                                "3kV/slice_0000.tif"]
    with pytest.raises(files.RawDataError, match=r"subfolders\? name them in the pattern"):
        files.RawStack(tmp_path, "slice_{slice:04d}.tif", [1], databar="none")
    (tmp_path / "3kV" / "slice_0002.tif").unlink()  # the checks hold across folders
    with pytest.raises(files.RawDataError, match=r"slice\(s\) \[2\] present at one voltage"):
        files.RawStack(tmp_path, "{kv}kV/slice_{slice:04d}.tif", [1, 3], databar="none")


def test_a_lossy_compressed_stack_is_read_with_a_warning_naming_the_file(tmp_path):
    """JPEG's block artifacts reach the segmentation: read, but said in the align log."""
    raw = np.random.default_rng(6).integers(0, 255, (3, 16, 16)).astype(np.uint8)
    for z in range(3):
        tifffile.imwrite(tmp_path / f"slice_{z:04d}.tif", raw[z], compression="jpeg")
    stack = files.RawStack(tmp_path, "slice_{slice:04d}.tif", [2], databar="none")
    assert stack[0].shape == (1, 16, 16)
    (warning,) = [w for w in stack.metadata["warnings"] if "lossy" in w]
    assert "slice_0000.tif: stored JPEG-compressed" in warning and "2 more image(s)" in warning
