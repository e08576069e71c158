"""Bad input gets a named error before heavy work; failed writes leave nothing."""

import errno

import numpy as np
import pytest
import tifffile

from fibrecon import files
from fibrecon.align import estimate_drift


def _float_stack(folder, values):
    folder.mkdir()
    for z, v in enumerate(values):
        tifffile.imwrite(folder / f"s_{z}_1kV.tif", np.full((8, 8), v, np.float32))


def test_float_images_are_read_when_finite(tmp_path):
    _float_stack(tmp_path / "raw", [0.1, 0.2])
    stack = files.RawStack(tmp_path / "raw", "s_{slice}_{kv}kV.tif", [1])
    assert stack.dtype == np.float32 and stack[1][0, 0, 0] == pytest.approx(0.2)


def test_nan_pixels_name_the_file_and_slice(tmp_path):
    _float_stack(tmp_path / "raw", [0.1, np.nan])
    stack = files.RawStack(tmp_path / "raw", "s_{slice}_{kv}kV.tif", [1])
    with pytest.raises(files.RawDataError, match=r"s_1_1kV.tif \(slice 1\): 64 NaN or infinite"):
        stack[1]


def test_all_constant_stack_is_refused():
    with pytest.raises(ValueError, match="every slice is constant"):
        estimate_drift(np.full((4, 1, 32, 32), 7, np.uint16))


def test_label_volume_with_unexpected_values_names_the_file(tmp_path):
    files.write_volume(tmp_path / "labels.tif", np.array([[[0, 1], [2, 7]]], np.uint8), (1, 1, 1))
    with pytest.raises(ValueError, match=r"labels.tif: unexpected label values \[7\]"):
        files.read_labels(tmp_path / "labels.tif")


def test_disk_full_is_reported_and_leaves_nothing(tmp_path, monkeypatch):
    import os

    from fibrecon.files import atomic

    def full(src, dst):  # the disk fills while the finished file is renamed into place
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(src))

    monkeypatch.setattr(atomic.os, "replace", full)
    with pytest.raises(OSError, match="v.tif: disk full while writing") as info:
        files.write_volume(tmp_path / "v.tif", np.zeros((2, 3, 3), np.uint8), (1, 1, 1))
    assert info.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


def test_empty_folder_is_named(tmp_path):
    (tmp_path / "raw").mkdir()
    with pytest.raises(files.RawDataError, match="no file matches pattern.*the folder is empty"):
        files.RawStack(tmp_path / "raw", "s_{slice}_{kv}kV.tif", [1])


def test_a_pattern_that_matches_nothing_says_what_the_folder_holds(tmp_path):
    """A typo in the pattern or a kV the sheet does not list: the error shows the files."""
    (tmp_path / "raw").mkdir()
    for z in range(3):
        (tmp_path / "raw" / f"SEM Image - SliceImage - {z:03d}.tif").write_bytes(b"")
        (tmp_path / "raw" / f"s_{z:03d}_2kV.tif").write_bytes(b"")
    with pytest.raises(files.RawDataError, match=r"for 1 kV; files of the pattern exist at 2 kV"):
        files.find_raw_files(tmp_path / "raw", "s_{slice:03d}_{kv}kV.tif", [1])
    with pytest.raises(files.RawDataError,
                       match=r"holds 6 file\(s\), e.g. 'SEM Image - SliceImage - 000.tif'"):
        files.find_raw_files(tmp_path / "raw", "slice_{slice}.tif", [1])
    # names with spaces are patterns like any other
    found = files.find_raw_files(tmp_path / "raw", "SEM Image - SliceImage - {slice:03d}.tif", [2])
    assert [f.slice for f in found[2.0]] == [0, 1, 2]
