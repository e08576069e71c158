"""Classical phase segmentation: multi-Otsu thresholds on the preprocessed stack.

The baseline that the neural network of the segmentation issue must beat.
Grey levels of silicone-filled pores are lowest, CBD intermediate, NCA
highest, so three Otsu classes map in order of brightness to pore, CBD, AM
(``segment: grey_order`` changes the order where the CBD shows brighter).
Streaming: thresholds come from a seeded sample of voxels drawn slice by
slice (:func:`sample_voxels`), then every slice is labelled on its own.

A label-free check of any labelling (the network's in practice): a phase
labelled right has one population of grey levels, two phases taken for one
leave two (:class:`PhaseGreyHistograms`, :func:`grey_population_warnings`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.filters import threshold_multiotsu

from fibrecon import PHASES
from fibrecon.settings import StageSettings

__all__ = ["SegmentSettings", "combine_channels", "sample_voxels", "multiotsu_thresholds", "label_slice",
           "segment_multiotsu", "PhaseGreyHistograms", "two_populations",
           "GREY_SPLIT_WARN_ABOVE", "grey_population_warnings"]


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
    fallback_model : str
        ``auto`` (with ``model: auto``: the shipped domain-randomised model
        beside the chosen one, where there is one), ``none``, or a model file.
        Segment first labels a few slices with the model (a probe,
        :func:`fibrecon.uncertainty.probe_slices`); where more than
        ``fallback_above`` of the voxels it predicts CBD are uncertain (a stack
        unlike its training data), the fallback model segments the stack.
    fallback_above : float
        The probe's share of uncertain voxels among those predicted CBD above
        which the fallback model is used.
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
    fallback_model: str = "auto"
    fallback_above: float = 0.5
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


# ----------------------------------------------------------------------------- label-free check
#: Edges of the grey-value histograms of :class:`PhaseGreyHistograms`: preprocessed grey
#: values (0 and 1 at the contrast stretch's percentiles, not clipped); values beyond the
#: range count in the first or last bin.
GREY_RANGE = (-0.5, 1.5)
GREY_BINS = 400

#: A phase whose voxels split into two grey populations further apart than this (difference
#: of the means over their pooled sd, :func:`two_populations`) is a logged warning of segment.
#: ``benchmarks/cross_domain.py signals`` (every phase of the 30 benchmark stacks, 1 + 3 kV
#: model): 2.2-3.5 wherever the network labels each grey level as one phase (simulator,
#: foreign renders, nano-CT slices, the demo), 6.0 in the AM of the real SEM cross-section
#: of ``../shared/data/sem_images``, where the network takes its bright CBD for AM. One
#: Gaussian population split at its Otsu threshold gives 2.65.
GREY_SPLIT_WARN_ABOVE = 4.5

#: The smaller population must hold at least this share of the phase's voxels to count.
GREY_SPLIT_MIN_SHARE = 0.1


def two_populations(counts, centres) -> dict:
    """Split a grey-value histogram at its Otsu threshold and say how far apart the two sides lie.

    Parameters
    ----------
    counts, centres : array_like
        Histogram counts and bin centres.

    Returns
    -------
    dict
        ``separation`` (difference of the two sides' means over their pooled sd:
        about 2.65 for one Gaussian population, larger for two), ``minor_share``
        (the smaller side's share of the counts), ``means`` (darker, brighter side)
        and ``threshold``; NaN where fewer than two bins hold counts.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> centres = np.linspace(-0.5, 1.5, 401)[:-1] + 0.0025
    >>> one = np.histogram(rng.normal(0.6, 0.1, 100_000), np.linspace(-0.5, 1.5, 401))[0]
    >>> 2.5 < two_populations(one, centres)["separation"] < 2.8
    True
    >>> two = one + np.histogram(rng.normal(1.1, 0.05, 50_000), np.linspace(-0.5, 1.5, 401))[0]
    >>> out = two_populations(two, centres)
    >>> round(out["separation"], 1), round(out["minor_share"], 2)
    (6.3, 0.34)
    """
    from skimage.filters import threshold_otsu

    counts = np.asarray(counts, np.float64)
    centres = np.asarray(centres, np.float64)
    nan = {"separation": float("nan"), "minor_share": float("nan"),
           "means": (float("nan"), float("nan")), "threshold": float("nan")}
    if np.count_nonzero(counts) < 2:
        return nan
    t = float(threshold_otsu(hist=(counts, centres)))
    sides = []
    for keep in (centres <= t, centres > t):
        w = counts[keep]
        n = w.sum()
        if n == 0:
            return nan
        mean = float((w * centres[keep]).sum() / n)
        sides.append((n, mean, float((w * (centres[keep] - mean) ** 2).sum() / n)))
    (n0, m0, v0), (n1, m1, v1) = sides
    pooled = np.sqrt(max((v0 + v1) / 2, 1e-12))
    return {"separation": float((m1 - m0) / pooled), "minor_share": float(min(n0, n1) / (n0 + n1)),
            "means": (m0, m1), "threshold": t}


class PhaseGreyHistograms:
    """Grey-value histograms of the voxels of each predicted phase, added slice by slice.

    A network that takes two phases for one (the bright CBD of a real SEM image
    labelled AM) leaves that phase with two grey populations, while a phase
    labelled right has one (however broad): :meth:`splits` measures that for
    each phase, :func:`grey_population_warnings` says it.

    Examples
    --------
    >>> h = PhaseGreyHistograms()
    >>> grey = np.r_[np.full(60, 0.1), np.full(30, 0.5), np.full(10, 0.55)].reshape(10, 10)
    >>> h.add(grey, (grey > 0.3).astype(np.uint8))
    >>> h.counts.sum(axis=1).tolist()
    [60, 40, 0]
    """

    def __init__(self, n_phases: int = len(PHASES), bins: int = GREY_BINS,
                 value_range=GREY_RANGE):
        self.edges = np.linspace(*value_range, bins + 1)
        self.centres = (self.edges[:-1] + self.edges[1:]) / 2
        self.counts = np.zeros((n_phases, bins), np.int64)

    def add(self, grey: np.ndarray, labels: np.ndarray) -> None:
        """Add one slice: its combined grey image (y, x) and its labels (y, x)."""
        n, bins = self.counts.shape
        width = self.edges[1] - self.edges[0]
        pos = (np.asarray(grey, np.float32) - self.edges[0]) / width
        np.nan_to_num(pos, copy=False, nan=0.0)  # as the first bin
        np.clip(pos, 0, bins - 1, out=pos)  # beyond the range: the first or last bin
        key = pos.astype(np.int32)
        labels = np.asarray(labels)
        if labels.max(initial=0) >= n:  # e.g. 255, not annotated: left out
            keep = labels < n
            key, labels = key[keep], labels[keep]
        key += labels.astype(np.int32) * bins
        self.counts += np.bincount(key.ravel(), minlength=n * bins).reshape(n, bins)

    def splits(self) -> dict:
        """:func:`two_populations` of each phase's histogram, by phase name, with its
        ``share`` of all voxels."""
        total = max(int(self.counts.sum()), 1)
        return {PHASES[p]: {**two_populations(self.counts[p], self.centres),
                            "share": float(self.counts[p].sum() / total)}
                for p in range(self.counts.shape[0])}


def grey_population_warnings(splits: dict, limit: float = GREY_SPLIT_WARN_ABOVE,
                             min_share: float = GREY_SPLIT_MIN_SHARE,
                             min_phase_share: float = 0.01) -> list[str]:
    """Warnings for phases whose voxels form two grey populations (:meth:`PhaseGreyHistograms.splits`).

    Examples
    --------
    >>> ok = {"separation": 2.7, "minor_share": 0.4, "means": (0.5, 0.7), "share": 0.5}
    >>> grey_population_warnings({"am": ok})
    []
    >>> bad = {"separation": 6.0, "minor_share": 0.41, "means": (0.47, 0.92), "share": 0.81}
    >>> grey_population_warnings({"am": bad})[0][:60]
    'the voxels labelled am (81.0 % of the stack) form two grey p'
    """
    out = []
    for name, s in splits.items():
        if (s["separation"] > limit and s["minor_share"] >= min_share
                and s["share"] >= min_phase_share):
            out.append(
                f"the voxels labelled {name} ({100 * s['share']:.1f} % of the stack) form two grey "
                f"populations: means {s['means'][0]:.2f} and {s['means'][1]:.2f} (preprocessed "
                f"grey), {100 * s['minor_share']:.0f} % in the smaller, {s['separation']:.1f} "
                f"pooled sd apart (above {limit:g}; one Gaussian population gives about 2.65, and "
                "2.2-3.5 on the benchmark stacks the network labels right): one of them is "
                f"probably another phase, e.g. CBD brighter than the AM or charging, so the {name} "
                "fraction is too high and the metrics built on it are wrong; check the QC "
                "figure and correct a few slices (results/annotate/<sample>/), or set "
                "segment.method: multiotsu with segment.grey_order")
    return out
