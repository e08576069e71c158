import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage as ndi

from fibrecon import files
from fibrecon import simulated_files
from fibrecon.samples import resolve_voxel_size
from fibrecon.simulate import (ARTIFACTS, OFFSET, PHASE_SIGNAL, SCALE, generate_microstructure,
                               kv_response, simulate_sample)

OFF = {name: 0.0 for name in ARTIFACTS}


def _only(*names, **strengths):
    return {**OFF, **{n: 1.0 for n in names}, **strengths}


def _signal(raw):
    return (raw.astype(np.float64) - OFFSET) / SCALE


def test_same_seed_gives_identical_files(tmp_path):
    for run in ("a", "b"):
        s = simulate_sample((6, 40, 40), porosity=0.35, seed=3)
        simulated_files.write_simulated_sample(tmp_path / run / "raw", tmp_path / run / "truth", s,
                                  "slice_{slice:04d}_{kv}kV.tif")
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*")
                     if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*")
                     if p.is_file())
    assert files_a == files_b and len(files_a) > 12
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    other = simulate_sample((6, 40, 40), porosity=0.35, seed=4)
    assert not np.array_equal(other.raw, s.raw)


@pytest.mark.parametrize("porosity, cbd, calendering, dispersion", [
    (0.40, 0.10, 0.0, 1.0), (0.27, 0.12, 1.0, 0.0), (0.33, 0.08, 0.5, 0.5)])
def test_truth_fractions_hit_targets(porosity, cbd, calendering, dispersion):
    s = simulate_sample((16, 80, 80), porosity=porosity, cbd_fraction=cbd,
                        calendering=calendering, cbd_dispersion=dispersion, seed=1)
    fractions = np.bincount(s.labels.ravel(), minlength=3) / s.labels.size
    np.testing.assert_allclose(fractions, [porosity, 1 - porosity - cbd, cbd], atol=0.02)
    assert s.truth["volume_fraction_pore"] == pytest.approx(fractions[0])


def test_particles_are_polydisperse_near_target_size():
    m = generate_microstructure((60, 200, 200), (0.05,) * 3, porosity=0.35, d50_um=1.5,
                                sigma_log=0.3, rng=np.random.default_rng(0))
    d = m.particles["diameter_um"][m.particles["voxels"] > 0]
    assert d.size >= 20
    assert 0.1 < np.std(np.log(d)) < 0.8  # polydisperse
    grains_per_particle = len(np.unique(m.grains[m.instances == 1]))
    assert grains_per_particle > 10  # particles are built from primary grains


def test_calendering_cracks_more_particles():
    def cracked(c):
        m = generate_microstructure((40, 160, 160), (0.05,) * 3, porosity=0.3, d50_um=2.0,
                                    calendering=c, rng=np.random.default_rng(5))
        return m.particles["cracked"].mean()
    assert cracked(1.0) > cracked(0.0) + 0.2


def test_agglomerated_cbd_forms_fewer_larger_clusters_than_dispersed():
    def mean_cluster(dispersion):
        m = generate_microstructure((30, 120, 120), (0.05,) * 3, porosity=0.35, d50_um=5.0,
                                    cbd_dispersion=dispersion, rng=np.random.default_rng(2))
        cbd = m.labels == 2
        am_contact = ndi.binary_dilation(m.labels == 1) & cbd
        return am_contact.sum() / cbd.sum()
    # films and necks touch the AM; clusters sit in the pore space
    assert mean_cluster(1.0) > 2 * mean_cluster(0.0)


def test_whole_particle_diameters_match_their_voxels():
    s = simulate_sample((40, 160, 160), porosity=0.35, d50_um=1.5, seed=7)
    whole = ~s.particles["cut"]
    assert whole.sum() >= 3
    for pid, d in zip(s.particles["id"][whole], s.particles["diameter_um"][whole]):
        n = (s.instances == pid).sum()
        assert d == pytest.approx((6 * n * 0.05**3 / np.pi) ** (1 / 3), rel=1e-9)


def test_the_drift_written_is_the_drift_applied():
    s = simulate_sample((24, 96, 96), porosity=0.35, seed=2, artifacts=_only("drift"))
    assert np.abs(s.drift_px).max() > 0.5
    m = int(np.ceil(np.abs(s.drift_px).max())) + 2
    inner = (slice(m, -m), slice(m, -m))
    for z in range(s.raw.shape[0]):
        ideal = PHASE_SIGNAL[s.labels[z]].astype(np.float64)
        image = _signal(s.raw[z, 0])
        moved = ndi.shift(ideal, s.drift_px[z], order=1)
        # the CBD carries its own texture (nano-pores); compare AM and pore only
        cbd = ndi.binary_dilation(ndi.shift(s.labels[z] == 2, s.drift_px[z], order=0), iterations=2)
        keep = ~cbd[inner]
        err = np.abs(image - moved)[inner][keep].mean()
        assert err < 0.003, (z, err)
        if np.abs(s.drift_px[z]).max() > 1:
            assert np.abs(image - ideal)[inner][keep].mean() > 5 * err


