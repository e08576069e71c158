"""Classical phase segmentation: multi-Otsu thresholds on the preprocessed stack.

The baseline that the neural network of the segmentation issue must beat.
Grey levels of silicone-filled pores are lowest, CBD intermediate, NCA
highest, so three Otsu classes map in order of brightness to pore, CBD, AM
(``segment: grey_order`` changes the order where the CBD shows brighter).
Streaming: thresholds come from a seeded sample of voxels drawn slice by
slice (:func:`sample_voxels`), then every slice is labelled on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.filters import threshold_multiotsu

from fibrecon import PHASES
from fibrecon.settings import StageSettings

__all__ = ["SegmentSettings", "combine_channels", "sample_voxels", "multiotsu_thresholds", "label_slice",
           "segment_multiotsu"]


@dataclass(frozen=True, kw_only=True)
class SegmentSettings(StageSettings):
    """Settings of the segment stage (``segment:`` in the config).

    Attributes
    ----------
    method : {"unet", "multiotsu"}
    model : str
        Network file (``method: unet``), or ``auto``: the shipped model for the
        sample's channels (:func:`fibrecon.samples.auto_model`).
    channels : "all" or list of float
        kV values of the channels used.
    device : str
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    tile_px, overlap_px, batch_size : int
        Tiled inference: tile edge, overlap, tiles per pass.
    flip_average : {"none", "x", "xy"}
        Test-time averaging over mirror images.
    save_probabilities : bool
        Write the calibrated class probabilities and the per-slice uncertainty
        table (method ``unet``).
    resample : {"auto", "never"}
        ``auto``: data whose pixel size lies outside the model's trained range
        are resampled to its working pixel size for the network and the labels
        back to the data's grid; ``never`` segments them as they are (with a
        warning).
    nbins : int
        Histogram bins of the multi-Otsu thresholds.
    grey_order : list of str
        The phases from darkest to brightest for the multi-Otsu classes
        (default pore, cbd, am: silicone-filled pores darkest, NCA brightest;
        ``[pore, am, cbd]`` where the CBD shows brighter than the AM, as in
        the real SEM image of ``../shared/data/sem_images``).
    """

    SECTION = "segment"
    method: str = "unet"
    model: str = "auto"
    channels: object = "all"
    device: str = "auto"
    tile_px: int = 1024
    overlap_px: int = 64
    flip_average: str = "none"
    batch_size: int = 2
    save_probabilities: bool = True
    resample: str = "auto"
    nbins: int = 256
    grey_order: tuple = ("pore", "cbd", "am")


#: Phase names of ``grey_order`` and their label values.
_PHASE_VALUES = {name: value for value, name in PHASES.items()}


def combine_channels(channels: np.ndarray, selected=None) -> np.ndarray:
    """Mean of the selected kV channels of one slice (c, y, x) -> (y, x) float32."""
    channels = np.asarray(channels)
    idx = list(range(channels.shape[0])) if selected is None else list(selected)
    bad = [c for c in idx if not 0 <= c < channels.shape[0]]
    if bad:
        raise ValueError(f"channel index {bad} out of range for {channels.shape[0]} channel(s)")
    return channels[idx].mean(axis=0, dtype=np.float32)


def sample_voxels(stack, selected=None, *, per_slice: int = 20_000, seed: int = 0) -> np.ndarray:
    """A seeded random sample of combined grey values, drawn one slice at a time."""
    rng = np.random.default_rng(seed)
    values = []
    for z in range(len(stack)):
        img = combine_channels(stack[z], selected).ravel()
        values.append(img[rng.integers(0, img.size, size=min(per_slice, img.size))])
    return np.concatenate(values)


def multiotsu_thresholds(values: np.ndarray, *, nbins: int = 256) -> np.ndarray:
    """Two multi-Otsu thresholds splitting grey values into three classes.

    References
    ----------
    Liao, Chen & Chung (2001), "A fast algorithm for multilevel thresholding",
    J. Inf. Sci. Eng. 17, 713-727.
    """
    return threshold_multiotsu(np.asarray(values).ravel(), classes=3, nbins=nbins)


def label_slice(image: np.ndarray, thresholds, grey_order=("pore", "cbd", "am")) -> np.ndarray:
    """Three classes by two thresholds, darkest first, labelled by ``grey_order`` (uint8).

    The default: 0 pore (darkest class), 2 CBD (middle), 1 AM (brightest).

    Examples
    --------
    >>> label_slice(np.array([0.1, 0.5, 0.9]), (0.3, 0.7)).tolist()
    [0, 2, 1]
    >>> label_slice(np.array([0.1, 0.5, 0.9]), (0.3, 0.7), ("pore", "am", "cbd")).tolist()
    [0, 1, 2]
    """
    order = [str(p).lower() for p in grey_order]
    if sorted(order) != sorted(_PHASE_VALUES):
        raise ValueError(f"segment: grey_order {list(grey_order)} must name pore, am and cbd "
                         "once each, darkest first")
    dark, middle, bright = (_PHASE_VALUES[p] for p in order)
    t_low, t_high = thresholds
    labels = np.full(np.shape(image), middle, dtype=np.uint8)
    labels[image <= t_low] = dark
    labels[image > t_high] = bright
    return labels


def segment_multiotsu(stack, *, channels=None, nbins: int = 256, seed: int = 0,
                      grey_order=("pore", "cbd", "am")) -> np.ndarray:
    """Label a preprocessed multi-kV stack as pore / AM / CBD (in memory).

    Parameters
    ----------
    stack : ndarray or sequence, (z, c, y, x)
        Preprocessed stack.
    channels : sequence of int, optional
        Channel indices averaged before thresholding (all by default).
    nbins : int
        Histogram bins for the thresholds.
    seed : int
        Seed of the voxel sample the thresholds are computed from.
    grey_order : sequence of str
        The phases from darkest to brightest (:func:`label_slice`).

    Returns
    -------
    ndarray of uint8, (z, y, x)
    """
    if np.ndim(stack[0]) != 3:
        raise ValueError(f"expected a (z, c, y, x) stack, got slices of shape {np.shape(stack[0])}")
    t = multiotsu_thresholds(sample_voxels(stack, channels, seed=seed), nbins=nbins)
    return np.stack([label_slice(combine_channels(stack[z], channels), t, grey_order)
                     for z in range(len(stack))])
