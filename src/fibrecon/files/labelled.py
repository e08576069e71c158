"""Annotations: a user's labels of slices of a sample, for fine-tuning the network.

One folder per sample, one label image per annotated slice, named by the
slice's index in the sample's stack::

    annotations/<sample>/slice_0123_labels.tif

Each is a (y, x) integer image on the grid of the sample's preprocessed stack
(``results/preprocessed/<sample>.tif``): 0 pore, 1 AM, 2 CBD, and
:data:`fibrecon.NOT_ANNOTATED` (255) where nothing is said, the convention of
napari's Labels layer saved as TIFF and of ilastik. Scribbles, boxes or whole
slices are all the same format. The network input is cut from the sample's
stack by the workflow (:func:`fibrecon.training.annotated_stacks`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fibrecon import NOT_ANNOTATED, PHASES
from fibrecon.files.raw import _read_image
from fibrecon.files.tables import file_sha256

__all__ = ["ANNOTATION_PATTERN", "Annotation", "annotation_files", "annotation_name",
           "find_annotations", "read_annotation", "read_label_volume", "write_annotation_slice"]

#: File name of one annotated slice; the number is the slice index (z) in the stack.
ANNOTATION_PATTERN = re.compile(r"slice_(\d+)_labels\.tif{1,2}$")


def annotation_name(z: int) -> str:
    """File name of slice ``z``'s annotation, ``slice_0123_labels.tif``."""
    return f"slice_{int(z):04d}_labels.tif"


def write_annotation_slice(folder, z: int, image: np.ndarray, labels: np.ndarray,
                           uncertainty: np.ndarray) -> list[Path]:
    """Write what one slice's annotation starts from, as napari opens it.

    ``slice_NNNN.tif``: the preprocessed kV channels (c, y, x) float32;
    ``slice_NNNN_labels.tif``: the current segmentation (y, x) uint8, named as
    an annotation so that a corrected copy goes straight to
    ``annotations/<sample>/``; ``slice_NNNN_uncertainty.tif``: the normalised
    entropy (y, x) float32.

    Returns
    -------
    list of Path
    """
    import tifffile

    folder = Path(folder)
    stem = annotation_name(z)[: -len("_labels.tif")]
    out = [folder / f"{stem}.tif", folder / annotation_name(z), folder / f"{stem}_uncertainty.tif"]
    for path, data in zip(out, (np.asarray(image, np.float32), np.asarray(labels, np.uint8),
                                np.asarray(uncertainty, np.float32))):
        tifffile.imwrite(path, data)
    return out


@dataclass(frozen=True)
class Annotation:
    """One annotated slice: where it is, and what it says.

    Attributes
    ----------
    sample : str
    z : int
        Slice index in the sample's stack.
    path : pathlib.Path
    labels : ndarray of uint8, (y, x)
        0, 1, 2 or 255 (not annotated).
    sha256 : str
    """

    sample: str
    z: int
    path: Path
    labels: np.ndarray
    sha256: str

    def counts(self) -> dict:
        """Annotated pixels per phase, ``{"pore": n, "am": n, "cbd": n}``."""
        c = np.bincount(self.labels[self.labels != NOT_ANNOTATED].ravel(), minlength=3)
        return {name: int(c[p]) for p, name in PHASES.items()}

    def describe(self) -> dict:
        """The card's entry: sample, slice, file, checksum, annotated pixels per phase."""
        return {"sample": self.sample, "slice": self.z, "file": str(self.path),
                "sha256": self.sha256, "pixels": self.counts(),
                "annotated_fraction": round(float((self.labels != NOT_ANNOTATED).mean()), 6)}


def read_annotation(path, sample: str, z: int, shape=None) -> Annotation:
    """Read and check one annotation file.

    Parameters
    ----------
    path : path
    sample : str
    z : int
    shape : tuple of 2 int, optional
        (y, x) of the sample's slices; a different shape is an error.

    Raises
    ------
    ValueError
        Naming the file: not 2D, another shape than the stack's slices, values
        other than 0, 1, 2 and 255, or nothing annotated.
    """
    path = Path(path)
    lab = _read_image(path)
    if lab.ndim == 3 and lab.shape[0] == 1:
        lab = lab[0]
    if lab.ndim != 2:
        raise ValueError(f"{path}: shape {lab.shape}, expected one (y, x) label image")
    if shape is not None and tuple(lab.shape) != tuple(shape):
        raise ValueError(f"{path}: shape {lab.shape}, but the slices of sample {sample!r} are "
                         f"{tuple(shape)} (annotate the preprocessed stack's grid: "
                         "results/annotate/<sample>/)")
    if not np.issubdtype(lab.dtype, np.integer):
        if not np.array_equal(lab, np.round(lab)):
            raise ValueError(f"{path}: label values are not whole numbers ({lab.dtype})")
        lab = lab.astype(np.int64)
    values = np.unique(lab)
    bad = [int(v) for v in values if v not in (*PHASES, NOT_ANNOTATED)]
    if bad:
        raise ValueError(f"{path}: unexpected label values {bad[:10]} (expected 0 pore, 1 AM, "
                         f"2 CBD, {NOT_ANNOTATED} not annotated)")
    lab = lab.astype(np.uint8)
    if (lab == NOT_ANNOTATED).all():
        raise ValueError(f"{path}: no pixel is annotated (all {NOT_ANNOTATED})")
    return Annotation(sample, int(z), path, lab, file_sha256(path))


