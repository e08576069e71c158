"""File input and output: the only module of fibrecon that touches files.

Every writer here writes to a temporary name in the target folder and
renames it into place, so that a job killed half-way never leaves a file
that looks finished.

Volumes and stacks are written as ImageJ hyperstack TIFFs: axis order
(z, y, x) or (z, c, y, x), the physical voxel size in micrometres stored in
the resolution tags (x, y) and the ImageJ ``spacing`` entry (z), so Fiji and
napari open them at the right scale.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

__all__ = [
    "RawDataError",
    "SliceFile",
    "atomic_path",
    "find_raw_files",
    "raw_file_name",
    "atomic_dir",
    "read_raw_stack",
    "RawStack",
    "read_labelled_slices",
    "file_sha256",
    "write_ome_tiff",
    "read_ome_scale",
    "VolumeReader",
    "write_volume_slices",
    "read_sem_metadata",
    "detect_databar",
    "channel_metadata",
    "read_volume",
    "read_labels",
    "write_volume",
    "write_sem_slice",
    "write_acquisition",
    "write_simulated_sample",
    "write_figure",
    "write_json",
    "read_json",
    "write_table",
]


class RawDataError(ValueError):
    """Raw acquisition files that cannot be read as a stack; names the file."""


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    Parameters
    ----------
    path : str or Path
        Final destination.

    Yields
    ------
    Path
        A temporary file name in the same folder (same file system, so the
        final :func:`os.replace` is atomic). On an exception it is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.part"):  # left by a killed job
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if os.environ.get("FIBRECON_FAULT_DISK_FULL"):  # fault injection for the tests
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"{path}: disk full while writing; nothing was "
                          f"written (free space on {path.parent.resolve()})") from exc
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


# --------------------------------------------------------------------------
# Raw acquisitions
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class SliceFile:
    """One raw image file: its path, FIB slice index and acceleration voltage."""

    path: Path
    slice: int | None
    kv: float


def _pattern_regex(pattern: str) -> re.Pattern:
    """Turn a file-name pattern such as ``slice_{slice:04d}_{kv}kV.tif`` into a regex."""
    if "{kv" not in pattern:
        raise ValueError(f"file pattern {pattern!r} has no {{kv}} field")
    out, pos = [], 0
    for m in re.finditer(r"\{(slice|kv)(:[^}]*)?\}", pattern):
        out.append(re.escape(pattern[pos : m.start()]))
        out.append(r"(?P<slice>\d+)" if m.group(1) == "slice" else r"(?P<kv>\d+(?:\.\d+)?)")
        pos = m.end()
    out.append(re.escape(pattern[pos:]))
    return re.compile("".join(out) + r"\Z")


def find_raw_files(folder, pattern: str, kvs) -> dict[float, list[SliceFile]]:
    """List the raw files of one sample, per acceleration voltage, in slice order.

    Parameters
    ----------
    folder : str or Path
        Folder holding the acquisition.
    pattern : str
        File-name pattern with a ``{kv}`` field and, for one file per slice,
        a ``{slice}`` field (e.g. ``slice_{slice:04d}_{kv}kV.tif``). Without
        ``{slice}`` each kV is one multi-page TIFF (e.g. ``stack_{kv}kV.tif``).
    kvs : sequence of float
        The acceleration voltages (kV) the sample sheet names.

    Returns
    -------
    dict
        kV -> list of :class:`SliceFile` sorted by slice index.

    Raises
    ------
    RawDataError
        Folder missing, no matching file, a kV channel missing, a gap in the
        slice numbering, or slices present for one kV and absent for another.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise RawDataError(f"{folder}: raw data folder does not exist")
    regex = _pattern_regex(pattern)
    per_kv: dict[float, list[SliceFile]] = {float(kv): [] for kv in kvs}
    for p in sorted(folder.iterdir()):
        m = regex.match(p.name)
        if not m:
            continue
        kv = float(m.group("kv"))
        if kv not in per_kv:
            continue
        idx = int(m.group("slice")) if "slice" in m.groupdict() else None
        per_kv[kv].append(SliceFile(p, idx, kv))
    for kv, files in per_kv.items():
        if not files:
            raise RawDataError(
                f"{folder}: no file matches pattern {pattern!r} for {kv:g} kV"
            )
        files.sort(key=lambda f: (f.slice is None, f.slice))
    if "{slice" in pattern:
        reference = None
        for kv, files in per_kv.items():
            idx = [f.slice for f in files]
            expected = list(range(idx[0], idx[0] + len(idx)))
            if idx != expected:
                missing = sorted(set(expected) - set(idx))
                raise RawDataError(
                    f"{folder}: gap in slice numbering at {kv:g} kV: "
                    f"slice(s) {missing[:5]} missing"
                )
            if reference is None:
                reference = (kv, set(idx))
            elif set(idx) != reference[1]:
                diff = sorted(set(idx) ^ reference[1])
                raise RawDataError(
                    f"{folder}: slice(s) {diff[:5]} present at one voltage but not at "
                    f"the other ({reference[0]:g} kV vs {kv:g} kV): a kV channel is missing"
                )
    return per_kv


def _read_image(path: Path, key=None) -> np.ndarray:
    try:
        image = tifffile.imread(path, key=key)
    except Exception as exc:  # tifffile raises many types for broken files
        raise RawDataError(f"{path}: cannot be read as TIFF ({exc})") from exc
    if image.size == 0:
        raise RawDataError(f"{path}: cannot be read as TIFF (no image data; truncated?)")
    return image


