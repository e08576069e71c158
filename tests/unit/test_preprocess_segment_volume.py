import numpy as np

from fibrecon.preprocess import fit_background, preprocess_stack
from fibrecon.segment import segment_multiotsu
from fibrecon.volume import remove_small_objects_3d


def test_fit_background_recovers_a_quadric():
    yy, xx = np.mgrid[0:40, 0:50] / 40.0
    surface = 2.0 + 0.3 * yy - 0.2 * xx + 0.1 * yy * xx + 0.05 * xx**2
    np.testing.assert_allclose(fit_background(surface, order=2, step=1), surface, rtol=1e-5)


def test_preprocessing_removes_a_brightness_gradient_and_gain():
    rng = np.random.default_rng(0)
    phases = (rng.random((4, 1, 64, 64)) > 0.5).astype(float) * 0.6 + 0.2
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    gradient = 1.0 + 0.5 * xx  # 50 % brighter on the right
    gains = np.array([1.0, 1.2, 0.8, 1.1])[:, None, None, None]
    stack = phases * gradient * gains
    out = preprocess_stack(stack, denoise_sigma=0, background_order=1)
    uncorrected = preprocess_stack(stack, denoise_sigma=0, background_order=None)
    bright = phases[:, 0] > 0.5
    # same phase, (nearly) same value across the field and slices
    assert out[:, 0][bright].std() < 0.5 * uncorrected[:, 0][bright].std()
    left, right = out[:, 0, :, :16], out[:, 0, :, -16:]
    bright_left, bright_right = left[bright[:, :, :16]], right[bright[:, :, -16:]]
    assert abs(bright_left.mean() - bright_right.mean()) < 0.05


def test_multiotsu_labels_three_levels_in_brightness_order():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, (4, 32, 32)).astype(np.uint8)
    level = np.array([0.1, 0.9, 0.5])  # pore dark, AM bright, CBD between
    stack = (level[truth] + rng.normal(0, 0.05, truth.shape))[:, None].astype(np.float32)
    labels = segment_multiotsu(stack)
    assert (labels == truth).mean() > 0.99


def test_small_islands_take_their_neighbours_label():
    v = np.ones((10, 10, 10), np.uint8)
    v[5, 5, 5] = 2
    v[:3] = 0  # a big slab stays
    out = remove_small_objects_3d(v, 5)
    assert out[5, 5, 5] == 1 and (out[:3] == 0).all()
    np.testing.assert_array_equal(remove_small_objects_3d(v, 0), v)
