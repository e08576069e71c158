"""Segmentation uncertainty: calibration, boundary shifts, metric sd, coverage, suggestions."""

import logging
import re

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from fibrecon.metrics import metrics_of
from fibrecon.record import metric_entries
from fibrecon.volume import relabel_small_islands
from fibrecon.uncertainty import (SHIFT_DIRECTIONS, calibrate, coverage, fit_boundary_shift,
                                  fit_fraction_shift, fraction_sd, phase_fractions,
                                  percolation_doubt,
                                  fit_temperature, normalised_entropy, shifted_labels,
                                  slice_uncertainty, suggest_slices, uncertain_fractions)


def softmax(z, axis=0):
    e = np.exp(z - z.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def test_temperature_scaling_recovers_a_known_over_confidence():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (3, 200_000))
    truth = (rng.random(logits.shape[1])[None] > np.cumsum(softmax(logits), 0)).sum(0)
    over_confident = softmax(2.0 * logits)  # what a network twice too sure gives
    t = fit_temperature(over_confident, truth)
    assert t == pytest.approx(2.0, rel=0.05)
    # exact up to the clipping of probabilities below 1e-7
    np.testing.assert_allclose(calibrate(over_confident, t), softmax(2.0 * logits / t), atol=2e-3)


def smooth_probabilities(shape=(12, 48, 48), seed=0):
    rng = np.random.default_rng(seed)
    z = ndi.gaussian_filter(rng.normal(0, 1, (3, *shape)), (0, 2, 2, 2)) * 12
    return softmax(z).transpose(1, 0, 2, 3).astype(np.float32)  # (z, 3, y, x)


def test_the_boundary_shift_that_gives_the_true_fractions_is_found():
    prob = smooth_probabilities()
    b = 0.6 * SHIFT_DIRECTIONS[0] - 0.4 * SHIFT_DIRECTIONS[1]
    truth = (np.log(prob) + b.reshape(1, 3, 1, 1)).argmax(1)
    np.testing.assert_allclose(fit_boundary_shift(prob, truth), [0.6, -0.4], atol=0.06)
    labels = prob.argmax(1).astype(np.uint8)
    moved = shifted_labels(labels, prob, b)
    np.testing.assert_array_equal(moved, truth)
    kept = labels.copy()
    kept[0, 0, 0] = 2 if labels[0, 0, 0] != 2 else 0  # a cleaned voxel the shift does not touch
    moved = shifted_labels(kept, prob, b)
    unchanged = (np.log(prob) + b.reshape(1, 3, 1, 1)).argmax(1) == labels
    assert (moved[unchanged] == kept[unchanged]).all()


def test_every_scalar_metric_gets_a_segmentation_sd_and_uncertain_boundaries_widen_it():
    prob = smooth_probabilities((16, 40, 40), seed=2)
    labels = prob.argmax(1).astype(np.uint8)
    vs = (0.1, 0.1, 0.1)
    plain, *_ = metrics_of(labels, vs)
    assert np.isnan(plain["volume_fraction_pore_sd_segmentation"])
    assert any("segmentation sd" in n for n in plain["notes"])
    sure, *_ = metrics_of(labels, vs, probabilities=prob, boundary_shift_sd=(0.3, 0.3))
    unsure, *_ = metrics_of(labels, vs, probabilities=calibrate(prob, 4.0),
                            boundary_shift_sd=(0.3, 0.3))
    scalars = [k for k, v in plain.items() if isinstance(v, float) and np.isfinite(v)
               and not k.endswith(("_sd_half_edge", "_sd_segmentation"))]
    assert all(f"{k}_sd_segmentation" in sure for k in scalars)
    assert unsure["volume_fraction_pore_sd_segmentation"] > \
        sure["volume_fraction_pore_sd_segmentation"] > 0
    entry = metric_entries(sure)["volume_fraction_pore"]
    assert entry["error_segmentation"] == sure["volume_fraction_pore_sd_segmentation"]
    assert entry["error"] == sure["volume_fraction_pore_sd_half_edge"]