def annotation_files(folder, samples) -> dict[str, list[tuple[int, Path]]]:
    """The annotation files under ``folder``, by sample, without reading them.

    Parameters
    ----------
    folder : path
        Holds ``<sample>/slice_NNNN_labels.tif``.
    samples : collection of str
        Sample names of the sheet.

    Returns
    -------
    dict
        Sample -> sorted list of (slice index, path).

    Raises
    ------
    ValueError
        Naming the folder or file: missing folder, an unknown sample, a file
        name that is not ``slice_NNNN_labels.tif``, or nothing found.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: annotations folder not found")
    found = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        if sub.name not in samples:
            raise ValueError(f"{sub}: no sample {sub.name!r} in the sample sheet (annotations "
                             f"go in <annotations>/<sample>/; samples: {sorted(samples)[:10]})")
        for path in sorted(sub.glob("*.tif*")):
            m = ANNOTATION_PATTERN.match(path.name)
            if not m:
                raise ValueError(f"{path}: not an annotation name (expected slice_NNNN_labels.tif, "
                                 "NNNN the slice index in the stack)")
            found.setdefault(sub.name, []).append((int(m.group(1)), path))
    if not found:
        raise ValueError(f"{folder}: no annotations (expected <sample>/slice_NNNN_labels.tif)")
    return found


def find_annotations(folder, samples, shapes=None) -> list[Annotation]:
    """Every annotation under ``folder`` (``<sample>/slice_NNNN_labels.tif``), checked.

    Parameters
    ----------
    folder : path
    samples : collection of str
        Sample names of the sheet; a sub-folder of another name is an error.
    shapes : dict, optional
        Sample -> (z, y, x) of its stack: slice indices and shapes are checked.

    Returns
    -------
    list of Annotation
        Sorted by sample and slice.

    Raises
    ------
    ValueError
        As :func:`annotation_files`; besides, a slice index beyond the stack
        or a bad file (:func:`read_annotation`).
    """
    found = []
    for sample, items in annotation_files(folder, samples).items():
        shape = (shapes or {}).get(sample)
        for z, path in items:
            if shape is not None and not 0 <= z < shape[0]:
                raise ValueError(f"{path}: slice {z} is beyond sample {sample!r}'s stack of "
                                 f"{shape[0]} slices")
            found.append(read_annotation(path, sample, z, None if shape is None else shape[1:]))
    return found


def read_label_volume(path, values=None, *, all_phases: bool = True) -> np.ndarray:
    """A 3D label volume of another origin as 0 pore, 1 AM, 2 CBD (uint8, (z, y, x)).

    Parameters
    ----------
    path : str or Path
        A TIFF, one page per slice.
    values : sequence of 3 numbers, optional
        The file's values of pore, AM and CBD (e.g. ``(0, 255, 128)``). By
        default, a file holding only values of 0, 1 and 2 is read as it is
        (fibrecon's convention; a phase may be absent), and otherwise it must
        hold exactly three distinct values, which in increasing order are taken
        as pore, AM and CBD (so 0/128/255 and 0/85/170 read alike), the
        convention of the volumes in ``../shared/data/nmc_label_volumes``.
    all_phases : bool
        Every phase must be present (training volumes); False lets a volume of
        0, 1 and 2 lack one (metrics of a two-phase segmentation).

    Raises
    ------
    ValueError
        Naming the file, when it is not 3D, does not hold three values, or
        holds values other than the given ones.
    """
    import tifffile

    path = Path(path)
    try:
        raw = tifffile.imread(path)
    except Exception as e:  # noqa: BLE001 - named below
        raise ValueError(f"{path}: not a readable TIFF label volume ({e})") from e
    if raw.ndim != 3:
        raise ValueError(f"{path}: a label volume must be 3D (z, y, x), got shape {raw.shape}")
    found = np.unique(raw)
    if values is not None:
        values = np.asarray(values, dtype=raw.dtype)
        if len(values) != 3 or len(np.unique(values)) != 3:
            raise ValueError(f"{path}: give three distinct values (pore, AM, CBD), got "
                             f"{values.tolist()}")
        other = np.setdiff1d(found, values)
        if other.size:
            raise ValueError(f"{path}: holds values {other[:8].tolist()} besides the given "
                             f"pore, AM, CBD values {values.tolist()}")
        out = np.zeros(raw.shape, np.uint8)
        for phase, value in enumerate(values):
            out[raw == value] = phase
        return out
    if np.isin(found, (0, 1, 2)).all() and (len(found) == 3 or not all_phases):
        return raw.astype(np.uint8)
    if len(found) != 3:
        raise ValueError(f"{path}: a label volume must hold exactly 3 values (pore < AM < CBD), "
                         f"found {len(found)}: {found[:8].tolist()}")
    return np.searchsorted(found, raw).astype(np.uint8)
