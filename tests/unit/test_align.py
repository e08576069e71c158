import numpy as np
from scipy import ndimage as ndi

from fibrecon.align import apply_drift, common_region, estimate_drift


def _textured(shape, seed=0):
    return ndi.gaussian_filter(np.random.default_rng(seed).random(shape), 2.0)


def test_shifted_image_gives_back_its_shift():
    base = _textured((96, 96))
    truth = np.array([[0, 0], [1.3, -2.6], [3.0, 0.4], [-0.7, 4.2]])
    stack = np.stack([ndi.shift(base, d, order=3, mode="grid-wrap") for d in truth])[:, None]
    drift = estimate_drift(stack, upsample_factor=20)
    np.testing.assert_allclose(drift, truth, atol=0.1)


def test_apply_drift_restores_slice_zero_frame():
    base = _textured((64, 64), seed=1)
    truth = np.array([[0, 0], [2.0, -3.0]])
    stack = np.stack([ndi.shift(base, d, order=1) for d in truth])[:, None]
    aligned, window = apply_drift(stack, truth)
    assert window == (slice(0, 62), slice(3, 64))
    np.testing.assert_allclose(aligned[1, 0, 5:-5, 5:-5], aligned[0, 0, 5:-5, 5:-5], atol=1e-6)


def test_common_region_of_zero_drift_is_everything():
    assert common_region(np.zeros((3, 2)), (10, 12)) == (slice(0, 10), slice(0, 12))
