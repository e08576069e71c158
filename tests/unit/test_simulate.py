import numpy as np

from fibrecon.simulate import generate_microstructure, simulate_sample


def test_same_seed_same_sample():
    a = simulate_sample((6, 40, 40), porosity=0.35, seed=3)
    b = simulate_sample((6, 40, 40), porosity=0.35, seed=3)
    np.testing.assert_array_equal(a.raw, b.raw)
    np.testing.assert_array_equal(a.labels, b.labels)
    c = simulate_sample((6, 40, 40), porosity=0.35, seed=4)
    assert not np.array_equal(a.raw, c.raw)


def test_imaged_fractions_hit_targets():
    s = simulate_sample((16, 64, 64), porosity=0.30, cbd_fraction=0.12, seed=1)
    fractions = np.bincount(s.labels.ravel(), minlength=3) / s.labels.size
    np.testing.assert_allclose(fractions, [0.30, 0.58, 0.12], atol=0.005)
    assert s.raw.dtype == np.uint16 and s.raw.shape == (16, 2, 64, 64)
    np.testing.assert_array_equal(s.drift_px[0], [0.0, 0.0])


def test_many_particles_of_requested_size():
    m = generate_microstructure((40, 120, 120), (0.05,) * 3, porosity=0.35, d50_um=1.5,
                                rng=np.random.default_rng(0))
    assert m.instances.max() >= 20
    assert 1.0 < np.median(m.diameters_um) < 2.5


def test_phases_are_ordered_by_brightness_in_the_images():
    s = simulate_sample((8, 64, 64), porosity=0.35, seed=2, artifacts={"drift": 0})
    img = s.raw[:, 0].astype(float)
    means = [img[s.labels == p].mean() for p in (0, 2, 1)]
    assert means[0] < means[1] < means[2]