def _page_order(path: Path, n: int) -> list[int]:
    """Pages of a multi-page TIFF in slice order: by the Zeiss slice-index tag where every page has one."""
    index = []
    try:
        with tifffile.TiffFile(path) as tif:
            for page in tif.pages:
                tag = page.tags.get(34118)
                value = tag.value.get("ap_fib_slice_index") if tag is not None and isinstance(
                    tag.value, dict) else None
                index.append(value[1] if isinstance(value, (tuple, list)) and len(value) > 1
                             else None)
    except Exception as exc:
        raise RawDataError(f"{path}: cannot be read as TIFF ({exc})") from exc
    if n < 2 or any(not isinstance(i, (int, float)) for i in index):
        return list(range(n))
    if len(set(index)) != n:
        dup = sorted({i for i in index if index.count(i) > 1})
        raise RawDataError(f"{path}: pages share the slice index (AP_FIB_SLICE_INDEX) {dup[:5]}")
    return [int(i) for i in np.argsort(index, kind="stable")]


def _page_info(path: Path) -> tuple[int, tuple, np.dtype]:
    """Number of pages, page shape and dtype, from the TIFF headers only."""
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            return len(tif.pages), tuple(page.shape), np.dtype(page.dtype)
    except Exception as exc:
        raise RawDataError(f"{path}: cannot be read as TIFF ({exc})") from exc


class RawStack:
    """A raw multi-kV acquisition, checked up front and read one slice at a time.

    Parameters
    ----------
    folder, pattern, kvs
        As for :func:`find_raw_files`; channel ``c`` follows the order of ``kvs``.
        Each kV as one multi-page TIFF: pages in the order of their Zeiss
        slice-index tag (``AP_FIB_SLICE_INDEX``) where every page has one,
        else in file order.
    databar : "auto", int or "none"
        Rows of the vendor's data bar to cut at the bottom of every image:
        ``"auto"`` takes them from the metadata (FEI: image height minus
        ``[Image] ResolutionY``, or ``[PrivateFei] DatabarHeight``) or, where
        the metadata has none (Zeiss), detects a band of one grey value
        (:func:`detect_databar`); a number cuts that many; ``"none"`` keeps all.

    Attributes
    ----------
    shape : tuple of int
        (z, c, y, x).
    dtype : numpy.dtype
    metadata : dict
        Instrument metadata (:func:`channel_metadata`), plus ``files``
        (number of files).
    databar : dict
        ``rows`` cut at the bottom and ``origin`` (why).

    Raises
    ------
    RawDataError
        Before any pixel is read: a file that is not a TIFF, slices of differing
        shape or dtype, kV channels with different slice counts, metadata that
        contradicts the configured kV channels (and the errors of
        :func:`find_raw_files`).

    Notes
    -----
    ``stack[z]`` reads slice ``z`` of every channel, (c, y, x); only the
    headers are read when the stack is opened, so memory stays at one slice.
    """

    def __init__(self, folder, pattern: str, kvs, *, databar="auto"):
        self.folder = Path(folder)
        self.kvs = [float(k) for k in kvs]
        per_kv = find_raw_files(folder, pattern, kvs)
        self._sources = []  # per channel: list of (path, page) per slice
        shape = dtype = first = None
        for kv in self.kvs:
            files = per_kv[kv]
            if files[0].slice is None:  # one multi-page file per kV
                n, page_shape, page_dtype = _page_info(files[0].path)
                checks = [(files[0].path, page_shape, page_dtype)]
                sources = [(files[0].path, i) for i in _page_order(files[0].path, n)]
            else:
                checks = [(f.path, *_page_info(f.path)[1:]) for f in files]
                sources = [(f.path, 0) for f in files]
            for path, page_shape, page_dtype in checks:
                if shape is None:
                    shape, dtype, first = page_shape, page_dtype, path
                if page_shape != shape or page_dtype != dtype:
                    raise RawDataError(
                        f"{path}: shape {page_shape} {page_dtype} differs from "
                        f"{first}: {shape} {dtype}"
                    )
            self._sources.append(sources)
        counts = {len(src) for src in self._sources}
        if len(counts) != 1:
            raise RawDataError(f"{folder}: kV channels have different slice counts {sorted(counts)}")
        if len(shape) != 2:
            raise RawDataError(f"{first}: expected 2D greyscale images, got shape {shape}")
        if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
            raise RawDataError(f"{first}: unsupported pixel type {dtype}")
        self.dtype = dtype
        self.metadata = channel_metadata(self.kvs, [src[0][0] for src in self._sources])
        self.metadata["files"] = sum(len(v) for v in per_kv.values())
        self.databar = self._databar_rows(databar, shape, first)
        self._rows = shape[0] - self.databar["rows"]
        self.shape = (counts.pop(), len(self.kvs), self._rows, shape[1])

    def _databar_rows(self, setting, shape, first) -> dict:
        """Rows of the vendor data bar to cut at the bottom, and why."""
        if setting in (None, "none", 0):
            return {"rows": 0, "origin": "raw: databar: none"}
        if setting == "auto":
            rows = self.metadata.get("databar_rows")
            if rows is not None:
                origin = f"metadata: {self.metadata['origin']['databar_rows']}"
            else:
                path, page = self._sources[0][0]
                rows = detect_databar(_read_image(path, key=page))
                origin = (f"detected: a {rows}-row band of one grey value at the bottom of {path.name}"
                          if rows else "auto: no data bar in the metadata, none detected")
        else:
            rows, origin = int(setting), "raw: databar in the config"
        if not 0 <= rows < shape[0] - 1:
            raise RawDataError(f"{first}: raw: databar = {rows} rows does not fit images of "
                               f"{shape[0]} rows")
        return {"rows": int(rows), "origin": origin}

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, z: int) -> np.ndarray:
        if not -len(self) <= z < len(self):
            raise IndexError(f"slice {z} out of range for {len(self)} slices")
        planes = []
        for path, page in (src[z] for src in self._sources):
            img = _read_image(path, key=page)
            if np.issubdtype(img.dtype, np.floating) and not np.isfinite(img).all():
                raise RawDataError(f"{path} (slice {z}): {int((~np.isfinite(img)).sum())} "
                                   "NaN or infinite pixel values")
            planes.append(img[: self._rows])
        return np.stack(planes)


