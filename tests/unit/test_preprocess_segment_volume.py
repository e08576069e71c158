import numpy as np
import pytest
from scipy import ndimage as ndi

from fibrecon.preprocess import (PreprocessParams, denoise, destripe, estimate_corrections,
                                 fit_background, preprocess_stack, preprocessed_slices)
from fibrecon.segment import segment_multiotsu
from fibrecon.volume import remove_small_objects_3d


def test_fit_background_recovers_a_quadric():
    yy, xx = np.mgrid[0:40, 0:50] / 40.0
    surface = 2.0 + 0.3 * yy - 0.2 * xx + 0.1 * yy * xx + 0.05 * xx**2
    np.testing.assert_allclose(fit_background(surface, order=2, step=1), surface, rtol=1e-5)


def test_preprocessing_removes_a_brightness_gradient_and_gain():
    rng = np.random.default_rng(0)
    blobs = ndi.gaussian_filter(rng.random((4, 128, 128)), (0, 4, 4))
    bright = blobs > np.median(blobs)
    phases = (bright * 0.6 + 0.2)[:, None]
    yy, xx = np.mgrid[0:128, 0:128] / 128.0
    gradient = 1.0 + 0.5 * xx  # 50 % brighter on the right
    gains = np.array([1.0, 1.2, 0.8, 1.1])[:, None, None, None]
    stack = phases * gradient * gains
    kw = dict(denoise="none", destripe=False, background_smoothing=0, percentile_smoothing=0)
    out = preprocess_stack(stack, background_order=1, **kw)[:, 0]
    uncorrected = preprocess_stack(stack, background_order=None, **kw)[:, 0]
    # same phase, (nearly) same value across the field and slices
    assert out[bright].std() < 0.2 * uncorrected[bright].std()
    left, right = out[:, :, :32][bright[:, :, :32]], out[:, :, -32:][bright[:, :, -32:]]
    assert abs(left.mean() - right.mean()) < 0.02


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


def test_destriping_removes_curtains_and_keeps_structure():
    rng = np.random.default_rng(1)
    structure = ndi.gaussian_filter(rng.random((256, 256)), 3).astype(np.float32)
    structure = (structure - structure.mean()) / structure.std()
    stripes = np.tile(ndi.gaussian_filter1d(rng.standard_normal(256), 1.0), (256, 1))
    stripes = (0.5 * stripes / stripes.std()).astype(np.float32)

    def stripe_power(img):
        cols = img[16:-16].mean(axis=0)
        return float(np.var(cols - ndi.gaussian_filter1d(cols, 5)))

    # the filter is linear: what is left of the stripes is destripe(stripes)
    np.testing.assert_allclose(destripe(structure + stripes),
                               destripe(structure) + destripe(stripes), atol=1e-4)
    assert stripe_power(destripe(stripes)) < 0.05 * stripe_power(stripes)  # measured 52x
    # smooth structure of unit std changes by 0.17 on average (its own column-mean part)
    assert np.abs(destripe(structure) - structure)[16:-16, 16:-16].mean() < 0.2


def test_streaming_passes_equal_the_in_memory_call():
    rng = np.random.default_rng(2)
    stack = (ndi.gaussian_filter(rng.random((5, 2, 64, 64)), (0, 0, 2, 2)) * 1000).astype(np.uint16)
    p = PreprocessParams()
    corrections = estimate_corrections(stack, p)
    streamed = np.stack(list(preprocessed_slices(stack, p, corrections)))
    np.testing.assert_allclose(streamed, preprocess_stack(stack), rtol=1e-6)
    assert corrections["coefficients"].shape == (5, 2, 6)


def test_unknown_denoiser_is_named():
    with pytest.raises(ValueError, match="unknown denoising method 'bilateral'"):
        denoise(np.zeros((4, 4)), "bilateral")


def test_contiguous_wavelet_passes_equal_pywavelets():
    import pywt

    from fibrecon.preprocess import _dwt2, _idwt2

    for shape in [(64, 64), (101, 37), (257, 310)]:
        img = np.random.default_rng(len(shape)).random(shape).astype(np.float32)
        approx, details = _dwt2(img, "db4")
        ref_approx, ref_details = pywt.dwt2(img, "db4")
        np.testing.assert_allclose(approx, ref_approx, atol=1e-5)
        for ours, ref in zip(details, ref_details):
            np.testing.assert_allclose(ours, ref, atol=1e-5)
        np.testing.assert_allclose(_idwt2(approx, details, "db4"),
                                   pywt.idwt2((ref_approx, ref_details), "db4"), atol=1e-5)
