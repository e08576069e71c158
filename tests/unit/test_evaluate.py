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


def test_the_workflow_benchmark_counts_an_error_bar_as_covering_only_where_it_does():
    """benchmarks/workflow_transfer.py: the truth within 2 sd, an infinite sd (percolation in
    doubt) and two infinite values cover, a missing sd (multi-Otsu) does not; the worst error
    is absolute for a volume fraction and the largest factor either way otherwise."""
    from workflow_transfer import covered, worst_error

    inf, nan = float("inf"), float("nan")
    assert covered(0.40, 0.03, 0.45) and not covered(0.40, 0.02, 0.45)
    assert covered(23.9, inf, 4.37) and covered(inf, 0.5, inf)
    assert not covered(0.40, nan, 0.40) and not covered(inf, 0.5, 4.0)
    rows = [{"metrics": {"volume_fraction_pore": {"value": 0.39, "truth": 0.45},
                         "tau_pore_z": {"value": 1.0, "truth": 4.0}}},
            {"metrics": {"volume_fraction_pore": {"value": 0.50, "truth": 0.45},
                         "tau_pore_z": {"value": 6.0, "truth": 3.0}}}]
    assert worst_error(rows, "volume_fraction_pore") == "0.060"
    assert worst_error(rows, "tau_pore_z") == "-75 %"  # a factor 4 low outweighs 2 high
    rows[1]["metrics"]["tau_pore_z"]["value"] = inf
    assert worst_error(rows, "tau_pore_z") == "inf"
