"""Real data: NIfTI/h5 loading, Section 3.2 preprocessing, subject splits, augmentation.

Every loader returns a list of :class:`Record` (one image volume or slice, its
optional label map, spacing, affine and provenance). Loader errors are
:class:`DataError` with a one-line message ``"<file>: <reason>"``.

Label maps follow the ACDC convention everywhere in the package: 0 background,
1 RV cavity, 2 myocardium, 3 LV cavity. M&Ms stores 1 LV, 2 myocardium, 3 RV;
:func:`load_mnms` swaps 1 and 3 and says so in ``Record.label_convention``.

Arrays in a :class:`Record` are numpy, spatial only (no channel axis), in the
file's voxel order. :func:`augment` works on torch batches ``(B, C, *S)``.
"""
from __future__ import annotations

from .phantoms import *  # noqa: F401,F403  (the book's embedded data, re-exported)
from . import phantoms as _phantoms

_PHANTOM_NAMES = list(_phantoms.__all__)

import gzip
import math
import os
import re
import tempfile
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .spatial import warp

__all__ = [
    "Record", "DataError", "ACDC_CONVENTION",
    "load_nifti", "save_nifti",
    "load_acdc", "load_acdc_h5", "load_mnms", "load_nifti_folder", "load_learn2reg_lung",
    "preprocess", "preprocess_label", "preprocess_record",
    "slices", "subject_split", "augment",
] + _PHANTOM_NAMES

ACDC_CONVENTION = "ACDC: 0 background, 1 RV, 2 myocardium, 3 LV"
MNMS_CONVENTION = ACDC_CONVENTION + " (remapped from M&Ms: 1 LV, 2 myocardium, 3 RV)"
LUNG_CONVENTION = "lung mask: 0 background, 1 lung (any non-zero mask value)"


# ---------------------------------------------------------------- records and errors

class DataError(ValueError):
    """A data file that cannot be used. The message is one line: ``"<file>: <reason>"``."""


def _error(path, reason) -> DataError:
    reason = " ".join(str(reason).split())          # one line, whatever the cause said
    return DataError(f"{path}: {reason}")


def _first_line(exc: BaseException) -> str:
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
        subject: subject id; :func:`subject_split` never puts one subject in two splits.
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

def _check_image(path, image: np.ndarray) -> np.ndarray:
    if image.ndim not in (2, 3):
        raise _error(path, f"{image.ndim}-D image {tuple(image.shape)}; expected 2-D or 3-D")
    if image.size == 0:
        raise _error(path, f"image has no voxels, shape {tuple(image.shape)}")
    image = np.asarray(image, dtype=np.float32)
    if not np.isfinite(image).all():
        raise _error(path, "NaN or Inf values")
    return image


def _label_dtype(vmax: int):
    return np.int16 if vmax <= np.iinfo(np.int16).max else np.int32


def _check_label(path, label: np.ndarray, *, allow_empty: bool = False) -> np.ndarray:
    """Integer-valued, non-negative, finite; cast to int16 (int32 if needed)."""
    label = np.asarray(label)
    if label.ndim not in (2, 3):
        raise _error(path, f"{label.ndim}-D label map {tuple(label.shape)}; expected 2-D or 3-D")
    if label.dtype.kind == "b":
        label = label.astype(np.uint8)
    if label.dtype.kind not in "iuf":
        raise _error(path, f"label has dtype {label.dtype}; expected integers")
    if label.dtype.kind == "f":
        if not np.isfinite(label).all():
            raise _error(path, "NaN or Inf values in label")
        if not (label == np.round(label)).all():
            raise _error(path, "label has non-integer values")
    if label.size and label.min() < 0:
        raise _error(path, "negative label values")
    vmax = int(label.max()) if label.size else 0
    if vmax == 0 and not allow_empty:
        raise _error(path, "label map is empty (all zeros)")
    return label.astype(_label_dtype(vmax))


def _check_pair(image_path, label_path, image: np.ndarray, label: np.ndarray) -> None:
    if image.shape != label.shape:
        where = "" if str(image_path) == str(label_path) else f" (image {image_path})"
        raise _error(label_path, f"image shape {tuple(image.shape)} and label shape "
                                 f"{tuple(label.shape)} differ{where}")


def _squeeze_trailing(array: np.ndarray, spacing: tuple) -> tuple[np.ndarray, tuple]:
    """Drop trailing singleton axes beyond the second: (H, W, 1) -> (H, W), (H, W, D, 1) -> (H, W, D)."""
    while array.ndim > 2 and array.shape[-1] == 1:
        array = array[..., 0]
    return array, tuple(float(s) for s in spacing[:array.ndim])