def channel_metadata(kvs, first_files, rtol: float = 0.01) -> dict:
    """Instrument metadata of a multi-kV acquisition, checked against the configured kV list.

    Parameters
    ----------
    kvs : list of float
        The configured kV of each channel (from the file names).
    first_files : list of Path
        The first file of each channel.
    rtol : float
        Relative difference above which two values conflict.

    Returns
    -------
    dict
        The metadata of the first channel's file (:func:`read_sem_metadata`)
        plus ``channels``: per kV channel its ``file``, ``kv``, ``detector``,
        ``working_distance_mm``, ``date`` and their ``origin``, where present.

    Raises
    ------
    RawDataError
        A file whose metadata gives another acceleration voltage than the
        channel it is configured as, or channels with different pixel sizes;
        the message names the file(s) and both values.
    """
    metas = [read_sem_metadata(f) for f in first_files]
    channels = []
    for kv, path, meta in zip(kvs, first_files, metas):
        if "kv" in meta and abs(meta["kv"] - kv) > rtol * kv:
            raise RawDataError(
                f"{path}: the instrument metadata says {meta['kv']:g} kV "
                f"({meta['origin']['kv']}) but the file is configured as the {kv:g} kV channel "
                "(kvs and raw_pattern in the config); fix the file names or the kV list")
        if "pixel_size_um" in meta and "pixel_size_um" in metas[0] and not np.allclose(
                meta["pixel_size_um"], metas[0]["pixel_size_um"], rtol=rtol):
            raise RawDataError(
                f"{path}: pixel size {meta['pixel_size_um']} µm differs from "
                f"{metas[0]['pixel_size_um']} µm of {first_files[0]}; channels of one "
                "acquisition must have the same pixel size")
        keys = ("kv", "detector", "working_distance_mm", "date")
        channels.append({"configured_kv": kv, "file": Path(path).name,
                         **{k: meta[k] for k in keys if k in meta},
                         "origin": {k: meta["origin"][k] for k in keys if k in meta}})
    warnings = [w for meta in metas for w in meta.get("warnings", [])]
    return {**metas[0], "channels": channels, "warnings": warnings}


def read_raw_stack(folder, pattern: str, kvs, *, databar="auto") -> tuple[np.ndarray, dict]:
    """Read a whole raw multi-kV acquisition into one (z, c, y, x) array.

    Convenience for small stacks; the workflow streams with :class:`RawStack`.

    Returns
    -------
    stack : ndarray, shape (z, c, y, x)
        The raw grey values in their original dtype.
    metadata : dict
        As :attr:`RawStack.metadata`.
    """
    raw = RawStack(folder, pattern, kvs, databar=databar)
    return np.stack([raw[z] for z in range(len(raw))]), raw.metadata


def _as_number(value, path: Path, tag: str, warnings: list, scale: float = 1.0):
    """A metadata value as float, or None with a warning naming the file and tag."""
    if isinstance(value, bool):
        value = None
    try:
        number = float(value) * scale
    except (TypeError, ValueError):
        number = None
    if number is None or not np.isfinite(number):
        warnings.append(f"{path.name}: metadata tag {tag} = {value!r} is not a number; "
                        "treated as absent")
        return None
    return number


#: Zeiss length units, in micrometres.
_ZEISS_UNITS = {"pm": 1e-6, "nm": 1e-3, "µm": 1.0, "um": 1.0, "mm": 1e3, "m": 1e6}


