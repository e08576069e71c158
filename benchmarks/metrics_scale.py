"""All metrics of one large label volume: time and peak memory per voxel (issue 6 target).

The volume is a simulated electrode (``fibrecon.simulate.generate_microstructure``:
porosity 0.30, CBD 0.10, d50 3 um, 50 nm voxels), written once to
``.bench/metrics_scale/labels_<z>x<y>x<x>.tif``. The metrics run in a fresh
process (so the simulation's memory does not count) exactly as the ``metrics``
rule runs them (:func:`fibrecon.metrics.sample_metrics`, tortuosity of pore and
CBD along z, y and x); its peak resident memory (``ru_maxrss``) is reported with
what the interpreter and imports alone hold.

    .venv/bin/python benchmarks/metrics_scale.py [--shapes 128 256 256 256 512 512]
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
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited at fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(path: str) -> dict:
    """In the child process: import, read, run every metric; time and peak memory."""
    import logging

    from fibrecon import files
    from fibrecon.metrics import sample_metrics

    logging.basicConfig(level=logging.INFO, format="%(message)s")  # stage times to stderr
    base = peak_mb()
    labels, voxel = files.read_labels(path)
    t = time.perf_counter()
    metrics, particles, _, _ = sample_metrics(labels, voxel)
    return {"seconds": round(time.perf_counter() - t, 1), "peak_mb": round(peak_mb(), 1),
            "imports_mb": round(base, 1), "particles": int(len(particles)),
            "tau_pore_z": metrics.get("tau_pore_z"),
            "tau_electronic_z": metrics.get("tau_electronic_z"),
            "porosity": metrics["volume_fraction_pore"]}


def run_shape(shape) -> dict:
    """Simulate (once) and measure one volume size in a fresh process."""
    from fibrecon import files
    from fibrecon.simulate import generate_microstructure

    path = ROOT / ".bench" / "metrics_scale" / f"labels_{'x'.join(map(str, shape))}.tif"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        m = generate_microstructure(shape, VS, porosity=0.30, cbd_fraction=0.10, d50_um=3.0,
                                    rng=np.random.default_rng(2026))
        files.write_volume(path, m.labels.astype(np.uint8), VS)
        del m
    child = subprocess.run([sys.executable, __file__, "--child", str(path)], check=True,
                           capture_output=True, text=True)
    r = json.loads(child.stdout.strip().splitlines()[-1])
    voxels = int(np.prod(shape))
    r |= {"shape": list(shape), "voxels": voxels,
          "bytes_per_voxel": round(r["peak_mb"] * 2**20 / voxels, 1),
          "bytes_per_voxel_above_imports": round((r["peak_mb"] - r["imports_mb"]) * 2**20 / voxels,
                                                 1),
          "stages": [line.split("metrics stage", 1)[1].strip()
                     for line in child.stderr.splitlines() if "metrics stage" in line]}
    print(json.dumps(r), flush=True)
    return r


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", type=int, nargs="+", default=[128, 256, 256, 256, 512, 512],
                    help="z y x of each volume, three numbers per volume")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child)))
        return
    if len(args.shapes) % 3:
        ap.error("--shapes takes three numbers (z y x) per volume")
    runs = [run_shape(tuple(args.shapes[i:i + 3])) for i in range(0, len(args.shapes), 3)]
    from results_md import write_section

    rows, stages = [], []
    for r in runs:
        z, y, x = r["shape"]
        rows.append(f"| {z}x{y}x{x} ({r['voxels'] / 1e6:.0f} Mvoxel, {r['particles']} particles) "
                    f"| {r['seconds'] / 60:.1f} min | {r['peak_mb'] / 1024:.2f} GiB | "
                    f"{r['bytes_per_voxel']:.0f} B | {r['bytes_per_voxel_above_imports']:.0f} B |")
        stages += [f"{z}x{y}x{x}:", *r["stages"], ""]
    write_section("All metrics of a large volume (issue 6)", "\n".join([
        "`fibrecon.metrics.sample_metrics` (every metric: fractions, profiles, particles, "
        "dispersion, tortuosity of pore and CBD along z, y, x, CBD microstructure, pore sizes, "
        "surfaces, representative-volume spread) on simulated label volumes (porosity 0.30, CBD "
        "0.10, d50 3 um, 50 nm voxels), each in a fresh process on this machine (2 CPU cores); "
        "peak memory is the process's VmHWM. Target at 512x512x256: under 10 minutes, peak "
        "memory <= 40 bytes per voxel.", "",
        "| volume | time | peak memory | per voxel | per voxel above the imports |",
        "| --- | --- | --- | --- | --- |", *rows, "",
        "Stages (wall time, peak memory of the process so far), from the metrics log:", "",
        "```", *stages, "```", "",
        "Command: `.venv/bin/python benchmarks/metrics_scale.py --shapes "
        f"{' '.join(map(str, args.shapes))}` (in `make bench`)."]))


if __name__ == "__main__":
    main()
