"""Accuracy of a segmentation against ground truth (simulator or hand labels)."""

from __future__ import annotations

import numpy as np

from fibrecon import PHASES

__all__ = ["phase_iou", "segmentation_scores"]


def phase_iou(pred: np.ndarray, truth: np.ndarray, phase: int) -> float:
    """Intersection over union of one phase (NaN if absent from both)."""
    p, t = pred == phase, truth == phase
    union = np.logical_or(p, t).sum()
    return float(np.logical_and(p, t).sum() / union) if union else float("nan")


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
    out = {f"iou_{name}": phase_iou(pred, truth, p) for p, name in PHASES.items()}
    out["accuracy"] = float((pred == truth).mean())
    for p, name in PHASES.items():
        out[f"fraction_error_{name}"] = float((pred == p).mean() - (truth == p).mean())
    return out
