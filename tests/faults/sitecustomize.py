"""Fault injection for the integration tests, kept out of fibrecon's own code.

The tests that need a fault in a workflow's job processes put this folder on
``PYTHONPATH``; Python imports ``sitecustomize`` at start-up in every process
(Snakemake's script jobs, SLURM jobs), and it patches fibrecon's modules as they
are imported, only when the test set the matching variable:

- ``FIBRECON_FAULT_SLOW_WRITE=<seconds>``: every streamed volume write sleeps
  that long per slice (so a test can kill a job mid-write);
- ``FIBRECON_FAULT_FAIL_ONCE=<file>``: the first job that finds the file removes
  it and fails inside its rule log (so a test can watch a retry).

And one speed-up that changes no result:

- ``FIBRECON_TEST_SLURM_POLL_S=<seconds>``: caps the wait between two status
  checks of Snakemake's SLURM plugin. The plugin (2.8.0) adds 10 s to the wait
  after every check that finds no job finished (up to 180 s), so on the test
  cluster a job of 12-25 s was seen finished up to 20 s late, at every step of
  the chain (about half of the SLURM tests' time, measured 2026-12-07).
"""

import contextlib
import importlib.abc
import importlib.util
import os
import sys
import time


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    """Run ``patch(module)`` right after ``name`` is imported, before anyone uses it."""

    def __init__(self, name, patch):
        self.name, self.patch = name, patch

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            self.patch(module)

        spec.loader.exec_module = exec_module
        return spec


def _slow_writes(module):
    seconds = float(os.environ["FIBRECON_FAULT_SLOW_WRITE"])
    write = module.write_volume_slices

    def crawling(path, slices, *args, **kwargs):
        def slowly():
            for item in slices:
                time.sleep(seconds)
                yield item
        return write(path, slowly(), *args, **kwargs)

    module.write_volume_slices = crawling


def _fail_once(module):
    marker = os.environ["FIBRECON_FAULT_FAIL_ONCE"]
    rule_log = module.rule_log

    @contextlib.contextmanager
    def failing_once(path, *args, **kwargs):
        with rule_log(path, *args, **kwargs) as log:
            if os.path.exists(marker):
                os.remove(marker)
                raise RuntimeError(f"injected failure (FIBRECON_FAULT_FAIL_ONCE={marker})")
            yield log

    module.rule_log = failing_once


def _poll_cap(module):
    cap = float(os.environ["FIBRECON_TEST_SLURM_POLL_S"])
    base = module.Executor.next_seconds_between_status_checks  # the interface's property

    def capped(self, value):
        base.fset(self, value if value is None else min(value, cap))

    module.Executor.next_seconds_between_status_checks = property(base.fget, capped)


if os.environ.get("FIBRECON_FAULT_SLOW_WRITE"):
    sys.meta_path.insert(0, _PatchAfterImport("fibrecon.files.volumes", _slow_writes))
if os.environ.get("FIBRECON_FAULT_FAIL_ONCE"):
    sys.meta_path.insert(0, _PatchAfterImport("fibrecon.runlog", _fail_once))
if os.environ.get("FIBRECON_TEST_SLURM_POLL_S"):
    sys.meta_path.insert(0, _PatchAfterImport("snakemake_executor_plugin_slurm", _poll_cap))
