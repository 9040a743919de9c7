"""Section 3.2 preprocessing (resize and pad, threshold, normalise), 2-D slices, subject splits.

Arrays are numpy, spatial only (no channel axis); :func:`preprocess_record`
keeps a :class:`~drdm.data.records.Record`'s spacing and affine in step with the new grid.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .records import Record

__all__ = ["preprocess", "preprocess_label", "preprocess_record", "geometry", "slices", "subject_split", "stratified_split"]


# ---------------------------------------------------------------- preprocessing (Section 3.2)

def _as_size(size, ndim: int) -> tuple[int, ...]:
    size = (int(size),) * ndim if isinstance(size, (int, np.integer)) else tuple(int(s) for s in size)
    if len(size) != ndim or min(size) < 1:
        raise ValueError(f"size must be an int or {ndim} positive ints for a {ndim}-D image, got {size}")
    return size


def geometry(shape, size, spacing, isotropic: bool):
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
    new, pads, _ = geometry(image.shape, size, spacing, isotropic)
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
    new, pads, _ = geometry(label.shape, size, spacing, isotropic)
    return np.pad(_resize(label, new, nearest=True), pads, mode="constant", constant_values=0)


def preprocess_record(record: Record, size, *, threshold=None, isotropic: bool = True,
                      percentiles: tuple[float, float] = (0.5, 99.5)) -> Record:
    """:func:`preprocess` a record's image and label; spacing and affine follow the new grid."""
    new, pads, scale = geometry(record.image.shape, size, record.spacing, isotropic)
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



def stratified_split(groups: dict, *, n_test: int = 4, n_val: int = 1, draws: int = 3, per_draw: int = 1,
                     extra: int = 1, seed: int = 0) -> dict:
    """A subject split stratified by group, with nested labelled sets (the ACDC protocol of chapter 4).

    Args:
        groups: ``{subject: group}`` (e.g. ACDC's five diagnoses, :func:`drdm.data.acdc_group`).
        n_test, n_val: subjects per group in the test and validation sets.
        draws, per_draw: disjoint labelled draws of ``per_draw`` subjects per group each (5 subjects
            for ACDC's five groups), taken from the training pool.
        extra: subjects per group added to the union of the draws to make the large labelled set
            (20 for ACDC: the three draws plus one more per group), so its copies reuse theirs.
        seed: each group's subjects (sorted) are shuffled by ``numpy.random.default_rng(seed)``.

    Returns:
        ``{"test", "val", "pool"}`` (sorted subject lists; ``pool``: every training subject),
        ``"draws"`` (``draws`` lists) and ``"large"`` (the union of the draws plus ``extra`` per group).
        No subject is in two of test / val / pool; the draws are disjoint and inside the pool.
    """
    by = {}
    for subject, group in groups.items():
        if group is None:
            raise ValueError(f"subject {subject} has no group")
        by.setdefault(group, []).append(subject)
    need = n_test + n_val + draws * per_draw + extra
    short = {g: len(v) for g, v in by.items() if len(v) < need}
    if short:
        raise ValueError(f"groups {short} have fewer than the {need} subjects the split needs per group")
    rng = np.random.default_rng(seed)
    out = {"test": [], "val": [], "pool": [], "draws": [[] for _ in range(draws)], "large": []}
    for g in sorted(by):
        order = [sorted(by[g])[i] for i in rng.permutation(len(by[g]))]
        out["test"] += order[:n_test]
        out["val"] += order[n_test:n_test + n_val]
        pool = order[n_test + n_val:]
        out["pool"] += pool
        for d in range(draws):
            out["draws"][d] += pool[d * per_draw:(d + 1) * per_draw]
        out["large"] += pool[:draws * per_draw + extra]
    return {k: (sorted(v) if k != "draws" else [sorted(d) for d in v]) for k, v in out.items()}
