"""Labelled 2-D slices on one protocol grid: what the segmentation experiments train and test on.

:func:`prepare_slices` cuts every labelled slice of a list of :class:`~drdm.data.records.Record`
to one grid: a centre crop (or pad) of ``crop`` pixels, resized to ``size`` (image: antialiased
bilinear; label: one-hot channels resized the same way, then arg-max, so thin structures are not
dropped by nearest-neighbour decimation), intensities clipped to per-slice percentiles and scaled to
[0, 1]. Each :class:`Slice` keeps its subject, phase, group and slice index.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Slice", "prepare_slices"]


@dataclass(frozen=True, eq=False)
class Slice:
    """One labelled 2-D slice on the protocol's grid.

    Attributes:
        subject, phase: identity. group: what a split stratifies by (ACDC: the diagnosis group,
            M&Ms: the vendor; ``"?"`` when the data do not say).
        index: slice index in its volume (0 for 2-D records).
        image: ``(size, size)`` float32 in [0, 1]. label: ``(size, size)`` int64, ACDC values.
    """
    subject: str
    group: str
    phase: str
    index: int
    image: np.ndarray
    label: np.ndarray

    @property
    def name(self) -> str:
        return f"{self.subject}_{self.phase}_{self.index:02d}"

    @property
    def digest(self) -> str:
        """sha256 (16 hex digits) of the pixels and the label map: what a cached copy was made from."""
        h = hashlib.sha256(np.ascontiguousarray(self.image, np.float32).tobytes())
        h.update(np.ascontiguousarray(self.label, np.int64).tobytes())
        return h.hexdigest()[:16]


def _crop_or_pad(a: np.ndarray, crop: int, fill) -> np.ndarray:
    """Centre crop (or pad with ``fill``) both axes of a 2-D array to ``crop``."""
    out = np.full((crop, crop), fill, dtype=a.dtype)
    src, dst = [], []
    for n in a.shape:
        if n >= crop:
            o = (n - crop) // 2
            src.append(slice(o, o + crop))
            dst.append(slice(0, crop))
        else:
            o = (crop - n) // 2
            src.append(slice(0, n))
            dst.append(slice(o, o + n))
    out[tuple(dst)] = a[tuple(src)]
    return out


def prepare_slices(records, *, crop: int = 160, size: int = 96, percentiles=(1.0, 99.0),
                   n_classes: int = 4) -> list[Slice]:
    """Labelled 2-D slices of ``records`` (:class:`drdm.data.Record`, 2-D or 3-D) on one grid.

    Slices without any foreground label are dropped. The crop is taken around the
    image centre on the stored grid (the M&Ms subset's headers say 1 mm, its true
    spacing is lost, so there is no spacing to resample to).
    """
    from .preprocessing import slices as cut
    lo_p, hi_p = percentiles
    if not 0 <= lo_p < hi_p <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= lo < hi <= 100, got {percentiles}")
    out = []
    for r in cut(list(records)):
        if r.label is None:
            raise ValueError(f"subject {r.subject}: a slice without a label map")
        lab = np.asarray(r.label).astype(np.int64)
        if lab.max() >= n_classes or lab.min() < 0:
            raise ValueError(f"subject {r.subject}: label values {np.unique(lab).tolist()} outside 0..{n_classes - 1}")
        img = np.asarray(r.image, np.float32)
        lo, hi = np.percentile(img, [lo_p, hi_p])
        img = (np.clip(img, lo, hi) - lo) / max(float(hi - lo), 1e-6)
        img, lab = _crop_or_pad(img, crop, 0.0), _crop_or_pad(lab, crop, 0)
        x = torch.from_numpy(img)[None, None]
        onehot = F.one_hot(torch.from_numpy(lab), n_classes).movedim(-1, 0)[None].float()
        if crop != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            onehot = F.interpolate(onehot, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        lab = onehot[0].argmax(0).numpy()
        if not lab.any():
            continue
        out.append(Slice(r.subject, str(r.meta.get("group") or r.meta.get("vendor") or "?"), str(r.phase or "-"), int(r.meta.get("slice", 0)),
                         x[0, 0].clamp(0, 1).numpy().astype(np.float32), lab.astype(np.int64)))
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})[:3]
        raise ValueError(f"slices {dup} share a name (subject, phase, slice index): give 2-D records a "
                         "distinct meta['slice'] or phase")
    return out