def test_a_stack_less_sure_than_the_calibration_stacks_gets_a_wider_sd_and_a_warning(caplog):
    """The card records the calibration stacks' share of uncertain voxels; a stack with three
    times that share has its boundary shift widened x3 (wider sd, a note, a logged warning
    with both shares: above 2x); a stack as sure as the calibration's is left alone."""
    prob = smooth_probabilities((16, 40, 40), seed=2)
    labels = prob.argmax(1).astype(np.uint8)
    # the share as the segment stage's table gives it
    share = uncertain_fractions(pd.DataFrame([slice_uncertainty(p) for p in prob]))[
        "uncertain_fraction"]
    assert 0 < share < 1
    vs, shift = (0.1, 0.1, 0.1), (0.3, 0.3)
    same, *_ = metrics_of(labels, vs, probabilities=prob, boundary_shift_sd=shift,
                          uncertain_share=share, calibration_uncertain_share=share)
    plain, *_ = metrics_of(labels, vs, probabilities=prob, boundary_shift_sd=shift)
    assert same["segmentation_doubt"]["widening"] == 1.0
    assert same["volume_fraction_pore_sd_segmentation"] == plain["volume_fraction_pore_sd_segmentation"]
    assert not any("the segmentation sd is widened" in n for n in same["notes"])
    caplog.clear()
    shifted, *_ = metrics_of(labels, vs, probabilities=prob, boundary_shift_sd=shift,
                             uncertain_share=share, calibration_uncertain_share=share / 3)
    assert shifted["segmentation_doubt"]["widening"] == pytest.approx(3.0, rel=1e-3)
    np.testing.assert_allclose(shifted["boundary_shift_sd"], [0.9, 0.9], rtol=1e-3)
    assert shifted["volume_fraction_pore_sd_segmentation"] > \
        1.5 * same["volume_fraction_pore_sd_segmentation"] > 0
    (note,) = [n for n in shifted["notes"] if "the segmentation sd is widened" in n]
    assert "widened x3.00" in note and f"{100 * share:.1f} %" in note
    assert "widened x3.00" in caplog.text and "WARNING" in caplog.text


def test_the_shift_to_given_phase_fractions_reaches_them():
    prob = smooth_probabilities(seed=4)
    own = phase_fractions(prob.argmax(1))
    target = own + np.array([-0.05, -0.03, 0.08])
    b = fit_fraction_shift(prob, target)
    assert abs(b.sum()) < 1e-5  # a shift common to all phases changes nothing
    np.testing.assert_allclose(phase_fractions((np.log(prob) + b.reshape(1, 3, 1, 1)).argmax(1)),
                               target, atol=2e-3)


def test_a_second_networks_reading_of_the_probe_slices_widens_the_sd_to_span_it(caplog):
    """Another network reads two probe slices with 10 points more CBD than this segmentation:
    every sd takes in the metrics of the volume moved to that reading, so the CBD fraction's
    sd grows to about the difference; the reading is recorded and noted. A reading equal to
    this network's leaves every sd as it was; probe slices outside the volume are a warning
    and are left out."""
    prob = smooth_probabilities((16, 40, 40), seed=2)
    labels = relabel_small_islands(prob.argmax(1).astype(np.uint8), 27)  # as the volume stage
    vs, shift, zs = (0.1, 0.1, 0.1), (0.03, 0.03), [0, 8]
    own = phase_fractions(prob[zs].argmax(1))
    other = (own + np.array([-0.05, -0.05, 0.10])).tolist()
    base, *_ = metrics_of(labels, vs, probabilities=prob, boundary_shift_sd=shift)
    caplog.set_level(logging.INFO)
    wide, *_ = metrics_of(labels, vs, probabilities=prob, boundary_shift_sd=shift,
                          other_network={"name": "f.pt", "slices": zs, "fractions": other})
    key = "volume_fraction_cbd_sd_segmentation"
    assert wide[key] > 0.06 > 3 * base[key]
    assert wide["volume_fraction_pore_sd_segmentation"] >= \
        base["volume_fraction_pore_sd_segmentation"]
    reading = wide["segmentation_doubt"]["other_network"]
    assert reading["slices"] == zs and reading["fractions_other"] == [round(v, 4) for v in other]
    assert reading["fractions_used"] == [round(float(v), 4) for v in own]
    (note,) = [n for n in wide["notes"] if n.startswith("f.pt reads 2 probe slices")]
    assert f"{other[2]:.3f}" in note and note in caplog.text
    same, *_ = metrics_of(labels, vs, probabilities=prob, boundary_shift_sd=shift,
                          other_network={"name": "f.pt", "slices": zs, "fractions": own.tolist()})
    for k, v in base.items():
        if k.endswith("_sd_segmentation") and np.isfinite(v):
            assert same[k] == pytest.approx(v, rel=1e-3, abs=1e-9), k  # the solver's tolerance
    caplog.clear()
    outside, *_ = metrics_of(labels, vs, probabilities=prob, boundary_shift_sd=shift,
                             other_network={"name": "f.pt", "slices": [0, 40], "fractions": other})
    assert outside[key] == base[key]
    assert "do not lie in this volume of 16 slices" in caplog.text and "WARNING" in caplog.text


