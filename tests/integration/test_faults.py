"""A job killed with SIGKILL while writing leaves nothing taken as complete; the rerun
gives byte-identical results to an uninterrupted run (and so: same input, same numbers)."""

import os
import signal
import subprocess
import time

import pytest
from helpers import SNAKEMAKE, snakemake, with_faults, write_setup

pytestmark = pytest.mark.slow

COMPARED = [
    "results/aligned/tiny_a.tif", "results/aligned/tiny_b_shifts.tsv",
    "results/preprocessed/tiny_b.tif", "results/segmented/tiny_a.tif",
    "results/volume/tiny_b.tif", "results/metrics/tiny_a.json", "results/metrics/tiny_b.json",
    "results/metrics/tiny_a_particles.tsv", "results/series/metrics.tsv",
]


def test_sigkill_mid_write_then_rerun_is_byte_identical(tmp_path, finished_series):
    clean, killed = finished_series, tmp_path / "killed"  # clean: the same set-up, uninterrupted
    write_setup(killed)

    env = with_faults(dict(os.environ), FIBRECON_FAULT_SLOW_WRITE=0.5)  # streamed writes crawl
    proc = subprocess.Popen([*SNAKEMAKE, "--directory", str(killed), "--cores", "1"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    part = None
    deadline = time.time() + 180
    while part is None and time.time() < deadline and proc.poll() is None:
        aligned = killed / "results" / "aligned"
        parts = list(aligned.glob(".*.tif.*.part")) if aligned.exists() else []
        part = parts[0] if parts else None
        time.sleep(0.05)
    assert part is not None, "the aligned stack was never being written"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    final = part.parent / part.name[1:].split(".tif.")[0]
    final = final.with_name(final.name + ".tif")
    assert not final.exists()  # the half-written stack is not there under its real name

    snakemake(killed, "--unlock")  # the killed snakemake could not release its lock
    snakemake(killed, "--cores", "2", "--rerun-incomplete")
    assert not list((killed / "results").rglob("*.part"))  # stale temporaries cleaned up
    for rel in COMPARED:
        assert (killed / rel).read_bytes() == (clean / rel).read_bytes(), rel
