"""Style gates that CI enforces: snakemake --lint and snakefmt."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.mark.parametrize("command", [
    [sys.executable, "-m", "snakemake", "--configfile", "config/demo/config.yaml", "--lint"],
    [str(BIN / "snakefmt"), "--check", "."],
])
def test_workflow_passes_linters(command):
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
