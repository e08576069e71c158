"""Accuracy of a segmentation against ground truth (simulator or hand labels)."""

from __future__ import annotations

import numpy as np

from fibrecon import PHASES

__all__ = ["confusion_counts", "iou_from_confusion", "segmentation_scores"]


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