# ---------------------------------------------------------------- NIfTI

def _sniff_nifti(path: Path) -> None:
    """Refuse non-NIfTI and broken gzip files with a clear reason before nibabel does."""
    try:
        with open(path, "rb") as f:
            magic = f.read(2)
            is_gz = magic == b"\x1f\x8b"
            if not is_gz:
                f.seek(0)
                head = f.read(544)
    except OSError as e:
        raise _error(path, f"cannot read ({e.strerror or _first_line(e)})") from None
    named_gz = path.name.lower().endswith(".gz")
    if named_gz and not is_gz:
        raise _error(path, "not a NIfTI file (named .gz but not gzip-compressed)")
    if is_gz:
        if not named_gz:
            raise _error(path, "not a NIfTI file (gzip data in a file not named .gz)")
        try:
            with gzip.open(path, "rb") as g:
                head = g.read(544)
                # read to the end so the CRC-32 is checked: nibabel reads only what the
                # header asks for, and a corrupted payload would load as plausible numbers
                while g.read(1 << 24):
                    pass
        except (OSError, EOFError, zlib.error) as e:
            raise _error(path, f"truncated or corrupt gzip ({_first_line(e)})") from None
    size_le = int.from_bytes(head[:4], "little") if len(head) >= 4 else 0
    size_be = int.from_bytes(head[:4], "big") if len(head) >= 4 else 0
    nifti1 = 348 in (size_le, size_be) and len(head) >= 348 and head[344:348] in (b"n+1\0", b"ni1\0")
    nifti2 = 540 in (size_le, size_be) and len(head) >= 540 and head[4:8] in (b"n+2\0", b"ni2\0")
    if not (nifti1 or nifti2):
        what = "file too short for a header" if len(head) < 348 else "no NIfTI-1/2 header magic"
        raise _error(path, f"not a NIfTI file ({what})")


def load_nifti(path, *, label: bool = False, allow_empty: bool = False):
    """Read a 2-D or 3-D NIfTI file (``.nii`` or ``.nii.gz``) with checks.

    Args:
        path: the file.
        label: read a label map: integer-valued, non-negative, returned as int16
            (int32 for values above 32767); empty maps are refused unless ``allow_empty``.

    Returns:
        ``(array, affine, spacing)``: the array in the file's voxel order (float32
        for images, int16/int32 for labels), the 4x4 affine (voxel -> mm), and the
        voxel size in mm per array axis. Trailing singleton axes beyond the second
        are dropped (``(H, W, 1)`` is read as 2-D).

    Raises:
        DataError: one line naming the file and the reason (not NIfTI, truncated or
        corrupt gzip, 4-D, NaN/Inf, non-integer or negative labels, empty label map).
    """
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    path = Path(path)
    if not path.is_file():
        raise _error(path, "no such file")
    _sniff_nifti(path)
    try:
        img = nib.load(str(path), mmap=False)
        data = np.asanyarray(img.dataobj)           # a fresh array (mmap=False)
    except (EOFError, zlib.error, OSError, ValueError, ImageFileError) as e:
        if path.name.lower().endswith(".gz"):
            raise _error(path, f"truncated or corrupt gzip ({_first_line(e)})") from None
        raise _error(path, f"truncated or corrupt NIfTI file ({_first_line(e)})") from None
    zooms = img.header.get_zooms()
    if data.ndim > 3 and any(s != 1 for s in data.shape[3:]):
        raise _error(path, f"{data.ndim}-D image {tuple(data.shape)}; expected 2-D or 3-D")
    data, spacing = _squeeze_trailing(data, zooms)
    affine = np.asarray(img.affine, dtype=np.float64)
    if label:
        data = _check_label(path, data, allow_empty=allow_empty)
    else:
        data = _check_image(path, data)
    return data, affine, spacing


