import numpy as np
import pytest

from fibrecon.metrics import sample_metrics, volume_fractions


def test_known_label_mixture_gives_its_fractions():
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[:2] = 1  # 20 % AM
    labels[2:3] = 2  # 10 % CBD
    assert volume_fractions(labels) == pytest.approx({"pore": 0.7, "am": 0.2, "cbd": 0.1})


def test_unexpected_label_values_are_refused():
    with pytest.raises(ValueError, match="unexpected label values"):
        volume_fractions(np.array([0, 1, 5]))


def test_sample_metrics_keys():
    labels = np.zeros((6, 6, 6), np.uint8)
    labels[:, :, :2] = 1
    m = sample_metrics(labels, (0.1, 0.1, 0.1), tortuosity_axes=("z", "x"))
    assert m["volume_fraction_am"] == pytest.approx(1 / 3)
    assert m["tortuosity_pore_z"] == pytest.approx(1.0, abs=1e-3)
    assert m["tortuosity_pore_x"] == np.inf
    assert len(m["porosity_profile_z"]) == 6
