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

__all__ = ["ACDC_GROUPS", "SSL4MIS_PHASES", "acdc_group", "acdc_name", "load_acdc", "load_acdc_h5", "load_dataset", "DATASET_LOADERS", "load_mnms", "load_nifti_folder", "load_learn2reg_lung", "MNMS_TO_ACDC"]


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


#: ACDC's training set is ordered by diagnosis, 20 subjects each (Bernard et al., 2018)
ACDC_GROUPS = (("DCM", 1, 20), ("HCM", 21, 40), ("MINF", 41, 60), ("NOR", 61, 80), ("RV", 81, 100))
#: the SSL4MIS h5 form renames ACDC's frames: frame01 is end-diastole, frame02 end-systole
SSL4MIS_PHASES = {1: "ED", 2: "ES"}


def acdc_group(subject: str) -> str | None:
    """The disease group of an ACDC training subject from its number (``"patient045"`` -> ``"MINF"``):
    dilated (DCM) or hypertrophic (HCM) cardiomyopathy, previous infarction (MINF), normal (NOR),
    abnormal right ventricle (RV); ``None`` outside 1-100."""
    m = re.search(r"(\d+)", subject)
    n = int(m.group(1)) if m else -1
    return next((g for g, lo, hi in ACDC_GROUPS if lo <= n <= hi), None)


def acdc_name(path) -> tuple[str, int | None, int | None]:
    """``(subject, frame, slice number)`` from an ACDC file name such as
    ``patient001_frame01_slice_3.h5`` (``None`` for a part the name lacks; the subject falls back
    to the file's stem)."""
    stem = Path(path).name.split(".")[0]
    m = _ACDC_NAME.search(stem)
    if not m:
        return stem, None, None
    return m.group(1), (int(m.group(2)) if m.group(2) else None), (int(m.group(3)) if m.group(3) else None)


def _read_h5(path: Path):
    import h5py
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
                spacing = np.asarray(holder["spacing"][()] if holder is f else holder["spacing"], dtype=float).ravel()
                break
    image = check_image(path, image)
    if label is not None:
        label = check_label(path, label, allow_empty=image.ndim == 2)
        check_pair(path, path, image, label)
    if spacing is None:
        spacing = np.ones(image.ndim)
    if len(spacing) < image.ndim:
        raise data_error(path, f"spacing {tuple(spacing)} has fewer values than the image has axes {image.shape}")
    return image, label, tuple(float(v) for v in spacing[:image.ndim])


def load_acdc_h5(root) -> list[Record]:
    """ACDC in the SSL4MIS h5 form: one record per (subject, frame), a volume ``(H, W, slices)``.

    Either form, or both, anywhere under ``root``:

    * the **volume form**, ``patient001_frame01.h5`` with ``image`` and ``label`` stored
      ``(slices, H, W)``: the slice axis is moved last, as in the NIfTI layout (and the spacing
      with it);
    * the **slice form**, ``patient001_frame01_slice_S.h5`` with ``(H, W)`` datasets: a frame's
      slices are restacked in order of ``S`` (base to apex as stored), which rebuilds exactly the
      volume the volume form holds (SSL4MIS scales intensities per volume, not per slice).

    Both forms of one frame in one folder are refused (which would be the data?). Phase: frame01
    is end-diastole and frame02 end-systole (:data:`SSL4MIS_PHASES`, the SSL4MIS renaming); any
    other frame number keeps ``phase=None``. ``meta``: ``frame``, ``group`` (:func:`acdc_group`),
    ``slices`` (the slice numbers of a restacked frame). No spacing is stored in this form: a
    ``spacing`` dataset or attribute is used when present, else 1 mm per axis.
    """
    root = _require_dir(root)
    files = sorted(p for ext in ("*.h5", "*.hdf5") for p in root.rglob(ext))
    if not files:
        raise data_error(root, "no .h5 files found")
    volumes, stacks = {}, {}
    for path in files:
        subject, frame, number = acdc_name(path)
        if number is not None:
            stacks.setdefault((subject, frame), []).append((number, path))
        else:
            volumes[(subject, frame)] = path
    records = []
    for key in sorted(set(volumes) | set(stacks), key=lambda k: (k[0], k[1] or 0)):
        subject, frame = key
        if key in volumes and key in stacks:
            raise data_error(volumes[key], f"both the volume and the slice form of {subject} frame {frame} are here; "
                                           "keep one")
        meta = {"frame": frame, "group": acdc_group(subject)}
        if key in volumes:
            path = volumes[key]
            image, label, spacing = _read_h5(path)
            if image.ndim == 3:                       # (slices, H, W) -> (H, W, slices)
                image = np.ascontiguousarray(np.moveaxis(image, 0, -1))
                label = None if label is None else np.ascontiguousarray(np.moveaxis(label, 0, -1))
                spacing = spacing[1:] + spacing[:1]
        else:
            parts = sorted(stacks[key])
            numbers = [k for k, _ in parts]
            if len(set(numbers)) != len(numbers):
                raise data_error(parts[0][1], f"{subject} frame {frame}: slice numbers repeat")
            read = [_read_h5(p) for _, p in parts]
            shapes = {r[0].shape for r in read}
            if len(shapes) != 1 or read[0][0].ndim != 2:
                raise data_error(parts[0][1], f"{subject} frame {frame}: slices of different shapes {sorted(shapes)}")
            path = parts[0][1]
            image = np.stack([r[0] for r in read], -1)
            label = None if any(r[1] is None for r in read) else np.stack([r[1] for r in read], -1)
            if label is not None and not label.any():
                raise data_error(path, f"{subject} frame {frame}: every slice's label map is empty")
            spacing = read[0][2] + (1.0,)
            meta["slices"] = numbers
        records.append(Record(image, label, spacing, affine_from_spacing(spacing), subject,
                              SSL4MIS_PHASES.get(frame), "ACDC (h5)", ACDC_CONVENTION, str(path), meta))
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



#: datasets loaded by name (:func:`load_dataset`); anything else is a folder of NIfTI pairs
DATASET_LOADERS = {"mnms": load_mnms, "acdc": load_acdc, "acdc-h5": load_acdc_h5}


def load_dataset(name: str, root=None) -> list[Record]:
    """Labelled records of a dataset by name: ``mnms``, ``acdc`` or ``acdc-h5`` from ``root``
    (:data:`DATASET_LOADERS`), or, for any other ``name``, the folder ``name`` of ``X.nii.gz``
    images with ``X_gt.nii.gz`` labels (:func:`load_nifti_folder`; ``root`` must then be None).
    Every problem is a one-line :class:`~drdm.data.records.DataError`."""
    if name in DATASET_LOADERS:
        if not root:
            raise data_error(name, f"the {name} dataset needs its root folder")
        folder, load = Path(root), DATASET_LOADERS[name]
    else:
        if root:
            raise data_error(name, f"a root folder is only for {', '.join(DATASET_LOADERS)}; give the NIfTI "
                                   "folder itself")
        folder, load = Path(name), load_nifti_folder
    if not folder.is_dir():
        raise data_error(folder, "no such data folder")
    try:
        records = load(folder)
    except OSError as e:
        raise data_error(folder, f"cannot read ({first_line(e)})") from None
    if not records:
        raise data_error(folder, "no labelled images found")
    return records
