"""Instrument metadata of Thermo Fisher (FEI) and Zeiss SEM TIFFs, and their data bars.

Values are read from the TIFF tags alone (no pixel data), checked in the tests
against RosettaSciIO's reader on real instrument files. A TIFF without vendor
metadata may still carry a calibrated scale: that of ImageJ/Fiji (``unit``
and ``spacing`` in the image description, pixels per unit in the resolution
tags; read as RosettaSciIO reads it) or of OME-TIFF (``PhysicalSizeX/Y/Z``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

__all__ = ["read_sem_metadata", "detect_databar", "ome_physical_sizes", "tescan_sections",
           "tescan_hdr_sections", "TESCAN_TAG"]


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

#: Length units of ImageJ's ``unit`` entry and of OME's ``PhysicalSize*Unit``, in micrometres
#: (ImageJ writes "micron" or "\\u00B5m"; "pixel" or no unit means uncalibrated).
_SCALE_UNITS = {**_ZEISS_UNITS, "micron": 1.0, "microns": 1.0, "micrometer": 1.0,
                "micrometre": 1.0, "\\u00b5m": 1.0, "μm": 1.0, "nanometer": 1e-3,
                "nanometre": 1e-3, "cm": 1e4, "å": 1e-4, "angstrom": 1e-4}


def ome_physical_sizes(xml: str) -> dict:
    """``{"z", "y", "x"}`` -> (size in µm or None, unit as written) from OME-XML's first ``Pixels``.

    An axis without ``PhysicalSize`` is absent; an unknown unit gives None
    (OME's default unit is µm).
    """
    import xml.etree.ElementTree as ET

    pixels = next((el for el in ET.fromstring(xml).iter() if el.tag.endswith("Pixels")), None)
    out = {}
    for axis in "ZYX":
        value = None if pixels is None else pixels.get(f"PhysicalSize{axis}")
        if value is None:
            continue
        unit = pixels.get(f"PhysicalSize{axis}Unit", "µm")
        factor = _SCALE_UNITS.get(unit.strip().lower())
        try:
            out[axis.lower()] = (None if factor is None else float(value) * factor, unit)
        except ValueError:
            out[axis.lower()] = (None, unit)
    return out


#: The TIFF tag where Tescan SEM/FIB-SEM software writes its metadata, and its block types.
TESCAN_TAG = 50431
_TESCAN_BLOCKS = {2: "MAIN", 3: "SEM", 4: "GAMA", 5: "FIB"}


def _key_values(text: str) -> dict:
    """``key=value`` lines of a text block (the first value of a repeated key kept)."""
    out = {}
    for line in text.replace("\r", "\n").split("\n"):
        key, sep, value = line.partition("=")
        key = "".join(c for c in key if c.isprintable()).strip()
        if sep and key and key not in out:
            out[key] = value.strip()
    return out


def tescan_sections(data: bytes) -> dict:
    """Sections (``MAIN``, ``SEM``, ``FIB``, ...) of Tescan's metadata tag, each a dict of strings.

    The tag holds blocks of ``uint32 size, uint16 type`` followed by ``size - 2``
    bytes (type 2 main, 3 SEM, 4 GAMA, 5 FIB, 1 a JPEG thumbnail, 0 the end;
    the layout Gwyddion's Tescan reader documents), the text blocks lines of
    ``key=value``. Where the blocks do not parse, the text is read as one
    ``MAIN`` section; a sidecar ``.hdr`` (INI text with ``[MAIN]`` and
    ``[SEM]``) is read with :func:`tescan_hdr_sections`.
    """
    data = bytes(data)
    sections, pos = {}, 0
    while pos + 6 <= len(data):
        size = int.from_bytes(data[pos:pos + 4], "little")
        kind = int.from_bytes(data[pos + 4:pos + 6], "little")
        if size < 2 or pos + 4 + size > len(data):
            sections = {}
            break
        block = data[pos + 6:pos + 4 + size]
        if kind in _TESCAN_BLOCKS:
            sections[_TESCAN_BLOCKS[kind]] = _key_values(block.decode("latin-1"))
        pos += 4 + size
        if kind == 0:
            break
    if not sections.get("MAIN"):
        text = data.replace(b"\x00", b"").decode("latin-1")
        if text.lstrip().startswith("[MAIN]"):
            return tescan_hdr_sections(text)
        sections = {"MAIN": _key_values(text)}
    return sections


def tescan_hdr_sections(text: str) -> dict:
    """Sections of a Tescan ``.hdr`` text (``[MAIN]``, ``[SEM]``, ...), each a dict of strings."""
    lines, current = {}, None
    for line in text.replace("\r", "\n").split("\n"):
        if line.strip().startswith("[") and line.strip().endswith("]"):
            current = lines.setdefault(line.strip()[1:-1].strip().upper(), [])
        elif current is not None:
            current.append(line)
    return {name: _key_values("\n".join(body)) for name, body in lines.items()}


def _calibrated_scale(tif, path: Path, warnings: list) -> tuple[str | None, dict, dict]:
    """Pixel size (and slice spacing) from an ImageJ or OME-TIFF calibration, with their tags.

    Returns ``(kind, values, tags)``: "OME-TIFF", "ImageJ" or None;
    ``pixel_size_um`` (y, x) and ``slice_thickness_um`` where present; for
    each the tag it came from.
    """
    values, tags = {}, {}
    if tif.is_ome and tif.ome_metadata:
        try:
            sizes = ome_physical_sizes(tif.ome_metadata)
        except Exception as exc:  # malformed XML
            warnings.append(f"{path.name}: OME-XML cannot be parsed ({exc}); its scale is "
                            "treated as absent")
            sizes = {}
        for axis, (size, unit) in sizes.items():
            if size is None or not size > 0:
                warnings.append(f"{path.name}: OME PhysicalSize{axis.upper()} in unit {unit!r} "
                                "is not a length; treated as absent")
        if all(sizes.get(a, (None,))[0] for a in "yx"):
            values["pixel_size_um"] = (sizes["y"][0], sizes["x"][0])
            tags["pixel_size_um"] = "PhysicalSizeY, PhysicalSizeX"
        if sizes.get("z", (None,))[0]:
            values["slice_thickness_um"] = sizes["z"][0]
            tags["slice_thickness_um"] = "PhysicalSizeZ"
        return "OME-TIFF", values, tags
    ij = tif.imagej_metadata or {}
    unit = str(ij.get("unit", "")).strip()
    if not unit or unit.lower() in ("pixel", "pixels", "px"):
        return None, values, tags  # uncalibrated: ImageJ's default
    factor = _SCALE_UNITS.get(unit.lower())
    if factor is None:
        warnings.append(f"{path.name}: ImageJ unit {unit!r} is not a length unit; the scale is "
                        "treated as absent")
        return None, values, tags
    page = tif.pages.first
    try:
        (xn, xd), (yn, yd) = (page.tags[k].value for k in ("XResolution", "YResolution"))
        px, py = xd / xn * factor, yd / yn * factor
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        px = py = None
    if px and py and np.isfinite(px) and np.isfinite(py):
        values["pixel_size_um"] = (float(py), float(px))
        tags["pixel_size_um"] = f"YResolution, XResolution (unit {unit})"
    if "spacing" in ij:
        spacing = _as_number(ij["spacing"], path, "ImageJ spacing", warnings, factor)
        if spacing and spacing > 0:
            values["slice_thickness_um"] = spacing
            tags["slice_thickness_um"] = f"spacing (unit {unit})"
    return "ImageJ", values, tags


def read_sem_metadata(path, image_shape=None) -> dict:
    """Read the instrument metadata that Thermo Fisher (FEI), Zeiss or Tescan SEMs write.

    The pixel size is that of the image as saved: FEI ``[Scan] PixelWidth``
    (or the beam's ``HFW`` over ``[Image] ResolutionX``); Zeiss ``Width``
    (the field width) over the saved image's columns, else ``Image Pixel
    Size``, else ``Pixel Size`` scaled from the store resolution to the
    saved width (``Pixel Size`` alone belongs to the store resolution and is
    wrong for an image saved at another size); Tescan ``[MAIN] PixelSizeX/Y``
    (metres) from its tag 50431 or a sidecar ``.hdr``, with ``[SEM] HV``,
    ``WD`` and ``StageTilt`` (Tescan's tilt-correction state is not read, so
    y is taken as saved). The values agree with
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
        ``vendor`` ("FEI", "Zeiss", "Tescan", "ImageJ" or "OME-TIFF" for a
        calibrated TIFF without vendor metadata, or None), and where present
        ``pixel_size_um`` as (y, x), ``kv`` (acceleration voltage),
        ``working_distance_mm``, ``detector``, ``tilt_corrected`` (the
        instrument corrected the cross-section foreshortening),
        ``stage_tilt_deg``, ``databar_rows`` (rows of the vendor's data bar
        at the bottom of the image), ``slice_index`` (Zeiss FIB slice index)
        and ``date``; from an ImageJ or OME-TIFF calibration ``pixel_size_um``
        and ``slice_thickness_um`` (ImageJ ``spacing``, OME ``PhysicalSizeZ``),
        taken as the image's true scale (no tilt is known, so no tilt
        correction applies); ``origin`` says for each value the tag it was read
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

    try:
        with tifffile.TiffFile(path) as tif:
            fei = tif.fei_metadata
            sem = tif.sem_metadata
            rows, cols = image_shape or tif.pages.first.shape[:2]
            tescan = None
            if not (fei or sem):
                tag = tif.pages.first.tags.get(TESCAN_TAG)
                hdr = path.with_suffix(".hdr")
                if tag is not None and isinstance(tag.value, (bytes, bytearray, str, tuple,
                                                              list, np.ndarray)):
                    value = tag.value.encode("latin-1") if isinstance(tag.value, str) \
                        else bytes(bytearray(tag.value))
                    tescan = (tescan_sections(value), f"tag {TESCAN_TAG}")
                elif hdr.is_file() and hdr.read_bytes()[:64].lstrip().startswith(b"[MAIN]"):
                    tescan = (tescan_hdr_sections(hdr.read_text("latin-1")), hdr.name)
            calibrated = (None, {}, {}) if fei or sem or tescan else \
                _calibrated_scale(tif, path, warnings)
    except Exception as exc:  # tifffile raises many kinds for a broken file
        from fibrecon.files.raw import RawDataError

        raise RawDataError(f"{path}: cannot be read as TIFF ({type(exc).__name__}: {exc})") \
            from exc
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
    elif tescan:
        out["vendor"] = "Tescan"
        sections, where = tescan

        def tnum(section, key, scale=1.0):
            value = sections.get(section, {}).get(key)
            if value is None:
                return None
            return _as_number(value, path, f"[{section}] {key} ({where})", warnings, scale)

        px, py = tnum("MAIN", "PixelSizeX", 1e6), tnum("MAIN", "PixelSizeY", 1e6)
        if px and py:
            put("pixel_size_um", (abs(py), abs(px)), f"[MAIN] PixelSizeY, PixelSizeX ({where})")
        hv_key = "HV" if "HV" in sections.get("SEM", {}) else "AcceleratorVoltage"
        hv = tnum("SEM", hv_key, 1e-3)
        put("kv", hv if hv else None, f"[SEM] {hv_key} ({where})")
        wd = tnum("SEM", "WD", 1e3)
        put("working_distance_mm", wd if wd and wd > 0 else None, f"[SEM] WD ({where})")
        tilt = tnum("SEM", "StageTilt")
        put("stage_tilt_deg", tilt, f"[SEM] StageTilt ({where})")
        if sections.get("SEM", {}).get("Detector"):
            put("detector", sections["SEM"]["Detector"], f"[SEM] Detector ({where})")
        main = sections.get("MAIN", {})
        if main.get("Date"):
            put("date", " ".join(main[k] for k in ("Date", "Time") if main.get(k)),
                f"[MAIN] Date, Time ({where})")
    elif calibrated[1]:
        kind, values, tags = calibrated
        out["vendor"] = kind
        for key, value in values.items():
            put(key, value, tags[key])
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