def test_a_network_that_percolates_within_the_doubt_has_an_infinite_sd(caplog):
    """A CBD rod along x cut by one unsure voxel: the tortuosity is finite or inf within 2 sd."""
    labels = np.ones((8, 8, 12), np.uint8)  # AM
    labels[2:4, 2:4, :] = 2  # CBD rod along x
    labels[:, 0, :] = 0  # a pore slab: percolates along z and x, whatever the shift
    labels[2:4, 2:4, 6] = 1  # the cut: AM, barely (CBD nearly as likely)
    prob = np.where(np.arange(3)[None, :, None, None] == labels[:, None], 0.98, 0.01)
    prob = prob.astype(np.float32)
    prob[2:4, :, 2:4, 6] = np.array([0.02, 0.5, 0.48], np.float32)[:, None]
    networks, axes = {"electronic": (2,), "pore": (0,)}, {"x": 2, "z": 0}
    assert percolation_doubt(labels, prob, (0.5, 0.5), networks, axes) == {"tau_electronic_x"}
    assert percolation_doubt(labels, prob, (0.001, 0.001), networks, axes) == set()
    out, *_ = metrics_of(labels, (0.1, 0.1, 0.1), probabilities=prob, boundary_shift_sd=(0.5, 0.5))
    assert out["tau_electronic_x"] == np.inf and out["tau_electronic_x_sd_segmentation"] == np.inf
    assert out["percolation_in_doubt"] == ["tau_electronic_x"]
    assert any("spanning path within +-2 sd" in n for n in out["notes"])
    # the infinite sd is that note, not "a network that does not connect" (the sd's own key)
    assert not any("_sd network" in n or "sd_segmentation = inf (no transport)" in n
                   for n in out["notes"]), out["notes"]
    assert "1 tortuosity factor(s) ['tau_electronic_x']" in caplog.text  # a warning, with the value


def test_coverage_counts_hits_within_two_sd_and_handles_non_percolating_cases():
    inf, nan = float("inf"), float("nan")
    cases = [(0.30, 0.01, 0.315),   # covered
             (0.30, 0.01, 0.33),    # missed
             (inf, 1.0, inf),       # both not percolating: right
             (3.0, inf, inf),       # the shifted boundaries break percolation: covered
             (3.0, 0.1, inf),       # percolating but truly not, sure about it: missed
             (nan, 0.1, 0.3)]       # not counted
    assert coverage(cases) == (3, 5)


def test_uncertainty_summary_and_the_suggested_slices():
    prob = np.zeros((3, 4, 4), np.float32)
    prob[0] = 1.0
    prob[:, 0, :2] = [[0.5], [0.4], [0.1]]  # two unsure pore voxels
    row = slice_uncertainty(prob)
    assert row["voxels_pore"] == 16 and row["uncertain_pore"] == 2
    assert normalised_entropy(np.full((3, 1), 1 / 3))[0] == pytest.approx(1.0)
    table = pd.DataFrame([{"z": 0, **row}, {"z": 1, **slice_uncertainty(np.roll(prob, 1, 0))}])
    frac = uncertain_fractions(table)
    assert frac["uncertain_fraction_pore"] == 2 / 16 and frac["uncertain_fraction_am"] == 2 / 16
    assert np.isnan(frac["uncertain_fraction_cbd"]) and frac["uncertain_fraction"] == 4 / 32
    t = pd.DataFrame({"z": range(20), "mean_entropy": np.r_[np.zeros(10), np.linspace(1, 2, 10)]})
    assert suggest_slices(t, 3, spacing=4) == [19, 15, 11]


