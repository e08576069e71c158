"""User-labelled slices for fine-tuning the segmentation network."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fibrecon import phase_counts
from fibrecon.files.raw import _read_image

__all__ = ["read_labelled_slices"]


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
        if not np.issubdtype(lab.dtype, np.integer) and np.array_equal(lab, np.round(lab)):
            lab = lab.astype(np.int64)  # whole numbers stored as floats
        phase_counts(lab, str(labels[name]))
        pairs.append((img[None], lab.astype(np.uint8)[None]))
    return pairs
