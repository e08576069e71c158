"""Helpers of the integration tests: a tiny simulated series in a folder, and snakemake."""

import io
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from fibrecon.samples import read_config

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]


def with_faults(env: dict, **faults) -> dict:
    """``env`` with tests/faults on PYTHONPATH and the fault variables set (tests/faults/sitecustomize.py)."""
    path = [str(REPO / "tests" / "faults"), *filter(None, [env.get("PYTHONPATH")])]
    return {**env, "PYTHONPATH": ":".join(path), **{k: str(v) for k, v in faults.items()}}


def demo_config() -> dict:
    """config/config.yaml with config/demo/config.yaml merged over it (what make demo runs)."""
    return read_config(REPO / "config" / "config.yaml", REPO / "config" / "demo" / "config.yaml")


def write_setup(folder: Path, config_edit=None, sheet_rows=None):
    config = demo_config()
    config["samples"] = "config/samples.tsv"
    config["demo"]["shape"] = [10, 64, 64]
    config["align"]["fiducial_window"] = [0, 24, 0, 64]
    config["demo"]["samples"] = {"tiny_a": {"porosity": 0.40, "seed": 1},
                                 "tiny_b": {"porosity": 0.28, "seed": 2}}
    if config_edit:
        config_edit(config)
    (folder / "config").mkdir(parents=True, exist_ok=True)
    (folder / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    rows = sheet_rows or [
        ["tiny_a", "simulated", "s_{slice:03d}_{kv}kV.tif", "1,3", "from_metadata",
         "from_metadata", "0.05", "0", "PVDF"],
        ["tiny_b", "simulated", "s_{slice:03d}_{kv}kV.tif", "1,3", "from_metadata",
         "from_metadata", "0.05", "1000", "PVDF"],
    ]
    header = ["sample", "raw", "pattern", "kvs", "voxel_x_um", "voxel_y_um", "voxel_z_um",
              "calendering_line_load_N_per_mm", "binder"]
    lines = ["\t".join(r) for r in [header, *rows]]
    (folder / "config" / "samples.tsv").write_text("\n".join(lines) + "\n")


def snakemake(folder: Path, *args, check=True):
    result = subprocess.run([*SNAKEMAKE, "--directory", str(folder), *args],
                            capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {args} failed:\n{result.stdout}\n{result.stderr}")
    return result


def summary(folder: Path) -> pd.DataFrame:
    out = snakemake(folder, "--summary").stdout
    start = out.index("output_file")
    return pd.read_csv(io.StringIO(out[start:]), sep="\t")


def assert_stops_before_any_job(folder: Path, config_edit, message: str) -> None:
    """A config edit makes snakemake fail with ``message`` before any job wrote a result."""
    write_setup(folder, config_edit=config_edit)
    result = snakemake(folder, "--cores", "1", check=False)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert not (folder / "results").exists()
