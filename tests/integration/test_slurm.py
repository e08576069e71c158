"""`snakemake --profile slurm` on a real single-node SLURM cluster started on localhost.

The profile is the shipped ``profiles/slurm/config.yaml`` with only what a
user sets for their cluster changed (no account, memory that fits the test
node, fast status polling, ``squeue`` as the status command because this
cluster keeps no accounting database), placed where Snakemake looks for a bare
profile name: ``./slurm`` in the working directory.
"""

import re
import shutil
import subprocess

import pandas as pd
import pytest
import yaml
from helpers import REPO, SNAKEMAKE, with_faults, write_setup
from slurm_cluster import Cluster, ensure_installed

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = ensure_installed()
    if why:
        print(f"SKIPPED: {why}")
        pytest.skip(why)
    c = Cluster(tmp_path_factory.mktemp("slurm"))
    try:
        c.start()
    except RuntimeError as exc:
        c.stop()
        print(f"SKIPPED: slurm could not start here: {exc}")
        pytest.skip(f"slurm could not start here: {exc}")
    yield c
    c.stop()


def user_profile(folder, edit=None):
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    profile["default-resources"].pop("slurm_account")
    profile["default-resources"].update(mem_mb=400, runtime=10)
    for rule in profile["set-resources"].values():
        rule.update(mem_mb=800, runtime=10)
        rule.pop("cpus_per_gpu", None)
    profile["set-threads"] = {k: 1 for k in profile["set-threads"]}
    profile.update({"slurm-no-account": True, "slurm-status-command": "squeue",
                    "slurm-init-seconds-before-status-checks": 1,
                    "seconds-between-status-checks": 1, "latency-wait": 5})
    if edit:
        edit(profile)
    (folder / "slurm").mkdir(exist_ok=True)
    (folder / "slurm" / "config.yaml").write_text(yaml.safe_dump(profile))


def run(folder, env, *args):
    env = with_faults(env, FIBRECON_TEST_SLURM_POLL_S=2)  # no 10 s back-off per status check
    return subprocess.run([*SNAKEMAKE, "--profile", "slurm", *args], cwd=folder,
                          capture_output=True, text=True, env=env, timeout=900)


def test_demo_series_runs_through_slurm_with_segmentation_in_the_gpu_partition(tmp_path, cluster):
    write_setup(tmp_path)
    shutil.copytree(REPO / "resources", tmp_path / "resources")  # the shipped model
    user_profile(tmp_path)
    r = run(tmp_path, cluster.env)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:] + cluster.logs()
    table = pd.read_csv(tmp_path / "results" / "series" / "metrics.tsv", sep="\t")
    assert table["sample"].tolist() == ["tiny_a", "tiny_b"]
    ids = set(re.findall(r"SLURM run ID: \S+|[Jj]ob (?:ID|id)[: ]+(\d+)", out)) - {""}
    logs = list((tmp_path / "logs" / "slurm").rglob("*.log"))
    assert ids or logs, "no sign of SLURM job ids in the Snakemake output or logs/slurm"
    seg = [p for p in logs if "segment" in str(p)]
    assert len(seg) == 2, [str(p) for p in logs]
    # the jobs really went through SLURM: squeue still lists them (MinJobAge), with partitions
    q = subprocess.run(["squeue", "-t", "all", "-h", "-o", "%i %P %j"], capture_output=True,
                       text=True, env=cluster.env).stdout.splitlines()
    partitions = [line.split()[1] for line in q]
    assert partitions.count("gpu") == 2, q  # one segment job per sample
    assert "cpu" in partitions
    # light stages were grouped: fewer cluster jobs than rules run
    assert len(q) < 2 * 7 + 1, q


def test_failed_job_is_retried_and_its_log_shown(tmp_path, cluster):
    write_setup(tmp_path, config_edit=lambda c: c["segment"].update(method="multiotsu"),
                sheet_rows=[["tiny_a", "simulated", "s_{slice:03d}_{kv}kV.tif", "1,3",
                             "from_metadata", "from_metadata", "0.05", "0", "PVDF"]])
    user_profile(tmp_path, edit=lambda p: p.update(retries=1))
    # the first job to start fails once (tests/faults/sitecustomize.py)
    marker = tmp_path / "fail_once"
    marker.write_text("")
    r = run(tmp_path, with_faults(cluster.env, FIBRECON_FAULT_FAIL_ONCE=marker),
            "results/preprocessed/tiny_a.tif")  # the first cluster job: no need to go further
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert not marker.exists()
    assert "Trying to restart job" in out
    # the failed attempt's SLURM log is named in the output and kept, with the error in it
    shown = re.findall(r"log: (\S+/logs/slurm/\S+\.log) \(check log file", out)
    assert shown and "injected failure" in open(shown[0]).read()
    q = subprocess.run(["squeue", "-t", "all", "-h", "-o", "%j %T"], capture_output=True,
                       text=True, env=cluster.env).stdout
    assert "FAILED" in q
