"""Raw acquisitions: one TIFF per slice and kV, or one multi-page TIFF per kV, read lazily."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from fibrecon.files.metadata import detect_databar, read_sem_metadata

__all__ = ["RawDataError", "SliceFile", "find_raw_files", "RawStack", "channel_metadata",
           "read_raw_stack", "raw_file_name"]


class RawDataError(ValueError):
    """Raw acquisition files that cannot be read as a stack; names the file."""


@dataclass(frozen=True)
class SliceFile:
    """One raw image file: its path, FIB slice index and acceleration voltage."""

    path: Path
    slice: int | None
    kv: float


def _pattern_regex(pattern: str) -> re.Pattern:
    """Turn a file-name pattern such as ``slice_{slice:04d}_{kv}kV.tif`` into a regex.

    A field named twice (``{kv}kV/slice_{slice:04d}_{kv}kV.tif``) must match the same
    value both times.

    >>> r = _pattern_regex("{kv}kV/slice_{slice:04d}_{kv}kV.tif")
    >>> r.match("3kV/slice_0007_3kV.tif").group("kv", "slice"), r.match("3kV/slice_0007_1kV.tif")
    (('3', '0007'), None)
    """
    out, pos, seen = [], 0, set()
    for m in re.finditer(r"\{(slice|kv)(:[^}]*)?\}", pattern):
        out.append(re.escape(pattern[pos : m.start()]))
        name = m.group(1)
        out.append(f"(?P={name})" if name in seen else
                   r"(?P<slice>\d+)" if name == "slice" else r"(?P<kv>\d+(?:\.\d+)?)")
        seen.add(name)
        pos = m.end()
    out.append(re.escape(pattern[pos:]))
    return re.compile("".join(out) + r"\Z")


def _candidates(folder: Path, pattern: str) -> list[Path]:
    """The entries a pattern may name: the folder's own, or, for a pattern with ``/``
    (one subfolder per kV, ``{kv}kV/slice_{slice:04d}.tif``), those as many levels down."""
    depth = pattern.strip("/").count("/")
    return sorted(folder.iterdir()) if depth == 0 else \
        sorted(folder.glob("/".join(["*"] * (depth + 1))))


def _what_is_there(names: list[str], other_kvs: set[float]) -> str:
    """The end of a no-match error: what the folder holds instead.

    >>> _what_is_there(["a.tif", "b.tif"], {5.0})
    "files of the pattern exist at 5 kV, which the sheet's kvs do not name; the folder holds 2 file(s), e.g. 'a.tif', 'b.tif'"
    >>> _what_is_there([], set())
    'the folder is empty'
    """
    if not names:
        return "the folder is empty"
    said = []
    if other_kvs:
        said.append(f"files of the pattern exist at {', '.join(f'{k:g}' for k in sorted(other_kvs))}"
                    " kV, which the sheet's kvs do not name")
    said.append(f"the folder holds {len(names)} file(s), e.g. "
                + ", ".join(repr(n) for n in names[:3]))
    return "; ".join(said)


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
        A single-kV acquisition may leave ``{kv}`` out (``slice_{slice:04d}.tif``):
        every matching file is that channel (its metadata's kV still checked).
        With ``/`` it names files in subfolders, e.g. one folder per kV
        (``{kv}kV/slice_{slice:04d}.tif``).
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
    if "{kv" not in pattern and len(kvs) != 1:
        raise RawDataError(f"{folder}: file pattern {pattern!r} has no {{kv}} field, which "
                           f"only a single-kV acquisition may leave out (kvs: {list(kvs)})")
    regex = _pattern_regex(pattern)
    per_kv: dict[float, list[SliceFile]] = {float(kv): [] for kv in kvs}
    names, other_kvs = [], set()
    for p in _candidates(folder, pattern):
        name = p.relative_to(folder).as_posix()
        names.append(name)
        m = regex.match(name)
        if not m:
            continue
        kv = float(m.group("kv")) if "kv" in m.groupdict() else float(kvs[0])
        if kv not in per_kv:
            other_kvs.add(kv)
            continue
        idx = int(m.group("slice")) if "slice" in m.groupdict() else None
        per_kv[kv].append(SliceFile(p, idx, kv))
    for kv, files in per_kv.items():
        if not files:
            hint = ""
            if "/" not in pattern and any((folder / n).is_dir() for n in names):
                hint = ("; its images lie in subfolders? name them in the pattern, e.g. "
                        "'{kv}kV/slice_{slice:04d}.tif'")
            raise RawDataError(f"{folder}: no file matches pattern {pattern!r} for {kv:g} kV; "
                               + _what_is_there(names, other_kvs) + hint)
        files.sort(key=lambda f: (f.slice is None, f.slice))
    if "{slice" in pattern:
        reference = None
        for kv, files in per_kv.items():
            idx = [f.slice for f in files]
            if idx != list(range(idx[0], idx[0] + len(idx))):
                raise RawDataError(f"{folder}: gap in slice numbering at {kv:g} kV: "
                                   + _gap_description(idx))
            if reference is None:
                reference = (kv, set(idx))
            elif set(idx) != reference[1]:
                diff = sorted(set(idx) ^ reference[1])
                raise RawDataError(
                    f"{folder}: slice(s) {diff[:5]} present at one voltage but not at "
                    f"the other ({reference[0]:g} kV vs {kv:g} kV): a kV channel is missing"
                )
    return per_kv


def _gap_description(idx: list[int]) -> str:
    """What is missing from sorted slice numbers ``idx``, and a constant step if there is one.

    >>> _gap_description([0, 1, 3, 4])
    'slice(s) [2] missing (1 in all between 0 and 4)'
    >>> "every 2nd slice saved?" in _gap_description([0, 2, 4, 6])
    True
    """
    missing = sorted(set(range(idx[0], idx[-1] + 1)) - set(idx))
    text = (f"slice(s) {missing[:5]}{' ...' if len(missing) > 5 else ''} missing "
            f"({len(missing)} in all between {idx[0]} and {idx[-1]})")
    steps = set(np.diff(idx).tolist())
    if len(idx) > 2 and len(steps) == 1:
        (step,) = steps
        text += (f"; the numbers go up by {step} throughout: every {step}{_ordinal(step)} "
                 f"slice saved? then number them consecutively and set the sheet's "
                 f"voxel_z_um to {step}x the FIB slice thickness")
    return text


def _ordinal(n: int) -> str:
    return "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


def _read_image(path: Path, key=None) -> np.ndarray:
    try:
        image = tifffile.imread(path, key=key)
    except Exception as exc:  # tifffile raises many types for broken files
        raise RawDataError(f"{path}: cannot be read as TIFF ({exc})") from exc
    if image.size == 0:
        raise RawDataError(f"{path}: cannot be read as TIFF (no image data; truncated?)")
    return image


def _grey(img: np.ndarray, path: Path, where: str = "") -> np.ndarray:
    """A greyscale image stored with samples per pixel (RGB, RGBA, grey + alpha) as one plane.

    Raises
    ------
    RawDataError
        Colour samples that differ: a false-colour or colour image is not an SEM signal.
    """
    if img.ndim == 2:
        return img
    colour = img[..., : 1 if img.shape[-1] == 2 else 3]  # alpha (the last of 2 or 4) left out
    differ = (colour != colour[..., :1]).any(axis=-1)
    if differ.any():
        raise RawDataError(
            f"{path}{where}: a colour image ({img.shape[-1]} samples per pixel) whose colour "
            f"channels differ in {differ.mean():.1%} of the pixels; fibrecon reads greyscale "
            "detector images: save the slices as greyscale (Fiji: Image > Type > 8-bit or "
            "16-bit) or export the detector signal itself")
    return colour[..., 0]


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
    """Number of pages, page shape and dtype, from the TIFF headers only.

    Raises
    ------
    RawDataError
        Besides an unreadable file: an ImageJ hyperstack or OME-TIFF with
        several channels, whose pages interleave them (read as slices, they
        would mix the channels).
    """
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            n, shape, dtype = len(tif.pages), tuple(page.shape), np.dtype(page.dtype)
            series, channels, extra = None, 1, []
            if n > 1:  # only pages can interleave channels (one file per slice is read as is)
                series = tif.series[0] if tif.series else None
                channels = int((tif.imagej_metadata or {}).get("channels", 1) or 1)
                if series is not None and tif.is_ome and "C" in series.axes:
                    channels = max(channels, int(series.shape[series.axes.index("C")]))
                # axes beyond the image plane with more than one entry (tifffile's (z, c, y, x))
                extra = [] if series is None else [
                    (ax, int(size)) for ax, size in zip(series.axes, series.shape)
                    if ax not in "YXS" and size > 1]
    except Exception as exc:
        raise RawDataError(f"{path}: cannot be read as TIFF ({exc})") from exc
    if len(extra) > 1 and channels == 1:
        raise RawDataError(
            f"{path}: holds a {tuple(series.shape)} array (axes {series.axes}, {n} pages), more "
            "than one axis besides the image plane; fibrecon reads one file (or one file per "
            "slice) per kV channel, its pages the slices in order: save each kV's (z, y, x) "
            "stack as its own file, named by the pattern's {kv}")
    if channels > 1 and len(shape) == 2:
        raise RawDataError(
            f"{path}: a hyperstack of {channels} channels ({n} pages): fibrecon reads one file "
            "(or one file per slice) per kV channel; split the channels (Fiji: Image > Color > "
            "Split Channels) and save each as its own file, named by the pattern's {kv}")
    return n, shape, dtype


#: TIFF compressions that are usually lossy (tifffile's names): their block artifacts and
#: smoothed edges reach the segmentation, so a stack stored so is a warning.
_LOSSY_COMPRESSIONS = frozenset({"OJPEG", "JPEG", "ALT_JPEG", "JPEG_LOSSY", "JPEG_2000_LOSSY",
                                "JPEGXR", "JPEGXR_NDPI", "WEBP", "WEBP_DEPRECATED", "JPEGXL",
                                "JPEGXL_DNG"})


def _lossy_compression_warning(path, page: int = 0, files: int = 1) -> str | None:
    """A warning naming the file when its page is stored with a lossy compression, else None.

    From the TIFF header only. ``files``: how many files (or pages) of the channel it stands for.
    """
    with tifffile.TiffFile(path) as tif:
        compression = tif.pages[page].compression
    name = getattr(compression, "name", str(compression))
    if name not in _LOSSY_COMPRESSIONS:
        return None
    return (f"{path}: stored {name}-compressed, usually lossy (with {files - 1} more image(s) of "
            "its kV channel): block artifacts and smoothed edges reach the segmentation; "
            "export the detector images uncompressed or with a lossless compression (LZW, "
            "deflate)")


class RawStack:
    """A raw multi-kV acquisition, checked up front and read one slice at a time.

    Parameters
    ----------
    folder, pattern, kvs
        As for :func:`find_raw_files`; channel ``c`` follows the order of ``kvs``.
        Each kV as one multi-page TIFF: pages in the order of their Zeiss
        slice-index tag (``AP_FIB_SLICE_INDEX``) where every page has one,
        else in file order. Greyscale images saved as RGB, RGBA or grey +
        alpha (equal colour channels) are read as one plane; colour images
        whose channels differ are an error.
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

    notes : list of str
        What the reader decided about the files (a greyscale image saved as
        RGB read as one plane), for the align log.

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
        self.notes = []  # what the reader decided about the files, for the align log
        if len(shape) == 3 and shape[-1] in (2, 3, 4):  # greyscale saved with samples per pixel
            path, page = self._sources[0][0]
            _grey(_read_image(path, key=page), path, " (first slice)")  # before any work
            self.notes.append(f"{first}: {shape[-1]} samples per pixel with equal colour "
                              "channels: read as greyscale (every slice is checked)")
            shape = shape[:2]
        if len(shape) != 2:
            raise RawDataError(f"{first}: expected 2D greyscale images, got shape {shape}")
        if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
            raise RawDataError(f"{first}: unsupported pixel type {dtype}")
        self.dtype = dtype
        self.metadata = channel_metadata(self.kvs, [src[0][0] for src in self._sources],
                                         folder=self.folder)
        self.metadata["files"] = sum(len(v) for v in per_kv.values())
        for sources in self._sources:  # the first image of each channel, from its header
            lossy = _lossy_compression_warning(*sources[0], files=len(sources))
            if lossy:
                self.metadata["warnings"].append(lossy)
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
            planes.append(_grey(img, path, f" (slice {z})")[: self._rows])
        return np.stack(planes)


def channel_metadata(kvs, first_files, rtol: float = 0.01, folder=None) -> dict:
    """Instrument metadata of a multi-kV acquisition, checked against the configured kV list.

    Parameters
    ----------
    kvs : list of float
        The configured kV of each channel (from the file names).
    first_files : list of Path
        The first file of each channel.
    rtol : float
        Relative difference above which two values conflict.
    folder : path, optional
        The raw folder: each channel's ``file`` is named relative to it (so a
        layout with one subfolder per kV keeps the subfolder); without it, the
        base name.

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
        name = Path(path).name
        if folder is not None and Path(path).is_relative_to(folder):
            name = Path(path).relative_to(folder).as_posix()
        channels.append({"configured_kv": kv, "file": name,
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


def raw_file_name(pattern: str, slice_index: int | None, kv: float) -> str:
    """File name of one raw image under ``pattern`` (kV written as ``%g``)."""
    return pattern.format(slice=slice_index, kv=f"{kv:g}")
