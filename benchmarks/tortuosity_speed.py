"""Tortuosity solver speed: 30 % porosity blob volumes of 128^3, 256^3, 384^3.

Solvers (each named with --solvers): ``fibrecon`` (fibrecon.tortuosity
finite-volume solve), ``taufactor`` (taufactor.Solver on --device), ``porespy``
(porespy.simulations.tortuosity_fd; needs openpnm, see benchmarks/requirements.txt).

    python benchmarks/tortuosity_speed.py --out DIR [--sizes 128 256 384] [--device cuda]
    python benchmarks/tortuosity_speed.py report DIR [DIR ...]

``--out`` writes DIR/tortuosity.json; ``report`` merges such files into the
RESULTS.md section.
"""

from __future__ import annotations

import argparse
import contextlib
import io as _io
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def blobs(n: int, porosity: float = 0.30, blobiness_px: float = 4.0, seed: int = 0) -> np.ndarray:
    """Pore mask of ``porosity``: smoothed Gaussian noise thresholded at its quantile."""
    field = ndi.gaussian_filter(np.random.default_rng(seed).standard_normal((n, n, n),
                                                                           dtype=np.float32),
                                blobiness_px)
    return field <= np.quantile(field, porosity)


def run_taufactor(mask, device):
    import taufactor
    import torch

    with contextlib.redirect_stdout(_io.StringIO()):
        t = time.perf_counter()
        s = taufactor.Solver(mask.astype(np.float32), device=device)
        s.solve(verbose=False, conv_crit=1e-2)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    return float(np.ravel(s.tau.cpu().numpy() if hasattr(s.tau, "cpu") else s.tau)[0]), \
        time.perf_counter() - t


def run_fibrecon(mask, device):
    from fibrecon.tortuosity import finite_volume_tau

    t = time.perf_counter()
    tau = finite_volume_tau(mask)
    return float(tau), time.perf_counter() - t


def run_porespy(mask, device):
    import porespy

    t = time.perf_counter()
    r = porespy.simulations.tortuosity_fd(mask, axis=0)
    return float(r.tortuosity), time.perf_counter() - t


SOLVERS = {"fibrecon": run_fibrecon, "taufactor": run_taufactor, "porespy": run_porespy}


def cmd_run(args):
    import platform

    rows = []
    for n in args.sizes:
        mask = blobs(n)
        for name in args.solvers:
            tau, sec = SOLVERS[name](mask, args.device)
            rows.append({"size": n, "solver": name, "device": args.device, "tau": tau,
                         "seconds": round(sec, 2), "porosity": float(mask.mean())})
            print(json.dumps(rows[-1]), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = args.machine or f"{platform.node()} ({__import__('os').cpu_count()} CPUs)"
    (out / "tortuosity.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))


def cmd_report(files):
    """Merge tortuosity.json files into the RESULTS.md section."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from results_md import write_section

    table = ["| machine | size | solver | device | tau | time (s) | vs taufactor tau | "
             "time vs porespy (same run) |", "|---|---|---|---|---|---|---|---|"]
    for f in files:
        r = json.loads(Path(f).read_text())
        by = {(row["size"], row["solver"]): row for row in r["rows"]}
        for row in r["rows"]:
            ref = by.get((row["size"], "taufactor"))
            peer = by.get((row["size"], "porespy"))
            diff = f"{100 * (row['tau'] / ref['tau'] - 1):+.2f} %" if ref else "-"
            ratio = f"{peer['seconds'] / row['seconds']:.2f}x" if peer else "-"
            table.append(f"| {r['machine']} | {row['size']}^3 | {row['solver']} | "
                         f"{row['device']} | {row['tau']:.4f} | {row['seconds']:.2f} | {diff} | "
                         f"{ratio} |")
    per_voxel = [f"{row['size']}^3 {row['seconds'] / row['size'] ** 3 * 1e6:.2f} us"
                 for f in files for row in json.loads(Path(f).read_text())["rows"]
                 if row["solver"] == "fibrecon" and row["device"] == "cpu"]
    table += ["", "fibrecon time per voxel (linear scaling = constant): " + ", ".join(per_voxel)
              + "."]
    write_section("Tortuosity solver speed (issue 6)", "\n".join(
        ["Pore phase of 30 % porosity blob volumes (Gaussian-filtered noise, sigma 4 px, "
         "thresholded), flux along z. fibrecon: finite volume in float32 (float64 solution and "
         "sums), CG preconditioned by a W-cycle of plain aggregation (pyamg's aggregation and "
         "forward/backward Gauss-Seidel, fibrecon's Galerkin products), stopped when the flux "
         "averaged over all planes changes by < 1e-4 twice; taufactor 1.2.1 Solver, conv_crit 1e-2; porespy "
         "3.2.0 tortuosity_fd (openpnm 3.6.4 without PARDISO; porespy fills isolated pores "
         "first, so its tau differs by about eps_total/eps_connected).", "", *table, "",
         "Commands: `.venv/bin/python benchmarks/tortuosity_speed.py --out DIR --sizes 128 256 "
         "--solvers fibrecon taufactor porespy` and `--sizes 384 --solvers fibrecon` (CPU), "
         "`--device cuda --solvers taufactor` on "
         "the GPU machine (kept as benchmarks/tortuosity_h100.json), then `... report "
         "DIR/tortuosity.json DIR384/tortuosity.json benchmarks/tortuosity_h100.json` (all in "
         "`make bench`)."]))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "report":
        return cmd_report(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 384])
    ap.add_argument("--solvers", nargs="+", default=["fibrecon", "taufactor"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--machine", default=None)
    cmd_run(ap.parse_args(argv))


if __name__ == "__main__":
    main()
