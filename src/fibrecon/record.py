"""The characterization record of one sample: everything needed to trust and reuse its numbers.

One JSON document per sample (``results/records/<sample>.json``), validated
against ``schemas/record.schema.json``: the sample and its process parameters,
the instrument settings and where each value came from, the parameters every
stage actually used, the segmentation model's identity, software versions,
checksums of the input files, every scalar metric with its unit and error bar
(the representative-volume spread where one is computed), and the figures.
"""

from __future__ import annotations

import math
import platform
import re
from importlib import metadata
from pathlib import Path

__all__ = ["FORMAT", "metric_unit", "metric_entries", "software_versions",
           "build_record"]

FORMAT = "fibrecon-record/1"
PACKAGES = ["fibrecon", "numpy", "scipy", "scikit-image", "tifffile", "torch",
            "pytorch-lightning", "porespy", "taufactor", "pyamg", "pandas", "snakemake"]

_UNITS = [  # suffix of the metric name -> unit
    (r"_per_um3$", "1/um^3"), (r"_per_um$", "1/um"), (r"_um3$", "um^3"), (r"_um$", "um"),
]


def metric_unit(name: str) -> str:
    """Unit of a metric from its name: ``d50_um`` -> ``um``; fractions, counts, tau -> ``1``."""
    for pattern, unit in _UNITS:
        if re.search(pattern, name):
            return unit
    return "1"


#: Suffixes of the two error bars of a metric in the metrics JSON.
ERROR_SUFFIXES = ("_sd_half_edge", "_sd_segmentation")


def metric_entries(metrics: dict) -> dict:
    """``{name: {"value", "unit", "error", "error_segmentation"}}`` for every scalar metric.

    ``error`` is the standard deviation over sub-volumes of half the edge
    (``<name>_sd_half_edge`` in the metrics: sampling), ``error_segmentation``
    the segmentation sd (``<name>_sd_segmentation``); None where not computed.
    Infinite values (a phase that does not percolate, a segmentation sd where
    the moved boundaries make or break percolation) stay infinite.
    """
    def sd(name):
        v = metrics.get(name)
        return None if v is None or math.isnan(v) else float(v)

    out = {}
    for name, value in metrics.items():
        if name.endswith(ERROR_SUFFIXES) or isinstance(value, bool):
            continue
        if isinstance(value, (int, float)) and value is not None:
            out[name] = {"value": float(value), "unit": metric_unit(name),
                         "error": sd(f"{name}_sd_half_edge"),
                         "error_segmentation": sd(f"{name}_sd_segmentation")}
    return out


def software_versions() -> dict:
    """Python and the installed versions of fibrecon's main dependencies."""
    out = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def build_record(sample: str, process: dict, acquisition: dict, parameters: dict,
                 metrics: dict, *, model: dict | None, inputs: dict, figures: dict,
                 uncertainty: dict | None = None) -> dict:
    """Assemble the record of one sample (a plain dict, ready for JSON).

    Parameters
    ----------
    sample : str
    process : dict
        Process parameters from the sample sheet.
    acquisition : dict
        The align stage's JSON: kV list, voxel size and its origin, instrument metadata.
    parameters : dict
        Settings each stage used, by stage name.
    metrics : dict
        The metrics stage's JSON.
    model : dict or None
        ``{"path", "sha256", "card"}`` of the segmentation network (None for multiotsu).
    inputs : dict
        ``{relative path: sha256}`` of the raw files.
    figures : dict
        ``{name: path}``.
    uncertainty : dict, optional
        Share of uncertain voxels per predicted phase
        (:func:`fibrecon.uncertainty.uncertain_fractions`); None without probabilities.
    """
    return {
        "format": FORMAT,
        "sample": sample,
        "process_parameters": process,
        "instrument": {
            "kvs": acquisition["kvs"],
            "voxel_size_um": dict(zip("zyx", acquisition["voxel_size_um"])),
            "voxel_size_origin": acquisition["voxel_size_origin"],
            **{k: v for k, v in acquisition.get("instrument", {}).items()},
            "databar": acquisition.get("databar"),
            "registration": acquisition.get("registration"),
            "roi": acquisition.get("roi"),
            "fill_borders": acquisition.get("fill_borders"),
        },
        "volume": {"shape_zyx": metrics.get("shape"), "volume_um3": metrics.get("volume_um3")},
        "parameters": parameters,
        "segmentation_model": model,
        "software": software_versions(),
        "inputs": inputs,
        "metrics": metric_entries(metrics),
        "segmentation_uncertainty": uncertainty,
        # the metrics stage's widening of the segmentation sd (fibrecon.uncertainty.domain_widening)
        "segmentation_doubt": metrics.get("segmentation_doubt"),
        "notes": list(metrics.get("notes", [])),
        "figures": {k: str(Path(v)) for k, v in figures.items()},
    }