def read_sem_metadata(path, image_shape=None) -> dict:
    """Read the instrument metadata that Thermo Fisher (FEI) or Zeiss SEMs write.

    The pixel size is that of the image as saved: FEI ``[Scan] PixelWidth``
    (or the beam's ``HFW`` over ``[Image] ResolutionX``); Zeiss ``Width``
    (the field width) over the saved image's columns, else ``Image Pixel
    Size``, else ``Pixel Size`` scaled from the store resolution to the
    saved width (``Pixel Size`` alone belongs to the store resolution and is
    wrong for an image saved at another size). The values agree with
    RosettaSciIO's TIFF reader (``rsciio.tiff``), which the tests check on
    real instrument files.

    Parameters
    ----------
    path : str or Path
        A TIFF written by the instrument.
    image_shape : tuple of int, optional
        (rows, columns) of the image; read from the file when omitted.

    Returns
    -------
    dict
        ``vendor`` ("FEI", "Zeiss" or None), and where present
        ``pixel_size_um`` as (y, x), ``kv`` (acceleration voltage),
        ``working_distance_mm``, ``detector``, ``tilt_corrected`` (the
        instrument corrected the cross-section foreshortening),
        ``stage_tilt_deg``, ``databar_rows`` (rows of the vendor's data bar
        at the bottom of the image), ``slice_index`` (Zeiss FIB slice index)
        and ``date``; ``origin`` says for each value the tag it was read
        from, with the file name (e.g. ``"FEI [EBeam] HV in s_000_1kV.tif"``);
        ``warnings`` lists values that were present but empty or malformed
        (treated as absent), each naming the file and tag.
    """
    path = Path(path)
    out: dict = {"vendor": None}
    origin: dict = {}
    warnings: list = []

    def put(key, value, tag):
        if value is None:
            return
        out[key] = value
        origin[key] = f"{out['vendor']} {tag} in {path.name}"

    with tifffile.TiffFile(path) as tif:
        fei = tif.fei_metadata
        sem = tif.sem_metadata
        rows, cols = image_shape or tif.pages.first.shape[-2:]
    if fei:
        out["vendor"] = "FEI"

        def num(section, key, scale=1.0):
            if key not in fei.get(section, {}):
                return None
            return _as_number(fei[section][key], path, f"[{section}] {key}", warnings, scale)

        image = fei.get("Image", {})
        for scan_name in ("Scan", "EScan", "IScan"):
            px = num(scan_name, "PixelWidth", 1e6)
            py = num(scan_name, "PixelHeight", 1e6)
            if px and py:
                put("pixel_size_um", (py, px), f"[{scan_name}] PixelHeight, PixelWidth")
                break
        else:
            nx = num("Image", "ResolutionX")
            for beam_name in ("EBeam", "IBeam", "IRBeam"):
                hfw = num(beam_name, "HFW", 1e6)
                if hfw and nx:
                    put("pixel_size_um", (hfw / nx, hfw / nx),
                        f"[{beam_name}] HFW / [Image] ResolutionX")
                    break
        beam_name = next((b for b in ("EBeam", "Beam") if fei.get(b, {}).get("HV") not in
                          (None, "")), "EBeam" if fei.get("EBeam") else "Beam")
        hv = num(beam_name, "HV", 1e-3)
        put("kv", hv if hv else None, f"[{beam_name}] HV")
        wd = num(beam_name, "WD", 1e3)
        put("working_distance_mm", wd if wd and wd > 0 else None, f"[{beam_name}] WD")
        flag = fei.get(beam_name, {}).get("TiltCorrectionIsOn")
        if flag not in (None, ""):
            put("tilt_corrected", str(flag).lower() in ("yes", "true", "1", "on"),
                f"[{beam_name}] TiltCorrectionIsOn")
        tilt = num("Stage", "StageT")
        put("stage_tilt_deg", None if tilt is None else float(np.degrees(tilt)), "[Stage] StageT")
        if str(fei.get("Detectors", {}).get("Name", "")):
            put("detector", str(fei["Detectors"]["Name"]), "[Detectors] Name")
        res_y = num("Image", "ResolutionY")
        bar = num("PrivateFei", "DatabarHeight")
        if res_y and 0 < rows - res_y < rows:
            put("databar_rows", int(rows - res_y), "image height - [Image] ResolutionY")
        elif bar is not None and 0 <= bar < rows:
            put("databar_rows", int(bar), "[PrivateFei] DatabarHeight")
        user = fei.get("User", {})
        if user.get("Date"):
            put("date", " ".join(str(user[k]) for k in ("Date", "Time") if user.get(k)),
                "[User] Date, Time")
    elif sem:
        out["vendor"] = "Zeiss"

        def entry(*keys):
            """(TAG, number, unit) of the first key present with a numeric value."""
            for key in keys:
                v = sem.get(key)
                if isinstance(v, (tuple, list)) and len(v) >= 2:
                    number = _as_number(v[1], path, key.upper(), warnings)
                    if number is not None:
                        return key.upper(), number, (v[2] if len(v) > 2 else None)
            return None, None, None

        def length_um(number, unit, key):
            factor = _ZEISS_UNITS.get(unit)
            if factor is None:
                warnings.append(f"{path.name}: metadata tag {key} has unknown unit {unit!r}; "
                                "treated as absent")
                return None
            return number * factor

        key, width, unit = entry("ap_width")
        size = length_um(width, unit, key) / cols if width else None
        if size:
            put("pixel_size_um", (size, size), f"{key} / {cols} columns")
        else:
            key, px, unit = entry("ap_image_pixel_size")
            size = length_um(px, unit or "nm", key) if px else None
            if size:
                put("pixel_size_um", (size, size), key)
            else:
                key, px, unit = entry("ap_pixel_size")
                size = length_um(px, unit or "nm", key) if px else None
                store = str((sem.get("dp_image_store") or ("", ""))[1])
                store_cols = int(store.split("*")[0]) if store.split("*")[0].strip().isdigit() \
                    else None
                if size and store_cols:
                    put("pixel_size_um", (size * store_cols / cols,) * 2,
                        f"{key} x DP_IMAGE_STORE width {store_cols} / {cols} columns")
                elif size:
                    warnings.append(f"{path.name}: only AP_PIXEL_SIZE (store resolution) is "
                                    "given, with no field width or store size: it is taken as "
                                    "the pixel size of the saved image")
                    put("pixel_size_um", (size, size), key)
        key, hv, _ = entry("ap_actualkv", "ap_manualkv")
        put("kv", hv if hv else None, key)
        key, wd, _ = entry("ap_wd")
        put("working_distance_mm", wd if wd and wd > 0 else None, key)
        det = sem.get("dp_detector_type") or sem.get("dp_detector_channel")
        if isinstance(det, (tuple, list)) and len(det) >= 2 and str(det[1]):
            put("detector", str(det[1]), "DP_DETECTOR_TYPE")
        tilt_flag = sem.get("dp_tilt_correction")
        if isinstance(tilt_flag, (tuple, list)) and len(tilt_flag) >= 2:
            put("tilt_corrected", tilt_flag[1] is True or str(tilt_flag[1]).lower() in
                ("on", "yes", "true"), "DP_TILT_CORRECTION")
        key, tilt, _ = entry("ap_stage_at_t")
        put("stage_tilt_deg", tilt, key)
        key, index, _ = entry("ap_fib_slice_index")
        put("slice_index", None if index is None else int(index), key)
        date = sem.get("ap_date")
        if isinstance(date, (tuple, list)) and len(date) >= 2 and str(date[1]):
            time_ = sem.get("ap_time")
            has_time = isinstance(time_, (tuple, list)) and len(time_) >= 2
            put("date", f"{date[1]} {time_[1]}" if has_time else str(date[1]),
                "AP_DATE, AP_TIME" if has_time else "AP_DATE")
    out["origin"] = origin
    out["warnings"] = warnings
    return out


