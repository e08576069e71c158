"""All metrics of one large label volume: time and peak memory per voxel (issue 6 target).

The volume is a simulated electrode (``fibrecon.simulate.generate_microstructure``:
porosity 0.30, CBD 0.10, d50 3 um, 50 nm voxels), written once to
``.bench/metrics_scale/labels_<z>x<y>x<x>.tif``. The metrics run in a fresh
process (so the simulation's memory does not count) exactly as the ``metrics``
rule runs them (:func:`fibrecon.metrics.sample_metrics`, tortuosity of pore and
CBD along z, y and x); its peak resident memory (``ru_maxrss``) is reported with
what the interpreter and imports alone hold.

    .venv/bin/python benchmarks/metrics_scale.py [--shape 256 512 512]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

VS = (0.05, 0.05, 0.05)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(path: str) -> dict:
    """In the child process: import, read, run every metric; time and peak memory."""
    from fibrecon import io
    from fibrecon.metrics import sample_metrics

    base = peak_mb()
    labels, voxel = io.read_labels(path)
    t = time.perf_counter()
    metrics, particles, aggregates = sample_metrics(labels, voxel)
    return {"seconds": round(time.perf_counter() - t, 1), "peak_mb": round(peak_mb(), 1),
            "imports_mb": round(base, 1), "particles": int(len(particles)),
            "tau_pore_z": metrics.get("tau_pore_z"),
            "tau_electronic_z": metrics.get("tau_electronic_z"),
            "porosity": metrics["volume_fraction_pore"]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=[256, 512, 512])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child)))
        return
    from fibrecon import io
    from fibrecon.simulate import generate_microstructure

    shape = tuple(args.shape)
    path = ROOT / ".bench" / "metrics_scale" / f"labels_{'x'.join(map(str, shape))}.tif"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        m = generate_microstructure(shape, VS, porosity=0.30, cbd_fraction=0.10, d50_um=3.0,
                                    rng=np.random.default_rng(2026))
        io.write_volume(path, m.labels.astype(np.uint8), VS)
        del m
    out = subprocess.run([sys.executable, __file__, "--child", str(path)], check=True,
                         capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    voxels = int(np.prod(shape))
    per_voxel = r["peak_mb"] * 2**20 / voxels
    above = (r["peak_mb"] - r["imports_mb"]) * 2**20 / voxels
    print(json.dumps(r | {"bytes_per_voxel": round(per_voxel, 1),
                          "bytes_per_voxel_above_imports": round(above, 1)}))
    from results_md import write_section

    write_section("All metrics of a large volume (issue 6)", "\n".join([
        f"`fibrecon.metrics.sample_metrics` (every metric: fractions, profiles, particles, "
        "dispersion, tortuosity of pore and CBD along z, y, x, CBD microstructure, pore sizes, "
        "surfaces, representative-volume spread) on a simulated label volume of "
        f"{shape[0]}x{shape[1]}x{shape[2]} voxels of 50 nm (porosity {r['porosity']:.3f}, "
        f"{r['particles']} particles), in a fresh process on this machine (2 CPU cores). "
        "Target: under 10 minutes, peak memory <= 40 bytes per voxel.", "",
        "| volume | time | peak memory (RSS) | per voxel | per voxel above the imports |",
        "| --- | --- | --- | --- | --- |",
        f"| {shape[0]}x{shape[1]}x{shape[2]} ({voxels / 1e6:.0f} Mvoxel) | "
        f"{r['seconds'] / 60:.1f} min | {r['peak_mb'] / 1024:.2f} GiB | {per_voxel:.1f} B | "
        f"{above:.1f} B |", "",
        "Command: `.venv/bin/python benchmarks/metrics_scale.py --shape "
        f"{' '.join(map(str, shape))}` (in `make bench`)."]))


if __name__ == "__main__":
    main()