def _stripe_power(d):
    """Power of column means (over y) after removing slow variation along x."""
    cols = d.mean(axis=-2)
    return float(np.mean((cols - ndi.gaussian_filter1d(cols, 5, axis=-1)) ** 2))


def test_curtaining_off_leaves_only_the_noise_floor():
    kw = dict(shape=(12, 160, 160), porosity=0.35, seed=4)
    ideal = _signal(simulate_sample(**kw, artifacts=OFF).raw)
    on = _signal(simulate_sample(**kw, artifacts=_only("noise", "curtaining")).raw) - ideal
    off = _signal(simulate_sample(**kw, artifacts=_only("noise")).raw) - ideal
    floor = off.var(axis=-2).mean() / off.shape[-2]  # variance of a mean of ny noisy pixels
    assert _stripe_power(off) < 1.3 * floor
    assert _stripe_power(on) > 5 * floor


def test_higher_kv_shows_more_shine_through_in_the_pores():
    kw = dict(shape=(12, 96, 96), kvs=(1.0, 2.0, 5.0), porosity=0.4, seed=6)
    ideal = _signal(simulate_sample(**kw, artifacts=OFF).raw)
    shine = _signal(simulate_sample(**kw, artifacts=_only("shine_through")).raw) - ideal
    pore = np.broadcast_to((kw and simulate_sample(**kw, artifacts=OFF).labels == 0)[:, None],
                           shine.shape)
    per_kv = [shine[:, c][pore[:, c]].mean() for c in range(3)]
    assert 0 < per_kv[0] < per_kv[1] < per_kv[2]
    assert (shine[~pore] == 0).all()  # only pores show what lies below


def test_charging_is_stronger_at_low_kv_and_absent_when_off():
    kw = dict(shape=(40, 64, 64), kvs=(1.0, 5.0), porosity=0.35, seed=8)
    on = simulate_sample(**kw)
    low, high = on.fields["charging"][:, 0].mean(), on.fields["charging"][:, 1].mean()
    assert low > 2 * high > 0 or (low > 0 and high == 0)
    off = simulate_sample(**kw, artifacts={"charging": 0})
    assert not off.fields["charging"].any()


@pytest.mark.parametrize("name", ["gradient", "slice_gain"])
def test_multiplicative_fields_are_the_fields_written(name):
    kw = dict(shape=(6, 64, 64), kvs=(1.0,), porosity=0.35, seed=9)
    ideal = _signal(simulate_sample(**kw, artifacts=OFF).raw)[:, 0]
    s = simulate_sample(**kw, artifacts=_only(name))
    ratio = _signal(s.raw)[:, 0] / np.where(ideal > 0.05, ideal, np.nan)
    yy, xx = np.mgrid[0:64, 0:64] / 64.0 - 0.5
    for z in range(6):
        if name == "slice_gain":
            expected = s.fields["gain"][z]
        else:
            expected = 1 + s.fields["gradient"][z, 0] * yy + s.fields["gradient"][z, 1] * xx
        assert np.nanmax(np.abs(ratio[z] - expected)) < 2e-3


def test_noise_scales_with_dose_per_kv():
    kw = dict(shape=(6, 96, 96), kvs=(1.0, 4.0), porosity=0.35, seed=10)
    ideal = _signal(simulate_sample(**kw, artifacts=OFF).raw)
    noisy = _signal(simulate_sample(**kw, artifacts=_only("noise")).raw) - ideal
    std = noisy.std(axis=(0, 2, 3))
    # shot noise ~ 1/sqrt(dose), dose proportional to kV (plus a small read noise)
    assert std[0] / std[1] == pytest.approx(2.0, rel=0.25)
    assert np.abs(noisy.mean()) < 0.01


@pytest.mark.parametrize("name, phase", [("grain_contrast", 1), ("edge", None)])
def test_local_artifacts_stay_where_they_belong(name, phase):
    kw = dict(shape=(6, 80, 80), kvs=(1.0,), porosity=0.35, seed=11)
    ideal_sample = simulate_sample(**kw, artifacts=OFF)
    d = _signal(simulate_sample(**kw, artifacts=_only(name)).raw)[:, 0] - \
        _signal(ideal_sample.raw)[:, 0]
    labels = ideal_sample.labels
    assert np.abs(d).max() > 0.01
    if phase is not None:
        assert (np.abs(d[labels != phase]) < 1e-3).all()
    else:
        boundary = np.stack([ndi.morphological_gradient(lab, size=3) > 0 for lab in labels])
        near = np.stack([ndi.binary_dilation(b, iterations=5) for b in boundary])
        near[:, :5] = near[:, -5:] = near[:, :, :5] = near[:, :, -5:] = True  # edges beyond view
        assert (d >= -1e-3).all() and (np.abs(d[~near]) < 1e-3).all()