def detect_databar(image: np.ndarray, *, min_rows: int = 8, max_fraction: float = 0.25,
                   uniform: float = 0.7) -> int:
    """Rows of a data bar (a band of mostly one grey value, with text) at the image bottom.

    Zeiss SmartSEM burns its data zone into the saved image (white with black
    text and a frame); other software does the like. A row belongs to the
    band when at least ``uniform`` of its pixels have the row's most common
    value, which real image rows almost never have (a saturated charging
    region of the shared real SEM image reaches 0.51). Up to two rows at the
    very bottom may differ (a frame line).

    Parameters
    ----------
    image : ndarray, (y, x)
    min_rows : int
        Shorter bands are not a data bar (0 is returned).
    max_fraction : float
        The band may cover at most this share of the image height.
    uniform : float
        Share of a row's pixels at its most common value.

    Returns
    -------
    int
        Rows to cut at the bottom (0: none found).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> img = rng.integers(0, 200, (100, 80)).astype(np.uint8)
    >>> img[-20:] = 255
    >>> img[-15, 5:15] = 0  # text
    >>> detect_databar(img)
    20
    """
    img = np.asarray(image)
    rows = img.shape[0]

    def share(row):
        _, counts = np.unique(row, return_counts=True)
        return counts.max() / row.size

    limit = int(max_fraction * rows)
    shares = [share(img[rows - 1 - k]) for k in range(min(limit + 1, rows))]
    for skip in range(3):
        n = 0
        while skip + n < len(shares) and shares[skip + n] >= uniform:
            n += 1
        if n >= min_rows:
            return 0 if skip + n > limit else skip + n
    return 0


def _fei_text(pixel_size_um, kv, working_distance_mm, detector, tilt_corrected) -> str:
    return "\r\n".join([
        "[User]",
        "Date=01/15/2026",
        "Time=09:30:00 AM",
        "[Beam]",
        f"HV={kv * 1000:.1f}",
        "[EBeam]",
        f"HV={kv * 1000:.1f}",
        f"WD={working_distance_mm * 1e-3:.6g}",
        f"TiltCorrectionIsOn={'yes' if tilt_corrected else 'no'}",
        "[Scan]",
        f"PixelWidth={pixel_size_um * 1e-6:.6g}",
        f"PixelHeight={pixel_size_um * 1e-6:.6g}",
        "[Stage]",
        "StageT=0.907571",
        "[Detectors]",
        f"Name={detector}",
        "Mode=SE",
        "",
    ])


def _zeiss_text(pixel_size_um, kv, working_distance_mm, detector, tilt_corrected) -> str:
    return "\r\n".join([
        "0", "0", "0", "0",
        "AP_PIXEL_SIZE", f"Pixel Size = {pixel_size_um * 1e3:.4g} nm",
        "AP_ACTUALKV", f"EHT = {kv:.2f} kV",
        "AP_WD", f"WD = {working_distance_mm:.3f} mm",
        "DP_DETECTOR_TYPE", f"Detector = {detector}",
        "DP_TILT_CORRECTION", f"Tilt Corrn. = {'On' if tilt_corrected else 'Off'}",
        "AP_DATE", "Date :15 Jan 2026",
        "AP_TIME", "Time :9:30:00",
        "END", "",
    ])


#: TIFF tag numbers of the instruments' metadata.
VENDOR_TAGS = {"FEI": (34682, _fei_text), "Zeiss": (34118, _zeiss_text)}


