"""Accuracy of a segmentation against ground truth (simulator or hand labels)."""

from __future__ import annotations

import numpy as np

from fibrecon import PHASES

__all__ = ["confusion_counts", "iou_from_confusion", "segmentation_scores", "scribbles"]


def confusion_counts(pred: np.ndarray, truth: np.ndarray, n: int = 3) -> np.ndarray:
    """n x n confusion counts of two label arrays (rows truth, columns prediction)."""
    return np.bincount(np.asarray(truth, np.int64).reshape(-1) * n
                       + np.asarray(pred, np.int64).reshape(-1), minlength=n * n).reshape(n, n)


def iou_from_confusion(cm) -> dict:
    """Per-phase IoU ``{"iou_pore": ..., "iou_am": ..., "iou_cbd": ...}`` from confusion counts.

    The one IoU of fibrecon (training's validation, the benchmarks and
    :func:`segmentation_scores` all use it); NaN for a phase absent from both.
    """
    cm = np.asarray(cm, dtype=float)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    return {f"iou_{name}": float(tp[p] / union[p]) if union[p] else float("nan")
            for p, name in PHASES.items()}


def segmentation_scores(pred: np.ndarray, truth: np.ndarray) -> dict:
    """Per-phase IoU, voxel accuracy and volume-fraction errors.

    Parameters
    ----------
    pred, truth : ndarray of int, same shape
        Labels 0 pore, 1 AM, 2 CBD.

    Returns
    -------
    dict
        ``iou_<phase>``, ``accuracy``, ``fraction_error_<phase>`` (predicted
        minus true volume fraction).

    Examples
    --------
    >>> t = np.array([0, 0, 1, 2]); p = np.array([0, 1, 1, 2])
    >>> segmentation_scores(p, t)["iou_am"]
    0.5
    """
    if pred.shape != truth.shape:
        raise ValueError(f"shapes differ: prediction {pred.shape}, truth {truth.shape}")
    out = iou_from_confusion(confusion_counts(pred, truth))
    out["accuracy"] = float((pred == truth).mean())
    for p, name in PHASES.items():
        out[f"fraction_error_{name}"] = float((pred == p).mean() - (truth == p).mean())
    return out


def scribbles(labels: np.ndarray, fraction: float, rng, *, width: int = 1,
              margin_px: int = 2, stroke_px: int = 60) -> np.ndarray:
    """Sparse annotations drawn from dense labels as a person draws strokes.

    Thin random strokes (smooth random walks, ``2 width - 1`` px wide) inside
    each phase, at least ``margin_px`` from its boundary (a person does not
    scribble on the edge), until about ``fraction`` of the pixels is
    annotated, shared equally among the phases present; every other pixel is
    :data:`fibrecon.NOT_ANNOTATED`. Seeded by ``rng``.

    Parameters
    ----------
    labels : ndarray of int, (y, x)
    fraction : float
        Share of the image's pixels to annotate (e.g. 0.001, 0.01, 0.1).
    rng : numpy.random.Generator or int
    width : int
        Stroke half-width, px (1: a 1-px line).
    margin_px : int
    stroke_px : int
        Length of one stroke, px.

    Returns
    -------
    ndarray of uint8, (y, x)
    """
    from scipy import ndimage as ndi

    from fibrecon import NOT_ANNOTATED

    rng = np.random.default_rng(rng)
    labels = np.asarray(labels)
    out = np.full(labels.shape, NOT_ANNOTATED, np.uint8)
    phases = [p for p in PHASES if (labels == p).any()]
    budget = max(1, int(round(fraction * labels.size / max(len(phases), 1))))
    ny, nx = labels.shape
    for p in phases:
        inside = ndi.binary_erosion(labels == p, iterations=margin_px) if margin_px else \
            labels == p
        if not inside.any():
            inside = labels == p
        starts = np.argwhere(inside)
        drawn = 0
        for _ in range(10_000):
            if drawn >= budget:
                break
            y, x = starts[rng.integers(len(starts))].astype(float)
            angle = rng.uniform(0, 2 * np.pi)
            for _ in range(stroke_px):
                iy, ix = int(round(y)), int(round(x))
                if not (0 <= iy < ny and 0 <= ix < nx and inside[iy, ix]):
                    break
                box = out[max(iy - width + 1, 0):iy + width, max(ix - width + 1, 0):ix + width]
                mask = inside[max(iy - width + 1, 0):iy + width, max(ix - width + 1, 0):ix + width]
                new = int(((box == NOT_ANNOTATED) & mask).sum())
                box[mask] = p
                drawn += new
                if drawn >= budget:
                    break
                angle += rng.normal(0, 0.25)
                y, x = y + np.sin(angle), x + np.cos(angle)
    return out
