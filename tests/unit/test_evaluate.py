import numpy as np
import pytest

from fibrecon.align import apply_drift, estimate_drift
from fibrecon.evaluate import segmentation_scores
from fibrecon.preprocess import preprocess_stack
from fibrecon.segment import segment_multiotsu
from fibrecon.simulate import simulate_sample
from fibrecon.volume import relabel_small_islands


def test_scores_of_a_known_prediction():
    truth = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    pred = np.array([0, 0, 1, 1, 1, 2, 2, 0])
    s = segmentation_scores(pred, truth)
    assert s["iou_pore"] == pytest.approx(2 / 4)
    assert s["iou_am"] == pytest.approx(2 / 3)
    assert s["iou_cbd"] == pytest.approx(2 / 3)
    assert s["accuracy"] == pytest.approx(6 / 8)
    assert s["fraction_error_am"] == pytest.approx(1 / 8)
    with pytest.raises(ValueError, match="shapes differ"):
        segmentation_scores(pred[:4], truth)


def test_classical_pipeline_on_a_simulated_stack_against_truth():
    """The baseline the U-Net must beat; numbers in benchmarks/RESULTS.md."""
    s = simulate_sample((16, 128, 128), porosity=0.33, seed=21)
    drift = estimate_drift(s.raw).drift
    aligned, (wy, wx) = apply_drift(s.raw, drift)
    labels = relabel_small_islands(segment_multiotsu(preprocess_stack(aligned, denoise="gaussian")), 20)
    scores = segmentation_scores(labels, s.labels[:, wy, wx])
    assert scores["iou_am"] > 0.85  # measured 0.93 (seed 21)
    assert scores["iou_pore"] > 0.65  # measured 0.76
    assert abs(scores["fraction_error_pore"]) < 0.08  # measured -0.067: shine-through reads as CBD
