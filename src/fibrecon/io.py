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
import json
import os
import re
import shutil
import tempfile
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
    "read_sem_metadata",
    "read_volume",
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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
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


def _read_image(path: Path) -> np.ndarray:
    try:
        image = tifffile.imread(path)
    except Exception as exc:  # tifffile raises many types for broken files
        raise RawDataError(f"{path}: cannot be read as TIFF ({exc})") from exc
    if image.size == 0:
        raise RawDataError(f"{path}: cannot be read as TIFF (no image data; truncated?)")
    return image


def read_raw_stack(folder, pattern: str, kvs) -> tuple[np.ndarray, dict]:
    """Read a raw multi-kV acquisition into one (z, c, y, x) array.

    Parameters
    ----------
    folder, pattern, kvs
        As for :func:`find_raw_files`; channel ``c`` follows the order of ``kvs``.

    Returns
    -------
    stack : ndarray, shape (z, c, y, x)
        The raw grey values in their original dtype.
    metadata : dict
        Instrument metadata of the first file of the first kV
        (see :func:`read_sem_metadata`), plus ``files`` (number of files read).

    Raises
    ------
    RawDataError
        Any file unreadable, or slices of differing shape or dtype.
    """
    per_kv = find_raw_files(folder, pattern, kvs)
    channels = []
    shape = dtype = None
    first = None
    for kv in [float(k) for k in kvs]:
        files = per_kv[kv]
        if files[0].slice is None:  # one multi-page file per kV
            arr = _read_image(files[0].path)
            if arr.ndim == 2:
                arr = arr[None]
            images = list(arr)
            names = [f"{files[0].path} page {i}" for i in range(len(images))]
        else:
            images = [_read_image(f.path) for f in files]
            names = [str(f.path) for f in files]
        for name, img in zip(names, images):
            if shape is None:
                shape, dtype, first = img.shape, img.dtype, name
            if img.shape != shape or img.dtype != dtype:
                raise RawDataError(
                    f"{name}: shape {img.shape} {img.dtype} differs from "
                    f"{first}: {shape} {dtype}"
                )
        channels.append(np.stack(images))
    nz = {c.shape[0] for c in channels}
    if len(nz) != 1:
        raise RawDataError(f"{folder}: kV channels have different slice counts {sorted(nz)}")
    meta = read_sem_metadata(per_kv[float(kvs[0])][0].path)
    meta["files"] = sum(len(v) for v in per_kv.values())
    return np.stack(channels, axis=1), meta


def read_sem_metadata(path) -> dict:
    """Read the instrument metadata that Thermo Fisher (FEI) or Zeiss SEMs write.

    Parameters
    ----------
    path : str or Path
        A TIFF written by the instrument.

    Returns
    -------
    dict
        ``vendor`` ("FEI", "Zeiss" or None), and where present
        ``pixel_size_um`` as (y, x), ``kv`` (acceleration voltage),
        ``working_distance_mm``, ``detector``, ``tilt_corrected``.
    """
    out: dict = {"vendor": None}
    with tifffile.TiffFile(path) as tif:
        fei = tif.fei_metadata
        sem = tif.sem_metadata
    if fei:
        out["vendor"] = "FEI"
        scan = fei.get("Scan", {}) or fei.get("EScan", {})
        if "PixelWidth" in scan:
            out["pixel_size_um"] = (float(scan["PixelHeight"]) * 1e6, float(scan["PixelWidth"]) * 1e6)
        beam = fei.get("EBeam", {}) or fei.get("Beam", {})
        if "HV" in beam:
            out["kv"] = float(beam["HV"]) / 1000.0
        if "WD" in beam:
            out["working_distance_mm"] = float(beam["WD"]) * 1e3
        if "TiltCorrectionIsOn" in beam:
            out["tilt_corrected"] = str(beam["TiltCorrectionIsOn"]).lower() in ("yes", "true", "1")
        det = fei.get("Detectors", {})
        if "Name" in det:
            out["detector"] = str(det["Name"])
    elif sem:
        out["vendor"] = "Zeiss"
        px = sem.get("ap_pixel_size") or sem.get("ap_image_pixel_size")
        if px and len(px) >= 2:
            size = float(px[1]) * {"nm": 1e-3, "µm": 1.0, "um": 1.0, "pm": 1e-6}.get(px[2] if len(px) > 2 else "nm", 1e-3)
            out["pixel_size_um"] = (size, size)
        hv = sem.get("ap_actualkv") or sem.get("ap_manualkv")
        if hv and len(hv) >= 2:
            out["kv"] = float(hv[1])
        wd = sem.get("ap_wd")
        if wd and len(wd) >= 2:
            out["working_distance_mm"] = float(wd[1])
        det = sem.get("dp_detector_type") or sem.get("dp_detector_channel")
        if det and len(det) >= 2:
            out["detector"] = str(det[1])
        tilt = sem.get("dp_tilt_correction")
        if tilt and len(tilt) >= 2:
            out["tilt_corrected"] = tilt[1] is True or str(tilt[1]).lower() in ("on", "yes")
    return out


def _fei_text(pixel_size_um, kv, working_distance_mm, detector, tilt_corrected) -> str:
    return "\r\n".join([
        "[User]",
        "Date=01/01/2026",
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
        "AP_DATE", "Date :01 Jan 2026",
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
    dz, dy, dx = (float(v) for v in voxel_size)
    if min(dz, dy, dx) <= 0:
        raise ValueError(f"{path}: voxel size must be positive, got {voxel_size}")
    axes = "ZCYX" if channels else "ZYX"
    if data.ndim != len(axes):
        raise ValueError(f"{path}: expected a {len(axes)}D array ({axes}), got {data.ndim}D")
    if data.dtype == np.float64:
        data = data.astype(np.float32)
    with atomic_path(path) as tmp:
        tifffile.imwrite(
            tmp,
            data,
            imagej=True,
            resolution=(1.0 / dx, 1.0 / dy),
            metadata={"spacing": dz, "unit": "um", "axes": axes},
        )


def read_volume(path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Read a TIFF written by :func:`write_volume`.

    Returns
    -------
    data : ndarray
        (z, y, x) or (z, c, y, x).
    voxel_size : tuple of float
        (dz, dy, dx) in micrometres.
    """
    with tifffile.TiffFile(path) as tif:
        ij = tif.imagej_metadata or {}
        series = tif.series[0]
        data = series.asarray()
        axes = series.axes
        page = tif.pages.first
        xr = page.tags["XResolution"].value
        yr = page.tags["YResolution"].value
    if "Z" not in axes:  # ImageJ drops a Z axis of length 1
        data = data[None]
    dx = xr[1] / xr[0]
    dy = yr[1] / yr[0]
    dz = float(ij.get("spacing", 1.0))
    return data, (dz, float(dy), float(dx))


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


def write_table(path, df) -> None:
    """Write a pandas DataFrame as a tab-separated table (no index)."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False)
