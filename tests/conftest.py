import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# benchmarks/foreign.py (the separately written imaging model) is shared by tests and benchmarks
sys.path.insert(0, str(REPO / "benchmarks"))


#: The slowest test files (2026-12-07: together 15 of the suite's 17 serial minutes), first
#: and in this order, so that `make test`'s two pytest-xdist workers (``--dist loadfile
#: --no-loadscope-reorder``: whole files, in collection order) start on one long file each and
#: the short ones fill in behind: workflow + faults on one (they share the session's finished
#: series, built once per worker), SLURM + memory cap on the other.
SLOW_FILES_FIRST = ["integration/test_workflow.py", "integration/test_slurm.py",
                    "integration/test_faults.py", "integration/test_memory_cap.py",
                    "integration/test_network_workflow.py"]


def pytest_collection_modifyitems(items):
    """The slow files first (:data:`SLOW_FILES_FIRST`); each file's tests stay together and
    in their order, the rest as collected."""
    def rank(item):
        path = Path(str(item.path)).as_posix()
        return next((i for i, f in enumerate(SLOW_FILES_FIRST) if path.endswith(f)),
                    len(SLOW_FILES_FIRST))
    items.sort(key=rank)


@pytest.fixture
def repo():
    """The repository root."""
    return REPO


#: the project's shared data: where FIBRECON_SHARED_DATA points, or beside the checkout
SHARED_DATA = next((p for p in (Path(__import__("os").environ.get("FIBRECON_SHARED_DATA",
                                                                   "/nonexistent")),
                                REPO.parent / "shared" / "data", Path("/work/shared/data"))
                    if p.is_dir()), None)


@pytest.fixture
def shared_data():
    """../shared/data (real files); the test is skipped, with the reason, where it is absent."""
    if SHARED_DATA is None:
        pytest.skip("../shared/data not found (set FIBRECON_SHARED_DATA)")
    return SHARED_DATA