def _as_numpy(array) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def save_nifti(path, array, affine=None, *, like=None, label: bool = False,
               overwrite: bool = False) -> Path:
    """Write a 2-D or 3-D array as NIfTI, atomically.

    The file is written to a temporary name in the same folder and moved into
    place with ``os.replace``; on any error nothing is left behind. An existing
    file is never replaced unless ``overwrite=True``.

    Args:
        path: target ``.nii`` or ``.nii.gz``.
        array: numpy array or tensor, spatial only.
        affine: 4x4 voxel -> mm; ``None`` takes ``like``'s affine (else identity).
        like: a NIfTI path, a nibabel image or a :class:`Record` whose header
            (orientation codes, units, description) is kept.
        label: store as an integer label map (uint8 when values fit, else int16/int32);
            values must be non-negative integers. Otherwise float32.

    Returns:
        the written path.
    """
    import nibabel as nib

    path = Path(path)
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        ext = ".nii.gz"
    elif name.endswith(".nii"):
        ext = ".nii"
    else:
        raise _error(path, "refusing to write: file name must end with .nii or .nii.gz")
    if path.exists() and not overwrite:
        raise _error(path, "exists; pass overwrite=True to replace it")
    data = _as_numpy(array)
    if label:
        data = _check_label(path, data, allow_empty=True)
        vmax = int(data.max()) if data.size else 0
        data = data.astype(np.uint8 if vmax <= 255 else _label_dtype(vmax))
    else:
        data = _check_image(path, data)

    header = None
    like_affine = None
    if like is not None:
        if isinstance(like, Record):
            like_affine = like.affine
            if Path(like.path).is_file() and like.path.lower().endswith((".nii", ".nii.gz")):
                header = nib.load(like.path).header.copy()
        else:
            ref = like if hasattr(like, "header") else nib.load(str(like))
            header = ref.header.copy()
            like_affine = ref.affine
    if affine is None:
        affine = like_affine if like_affine is not None else np.eye(4)
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise _error(path, f"affine must be a finite 4x4 matrix, got shape {affine.shape}")

    img = nib.Nifti1Image(data, affine, header=header)
    img.set_data_dtype(data.dtype)
    img.header.set_slope_inter(1.0, 0.0)        # store values as they are, no scaling
    img.header.set_zooms(_zooms_from_affine(affine, data.ndim))

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:-len(ext)]}.", suffix=".tmp" + ext)
    os.close(fd)
    try:
        nib.save(img, tmp)
        os.chmod(tmp, 0o644)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:                                  # link fails if the target appeared meanwhile
                os.link(tmp, path)
            except FileExistsError:
                raise _error(path, "exists; pass overwrite=True to replace it") from None
            except OSError:                       # no hard links on this file system
                if path.exists():
                    raise _error(path, "exists; pass overwrite=True to replace it") from None
                os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _zooms_from_affine(affine: np.ndarray, ndim: int) -> tuple[float, ...]:
    return tuple(float(np.linalg.norm(affine[:3, i])) or 1.0 for i in range(ndim))


def _affine_from_spacing(spacing) -> np.ndarray:
    a = np.eye(4)
    for i, s in enumerate(spacing[:3]):
        a[i, i] = float(s)
    return a


# ---------------------------------------------------------------- loaders

def _require_dir(root) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise _error(root, "no such directory")
    return root


def _pair(image_path: Path, label_path: Path | None, *, allow_empty: bool = False):
    image, affine, spacing = load_nifti(image_path)
    label = None
    if label_path is not None:
        label, _, _ = load_nifti(label_path, label=True, allow_empty=allow_empty)
        _check_pair(image_path, label_path, image, label)
    return image, label, affine, spacing


def _read_info_cfg(path: Path) -> dict[str, str]:
    info = {}
    for line in path.read_text(errors="replace").splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            info[key.strip()] = value.strip()
    return info


def load_acdc(root) -> list[Record]:
    """ACDC in its official NIfTI layout: ED and ES frames of every patient.

    Layout (searched recursively under ``root``, so ``training/`` and ``testing/``
    both work)::

        patient001/Info.cfg                      # lines "ED: 1", "ES: 12", ...
        patient001/patient001_frame01.nii.gz     # (H, W, slices) image
        patient001/patient001_frame01_gt.nii.gz  # labels 0 bg, 1 RV, 2 myo, 3 LV (optional)

    Returns two records per patient (phase ``"ED"`` then ``"ES"``).
    """
    root = _require_dir(root)
    cfgs = sorted((p for p in root.rglob("Info.cfg") if re.fullmatch(r"patient\d+", p.parent.name)),
                  key=lambda p: (p.parent.name, str(p)))
    if not cfgs:
        raise _error(root, "no ACDC patient folders (patientNNN/Info.cfg) found")
    records = []
    for cfg in cfgs:
        info = _read_info_cfg(cfg)
        pid = cfg.parent.name
        for phase in ("ED", "ES"):
            try:
                frame = int(info[phase])
            except (KeyError, ValueError):
                raise _error(cfg, f"no valid '{phase}: <frame>' line") from None
            img = cfg.parent / f"{pid}_frame{frame:02d}.nii.gz"
            gt = cfg.parent / f"{pid}_frame{frame:02d}_gt.nii.gz"
            if not img.is_file():
                raise _error(img, f"missing (Info.cfg says {phase}: {frame})")
            image, label, affine, spacing = _pair(img, gt if gt.is_file() else None)
            records.append(Record(image, label, spacing, affine, pid, phase, "ACDC", ACDC_CONVENTION,
                                  str(img), {"frame": frame, "group": info.get("Group")}))
    return records


