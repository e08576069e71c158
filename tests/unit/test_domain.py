"""Domain-randomised training data: label volumes of other origins rendered with random looks."""

from collections import Counter

import numpy as np
import pytest
import tifffile

from fibrecon import files
from fibrecon.domain import (_first_solid_below, draw_levels, random_crop, render_randomised,
                             transformed)
from fibrecon.preprocess import PreprocessParams
from fibrecon.training import randomised_stack, randomised_stacks


def _blobs(shape=(30, 64, 64), seed=0):
    """A small 3-phase volume: AM spheres, a CBD shell around them, pore elsewhere."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.indices(shape)
    dist = np.full(shape, np.inf)
    for c in rng.uniform(0, 1, (12, 3)) * shape:
        dist = np.minimum(dist, np.sqrt(((np.stack([zz, yy, xx]).T - c) ** 2).sum(-1)).T)
    lab = np.zeros(shape, np.uint8)
    lab[dist < 10] = 2
    lab[dist < 8] = 1
    return lab


def test_level_orders_are_all_drawn_and_the_phases_stay_apart():
    rng = np.random.default_rng(0)
    seen = Counter()
    for _ in range(200):
        levels, order = draw_levels(2, rng)
        seen[order] += 1
        assert levels.shape == (2, 3) and levels.min() >= 0 and levels.max() <= 1
        for lv in levels:
            assert min(abs(lv[0] - lv[1]), abs(lv[0] - lv[2]), abs(lv[1] - lv[2])) >= 0.1 - 1e-6
        if order == "cbd_brighter" and not np.allclose(levels[1], levels[0], atol=0.2):
            assert levels[1][2] > levels[1][1]
        if order == "usual":
            assert levels[0][0] < levels[0][2] < levels[0][1]
        if order == "cbd_brighter":
            assert levels[0][2] > levels[0][1] > levels[0][0]
    assert set(seen) == {"usual", "cbd_brighter", "free"} and seen["usual"] > seen["free"]


def test_first_solid_below_counts_slices_down_to_the_solid_and_takes_its_phase():
    lab = np.zeros((6, 1, 2), np.uint8)
    lab[3, 0, 0] = 2
    lab[5, 0, 1] = 1
    depth, phase = _first_solid_below(lab)
    assert depth[:, 0, 0][:4].tolist() == [3, 2, 1, 0] and phase[0, 0, 0] == 2
    assert depth[:, 0, 1].tolist() == [5, 4, 3, 2, 1, 0] and phase[0, 0, 1] == 1
    assert depth[5, 0, 0] > 1e5  # no solid below: out of reach


def test_render_is_seeded_keeps_the_labels_and_differs_between_seeds():
    lab = _blobs()
    a, ta, da = render_randomised(lab, [1.0, 3.0], 3, n_slices=20)
    b, tb, _ = render_randomised(lab, [1.0, 3.0], 3, n_slices=20)
    c, _, dc = render_randomised(lab, [1.0, 3.0], 4, n_slices=20)
    assert a.shape == (20, 2, 64, 64) and a.dtype == np.uint16
    assert np.array_equal(a, b) and np.array_equal(ta, lab[:20]) and np.array_equal(ta, tb)
    assert not np.array_equal(a, c) and da["levels"] != dc["levels"]
    # the phases' mean grey levels follow the drawn levels (up to the gain and gamma)
    for ch in range(2):
        means = [a[:, ch][ta == p].mean() for p in range(3)]
        assert np.argsort(means).tolist() == np.argsort(da["levels"][ch]).tolist()


def test_shine_through_is_deeper_at_the_higher_kv():
    for seed in range(40):
        _, _, d = render_randomised(_blobs(seed=1), [1.0, 5.0], seed, n_slices=20)
        assert d["shine_depth_slices"][0] <= d["shine_depth_slices"][1]
        assert d["shine_strength"][0] <= d["shine_strength"][1]
        assert d["blur_px"][0] <= d["blur_px"][1]


def test_transforms_keep_the_phases_and_fit_the_crop():
    lab = _blobs((12, 40, 50))
    rng = np.random.default_rng(1)
    for _ in range(20):
        out = transformed(lab, rng, fit=(20, 48, 48))
        assert out.dtype == np.uint8 and set(np.unique(out)) <= {0, 1, 2}
        assert all(n >= m for n, m in zip(out.shape, (20, 48, 48)))
        assert random_crop(out, (20, 48, 48), rng).shape == (20, 48, 48)
    with pytest.raises(ValueError, match="cannot hold"):
        transformed(lab, rng, fit=(200, 200, 200))
    with pytest.raises(ValueError, match="smaller than the crop"):
        random_crop(lab, (20, 48, 48), rng)


def test_label_volumes_of_any_three_values_read_as_pore_am_cbd(tmp_path):
    lab = _blobs((8, 32, 32))
    tifffile.imwrite(tmp_path / "v.tif", np.array([0, 128, 255], np.uint8)[lab])
    assert np.array_equal(files.read_label_volume(tmp_path / "v.tif"), lab)
    tifffile.imwrite(tmp_path / "two.tif", (lab > 0).astype(np.uint8))
    with pytest.raises(ValueError, match="two.tif.*exactly 3 values"):
        files.read_label_volume(tmp_path / "two.tif")
    tifffile.imwrite(tmp_path / "flat.tif", lab[0])
    with pytest.raises(ValueError, match="flat.tif.*3D"):
        files.read_label_volume(tmp_path / "flat.tif")


def test_randomised_training_stacks_come_from_both_sources_and_are_preprocessed(tmp_path):
    path = tmp_path / "vol.tif"
    tifffile.imwrite(path, _blobs((40, 96, 96)))
    pre = PreprocessParams(denoise="none")
    img, lab, info = randomised_stack(str(path), (6, 64, 64), [1.0, 3.0], pre, 5)
    assert img.shape == (6, 2, 64, 64) and img.dtype == np.float16 and lab.shape == (6, 64, 64)
    hi = float(np.percentile(img.astype(np.float32), 99))
    assert info["source"] == str(path) and 0.7 < hi < 1.3  # percentile-normalised
    stacks = randomised_stacks(6, (6, 64, 64), [1.0, 3.0], pre, 2, [str(path)],
                               pixel_um=(0.04, 0.06))
    sources = {s[2]["source"] for s in stacks}
    assert sources == {"simulator", str(path)}
    assert all(0.04 <= s[2]["pixel_um"] <= 0.06 for s in stacks if s[2]["source"] == "simulator")

