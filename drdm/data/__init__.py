"""Real data: NIfTI I/O, dataset loaders, Section 3.2 preprocessing, slices and subject splits.

* :mod:`drdm.data.records`: :class:`Record` (one image volume or slice, its optional label
  map, spacing, affine and provenance), :class:`DataError`, the label conventions.
* :mod:`drdm.data.nifti`: :func:`load_nifti` and :func:`save_nifti` (checked, atomic).
* :mod:`drdm.data.datasets`: ACDC (NIfTI and h5), M&Ms, Learn2Reg lung CT, any NIfTI folder.
* :mod:`drdm.data.preprocessing`: :func:`preprocess` (resize and pad, threshold, normalise),
  :func:`slices`, :func:`subject_split`.

Every loader returns a list of :class:`Record`; loader errors are :class:`DataError`
with a one-line message ``"<file>: <reason>"``. Label maps follow the ACDC
convention everywhere in the package: 0 background, 1 RV cavity, 2 myocardium,
3 LV cavity; :func:`load_mnms` remaps M&Ms (1 LV, 2 myocardium, 3 RV) and says so in
``Record.label_convention``. The book's embedded phantoms live in :mod:`drdm.phantoms`.
Training-time augmentation is ``drdm.training`` (flips and transposes of the batch).
"""
from .datasets import (ACDC_GROUPS, DATASET_LOADERS, MNMS_TO_ACDC, acdc_group, acdc_name, load_acdc, load_acdc_h5,
                       load_dataset, load_learn2reg_lung, load_mnms, load_nifti_folder)
from .nifti import load_nifti, save_nifti
from .preprocessing import (geometry, preprocess, preprocess_label, preprocess_record, slices, stratified_split,
                            subject_split)
from .records import ACDC_CONVENTION, LUNG_CONVENTION, MNMS_CONVENTION, DataError, Record

__all__ = [
    "Record", "DataError", "ACDC_CONVENTION", "MNMS_CONVENTION", "LUNG_CONVENTION",
    "load_nifti", "save_nifti",
    "ACDC_GROUPS", "acdc_group", "acdc_name", "load_acdc", "load_acdc_h5", "load_dataset", "DATASET_LOADERS", "load_mnms", "load_nifti_folder", "load_learn2reg_lung", "MNMS_TO_ACDC",
    "preprocess", "preprocess_label", "preprocess_record", "geometry",
    "slices", "subject_split", "stratified_split",
]