_ACDC_NAME = re.compile(r"(patient\d+)(?:_frame(\d+))?(?:_slice_?(\d+))?")


def load_acdc_h5(root) -> list[Record]:
    """ACDC in the common preprocessed h5 form: one ``.h5`` per volume or slice.

    Each file holds datasets ``image`` and (optionally) ``label``, stored as the
    file has them (often ``(slices, H, W)`` for volumes, ``(H, W)`` for slices).
    Subject and frame come from names like ``patient001_frame01.h5`` or
    ``patient001_frame01_slice_3.h5``. ED/ES cannot be told from the name, so
    ``phase`` is ``None`` (the frame is in ``meta``). Spacing is read from a
    ``spacing`` dataset or attribute when present, else 1 mm per axis. Empty
    label maps are allowed for single slices only.
    """
    import h5py

    root = _require_dir(root)
    files = sorted(p for ext in ("*.h5", "*.hdf5") for p in root.rglob(ext))
    if not files:
        raise _error(root, "no .h5 files found")
    records = []
    for path in files:
        try:
            f = h5py.File(path, "r")
        except OSError as e:
            raise _error(path, f"not an HDF5 file ({_first_line(e)})") from None
        with f:
            if "image" not in f:
                raise _error(path, f"no 'image' dataset (has {sorted(f.keys())}); expected 'image' and 'label'")
            try:
                image = f["image"][()]
                label = f["label"][()] if "label" in f else None
            except (OSError, KeyError, TypeError) as e:
                raise _error(path, f"unreadable dataset ({_first_line(e)})") from None
            spacing = None
            for holder in (f, f.attrs, f["image"].attrs):
                if "spacing" in holder:
                    spacing = np.asarray(holder["spacing"][()] if holder is f else holder["spacing"],
                                         dtype=float).ravel()
                    break
        image = _check_image(path, image)
        if spacing is None:
            spacing = np.ones(image.ndim)
        if len(spacing) < image.ndim:
            raise _error(path, f"spacing {tuple(spacing)} has fewer values than the image has axes {image.shape}")
        spacing = tuple(float(s) for s in spacing[:image.ndim])
        if label is not None:
            label = _check_label(path, label, allow_empty=image.ndim == 2)
            _check_pair(path, path, image, label)
        m = _ACDC_NAME.search(path.stem)
        subject = m.group(1) if m else path.stem
        meta = {}
        if m and m.group(2):
            meta["frame"] = int(m.group(2))
        if m and m.group(3):
            meta["slice"] = int(m.group(3))
        records.append(Record(image, label, spacing, _affine_from_spacing(spacing), subject, None,
                              "ACDC (h5)", ACDC_CONVENTION, str(path), meta))
    return records


_MNMS_NAME = re.compile(r"(ED|ES)_([A-Za-z0-9]+)_sa\.nii\.gz")
_MNMS_TO_ACDC = np.array([0, 3, 2, 1])


def load_mnms(root) -> list[Record]:
    """M&Ms ED/ES volumes, labels remapped to the ACDC convention.

    Layout (as in the development subset; ``get_mnms.py`` converts the official
    4-D release to it)::

        <vendor>/ED_<code>_sa.nii.gz           # (H, W, slices) image
        LABEL_<vendor>/ED_<code>_sa_gt.nii.gz  # M&Ms labels 1 LV, 2 myo, 3 RV

    A label file beside the image is accepted too. Labels are returned with 1
    and 3 swapped (1 RV, 2 myocardium, 3 LV). Subject = the M&Ms code.
    """
    root = _require_dir(root)
    images = sorted(p for p in root.rglob("*_sa.nii.gz") if _MNMS_NAME.fullmatch(p.name))
    if not images:
        raise _error(root, "no M&Ms images (<vendor>/ED_<code>_sa.nii.gz) found")
    records = []
    for img in images:
        phase, code = _MNMS_NAME.fullmatch(img.name).groups()
        gt_name = img.name[: -len(".nii.gz")] + "_gt.nii.gz"
        candidates = [img.parent.parent / f"LABEL_{img.parent.name}" / gt_name, img.parent / gt_name]
        gt = next((c for c in candidates if c.is_file()), None)
        image, label, affine, spacing = _pair(img, gt)
        if label is not None:
            if label.max() > 3:
                raise _error(gt, f"label values {np.unique(label).tolist()} outside the M&Ms set 0-3")
            label = _MNMS_TO_ACDC[label].astype(label.dtype)
        records.append(Record(image, label, spacing, affine, code, phase, "M&Ms", MNMS_CONVENTION,
                              str(img), {"vendor": img.parent.name}))
    return records


