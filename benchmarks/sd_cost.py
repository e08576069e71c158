"""What the segmentation sd costs: the metric set of the demo's samples with and without it.

Run after ``make demo``: ``.venv/bin/python benchmarks/sd_cost.py [samples...]``
(about 1.5 min per sample on 2 cores). Each sample's metrics are computed
three times in this one process, one after the other, so that the three
figures share the machine's state (a ``make demo`` runs two jobs on two cores,
and its per-job times moved by 10-20 % between two clean runs of the same
code here):

* without the segmentation sd (no probabilities);
* with it, the boundary shifts only (``particle_h_doubt_um: 0``);
* with it, the defaults (boundary shifts and the particle separation doubt)
  without the second network's reading;
* the workflow's metric stage: the defaults with the second network's reading
  of the probe slices (``results/segmented/<sample>_model.json``), one more
  volume's metrics.

The card is the one of the network that segmented the sample (the model or
its fallback, as the segment stage wrote it).

Prints one row per sample and the means; ``benchmarks/RESULTS.md`` holds the
figures by hand (row "cost of the segmentation sd").
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fibrecon import files  # noqa: E402
from fibrecon.metrics import MetricsSettings, metrics_of, other_network  # noqa: E402
from fibrecon.modelcard import ModelCard  # noqa: E402

MODEL = ROOT / "resources" / "models" / "unet_1kV_3kV.pt"


def timed(labels, voxel, settings, **kwargs) -> float:
    t = time.perf_counter()
    metrics_of(labels, voxel, settings, **kwargs)
    return time.perf_counter() - t


def main(argv=None):
    samples = (argv if argv is not None else sys.argv[1:]) or sorted(
        p.name[:-4] for p in (ROOT / "results" / "volume").glob("*.tif")
        if not p.name.endswith(".ome.tif"))
    if not samples:
        raise SystemExit("no results/volume/<sample>.tif: run `make demo` first")
    rows = []
    print("| sample | no sd (s) | shifts only (s) | without the second network (s) | "
          "workflow default (s) | default / no sd |")
    print("| --- | --- | --- | --- | --- | --- |")
    for sample in samples:
        labels, voxel = files.read_labels(ROOT / "results" / "volume" / f"{sample}.tif")
        used_path = ROOT / "results" / "segmented" / f"{sample}_model.json"
        used = files.read_json(used_path) if used_path.is_file() else None
        card = ModelCard(used["card"]) if used else ModelCard.read(MODEL)
        other = other_network((used or {}).get("probe"))  # as the metrics stage takes it
        prob_path = ROOT / "results" / "segmented" / f"{sample}_probabilities.tif"
        with files.VolumeReader(prob_path) as prob:
            sd = dict(probabilities=prob, boundary_shift_sd=card.boundary_shift_sd,
                      family_scale=card.family_scale)
            row = (timed(labels, voxel, MetricsSettings()),
                   timed(labels, voxel, MetricsSettings(particle_h_doubt_um=0.0), **sd),
                   timed(labels, voxel, MetricsSettings(), **sd),
                   timed(labels, voxel, MetricsSettings(), other_network=other, **sd))
        rows.append(row)
        print(f"| {sample} | {row[0]:.1f} | {row[1]:.1f} | {row[2]:.1f} | {row[3]:.1f} | "
              f"{row[3] / row[0]:.2f}x |", flush=True)
    mean = np.mean(rows, axis=0)
    print(f"| mean | {mean[0]:.1f} | {mean[1]:.1f} | {mean[2]:.1f} | {mean[3]:.1f} | "
          f"{mean[3] / mean[0]:.2f}x |")


if __name__ == "__main__":
    main()
