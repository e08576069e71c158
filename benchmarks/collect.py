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
BEGIN = "<!-- begin: per-rule demo benchmarks (benchmarks/collect.py) -->"
END = "<!-- end: per-rule demo benchmarks -->"


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


def render(table: pd.DataFrame) -> str:
    lines = [BEGIN, "",
             f"Demo series (3 samples, config/config.yaml), measured {date.today()} on "
             f"{platform.machine()} Python {platform.python_version()}, `make bench`.", "",
             "| rule | jobs | mean wall time (s) | max wall time (s) | peak RSS (MB) |",
             "| --- | --- | --- | --- | --- |"]
    for rule, r in table.iterrows():
        lines.append(f"| {rule} | {r.jobs} | {r.mean_s:.2f} | {r.max_s:.2f} | "
                     f"{r.peak_rss_MB:.0f} |")
    lines += ["", END]
    return "\n".join(lines)


def main() -> None:
    results = ROOT / "benchmarks" / "RESULTS.md"
    section = render(per_rule_table(ROOT / "benchmarks"))
    text = results.read_text() if results.exists() else "# fibrecon performance record\n\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    tmp = results.with_suffix(".md.part")
    tmp.write_text(text)
    tmp.replace(results)
    print(section)


if __name__ == "__main__":
    sys.exit(main())