def write_sem_slice(path, image: np.ndarray, *, pixel_size_um: float, kv: float,
                    working_distance_mm: float = 4.0, detector: str | None = None,
                    tilt_corrected: bool = True, vendor: str = "FEI") -> None:
    """Write one 2D image as a Thermo Fisher (FEI) or Zeiss SEM writes it.

    The metadata is the text that the instrument stores in its private TIFF
    tag: FEI Helios / Auto Slice & View INI text (tag 34682, SI units) or a
    Zeiss SmartSEM / Atlas block (tag 34118, ``AP_...``/``DP_...`` keys), so
    :func:`read_sem_metadata` (and tifffile's ``fei_metadata`` /
    ``sem_metadata``) reads it exactly as from real files.
    """
    if vendor not in VENDOR_TAGS:
        raise ValueError(f"unknown vendor {vendor!r}; known: {sorted(VENDOR_TAGS)}")
    tag, text_of = VENDOR_TAGS[vendor]
    detector = detector or ("TLD" if vendor == "FEI" else "InLens")
    text = text_of(pixel_size_um, kv, working_distance_mm, detector, tilt_corrected)
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, image, photometric="minisblack", extratags=[(tag, "s", 0, text, True)])


def raw_file_name(pattern: str, slice_index: int | None, kv: float) -> str:
    """File name of one raw image under ``pattern`` (kV written as ``%g``)."""
    return pattern.format(slice=slice_index, kv=f"{kv:g}")


@contextlib.contextmanager
def atomic_dir(path):
    """Yield a temporary folder next to ``path``; rename it to ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_acquisition(folder, raw: np.ndarray, kvs, pattern: str, pixel_size_um: float, *,
                      tilt_corrected: bool = True, vendor: str = "FEI") -> None:
    """Write a (z, c, y, x) stack as an instrument does: one TIFF per slice and kV.

    With no ``{slice}`` field in ``pattern``, each kV becomes one multi-page TIFF
    (the metadata is then on the first page).
    """
    meta = {"pixel_size_um": pixel_size_um, "tilt_corrected": tilt_corrected, "vendor": vendor}
    with atomic_dir(folder) as tmp:
        for c, kv in enumerate(kvs):
            if "{slice" in pattern:
                for z in range(raw.shape[0]):
                    write_sem_slice(tmp / raw_file_name(pattern, z, kv), raw[z, c], kv=kv, **meta)
            else:
                write_sem_slice(tmp / raw_file_name(pattern, None, kv), raw[:, c], kv=kv, **meta)


def write_simulated_sample(raw_dir, truth_dir, sample, pattern: str, *,
                           vendor: str = "FEI") -> None:
    """Write a :class:`fibrecon.simulate.SimulatedSample`: raw files and truth folder.

    The truth folder holds ``labels.tif`` (phases, frame of slice 0, true
    geometry), ``instances.tif`` (particle ids), ``particles.tsv`` (id,
    equivalent diameter, cut by the field of view, cracked), ``drift.tsv``
    (content displacement of each slice in pixels), ``fields.npz`` (the
    artifact fields applied) and ``truth.json`` (true fractions and the
    simulation parameters).
    """
    import pandas as pd

    write_acquisition(raw_dir, sample.raw, sample.kvs, pattern, sample.voxel_size[2],
                      tilt_corrected=sample.tilt_corrected, vendor=vendor)
    with atomic_dir(truth_dir) as tmp:
        write_volume(tmp / "labels.tif", sample.labels, sample.voxel_size)
        write_volume(tmp / "instances.tif", sample.instances.astype(np.uint16)
                     if sample.instances.max() < 65536 else sample.instances.astype(np.float32),
                     sample.voxel_size)
        write_table(tmp / "particles.tsv", pd.DataFrame(sample.particles))
        drift = pd.DataFrame({
            "slice": np.arange(len(sample.drift_px)),
            "drift_y_px": sample.drift_px[:, 0],
            "drift_x_px": sample.drift_px[:, 1],
        })
        write_table(tmp / "drift.tsv", drift)
        np.savez_compressed(tmp / "fields.npz", **sample.fields)
        write_json(tmp / "truth.json", {**sample.truth, "vendor": vendor, "pattern": pattern})


# --------------------------------------------------------------------------
# Volumes with voxel size
# --------------------------------------------------------------------------


def write_volume(path, data: np.ndarray, voxel_size, *, channels: bool = False) -> None:
    """Write a (z, y, x) or (z, c, y, x) array as an ImageJ TIFF with its voxel size.

    Parameters
    ----------
    path : str or Path
        Destination ``.tif``.
    data : ndarray
        uint8, uint16 or float32 array, (z, y, x), or (z, c, y, x) with
        ``channels=True``.
    voxel_size : sequence of 3 float
        (dz, dy, dx) in micrometres.
    channels : bool
        Whether axis 1 is a channel axis.
    """
    axes = "ZCYX" if channels else "ZYX"
    if data.ndim != len(axes):
        raise ValueError(f"{path}: expected a {len(axes)}D array ({axes}), got {data.ndim}D")
    write_volume_slices(path, iter(data), data.shape, data.dtype, voxel_size, channels=channels)


def read_volume(path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Read a whole TIFF written by :func:`write_volume` (see :class:`VolumeReader` to stream).

    Returns
    -------
    data : ndarray
        (z, y, x) or (z, c, y, x).
    voxel_size : tuple of float
        (dz, dy, dx) in micrometres.
    """
    with VolumeReader(path) as vol:
        return vol.read_all(), vol.voxel_size


