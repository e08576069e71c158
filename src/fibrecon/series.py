"""The series table: every sample's scalar metrics joined with its process parameters."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["scalar_metrics", "series_table", "mixed_models_warning"]


def scalar_metrics(metrics: dict) -> dict:
    """The scalar (number) entries of one sample's metrics dict, in order."""
    return {
        k: v for k, v in metrics.items()
        if isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
    }


def series_table(metrics: dict, samples: pd.DataFrame, process_cols) -> pd.DataFrame:
    """One row per sample: id, process parameters, the network that segmented it
    (``segmentation_model``, where the metrics name one), then scalar metrics.

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
        if m.get("segmentation_model"):
            row["segmentation_model"] = m["segmentation_model"]
        row.update(scalar_metrics(m))
        rows.append(row)
    return pd.DataFrame(rows)


def mixed_models_warning(table: pd.DataFrame) -> str | None:
    """A warning when the samples of a series were segmented by different networks.

    ``segment.fallback_model`` may give a sample whose probe looked unlike the
    training data another network than its neighbours; the differences between
    them then hold the networks' difference (CBD IoU 0.1-0.4 apart on the
    benchmark stacks) besides the process's.

    Examples
    --------
    >>> t = pd.DataFrame({"sample": ["a", "b", "c"],
    ...                   "segmentation_model": ["m.pt", "m_randomised.pt", "m.pt"]})
    >>> mixed_models_warning(t)[:62]
    'the samples of this series were segmented by different network'
    >>> mixed_models_warning(t.iloc[[0, 2]]) is None
    True
    """
    if "segmentation_model" not in table or table["segmentation_model"].nunique() < 2:
        return None
    groups = "; ".join(f"{model}: {', '.join(map(str, part['sample']))}"
                       for model, part in table.groupby("segmentation_model", sort=False))
    return ("the samples of this series were segmented by different networks (" + groups
            + "; column segmentation_model): differences between them hold the networks' "
            "difference besides the process's. Set segment.fallback_model: none, or give "
            "segment.model one network, to compare them on equal terms")
