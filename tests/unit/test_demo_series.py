"""The demo series is sized for its metrics and its trends are the simulator's (issue 21)."""

from pathlib import Path

import numpy as np
import pytest

from fibrecon.cbd import am_surface_coverage
from fibrecon.samples import read_config
from fibrecon.simulate import simulate_sample
from fibrecon.tortuosity import tortuosity_factor


@pytest.fixture(scope="module")
def demo():
    repo = Path(__file__).resolve().parents[2]
    config = read_config(repo / "config" / "config.yaml", repo / "config" / "demo" / "config.yaml")
    d = config["demo"]
    truth = {}
    for name, sample in d["samples"].items():
        s = simulate_sample(tuple(d["shape"]), tuple(d["voxel_size_um"]), porosity=sample["porosity"],
                            d50_um=d["d50_um"], calendering=sample.get("calendering", 0.5),
                            cbd_dispersion=sample.get("cbd_dispersion", 0.8),
                            cbd_fraction=d["cbd_fraction"], seed=sample["seed"],
                            artifacts={"noise": 0, "charging": 0})  # only the labels are used
        labels = s.labels
        truth[name] = {
            "porosity": float((labels == 0).mean()),
            "tau_pore_y": tortuosity_factor(labels == 0, 1, s.voxel_size)["tau"],
            "coverage": am_surface_coverage(labels)["am_surface_cbd_fraction"],
            "whole": s.truth["particles_whole"],
            "extent_um": np.asarray(labels.shape) * np.asarray(s.voxel_size),
        }
    return d, truth


def test_demo_samples_are_large_enough_for_their_metrics(demo):
    d, truth = demo
    for name, t in truth.items():
        assert t["whole"] >= 50, (name, t["whole"])  # whole particles in view
        assert (t["extent_um"] >= 3 * d["d50_um"]).all(), (name, t["extent_um"])


def test_demo_trends_are_the_simulators(demo):
    """Porosity falls and through-plane pore tortuosity rises with calendering; CBD coverage of
    the AM rises with mixing (cbd_dispersion): what the series table should show."""
    _, t = demo
    cal = [t[s] for s in ("demo_p40", "demo_p33", "demo_p27")]
    assert cal[0]["porosity"] > cal[1]["porosity"] > cal[2]["porosity"]
    assert cal[0]["tau_pore_y"] < cal[1]["tau_pore_y"] < cal[2]["tau_pore_y"]
    mix = [t[s]["coverage"] for s in ("demo_mix10", "demo_mix30", "demo_mix90")]
    assert mix[0] < mix[1] < mix[2]
