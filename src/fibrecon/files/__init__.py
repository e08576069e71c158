"""File formats of fibrecon, one module per concern; every public name is here too.

- :mod:`~fibrecon.files.atomic`: writing under a temporary name and renaming
- :mod:`~fibrecon.files.raw`: raw acquisitions (per-slice or multi-page TIFFs per kV)
- :mod:`~fibrecon.files.metadata`: FEI / Zeiss / Tescan instrument metadata, ImageJ and
  OME-TIFF scales, and data bars
- :mod:`~fibrecon.files.volumes`: volumes with their voxel size (ImageJ TIFF, OME-TIFF)
- :mod:`~fibrecon.files.tables`: JSON, tables, figures, checksums
- :mod:`~fibrecon.files.labelled`: annotations (a user's labels of slices) for fine-tuning

The simulator's writers (files as an instrument writes them, and the
simulator's truth) live beside it, in :mod:`fibrecon.simulated_files`.
"""

from fibrecon.files.atomic import atomic_dir, atomic_path
from fibrecon.files.labelled import (Annotation, annotation_files, annotation_name, find_annotations,
                                      read_annotation, read_label_volume, write_annotation_slice)
from fibrecon.files.metadata import (TESCAN_TAG, detect_databar, ome_physical_sizes,
                                      read_sem_metadata, tescan_hdr_sections, tescan_sections)
from fibrecon.files.raw import (RawDataError, RawStack, SliceFile, channel_metadata,
                                find_raw_files, raw_file_name, read_raw_stack)
from fibrecon.files.tables import (file_sha256, read_json, read_table, write_figure, write_image, write_json,
                                   write_table)
from fibrecon.files.volumes import (VolumeReader, read_labels, read_ome_scale, read_volume,
                                    write_ome_tiff, write_volume, write_volume_slices)

__all__ = ["atomic_dir", "atomic_path", "Annotation", "annotation_files", "annotation_name", "find_annotations",
           "read_annotation", "read_label_volume", "write_annotation_slice", "detect_databar",
           "read_sem_metadata", "TESCAN_TAG", "ome_physical_sizes", "tescan_sections",
           "tescan_hdr_sections", "RawDataError", "RawStack", "SliceFile", "channel_metadata",
           "find_raw_files", "raw_file_name", "read_raw_stack", "file_sha256", "read_json", "read_table",
           "write_figure", "write_image", "write_json", "write_table", "VolumeReader", "read_labels",
           "read_ome_scale", "read_volume", "write_ome_tiff", "write_volume",
           "write_volume_slices"]
