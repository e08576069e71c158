import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# benchmarks/foreign.py (the separately written imaging model) is shared by tests and benchmarks
sys.path.insert(0, str(REPO / "benchmarks"))


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
