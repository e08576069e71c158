"""Small outputs: JSON, tab-separated tables, figures, checksums."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from fibrecon.files.atomic import atomic_path

__all__ = ["file_sha256", "write_json", "read_json", "write_figure", "write_image",
           "read_table", "write_table"]


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def file_sha256(path) -> str:
    """SHA-256 of a file, hex (identity of models and input files in records)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_json(path, obj) -> None:
    """Write ``obj`` as indented JSON; infinities are written as ``Infinity``."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")


def read_json(path):
    """Read a JSON file (``Infinity`` and ``NaN`` allowed)."""
    return json.loads(Path(path).read_text())


def write_figure(path, fig, dpi: int = 120) -> None:
    """Save a matplotlib figure (format from the suffix) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)


def read_table(path, sep: str = "\t"):
    """A table written by :func:`write_table`, as a pandas DataFrame."""
    import pandas as pd

    return pd.read_csv(path, sep=sep)


def write_table(path, df, sep: str = "\t") -> None:
    """Write a pandas DataFrame as a tab-separated (or ``sep``) table, no index, NaN spelled out."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep=sep, index=False, na_rep="NaN")


def write_image(path, image: np.ndarray) -> None:
    """Write an RGB(A) uint8 image (e.g. a rendered 3D view) as PNG."""
    import matplotlib.image

    path = Path(path)
    with atomic_path(path) as tmp:
        matplotlib.image.imsave(tmp, np.asarray(image), format=path.suffix.lstrip(".") or "png")