def load_nifti_folder(root, image_suffix: str = ".nii.gz", label_suffix: str | None = "_gt.nii.gz", *,
                      subject: str | Callable[[str], str] | None = None, source: str = "NIfTI folder",
                      label_convention: str = "as stored") -> list[Record]:
    """Any folder of NIfTI images, with labels paired by suffix in the same folder.

    ``x/abc.nii.gz`` pairs with ``x/abc_gt.nii.gz`` (default suffixes); files ending
    in ``label_suffix`` are never read as images. The subject id is the name
    without ``image_suffix``, or what ``subject`` makes of it: a regex whose first
    group is the id, or a function. Phase ``"ED"``/``"ES"`` is read from an
    ``_ED``/``ED_`` token in the name when present.
    """
    root = _require_dir(root)
    files = sorted(p for p in root.rglob(f"*{image_suffix}")
                   if not (label_suffix and p.name.endswith(label_suffix)))
    if not files:
        raise _error(root, f"no images ending in {image_suffix!r} found")
    records = []
    for img in files:
        stem = img.name[: -len(image_suffix)]
        gt = img.parent / f"{stem}{label_suffix}" if label_suffix else None
        image, label, affine, spacing = _pair(img, gt if gt is not None and gt.is_file() else None)
        sid = stem
        if callable(subject):
            sid = subject(stem)
        elif subject is not None:
            m = re.search(subject, stem)
            if m is None:
                raise _error(img, f"name does not match the subject pattern {subject!r}")
            sid = m.group(1)
        ph = re.search(r"(?:^|_)(ED|ES)(?:_|$)", stem)
        records.append(Record(image, label, spacing, affine, sid, ph.group(1) if ph else None, source,
                              label_convention, str(img)))
    return records


_L2R_NAME = re.compile(r"(case_\d+)_(exp|insp)\.nii\.gz")


def load_learn2reg_lung(root) -> list[Record]:
    """Learn2Reg 2021 task 2 lung CT (inspiration/expiration pairs).

    Layout::

        imagesTr/case_001_exp.nii.gz, imagesTr/case_001_insp.nii.gz   (also imagesTs/)
        masksTr/case_001_exp.nii.gz,  masksTr/case_001_insp.nii.gz    (also masksTs/)

    Phase is ``"exp"``/``"insp"``; the label is the lung mask as 0/1. Subject =
    ``case_XXX``, so both phases of a case always land in the same split.
    """
    root = _require_dir(root)
    records = []
    for images_dir, masks_dir in (("imagesTr", "masksTr"), ("imagesTs", "masksTs")):
        for img in sorted((root / images_dir).glob("case_*.nii.gz")):
            m = _L2R_NAME.fullmatch(img.name)
            if m is None:
                continue
            mask = root / masks_dir / img.name
            image, label, affine, spacing = _pair(img, mask if mask.is_file() else None)
            if label is not None:
                label = (label > 0).astype(np.int16)
            records.append(Record(image, label, spacing, affine, m.group(1), m.group(2), "Learn2Reg 2021 lung CT",
                                  LUNG_CONVENTION, str(img), {"split": images_dir[-2:]}))
    if not records:
        raise _error(root, "no Learn2Reg lung images (imagesTr/case_XXX_exp.nii.gz) found")
    return records


# ---------------------------------------------------------------- preprocessing (Section 3.2)

def _as_size(size, ndim: int) -> tuple[int, ...]:
    size = (int(size),) * ndim if isinstance(size, (int, np.integer)) else tuple(int(s) for s in size)
    if len(size) != ndim or min(size) < 1:
        raise ValueError(f"size must be an int or {ndim} positive ints for a {ndim}-D image, got {size}")
    return size


