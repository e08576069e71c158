"""The simulator's files: acquisitions written as FEI or Zeiss instruments write them, and the truth.

Kept beside :mod:`fibrecon.simulate` (not in :mod:`fibrecon.files`, which reads
what real instruments write): :func:`write_sem_slice` stores the metadata text
an instrument stores in its private TIFF tag, so
:func:`fibrecon.files.read_sem_metadata` reads a simulated file exactly as a
real one.
"""

from __future__ import annotations

import numpy as np
import tifffile

from fibrecon.files import (atomic_dir, atomic_path, raw_file_name, write_json, write_table,
                            write_volume)

__all__ = ["VENDOR_TAGS", "write_sem_slice", "write_acquisition", "write_simulated_sample"]


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
