"""Volumes and stacks as ImageJ hyperstack TIFFs or OME-TIFFs, with their voxel size.

Axis order (z, y, x) or (z, c, y, x); the physical voxel size in micrometres in
the resolution tags (x, y) and the ImageJ ``spacing`` entry (z), so Fiji and
napari open them at the right scale.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from fibrecon import phase_counts
from fibrecon.files.atomic import atomic_path

__all__ = ["write_volume", "read_volume", "read_labels", "VolumeReader", "write_volume_slices",
           "write_ome_tiff", "read_ome_scale"]


def write_volume(path, data: np.ndarray, voxel_size, *, channels: bool = False) -> None:
    """Write a (z, y, x) or (z, c, y, x) array as an ImageJ TIFF with its voxel size.

    Parameters
    ----------
    path : str or Path
        Destination ``.tif``.
    data : ndarray
        uint8, uint16 or float32 array, (z, y, x), or (z, c, y, x) with
        ``channels=True``.
    voxel_size : sequence of 3 float
        (dz, dy, dx) in micrometres.
    channels : bool
        Whether axis 1 is a channel axis.
    """
    axes = "ZCYX" if channels else "ZYX"
    if data.ndim != len(axes):
        raise ValueError(f"{path}: expected a {len(axes)}D array ({axes}), got {data.ndim}D")
    write_volume_slices(path, iter(data), data.shape, data.dtype, voxel_size, channels=channels)


def read_volume(path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Read a whole TIFF written by :func:`write_volume` (see :class:`VolumeReader` to stream).

    Returns
    -------
    data : ndarray
        (z, y, x) or (z, c, y, x).
    voxel_size : tuple of float
        (dz, dy, dx) in micrometres.
    """
    with VolumeReader(path) as vol:
        return vol.read_all(), vol.voxel_size