def read_labels(path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Read a label volume and check that it holds only 0 pore, 1 AM, 2 CBD.

    Raises
    ------
    ValueError
        Naming the file and the unexpected values.
    """
    labels, voxel = read_volume(path)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: label volume has pixel type {labels.dtype}, expected integers")
    values = np.unique(labels)
    bad = values[(values < 0) | (values > 2)]
    if bad.size:
        raise ValueError(f"{path}: unexpected label values {bad[:10].tolist()} "
                         "(expected 0 pore, 1 AM, 2 CBD)")
    return labels.astype(np.uint8), voxel


class VolumeReader:
    """A volume TIFF written by fibrecon, read one z-slice at a time.

    Attributes
    ----------
    shape : tuple of int
        (z, y, x) or (z, c, y, x).
    dtype : numpy.dtype
    voxel_size : tuple of float
        (dz, dy, dx) in micrometres.
    channels : bool
        Whether axis 1 is a channel axis.

    Examples
    --------
    >>> with VolumeReader(path) as vol:  # doctest: +SKIP
    ...     for z in range(len(vol)):
    ...         process(vol[z])
    """

    def __init__(self, path):
        self.path = Path(path)
        try:
            self._tif = tifffile.TiffFile(self.path)
        except Exception as exc:
            raise ValueError(f"{self.path}: cannot be read as TIFF ({exc})") from exc
        series = self._tif.series[0]
        ij = self._tif.imagej_metadata or (self._tif.shaped_metadata or ({},))[0]
        page = self._tif.pages.first
        xr = page.tags["XResolution"].value
        yr = page.tags["YResolution"].value
        self.voxel_size = (float(ij.get("spacing", 1.0)), yr[1] / yr[0], xr[1] / xr[0])
        shape, axes = tuple(series.shape), series.axes
        if "Z" not in axes:  # ImageJ drops a Z axis of length 1
            shape, axes = (1, *shape), "Z" + axes
        if "C" not in axes and "axes=ZCYX" in str(ij.get("Info", "")):  # ...and a C of length 1
            shape, axes = (shape[0], 1, *shape[1:]), "ZCYX"
        self.channels = "C" in axes
        self.shape = shape
        self.dtype = np.dtype(series.dtype)
        self._planes = shape[1] if self.channels else 1

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, z: int) -> np.ndarray:
        if not 0 <= z < len(self):
            raise IndexError(f"{self.path}: slice {z} out of range for {len(self)} slices")
        first = z * self._planes
        data = self._tif.asarray(key=range(first, first + self._planes))
        return data.reshape(self.shape[1:])

    def read_all(self) -> np.ndarray:
        return self._tif.series[0].asarray().reshape(self.shape)

    def close(self) -> None:
        self._tif.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_volume_slices(path, slices, shape, dtype, voxel_size, *, channels: bool = False,
                        ome: bool = False) -> None:
    """Write a volume slice by slice (streaming) as an ImageJ TIFF or OME-TIFF with its voxel size.

    Parameters
    ----------
    path : str or Path
        Destination ``.tif`` (written under a temporary name, renamed at the end).
    slices : iterable of ndarray
        Each (y, x), or (c, y, x) with ``channels=True``, in z order.
    shape : tuple of int
        Full shape, (z, y, x) or (z, c, y, x).
    dtype : numpy dtype
        float16 is written as a plain (non-ImageJ) TIFF with the same metadata
        as JSON, which :class:`VolumeReader` reads back.
    voxel_size : sequence of 3 float
        (dz, dy, dx) in micrometres.
    channels : bool
        Whether axis 1 is a channel axis.
    ome : bool
        Write OME-TIFF (``PhysicalSizeZ/Y/X`` in µm: napari, Fiji/Bio-Formats,
        QuPath) instead of an ImageJ TIFF.
    """
    dz, dy, dx = (float(v) for v in voxel_size)
    if min(dz, dy, dx) <= 0:
        raise ValueError(f"{path}: voxel size must be positive, got {voxel_size}")
    axes = "ZCYX" if channels else "ZYX"
    if len(shape) != len(axes):
        raise ValueError(f"{path}: expected a {len(axes)}D shape ({axes}), got {shape}")
    dtype = np.dtype(np.float32 if np.dtype(dtype) == np.float64 else dtype)
    expected = tuple(shape[1:])

    slow = float(os.environ.get("FIBRECON_FAULT_SLOW_WRITE", "0") or 0)  # test hook

    def planes():
        count = 0
        for item in slices:
            if slow:
                time.sleep(slow)
            item = np.asarray(item)
            if item.shape != expected:
                raise ValueError(f"{path}: slice {count} has shape {item.shape}, "
                                 f"expected {expected}")
            count += 1
            for plane in (item if channels else item[None]):
                yield plane.astype(dtype, copy=False)
        if count != shape[0]:
            raise ValueError(f"{path}: got {count} slices, expected {shape[0]}")

    if ome:
        options = {"ome": True, "metadata": {
            "axes": axes, "PhysicalSizeX": dx, "PhysicalSizeXUnit": "µm", "PhysicalSizeY": dy,
            "PhysicalSizeYUnit": "µm", "PhysicalSizeZ": dz, "PhysicalSizeZUnit": "µm"}}
    else:
        options = {"imagej": dtype != np.float16,  # ImageJ has no float16: plain TIFF, JSON metadata
                   "resolution": (1.0 / dx, 1.0 / dy),
                   "metadata": {"spacing": dz, "unit": "um", "axes": axes,
                                "Info": f"fibrecon axes={axes}"}}
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, planes(), shape=tuple(shape), dtype=dtype, photometric="minisblack",
                         **options)


# --------------------------------------------------------------------------
# Small text outputs
# --------------------------------------------------------------------------


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def write_ome_tiff(path, data: np.ndarray, voxel_size, *, channels: bool = False) -> None:
    """Write a volume as OME-TIFF with its physical voxel size (napari, Fiji/Bio-Formats, QuPath).

    Parameters
    ----------
    path : str or Path
        Destination, ``.ome.tif``.
    data : ndarray
        (z, y, x), or (z, c, y, x) with ``channels=True``.
    voxel_size : sequence of 3 float
        (dz, dy, dx) in micrometres (``PhysicalSizeZ/Y/X`` in µm).

    See Also
    --------
    write_volume_slices : the same, streamed slice by slice (``ome=True``).
    """
    axes = "ZCYX" if channels else "ZYX"
    if data.ndim != len(axes):
        raise ValueError(f"{path}: expected a {len(axes)}D array ({axes}), got {data.ndim}D")
    write_volume_slices(path, iter(data), data.shape, data.dtype, voxel_size, channels=channels,
                        ome=True)


def read_ome_scale(path) -> tuple[float, float, float]:
    """(dz, dy, dx) in micrometres from an OME-TIFF's ``Pixels`` element."""
    import xml.etree.ElementTree as ET

    with tifffile.TiffFile(path) as tif:
        xml = tif.ome_metadata
    if not xml:
        raise ValueError(f"{path}: no OME metadata")
    pixels = next(el for el in ET.fromstring(xml).iter() if el.tag.endswith("Pixels"))
    factor = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3}
    return tuple(float(pixels.get(f"PhysicalSize{a}")) * factor[pixels.get(f"PhysicalSize{a}Unit",
                                                                          "µm")]
                 for a in "ZYX")