def _geometry(shape, size, spacing, isotropic: bool):
    """Resampled shape, padding and per-axis scale (old voxels per new voxel).

    With ``isotropic``, one voxel size is chosen for all axes so that the whole
    physical field of view fits into ``size``: the longest extent fills its axis
    and the others are padded symmetrically. Otherwise every axis is stretched to ``size``.
    """
    ndim = len(shape)
    size = _as_size(size, ndim)
    if not isotropic:
        return size, [(0, 0)] * ndim, [o / n for o, n in zip(shape, size)]
    sp = np.ones(ndim) if spacing is None else np.asarray(spacing, dtype=float)
    if sp.shape != (ndim,) or not (sp > 0).all():
        raise ValueError(f"spacing must be {ndim} positive numbers (mm per axis) for shape {tuple(shape)}, "
                         f"got {spacing}")
    extent = np.asarray(shape) * sp                       # mm
    voxel = float(np.max(extent / np.asarray(size)))      # mm per output voxel
    new = [int(min(s, max(1, round(e / voxel)))) for e, s in zip(extent, size)]
    pads = [((s - n) // 2, s - n - (s - n) // 2) for n, s in zip(new, size)]
    return tuple(new), pads, [o / n for o, n in zip(shape, new)]


def _resize(array: np.ndarray, shape, *, nearest: bool) -> np.ndarray:
    """Resample to ``shape`` (voxel centres aligned, ``align_corners=False``)."""
    if tuple(array.shape) == tuple(shape):
        return array
    if nearest:
        t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64))[None, None]
        out = F.interpolate(t, size=tuple(shape), mode="nearest-exact")
        return out[0, 0].numpy().astype(array.dtype)
    from scipy.ndimage import gaussian_filter

    # anti-aliasing before shrinking (sigma as in skimage.transform.resize)
    sigma = [max(0.0, (o / n - 1) / 2) for o, n in zip(array.shape, shape)]
    if any(sigma):
        array = gaussian_filter(array, sigma, mode="nearest")
    mode = "bilinear" if array.ndim == 2 else "trilinear"
    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
    return F.interpolate(t, size=tuple(shape), mode=mode, align_corners=False)[0, 0].numpy()