def test_tilt_foreshortening_and_its_metadata(tmp_path):
    s = simulate_sample((4, 100, 60), porosity=0.35, seed=1, tilt_corrected=False)
    assert s.raw.shape == (4, 2, round(100 * np.sin(np.radians(52))), 60)
    assert s.labels.shape == (4, 100, 60)
    simulated_files.write_simulated_sample(tmp_path / "raw", tmp_path / "truth", s, "s_{slice}_{kv}kV.tif")
    meta = files.read_sem_metadata(tmp_path / "raw" / "s_0_1kV.tif")
    assert meta["tilt_corrected"] is False
    voxel, _ = resolve_voxel_size({"x": "from_metadata", "y": "from_metadata", "z": 0.05}, meta)
    assert voxel[1] == pytest.approx(0.05 / np.sin(np.radians(52)), rel=1e-4)


@pytest.mark.parametrize("vendor", ["FEI", "Zeiss"])
def test_instrument_metadata_round_trip(tmp_path, vendor):
    s = simulate_sample((3, 40, 40), kvs=(1.0, 2.5), porosity=0.35, seed=1)
    simulated_files.write_simulated_sample(tmp_path / "raw", tmp_path / "truth", s, "s_{slice:03d}_{kv}kV.tif",
                              vendor=vendor)
    meta = files.read_sem_metadata(tmp_path / "raw" / "s_001_2.5kV.tif")
    assert meta["vendor"] == vendor and meta["kv"] == pytest.approx(2.5)
    np.testing.assert_allclose(meta["pixel_size_um"], (0.05, 0.05), rtol=1e-4)
    assert meta["tilt_corrected"] is True and meta["detector"]
    assert meta["date"] and meta["origin"]["kv"].startswith(vendor)
    stack, info = files.read_raw_stack(tmp_path / "raw", "s_{slice:03d}_{kv}kV.tif", [1, 2.5])
    np.testing.assert_array_equal(stack, s.raw)
    assert [c["kv"] for c in info["channels"]] == [1.0, 2.5]
    assert info["channels"][1]["file"] == "s_000_2.5kV.tif"


@pytest.mark.parametrize("vendor", ["FEI", "Zeiss"])
def test_metadata_that_contradicts_the_configured_channels_is_refused(tmp_path, vendor):
    def write(kv_in_1kv_files, pixel_size_3kv):
        img = np.zeros((16, 16), np.uint16)
        for z in range(2):
            simulated_files.write_sem_slice(tmp_path / f"s_{z}_1kV.tif", img, pixel_size_um=0.01,
                               kv=kv_in_1kv_files, vendor=vendor)
            simulated_files.write_sem_slice(tmp_path / f"s_{z}_3kV.tif", img, pixel_size_um=pixel_size_3kv,
                               kv=3, vendor=vendor)

    write(kv_in_1kv_files=5, pixel_size_3kv=0.01)  # the "1 kV" files were recorded at 5 kV
    with pytest.raises(files.RawDataError, match=r"s_0_1kV.tif: the instrument metadata says 5 kV "
                       r".* configured as the 1 kV channel"):
        files.RawStack(tmp_path, "s_{slice}_{kv}kV.tif", [1, 3])
    write(kv_in_1kv_files=1, pixel_size_3kv=0.02)  # right voltage, another pixel size
    with pytest.raises(files.RawDataError, match=r"s_0_3kV.tif: pixel size .* differs from .* "
                       r"of .*s_0_1kV.tif"):
        files.RawStack(tmp_path, "s_{slice}_{kv}kV.tif", [1, 3])


def test_command_line_writes_a_sample(tmp_path):
    help_text = subprocess.run([sys.executable, "-m", "fibrecon.simulate", "--help"],
                               capture_output=True, text=True, check=True).stdout
    assert "--artifact" in help_text and "--vendor" in help_text
    subprocess.run([sys.executable, "-m", "fibrecon.simulate", str(tmp_path / "raw"),
                    str(tmp_path / "truth"), "--shape", "3", "32", "32", "--kv", "1", "5",
                    "--artifact", "charging=0", "--seed", "5"], check=True)
    assert len(list((tmp_path / "raw").glob("*.tif"))) == 6
    for name in ("labels.tif", "instances.tif", "particles.tsv", "drift.tsv", "fields.npz",
                 "truth.json"):
        assert (tmp_path / "truth" / name).is_file(), name
    assert files.read_json(tmp_path / "truth" / "truth.json")["artifacts"]["charging"] == 0


def test_kv_response_grows_with_kv():
    lo, hi = kv_response(1.0), kv_response(5.0)
    assert hi["depth_um"] > 10 * lo["depth_um"] and hi["charging"] < lo["charging"]
