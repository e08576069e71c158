"""Fixtures shared by the integration tests."""

import pytest
from helpers import snakemake, write_setup


@pytest.fixture(scope="session")
def finished_series(tmp_path_factory):
    """The tiny two-sample series of :func:`helpers.write_setup`, run to the end once per
    session. Tests read it as the uninterrupted reference; a test that edits a series works
    on a copy (``shutil.copytree`` keeps the files' times, so Snakemake sees it finished)."""
    folder = tmp_path_factory.mktemp("finished_series")
    write_setup(folder)
    snakemake(folder, "--cores", "2")
    return folder