def preprocess(image, size, *, spacing=None, threshold=None, isotropic: bool = True,
               percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """Section 3.2: resize and pad to ``size``, threshold, normalise to [0, 1].

    Args:
        image: 2-D ``(H, W)`` or 3-D ``(H, W, D)`` array (no channel axis).
        size: output side (int: square/cubic) or one int per axis, voxels.
        spacing: mm per axis. With ``isotropic=True`` the image is resampled to
            one voxel size so its whole field of view fits ``size`` (longest extent
            fills its axis), then padded symmetrically with background. ``None``
            treats voxels as isotropic (aspect ratio of the array kept).
        threshold: intensity clip: ``None`` clips at ``percentiles`` of the
            image; a number clips below it (e.g. -1000 HU to drop air); a pair
            ``(low, high)`` clips both sides (either may be ``None``).
        isotropic: ``False`` stretches every axis to ``size`` (no padding).

    Returns:
        float32 array of shape ``size`` in [0, 1] (min 0, max 1 unless constant).

    >>> preprocess(np.arange(12.0).reshape(3, 4), 8).shape
    (8, 8)
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim not in (2, 3):
        raise ValueError(f"image must be 2-D or 3-D (no channel axis), got shape {image.shape}")
    new, pads, _ = _geometry(image.shape, size, spacing, isotropic)
    out = _resize(image, new, nearest=False)
    if threshold is None:
        lo, hi = np.percentile(out, percentiles)
    elif np.ndim(threshold) == 0:
        lo, hi = float(threshold), None
    else:
        lo, hi = threshold
    lo = out.min() if lo is None else lo
    hi = out.max() if hi is None else hi
    out = np.pad(out, pads, mode="constant", constant_values=out.min())
    out = np.clip(out, lo, max(lo, hi))
    lo, hi = out.min(), out.max()
    if hi <= lo:
        return np.zeros(out.shape, np.float32)
    return ((out - lo) / (hi - lo)).astype(np.float32)


def preprocess_label(label, size, *, spacing=None, isotropic: bool = True) -> np.ndarray:
    """The geometry of :func:`preprocess` for a label map: nearest neighbour, padded with 0.

    Returns an array of shape ``size`` with the input's integer dtype; no new
    label values appear.
    """
    label = np.asarray(label)
    if label.ndim not in (2, 3):
        raise ValueError(f"label must be 2-D or 3-D (no channel axis), got shape {label.shape}")
    new, pads, _ = _geometry(label.shape, size, spacing, isotropic)
    return np.pad(_resize(label, new, nearest=True), pads, mode="constant", constant_values=0)


def preprocess_record(record: Record, size, *, threshold=None, isotropic: bool = True,
                      percentiles: tuple[float, float] = (0.5, 99.5)) -> Record:
    """:func:`preprocess` a record's image and label; spacing and affine follow the new grid."""
    new, pads, scale = _geometry(record.image.shape, size, record.spacing, isotropic)
    image = preprocess(record.image, size, spacing=record.spacing, threshold=threshold,
                       isotropic=isotropic, percentiles=percentiles)
    label = None
    if record.label is not None:
        label = preprocess_label(record.label, size, spacing=record.spacing, isotropic=isotropic)
    # new voxel j on axis i sits at old continuous index (j - pad + 0.5) * scale - 0.5
    T = np.eye(4)
    for i, ((lo, _), f) in enumerate(zip(pads, scale)):
        T[i, i] = f
        T[i, 3] = (0.5 - lo) * f - 0.5
    spacing = tuple(s * f for s, f in zip(record.spacing, scale))
    return replace(record, image=image, label=label, spacing=spacing, affine=record.affine @ T,
                   meta={**record.meta, "preprocessed": tuple(image.shape)})


# ---------------------------------------------------------------- slices and splits

def slices(records: Sequence[Record], axis: int = -1, skip_empty: bool = True) -> list[Record]:
    """Cut 3-D records into 2-D slice records along ``axis`` (subject, phase kept).

    ``skip_empty`` drops slices whose label map has no foreground (records
    without labels: slices of constant intensity). 2-D records pass through.
    ``meta["slice"]`` holds the index; the affine maps the 2-D index to the
    slice's position in the volume.
    """
    out = []
    for rec in records:
        if rec.image.ndim == 2:
            out.append(rec)
            continue
        ax = axis % 3
        keep = [i for i in range(3) if i != ax]
        for k in range(rec.image.shape[ax]):
            image = np.take(rec.image, k, axis=ax)
            label = None if rec.label is None else np.take(rec.label, k, axis=ax)
            if skip_empty and (not label.any() if label is not None else image.min() == image.max()):
                continue
            A = rec.affine
            affine = np.eye(4)
            affine[:, 0], affine[:, 1], affine[:, 2] = A[:, keep[0]], A[:, keep[1]], A[:, ax]
            affine[:, 3] = A[:, 3] + k * A[:, ax]
            out.append(replace(rec, image=np.ascontiguousarray(image),
                               label=None if label is None else np.ascontiguousarray(label),
                               spacing=tuple(rec.spacing[i] for i in keep), affine=affine,
                               meta={**rec.meta, "slice": k, "slice_axis": ax}))
    return out


def subject_split(records: Sequence[Record], fractions=(0.6, 0.2, 0.2), seed: int = 0) -> dict[str, list[Record]]:
    """Split records into ``train``/``val``/``test`` by subject id.

    All records of one subject land in the same split. Subjects are sorted and
    shuffled with ``numpy.random.default_rng(seed)``, so the split depends only on
    the set of subject ids and the seed (not on record order). Every split with a
    non-zero fraction gets at least one subject when there are enough subjects.
    Records keep their input order inside each split.
    """
    fr = np.asarray(fractions, dtype=float)
    if fr.shape != (3,) or (fr < 0).any() or abs(fr.sum() - 1) > 1e-6:
        raise ValueError(f"fractions must be 3 non-negative numbers summing to 1 (train, val, test), got {fractions}")
    subjects = sorted({r.subject for r in records})
    n = len(subjects)
    order = [subjects[i] for i in np.random.default_rng(seed).permutation(n)]
    counts = np.floor(fr * n).astype(int)
    rest = fr * n - counts                           # largest remainders get the leftover subjects
    for i in np.argsort(-rest, kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    if n >= int((fr > 0).sum()):
        for i in np.flatnonzero((fr > 0) & (counts == 0)):   # no empty split that was asked for
            counts[int(np.argmax(counts))] -= 1
            counts[i] = 1
    which = {}
    for k, s in enumerate(order):
        which[s] = 0 if k < counts[0] else 1 if k < counts[0] + counts[1] else 2
    names = ("train", "val", "test")
    out = {name: [] for name in names}
    for r in records:
        out[names[which[r.subject]]].append(r)
    return out


# ---------------------------------------------------------------- augmentation (Section 3.2)

def _fresh_generator() -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(int.from_bytes(os.urandom(8), "little") >> 1)   # leaves the global RNG alone
    return g


def _rotation(angle: torch.Tensor, axis: torch.Tensor, ndim: int) -> torch.Tensor:
    """(B, ndim, ndim) rotations; angle (B,) radians; axis (B,) sign in 2-D, (B, 3) unit vector in 3-D."""
    c, s = torch.cos(angle), torch.sin(angle)
    if ndim == 2:
        s = s * axis
        return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    x, y, z = axis.unbind(-1)
    zero = torch.zeros_like(x)
    K = torch.stack([torch.stack([zero, -z, y], -1),
                     torch.stack([z, zero, -x], -1),
                     torch.stack([-y, x, zero], -1)], -2)                 # (B, 3, 3) cross-product matrix
    eye = torch.eye(3, dtype=angle.dtype).expand_as(K)
    return eye + s[:, None, None] * K + (1 - c)[:, None, None] * (K @ K)   # Rodrigues


def augment(image: torch.Tensor, label: torch.Tensor | None = None, generator: torch.Generator | None = None,
            rotate: float = 180.0, translate: float = 1 / 8, flip: float = 0.5,
            crop: tuple[float, float] | None = (0.6, 1.0)):
    """Training-time augmentation of Section 3.2, one random affine map per batch item.

    Per item: rotation by ``U(0, rotate)`` degrees about a random axis (2-D: a
    random sense; 3-D: a uniform direction), a flip of each axis with
    probability ``flip``, a crop of ratio ``U(*crop)`` of every side at a random
    position (zoomed back to the full size), and a translation of
    ``U(-translate, translate)`` of the size along each axis. All maps act about
    the image centre and are combined into one displacement field applied with
    :func:`drdm.spatial.warp` (one resampling): linear for the image (zeros
    outside), ``mode="label"`` for the label map (no new label values).

    Args:
        image: ``(B, C, *S)`` float, 2-D or 3-D.
        label: ``(B, C_l, *S)`` integer label map, or ``None``.
        generator: the only source of randomness (same seed -> same output).
            ``None`` uses a fresh, unseeded generator; the global RNG is never used.

    Returns:
        ``(image, label)`` with the input shapes and dtypes (label ``None`` if not given).

    >>> g = torch.Generator().manual_seed(0)
    >>> img, lab = augment(torch.rand(2, 1, 16, 16), torch.zeros(2, 1, 16, 16, dtype=torch.long), g)
    >>> img.shape, lab.dtype
    (torch.Size([2, 1, 16, 16]), torch.int64)
    """
    if not isinstance(image, torch.Tensor) or image.dim() not in (4, 5) or not image.is_floating_point():
        raise ValueError("image must be a float tensor (B, C, H, W) or (B, C, H, W, D), got "
                         f"{type(image).__name__} {tuple(getattr(image, 'shape', ()))}")
    B, ndim, S = image.shape[0], image.dim() - 2, image.shape[2:]
    if label is not None and (label.shape[0] != B or label.shape[2:] != S):
        raise ValueError(f"label shape {tuple(label.shape)} does not match image shape {tuple(image.shape)}")
    lo, hi = (1.0, 1.0) if crop is None else (float(crop[0]), float(crop[1]))
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"crop must be (low, high) with 0 < low <= high <= 1, got {crop}")
    g = generator if generator is not None else _fresh_generator()
    dt = torch.float64

    # all draws on the CPU generator, in a fixed order
    angle = torch.rand(B, generator=g, dtype=dt) * math.radians(rotate)
    axis = (torch.where(torch.rand(B, generator=g, dtype=dt) < 0.5, -1.0, 1.0).to(dt) if ndim == 2
            else torch.nn.functional.normalize(torch.randn(B, 3, generator=g, dtype=dt), dim=1))
    flips = torch.rand(B, ndim, generator=g, dtype=dt) < flip
    ratio = lo + (hi - lo) * torch.rand(B, generator=g, dtype=dt)
    box = torch.rand(B, ndim, generator=g, dtype=dt) * 2 - 1
    shift = torch.rand(B, ndim, generator=g, dtype=dt) * 2 - 1

    size = torch.tensor([float(s) for s in S], dtype=dt)
    centre = (size - 1) / 2
    sign = torch.where(flips, -1.0, 1.0).to(dt)
    M = _rotation(angle, axis, ndim) * sign[:, None, :] * ratio[:, None, None]   # (B, ndim, ndim)
    offset = box * (1 - ratio[:, None]) * centre + shift * translate * size      # (B, ndim) voxels
    # pull-back map p(x) = centre + M (x - centre) + offset; displacement u = p(x) - x
    A = (M - torch.eye(ndim, dtype=dt)).to(device=image.device, dtype=image.dtype)
    b = offset.to(device=image.device, dtype=image.dtype)
    x = torch.stack(torch.meshgrid(*[torch.arange(s, device=image.device, dtype=image.dtype) for s in S],
                                   indexing="ij"))                               # (ndim, *S)
    x = x - centre.to(device=image.device, dtype=image.dtype).view(ndim, *[1] * ndim)
    ddf = torch.einsum("bij,j...->bi...", A, x) + b.view(B, ndim, *[1] * ndim)  # (B, ndim, *S)
    out = warp(image, ddf, mode="linear", padding_mode="zeros")
    return out, (None if label is None else warp(label, ddf, mode="label"))