def test_the_shift_sd_is_scaled_until_the_fraction_errors_are_one_sd():
    from fibrecon.uncertainty import fit_shift_sd, fraction_sd

    rng = np.random.default_rng(3)
    cases, shifts = [], []
    for k in range(6):
        prob = smooth_probabilities((8, 40, 40), seed=10 + k)
        b = rng.normal(0, 0.5, 2) @ np.array(SHIFT_DIRECTIONS)
        shifts.append(b)
        truth = (np.log(prob) + b.reshape(1, 3, 1, 1)).argmax(1)
        cases.append((prob.argmax(1).astype(np.uint8), prob, truth))
    sigma = fit_shift_sd(cases)
    z = np.concatenate([(np.bincount(lab.ravel(), minlength=3) - np.bincount(t.ravel(), minlength=3))
                        / lab.size / np.maximum(fraction_sd(lab, p, sigma), 1e-6)
                        for lab, p, t in cases])
    assert np.sqrt((z ** 2).mean()) == pytest.approx(1.0, abs=0.1)
    # twice the boundary bias widens the sd (not exactly twice: the fractions respond non-linearly)
    doubled = []
    for (lab, p, _), b in zip(cases, shifts):
        doubled.append((lab, p, (np.log(p) + 2 * b.reshape(1, 3, 1, 1)).argmax(1)))
    ratio = np.linalg.norm(fit_shift_sd(doubled)) / np.linalg.norm(sigma)
    assert ratio > 1.5, ratio


def test_a_large_share_of_uncertain_voxels_is_a_warning_with_the_number():
    from fibrecon.uncertainty import uncertainty_warnings

    assert uncertainty_warnings({"uncertain_fraction": 0.12}) == []
    (message,) = uncertainty_warnings({"uncertain_fraction": 0.4})
    assert "40.0 % of the voxels are uncertain" in message
    # the CBD's own share: above half of the voxels predicted CBD (foreign renders 0.45-0.88,
    # the simulator's held-out stacks 0.13-0.37)
    assert uncertainty_warnings({"uncertain_fraction": 0.1, "uncertain_fraction_cbd": 0.37}) == []
    (message,) = uncertainty_warnings({"uncertain_fraction": 0.1, "uncertain_fraction_cbd": 0.67})
    assert "67.0 % of the voxels predicted CBD are uncertain" in message
    assert len(uncertainty_warnings({"uncertain_fraction": 0.3, "uncertain_fraction_cbd": 0.6})) == 2


def test_shifted_volumes_are_cleaned_of_islands_as_the_volume_stage_cleaned_the_labels(caplog):
    """Scattered voxels whose CBD probability is nearly their AM one: moved boundaries turn
    them into one-voxel CBD specks, which the volume stage would have removed."""
    caplog.set_level(logging.INFO, logger="fibrecon")
    labels = np.ones((16, 32, 32), np.uint8)  # AM
    labels[:, :8] = 0  # pore slab
    labels[4:12, 16:24, 8:24] = 2  # one CBD aggregate
    prob = np.where(np.arange(3)[None, :, None, None] == labels[:, None], 0.98, 0.01)
    prob = prob.astype(np.float32)
    rng = np.random.default_rng(3)
    specks = (labels == 1) & (rng.random(labels.shape) < 0.01)
    z, y, x = np.nonzero(specks)
    prob[z, :, y, x] = np.array([0.02, 0.5, 0.48], np.float32)
    shift = (0.0, -0.5)  # towards CBD along the second direction
    cleaned, *_ = metrics_of(labels, (0.1, 0.1, 0.1), probabilities=prob, boundary_shift_sd=shift)
    raw, *_ = metrics_of(labels, (0.1, 0.1, 0.1), probabilities=prob, boundary_shift_sd=shift,
                         min_object_voxels=0)
    assert cleaned["cbd_aggregates"] == 1
    assert cleaned["cbd_aggregates_sd_segmentation"] == 0
    assert raw["cbd_aggregates_sd_segmentation"] > specks.sum() / 2  # about one per speck
    # the calibration's fraction sd sees the same cleaned volumes
    raw_sd = fraction_sd(labels, prob, shift, min_object_voxels=0)[2]
    assert raw_sd > 0.5 * specks.mean()  # most specks counted as CBD
    assert fraction_sd(labels, prob, shift)[2] < 0.2 * raw_sd  # only those touching the CBD
    # the log gives the numbers: what the shift moved and what the cleaning put back
    moved = 100 * specks.mean()
    logged = re.search(r"boundary shift 2 \(-0\.500 sd\): (\d+\.\d+) % of the voxels moved, "
                       r"(\d+\.\d+) % put back", caplog.text)
    assert logged, caplog.text
    share, back = map(float, logged.groups())
    assert share == pytest.approx(moved, abs=0.01) and 0.8 * moved < back <= share