def read_labels(path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Read a label volume and check that it holds only 0 pore, 1 AM, 2 CBD.

    Raises
    ------
    ValueError
        Naming the file and the unexpected values.
    """
    labels, voxel = read_volume(path)
    phase_counts(labels, str(path))
    return labels.astype(np.uint8), voxel


class VolumeReader:
    """A volume TIFF written by fibrecon, read one z-slice at a time.

    Attributes
    ----------
    shape : tuple of int
        (z, y, x) or (z, c, y, x).
    dtype : numpy.dtype
    voxel_size : tuple of float
        (dz, dy, dx) in micrometres.
    channels : bool
        Whether axis 1 is a channel axis.

    Examples
    --------
    >>> with VolumeReader(path) as vol:  # doctest: +SKIP
    ...     for z in range(len(vol)):
    ...         process(vol[z])
    """

    def __init__(self, path):
        self.path = Path(path)
        try:
            self._tif = tifffile.TiffFile(self.path)
        except Exception as exc:
            raise ValueError(f"{self.path}: cannot be read as TIFF ({exc})") from exc
        series = self._tif.series[0]
        ij = self._tif.imagej_metadata or (self._tif.shaped_metadata or ({},))[0]
        page = self._tif.pages.first
        xr = page.tags["XResolution"].value
        yr = page.tags["YResolution"].value
        self.voxel_size = (float(ij.get("spacing", 1.0)), yr[1] / yr[0], xr[1] / xr[0])
        shape, axes = tuple(series.shape), series.axes
        if "Z" not in axes:  # ImageJ drops a Z axis of length 1
            shape, axes = (1, *shape), "Z" + axes
        if "C" not in axes and "axes=ZCYX" in str(ij.get("Info", "")):  # ...and a C of length 1
            shape, axes = (shape[0], 1, *shape[1:]), "ZCYX"
        self.channels = "C" in axes
        self.shape = shape
        self.dtype = np.dtype(series.dtype)
        self._planes = shape[1] if self.channels else 1

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, z: int) -> np.ndarray:
        if not 0 <= z < len(self):
            raise IndexError(f"{self.path}: slice {z} out of range for {len(self)} slices")
        first = z * self._planes
        data = self._tif.asarray(key=range(first, first + self._planes))
        return data.reshape(self.shape[1:])

    def read_all(self) -> np.ndarray:
        return self._tif.series[0].asarray().reshape(self.shape)

    def close(self) -> None:
        self._tif.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_volume_slices(path, slices, shape, dtype, voxel_size, *, channels: bool = False,
                        ome: bool = False) -> None:
    """Write a volume slice by slice (streaming) as an ImageJ TIFF or OME-TIFF with its voxel size.

    Parameters
    ----------
    path : str or Path
        Destination ``.tif`` (written under a temporary name, renamed at the end).
    slices : iterable of ndarray
        Each (y, x), or (c, y, x) with ``channels=True``, in z order.
    shape : tuple of int
        Full shape, (z, y, x) or (z, c, y, x).
    dtype : numpy dtype
        float16 is written as a plain (non-ImageJ) TIFF with the same metadata
        as JSON, which :class:`VolumeReader` reads back.
    voxel_size : sequence of 3 float
        (dz, dy, dx) in micrometres.
    channels : bool
        Whether axis 1 is a channel axis.
    ome : bool
        Write OME-TIFF (``PhysicalSizeZ/Y/X`` in µm: napari, Fiji/Bio-Formats,
        QuPath) instead of an ImageJ TIFF.
    """
    dz, dy, dx = (float(v) for v in voxel_size)
    if min(dz, dy, dx) <= 0:
        raise ValueError(f"{path}: voxel size must be positive, got {voxel_size}")
    axes = "ZCYX" if channels else "ZYX"
    if len(shape) != len(axes):
        raise ValueError(f"{path}: expected a {len(axes)}D shape ({axes}), got {shape}")
    dtype = np.dtype(np.float32 if np.dtype(dtype) == np.float64 else dtype)
    expected = tuple(shape[1:])

    def planes():
        count = 0
        for item in slices:
            item = np.asarray(item)
            if item.shape != expected:
                raise ValueError(f"{path}: slice {count} has shape {item.shape}, "
                                 f"expected {expected}")
            count += 1
            for plane in (item if channels else item[None]):
                yield plane.astype(dtype, copy=False)
        if count != shape[0]:
            raise ValueError(f"{path}: got {count} slices, expected {shape[0]}")

    if ome:
        options = {"ome": True, "metadata": {
            "axes": axes, "PhysicalSizeX": dx, "PhysicalSizeXUnit": "µm", "PhysicalSizeY": dy,
            "PhysicalSizeYUnit": "µm", "PhysicalSizeZ": dz, "PhysicalSizeZUnit": "µm"}}
    else:
        options = {"imagej": dtype != np.float16,  # ImageJ has no float16: plain TIFF, JSON metadata
                   "resolution": (1.0 / dx, 1.0 / dy),
                   "metadata": {"spacing": dz, "unit": "um", "axes": axes,
                                "Info": f"fibrecon axes={axes}"}}
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, planes(), shape=tuple(shape), dtype=dtype, photometric="minisblack",
                         **options)


def write_ome_tiff(path, data: np.ndarray, voxel_size, *, channels: bool = False) -> None:
    """Write a volume as OME-TIFF with its physical voxel size (napari, Fiji/Bio-Formats, QuPath).

    Parameters
    ----------
    path : str or Path
        Destination, ``.ome.tif``.
    data : ndarray
        (z, y, x), or (z, c, y, x) with ``channels=True``.
    voxel_size : sequence of 3 float
        (dz, dy, dx) in micrometres (``PhysicalSizeZ/Y/X`` in µm).

    See Also
    --------
    write_volume_slices : the same, streamed slice by slice (``ome=True``).
    """
    axes = "ZCYX" if channels else "ZYX"
    if data.ndim != len(axes):
        raise ValueError(f"{path}: expected a {len(axes)}D array ({axes}), got {data.ndim}D")
    write_volume_slices(path, iter(data), data.shape, data.dtype, voxel_size, channels=channels,
                        ome=True)


def read_ome_scale(path) -> tuple[float, float, float]:
    """(dz, dy, dx) in micrometres from an OME-TIFF's ``Pixels`` element."""
    from fibrecon.files.metadata import ome_physical_sizes

    with tifffile.TiffFile(path) as tif:
        xml = tif.ome_metadata
    if not xml:
        raise ValueError(f"{path}: no OME metadata")
    sizes = ome_physical_sizes(xml)
    missing = [a for a in "zyx" if sizes.get(a, (None,))[0] is None]
    if missing:
        raise ValueError(f"{path}: OME metadata has no physical size in a known unit for "
                         f"axis {missing}")
    return tuple(sizes[a][0] for a in "zyx")
