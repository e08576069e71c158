"""fibrecon: FIB-SEM slice stacks of battery cathodes to 3D phase volumes and metrics.

Stages (each a module of pure functions on arrays, with its settings class):
:mod:`~fibrecon.simulate`, :mod:`~fibrecon.align`, :mod:`~fibrecon.preprocess`,
:mod:`~fibrecon.segment`, :mod:`~fibrecon.volume`, :mod:`~fibrecon.metrics`,
:mod:`~fibrecon.series`; sample-sheet and config handling in
:mod:`~fibrecon.samples`, figures in :mod:`~fibrecon.plot`.

Files: the data formats (raw acquisitions and instrument metadata, volumes,
tables, JSON, figures) are read and written only in :mod:`fibrecon.files`, the
simulator's acquisitions and truth in :mod:`fibrecon.simulated_files`. Five
modules open files of their own kind besides: :mod:`~fibrecon.samples` (the
config and sample sheet it validates), :mod:`~fibrecon.unet` and
:mod:`~fibrecon.modelcard` (model files and their cards), :mod:`~fibrecon.runlog`
(a rule's log), :mod:`~fibrecon.workflow`
(the package's own sources, for the rerun inputs).

Conventions: axis order (z, y, x); voxel size (dz, dy, dx) in micrometres;
labels 0 pore, 1 active material (AM), 2 carbon-binder domain (CBD).
"""

__version__ = "0.1.0"

import numpy as _np

PORE, AM, CBD = 0, 1, 2
PHASES = {PORE: "pore", AM: "am", CBD: "cbd"}

#: Label value of a pixel nobody annotated (napari / ilastik convention): training ignores it.
NOT_ANNOTATED = 255

#: Angle (degrees) between the FIB cross-section and the SEM image plane; an
#: image not tilt-corrected is shortened in y by sin of it.
CROSS_SECTION_TILT_DEG = 52.0

#: Smallest edge (voxels) of a volume the metrics accept: sub-volumes of a quarter of the
#: edge for the representative-volume spread, a path for the tortuosity solve.
MIN_EDGE_VOXELS = 8

__all__ = ["__version__", "PORE", "AM", "CBD", "PHASES", "NOT_ANNOTATED", "CROSS_SECTION_TILT_DEG",
           "MIN_EDGE_VOXELS", "phase_counts"]


def phase_counts(labels, source: str = "labels") -> "_np.ndarray":
    """Voxels of each phase (0 pore, 1 AM, 2 CBD); other values are an error naming ``source``.

    The one check of a label image's values: counted in slabs, so a large
    volume is never copied.

    Raises
    ------
    ValueError
        ``<source>: unexpected label values [...] (expected 0 pore, 1 AM, 2 CBD)``.

    Examples
    --------
    >>> phase_counts(_np.array([0, 1, 1, 2])).tolist()
    [1, 2, 1]
    """
    flat = _np.asarray(labels).reshape(-1)  # a view when contiguous
    if flat.size and not _np.issubdtype(flat.dtype, _np.integer):
        raise ValueError(f"{source}: label values of type {flat.dtype}, expected integers "
                         "(0 pore, 1 AM, 2 CBD)")
    if flat.size and _np.issubdtype(flat.dtype, _np.signedinteger) and flat.min() < 0:
        bad = _np.unique(flat[flat < 0])
        raise ValueError(f"{source}: unexpected label values {bad[:10].tolist()} "
                         "(expected 0 pore, 1 AM, 2 CBD)")
    counts = _np.zeros(len(PHASES), _np.int64)
    for start in range(0, flat.size, 1 << 22):
        c = _np.bincount(flat[start:start + (1 << 22)], minlength=len(PHASES))
        counts = _np.pad(counts, (0, max(0, c.size - counts.size)))
        counts[:c.size] += c
    if counts.size > len(PHASES):
        bad = _np.nonzero(counts[len(PHASES):])[0] + len(PHASES)
        raise ValueError(f"{source}: unexpected label values {bad[:10].tolist()} "
                         "(expected 0 pore, 1 AM, 2 CBD)")
    return counts