def _ball_pairs(distances, radii=(6, 5)):
    """AM balls of two radii in pairs along x (centres ``d`` apart), in pore."""
    labels = np.zeros((18, 18 * len(distances), 40), np.uint8)
    z, y, x = np.indices(labels.shape)
    for i, d in enumerate(distances):
        for cx, r in zip((20 - d / 2, 20 + d / 2), radii):
            labels[(z - 9) ** 2 + (y - 9 - 18 * i) ** 2 + (x - cx) ** 2 <= r * r] = 1
    return labels


def test_the_particle_metrics_sd_holds_the_separation_doubt_in_quadrature():
    """A pair whose neck splits it at h = 0.5 voxel and not at 1: a boundary shift cannot tell
    (the probabilities are sure), the separation doubt can; other metrics keep their sd."""
    from fibrecon.metrics import MetricsSettings, particle_metrics

    labels = _ball_pairs([9, 20, 20])  # one fragile pair, two pairs apart
    vs = (0.05, 0.05, 0.05)  # the defaults: h 0.05 -+ 0.025 um, 1 -+ 0.5 voxel
    counts = [particle_metrics(labels, vs, h=h)[0]["particles_whole"]
              for h in (0.025, 0.05, 0.075)]
    assert counts == [6, 5, 5]  # the geometry the test is about
    prob = np.where(np.arange(3)[None, :, None, None] == labels[:, None], 0.98, 0.01)
    prob = prob.astype(np.float32)
    args = dict(probabilities=prob, boundary_shift_sd=(0.5, 0.5))
    shift_only, *_ = metrics_of(labels, vs, MetricsSettings(particle_h_doubt_um=0.0), **args)
    both, *_ = metrics_of(labels, vs, **args)
    assert shift_only["particles_whole_sd_segmentation"] == 0  # sure boundaries: no doubt
    d50 = {h: particle_metrics(labels, vs, h=h)[0]["d50_um"] for h in (0.025, 0.075)}
    expected = np.sqrt(shift_only["d50_um_sd_segmentation"] ** 2
                       + sum((v - both["d50_um"]) ** 2 for v in d50.values()))
    assert both["d50_um_sd_segmentation"] == pytest.approx(expected, rel=1e-9)
    assert both["d50_um_sd_segmentation"] > 0 and both["particles_whole_sd_segmentation"] == 1
    for key in ("volume_fraction_am", "tau_pore_x", "specific_area_am_pore_per_um"):
        assert both[f"{key}_sd_segmentation"] == shift_only[f"{key}_sd_segmentation"], key


@pytest.mark.parametrize("doubt", [0.05, -0.005])
def test_a_separation_doubt_the_marker_height_cannot_take_is_a_named_error(doubt):
    from fibrecon.metrics import MetricsSettings
    from fibrecon.samples import ConfigError

    with pytest.raises(ConfigError, match="particle_h_doubt_um"):
        MetricsSettings.from_config({"particle_h_um": 0.05, "particle_h_doubt_um": doubt})