def file_sha256(path) -> str:
    """SHA-256 of a file, hex (identity of models and input files in records)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_json(path, obj) -> None:
    """Write ``obj`` as indented JSON; infinities are written as ``Infinity``."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")


def read_json(path):
    """Read a JSON file (``Infinity`` and ``NaN`` allowed)."""
    return json.loads(Path(path).read_text())


def write_figure(path, fig, dpi: int = 120) -> None:
    """Save a matplotlib figure (format from the suffix) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)


def write_table(path, df, sep: str = "\t") -> None:
    """Write a pandas DataFrame as a tab-separated (or ``sep``) table, no index, NaN spelled out."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep=sep, index=False, na_rep="NaN")


# --------------------------------------------------------------------------
# User-labelled slices (fine-tuning the segmentation network)
# --------------------------------------------------------------------------


def read_labelled_slices(folder, n_channels: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Image/label pairs ``NAME.tif`` + ``NAME_labels.tif`` from a folder.

    ``NAME.tif`` holds one slice's network input, (channels, y, x) or (y, x)
    for one channel: the preprocessed kV channels in the model's order (a
    slice of ``results/preprocessed/<sample>.tif``). ``NAME_labels.tif`` holds
    its labels, (y, x), 0 pore, 1 AM, 2 CBD.

    Returns
    -------
    list of (images (1, c, y, x) float32, labels (1, y, x) uint8)

    Raises
    ------
    ValueError
        Naming the file: no pairs, a label file without image (or the
        reverse), wrong channel count, shapes that differ, label values
        outside 0-2.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: labelled-slices folder not found")
    labels = {p.name[: -len("_labels.tif")]: p for p in folder.glob("*_labels.tif")}
    images = {p.stem: p for p in folder.glob("*.tif") if not p.name.endswith("_labels.tif")}
    if not labels:
        raise ValueError(f"{folder}: no NAME_labels.tif files (expected NAME.tif + "
                         "NAME_labels.tif pairs)")
    unpaired = sorted(set(labels) ^ set(images))
    if unpaired:
        name = unpaired[0]
        have = labels.get(name) or images.get(name)
        raise ValueError(f"{have}: has no partner ({name}.tif and {name}_labels.tif go together)")
    pairs = []
    for name in sorted(labels):
        img = _read_image(images[name]).astype(np.float32)
        img = img[None] if img.ndim == 2 else img
        lab = _read_image(labels[name])
        if img.ndim != 3 or img.shape[0] != n_channels:
            raise ValueError(f"{images[name]}: shape {img.shape}, expected ({n_channels}, y, x) "
                             "(the model's input channels)")
        if lab.shape != img.shape[1:]:
            raise ValueError(f"{labels[name]}: shape {lab.shape} differs from its image "
                             f"{img.shape[1:]}")
        bad = np.setdiff1d(np.unique(lab), [0, 1, 2])
        if bad.size:
            raise ValueError(f"{labels[name]}: unexpected label values {bad[:10].tolist()} "
                             "(expected 0 pore, 1 AM, 2 CBD)")
        pairs.append((img[None], lab.astype(np.uint8)[None]))
    return pairs
