"""fibrecon: FIB-SEM slice stacks of battery cathodes to 3D phase volumes and metrics.

Stages (each a module of pure functions on arrays; file I/O only in
:mod:`fibrecon.io`): :mod:`~fibrecon.simulate`, :mod:`~fibrecon.align`,
:mod:`~fibrecon.preprocess`, :mod:`~fibrecon.segment`, :mod:`~fibrecon.volume`,
:mod:`~fibrecon.metrics`, :mod:`~fibrecon.series`; sample-sheet handling in
:mod:`~fibrecon.samples`, figures in :mod:`~fibrecon.plot`.

Conventions: axis order (z, y, x); voxel size (dz, dy, dx) in micrometres;
labels 0 pore, 1 active material (AM), 2 carbon-binder domain (CBD).
"""

__version__ = "0.1.0"

PORE, AM, CBD = 0, 1, 2
PHASES = {PORE: "pore", AM: "am", CBD: "cbd"}

#: Angle (degrees) between the FIB cross-section and the SEM image plane; an
#: image not tilt-corrected is shortened in y by sin of it.
CROSS_SECTION_TILT_DEG = 52.0

__all__ = ["__version__", "PORE", "AM", "CBD", "PHASES", "CROSS_SECTION_TILT_DEG"]
