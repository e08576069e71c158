"""The series table: every sample's scalar metrics joined with its process parameters."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["scalar_metrics", "series_table"]


def scalar_metrics(metrics: dict) -> dict:
    """The scalar (number) entries of one sample's metrics dict, in order."""
    return {
        k: v for k, v in metrics.items()
        if isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
    }


def series_table(metrics: dict, samples: pd.DataFrame, process_cols) -> pd.DataFrame:
    """One row per sample: id, process parameters, then scalar metrics.

    Parameters
    ----------
    metrics : dict
        sample id -> metrics dict (as written to ``results/metrics/<sample>.json``).
    samples : pandas.DataFrame
        The sample sheet, indexed by sample id.
    process_cols : sequence of str
        Process-parameter columns, carried unchanged.

    Returns
    -------
    pandas.DataFrame

    Raises
    ------
    KeyError
        A sample in ``metrics`` missing from the sheet.
    """
    rows = []
    for sample, m in metrics.items():
        if sample not in samples.index:
            raise KeyError(f"sample '{sample}' has metrics but is not in the sample sheet")
        row = {"sample": sample}
        row.update({c: samples.at[sample, c] for c in process_cols})
        row.update(scalar_metrics(m))
        rows.append(row)
    return pd.DataFrame(rows)
