"""Dataset loaders: ACDC (NIfTI and h5), M&Ms, Learn2Reg lung CT, any folder of NIfTI files.

Every loader returns a list of :class:`~drdm.data.records.Record` (one image
volume or slice, its optional label map, spacing, affine and provenance).
Loader errors are :class:`~drdm.data.records.DataError` with a one-line message
``"<file>: <reason>"``. M&Ms stores 1 LV, 2 myocardium, 3 RV; :func:`load_mnms`
swaps 1 and 3 (:data:`MNMS_TO_ACDC`) and says so in ``Record.label_convention``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import numpy as np

from .nifti import affine_from_spacing, load_nifti
from .records import (ACDC_CONVENTION, LUNG_CONVENTION, MNMS_CONVENTION, Record, check_image, check_label,
                      check_pair, data_error, first_line)

__all__ = ["load_acdc", "load_acdc_h5", "load_mnms", "load_nifti_folder", "load_learn2reg_lung", "MNMS_TO_ACDC"]


def _require_dir(root) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise data_error(root, "no such directory")
    return root


def _pair(image_path: Path, label_path: Path | None, *, allow_empty: bool = False):
    image, affine, spacing = load_nifti(image_path)
    label = None
    if label_path is not None:
        label, _, _ = load_nifti(label_path, label=True, allow_empty=allow_empty)
        check_pair(image_path, label_path, image, label)
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
        raise data_error(root, "no ACDC patient folders (patientNNN/Info.cfg) found")
    records = []
    for cfg in cfgs:
        info = _read_info_cfg(cfg)
        pid = cfg.parent.name
        for phase in ("ED", "ES"):
            try:
                frame = int(info[phase])
            except (KeyError, ValueError):
                raise data_error(cfg, f"no valid '{phase}: <frame>' line") from None
            img = cfg.parent / f"{pid}_frame{frame:02d}.nii.gz"
            gt = cfg.parent / f"{pid}_frame{frame:02d}_gt.nii.gz"
            if not img.is_file():
                raise data_error(img, f"missing (Info.cfg says {phase}: {frame})")
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
        raise data_error(root, "no .h5 files found")
    records = []
    for path in files:
        try:
            f = h5py.File(path, "r")
        except OSError as e:
            raise data_error(path, f"not an HDF5 file ({first_line(e)})") from None
        with f:
            if "image" not in f:
                raise data_error(path, f"no 'image' dataset (has {sorted(f.keys())}); expected 'image' and 'label'")
            try:
                image = f["image"][()]
                label = f["label"][()] if "label" in f else None
            except (OSError, KeyError, TypeError) as e:
                raise data_error(path, f"unreadable dataset ({first_line(e)})") from None
            spacing = None
            for holder in (f, f.attrs, f["image"].attrs):
                if "spacing" in holder:
                    spacing = np.asarray(holder["spacing"][()] if holder is f else holder["spacing"],
                                         dtype=float).ravel()
                    break
        image = check_image(path, image)
        if spacing is None:
            spacing = np.ones(image.ndim)
        if len(spacing) < image.ndim:
            raise data_error(path, f"spacing {tuple(spacing)} has fewer values than the image has axes {image.shape}")
        spacing = tuple(float(s) for s in spacing[:image.ndim])
        if label is not None:
            label = check_label(path, label, allow_empty=image.ndim == 2)
            check_pair(path, path, image, label)
        m = _ACDC_NAME.search(path.stem)
        subject = m.group(1) if m else path.stem
        meta = {}
        if m and m.group(2):
            meta["frame"] = int(m.group(2))
        if m and m.group(3):
            meta["slice"] = int(m.group(3))
        records.append(Record(image, label, spacing, affine_from_spacing(spacing), subject, None,
                              "ACDC (h5)", ACDC_CONVENTION, str(path), meta))
    return records


_MNMS_NAME = re.compile(r"(ED|ES)_([A-Za-z0-9]+)_sa\.nii\.gz")
MNMS_TO_ACDC = np.array([0, 3, 2, 1])


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
        raise data_error(root, "no M&Ms images (<vendor>/ED_<code>_sa.nii.gz) found")
    records = []
    for img in images:
        phase, code = _MNMS_NAME.fullmatch(img.name).groups()
        gt_name = img.name[: -len(".nii.gz")] + "_gt.nii.gz"
        candidates = [img.parent.parent / f"LABEL_{img.parent.name}" / gt_name, img.parent / gt_name]
        gt = next((c for c in candidates if c.is_file()), None)
        image, label, affine, spacing = _pair(img, gt)
        if label is not None:
            if label.max() > 3:
                raise data_error(gt, f"label values {np.unique(label).tolist()} outside the M&Ms set 0-3")
            label = MNMS_TO_ACDC[label].astype(label.dtype)
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
        raise data_error(root, f"no images ending in {image_suffix!r} found")
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
                raise data_error(img, f"name does not match the subject pattern {subject!r}")
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
        raise data_error(root, "no Learn2Reg lung images (imagesTr/case_XXX_exp.nii.gz) found")
    return records

