"""Collect Snakemake's per-rule benchmark files into benchmarks/RESULTS.md.

Rewrites only the section between the markers below, so rows that other
benchmarks add to RESULTS.md stay. Run by ``make bench`` after the demo
series has been run from scratch.
"""

from __future__ import annotations

import platform
import sys
from datetime import date
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from results_md import write_section  # noqa: E402


def per_rule_table(folder: Path) -> pd.DataFrame:
    """Wall time and peak memory of every rule, summed/maxed over its jobs."""
    rows = []
    for tsv in sorted(folder.glob("*/*.tsv")):
        b = pd.read_csv(tsv, sep="\t")
        rows.append({"rule": tsv.parent.name, "sample": tsv.stem,
                     "s": float(b["s"].mean()), "max_rss_MB": float(b["max_rss"].max())})
    if not rows:
        raise SystemExit(f"no benchmark files under {folder}: run the workflow first")
    df = pd.DataFrame(rows)
    order = ["demo_stack", "align", "preprocess", "segment", "volume", "metrics"]
    out = df.groupby("rule").agg(jobs=("sample", "count"), mean_s=("s", "mean"),
                                 max_s=("s", "max"), peak_rss_MB=("max_rss_MB", "max"))
    return out.reindex([r for r in order if r in out.index] +
                       [r for r in out.index if r not in order])


def accuracy_table(root: Path) -> pd.DataFrame:
    """Segmentation and volume-fraction accuracy of every demo sample against its truth."""
    sys.path.insert(0, str(root / "src"))
    from fibrecon import files
    from fibrecon.evaluate import segmentation_scores

    rows = []
    for truth_dir in sorted((root / "results" / "truth").glob("*")):
        sample = truth_dir.name
        volume = root / "results" / "volume" / f"{sample}.tif"
        if not volume.exists():
            continue
        info = files.read_json(root / "results" / "aligned" / f"{sample}.json")
        true_fractions = files.read_json(truth_dir / "truth.json")
        truth, _ = files.read_volume(truth_dir / "labels.tif")
        pred, _ = files.read_volume(volume)
        oy = info["origin_yx"][0] - true_fractions.get("cap_rows", 0)  # truth frame
        ox = info["origin_yx"][1]
        scores = segmentation_scores(pred, truth[:, oy: oy + pred.shape[1], ox: ox + pred.shape[2]])
        rows.append({"sample": sample, "shape": "x".join(map(str, pred.shape)),
                     "true_porosity": true_fractions["volume_fraction_pore"], **scores})
    return pd.DataFrame(rows)


def render(table: pd.DataFrame, accuracy: pd.DataFrame) -> str:
    import yaml

    sys.path.insert(0, str(ROOT / "src"))
    from fibrecon.samples import read_config

    config = read_config(ROOT / "config" / "config.yaml", ROOT / "config" / "demo" / "config.yaml")
    seg = config["segment"]
    method = (f"U-Net {seg['model']}" if seg["method"] == "unet"
              else "classical multi-Otsu segmentation")
    lines = [f"Demo series ({len(config['demo']['samples'])} samples, config/demo/config.yaml), "
             f"measured {date.today()} on "
             f"{platform.machine()} Python {platform.python_version()}, `make bench`.", "",
             "| rule | jobs | mean wall time (s) | max wall time (s) | peak RSS (MB) |",
             "| --- | --- | --- | --- | --- |"]
    for rule, r in table.iterrows():
        lines.append(f"| {rule} | {int(r.jobs)} | {r.mean_s:.2f} | {r.max_s:.2f} | "
                     f"{r.peak_rss_MB:.0f} |")
    if len(accuracy):
        lines += ["", f"Accuracy of the default pipeline ({method}) against the simulator's "
                  "truth, after drift, alignment and preprocessing, same run:", "",
                  "| sample | voxels (z x y x) | true porosity | IoU pore | IoU AM | IoU CBD | "
                  "voxel accuracy | porosity error |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for _, r in accuracy.iterrows():
            lines.append(f"| {r['sample']} | {r['shape']} | {r.true_porosity:.3f} | "
                         f"{r.iou_pore:.3f} | {r.iou_am:.3f} | {r.iou_cbd:.3f} | "
                         f"{r.accuracy:.3f} | {r.fraction_error_pore:+.3f} |")
    return "\n".join(lines)


def main() -> None:
    section = render(per_rule_table(ROOT / "benchmarks"), accuracy_table(ROOT))
    write_section("per-rule demo benchmarks (benchmarks/collect.py)", section)
    print(section)


if __name__ == "__main__":
    sys.exit(main())
