"""Metric accuracy against known answers and peer libraries.

Run: ``.venv/bin/python benchmarks/metrics.py``; writes its section of
benchmarks/RESULTS.md.

- Particle sizes on a simulated electrode with known particles (d50 and
  individual diameters), fibrecon's watershed vs porespy's SNOW partitioning.
- Tortuosity factor of the pore phase of a real NMC volume
  (../shared/data/nmc_label_volumes/inpainter_nmc_128cube.tif,
  tldr-group/microstructure-inpainter, MIT; no voxel size stated, taken as
  isotropic): fibrecon's finite-volume solver vs taufactor, time and value.
- The full metric set of one demo-sized volume, time per sample.
"""

import sys
import time
from pathlib import Path

import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from results_md import write_section  # noqa: E402

from fibrecon.metrics import sample_metrics  # noqa: E402
from fibrecon.particles import (particle_table, separate_particles, size_summary,  # noqa: E402
                                snow_particles)
from fibrecon.simulate import simulate_sample  # noqa: E402
from fibrecon.tortuosity import finite_volume_tau, taufactor_tau  # noqa: E402

VS = (0.05, 0.05, 0.05)


def individual_errors(found_inst, truth_inst, found, truth):
    errors = []
    for _, row in found[~found["cut"]].iterrows():
        ids, counts = np.unique(truth_inst[found_inst == row["id"]], return_counts=True)
        best = ids[np.argmax(counts)]
        if best == 0:
            continue
        d = truth.loc[truth["id"] == best, "diameter_um"].iloc[0]
        errors.append(abs(row["diameter_um"] - d) / d)
    return np.asarray(errors)


def main():
    lines = ["Particle sizing on simulated electrodes (200x300x300 voxels of 50 nm, porosity "
             "0.35, noise-free labels; truth = the simulator's particles):", "",
             "| seed, d50 target | method | whole particles (truth) | d50 (um) (truth) | "
             "d50 error | median individual error | time (s) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for seed, d50 in ((5, 2.0), (6, 3.0)):
        s = simulate_sample((200, 300, 300), VS, (1.0,), porosity=0.35, d50_um=d50, seed=seed,
                            artifacts={"noise": 0})
        truth = particle_table(s.instances, VS, sphericity=False)
        t_sum = size_summary(truth, 1.0)
        for name, fn in (("fibrecon watershed", lambda: separate_particles(s.labels == 1, VS)),
                         ("porespy SNOW (r_max 4, sigma 0.4)",
                          lambda: snow_particles(s.labels == 1))):
            t = time.perf_counter()
            inst = fn()
            dt = time.perf_counter() - t
            found = particle_table(inst, VS, sphericity=False)
            f_sum = size_summary(found, 1.0)
            err = individual_errors(inst, s.instances, found, truth)
            lines.append(f"| {seed}, {d50} um | {name} | {f_sum['particles_whole']} "
                         f"({t_sum['particles_whole']}) | {f_sum['d50_um']:.3f} "
                         f"({t_sum['d50_um']:.3f}) | "
                         f"{100 * (f_sum['d50_um'] - t_sum['d50_um']) / t_sum['d50_um']:+.1f} % | "
                         f"{100 * np.median(err):.1f} % | {dt:.1f} |")
            print(lines[-1], file=sys.stderr)

    vol = tifffile.imread(ROOT.parent / "shared" / "data" / "nmc_label_volumes" /
                          "inpainter_nmc_128cube.tif")
    pore = vol == 0
    lines += ["", "Pore tortuosity factor of a real NMC volume (inpainter_nmc_128cube.tif, 128^3, "
              f"porosity {pore.mean():.3f}):", "",
              "| axis | taufactor 1.2.1 (conv_crit 1e-3) | time (s) | fibrecon finite volume | "
              "time (s) | difference |", "| --- | --- | --- | --- | --- | --- |"]
    for axis in range(3):
        t = time.perf_counter()
        ref = taufactor_tau(np.moveaxis(pore, axis, 0), conv_crit=1e-3)
        t_ref = time.perf_counter() - t
        t = time.perf_counter()
        ours = finite_volume_tau(np.moveaxis(pore, axis, 0))
        t_ours = time.perf_counter() - t
        lines.append(f"| {'zyx'[axis]} | {ref:.4f} | {t_ref:.1f} | {ours:.4f} | {t_ours:.1f} | "
                     f"{100 * (ours - ref) / ref:+.2f} % |")
        print(lines[-1], file=sys.stderr)

    s = simulate_sample((48, 160, 160), VS, (1.0,), porosity=0.33, d50_um=1.5, seed=12,
                        artifacts={"noise": 0})
    t = time.perf_counter()
    metrics, _, _, _ = sample_metrics(s.labels, VS)
    lines += ["", f"Full metric set of one demo-sized volume (48x160x160): "
              f"{time.perf_counter() - t:.0f} s on 2 cores; true d50 of whole particles "
              f"{s.truth['d50_um_whole_particles']}, measured {metrics['d50_um']:.3f} um.",
              "", "Command: `.venv/bin/python benchmarks/metrics.py`."]
    section = "\n".join(lines)
    print(section)
    write_section("metrics vs truth and peers (benchmarks/metrics.py)", section)


if __name__ == "__main__":
    main()
