"""Records and checks shared by every loader: :class:`Record`, :class:`DataError`, label conventions.

Label maps follow the ACDC convention everywhere in the package: 0 background,
1 RV cavity, 2 myocardium, 3 LV cavity (:data:`ACDC_CONVENTION`). Arrays in a
:class:`Record` are numpy, spatial only (no channel axis), in the file's voxel order.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["CARDIAC_STRUCTURES", "Record", "DataError", "ACDC_CONVENTION", "MNMS_CONVENTION", "LUNG_CONVENTION",
           "data_error", "first_line", "check_image", "check_label", "check_pair", "label_dtype"]

ACDC_CONVENTION = "ACDC: 0 background, 1 RV, 2 myocardium, 3 LV"
MNMS_CONVENTION = ACDC_CONVENTION + " (remapped from M&Ms: 1 LV, 2 myocardium, 3 RV)"
LUNG_CONVENTION = "lung mask: 0 background, 1 lung (any non-zero mask value)"


# ---------------------------------------------------------------- records and errors

#: the cardiac structures the tables score, in Table 2's column order: (name, ACDC label value)
CARDIAC_STRUCTURES = (("LV", 3), ("RV", 1), ("Myo", 2))


class DataError(ValueError):
    """A data file that cannot be used. The message is one line: ``"<file>: <reason>"``."""


def data_error(path, reason) -> DataError:
    """The :class:`DataError` ``"<path>: <reason>"``, the reason folded onto one line."""
    reason = " ".join(str(reason).split())          # one line, whatever the cause said
    return DataError(f"{path}: {reason}")


def first_line(exc: BaseException) -> str:
    """An exception's message on one line (its type name when the message is empty)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


@dataclass(eq=False)
class Record:
    """One image (2-D slice or 3-D volume) with its optional label map.

    Attributes:
        image: float32 array, spatial only (no channel axis), file voxel order.
        label: integer array of the same shape, or ``None``.
        spacing: mm per voxel along each array axis (``len == image.ndim``).
        affine: 4x4 voxel -> world (mm) matrix.
        subject: subject id; :func:`~drdm.data.subject_split` never puts one subject in two splits.
        phase: ``"ED"``/``"ES"`` (cardiac), ``"exp"``/``"insp"`` (lung) or ``None``.
        source: dataset name. label_convention: what the label values mean.
        path: the image file. meta: extras (frame, slice index, vendor, ...).
    """
    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, ...]
    affine: np.ndarray
    subject: str
    phase: str | None
    source: str
    label_convention: str
    path: str
    meta: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        lab = "None" if self.label is None else f"{self.label.dtype}{list(self.label.shape)}"
        return (f"Record(subject={self.subject!r}, phase={self.phase!r}, source={self.source!r}, "
                f"image=float32{list(self.image.shape)}, label={lab}, "
                f"spacing={tuple(round(s, 4) for s in self.spacing)})")


# ---------------------------------------------------------------- checks

def check_image(path, image: np.ndarray) -> np.ndarray:
    """2-D or 3-D, non-empty, finite; cast to float32. :class:`DataError` naming ``path`` otherwise."""
    if image.ndim not in (2, 3):
        raise data_error(path, f"{image.ndim}-D image {tuple(image.shape)}; expected 2-D or 3-D")
    if image.size == 0:
        raise data_error(path, f"image has no voxels, shape {tuple(image.shape)}")
    image = np.asarray(image, dtype=np.float32)
    if not np.isfinite(image).all():
        raise data_error(path, "NaN or Inf values")
    return image


def label_dtype(vmax: int):
    """int16 for label values up to 32767, else int32."""
    return np.int16 if vmax <= np.iinfo(np.int16).max else np.int32


def check_label(path, label: np.ndarray, *, allow_empty: bool = False) -> np.ndarray:
    """Integer-valued, non-negative, finite; cast to int16 (int32 if needed)."""
    label = np.asarray(label)
    if label.ndim not in (2, 3):
        raise data_error(path, f"{label.ndim}-D label map {tuple(label.shape)}; expected 2-D or 3-D")
    if label.dtype.kind == "b":
        label = label.astype(np.uint8)
    if label.dtype.kind not in "iuf":
        raise data_error(path, f"label has dtype {label.dtype}; expected integers")
    if label.dtype.kind == "f":
        if not np.isfinite(label).all():
            raise data_error(path, "NaN or Inf values in label")
        if not (label == np.round(label)).all():
            raise data_error(path, "label has non-integer values")
    if label.size and label.min() < 0:
        raise data_error(path, "negative label values")
    vmax = int(label.max()) if label.size else 0
    if vmax == 0 and not allow_empty:
        raise data_error(path, "label map is empty (all zeros)")
    return label.astype(label_dtype(vmax))


def check_pair(image_path, label_path, image: np.ndarray, label: np.ndarray) -> None:
    """Image and label map of one record must have the same shape."""
    if image.shape != label.shape:
        where = "" if str(image_path) == str(label_path) else f" (image {image_path})"
        raise data_error(label_path, f"image shape {tuple(image.shape)} and label shape "
                                 f"{tuple(label.shape)} differ{where}")

