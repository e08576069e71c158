"""Per-rule logs and progress bars for the workflow's scripts."""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import time
import traceback

from tqdm import tqdm

__all__ = ["rule_log", "progress"]


@contextlib.contextmanager
def rule_log(path, name: str = "fibrecon"):
    """Send stdout, stderr and logging of a rule's script to its log file.

    Any exception is written to the log with its traceback and raised again,
    so Snakemake marks the job failed and shows the log.

    Yields
    ------
    logging.Logger
    """
    with open(path, "w", buffering=1) as fh, contextlib.redirect_stdout(fh), \
            contextlib.redirect_stderr(fh):
        logger = logging.getLogger(name)
        logger.handlers[:] = [logging.StreamHandler(fh)]
        logger.handlers[0].setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.setLevel(logging.INFO)
        logger.propagate = False
        start = time.perf_counter()
        try:
            yield logger
        except BaseException:
            fh.write(traceback.format_exc())
            raise
        finally:
            logger.info("done in %.1f s", time.perf_counter() - start)


def progress(desc: str):
    """A ``tqdm`` wrapper for slice loops, writing to the current stderr (the rule log)."""
    return functools.partial(tqdm, desc=desc, file=sys.stderr, mininterval=2.0, ascii=True)
