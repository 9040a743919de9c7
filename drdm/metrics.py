"""Evaluation metrics of Tables 2 and 3: overlap, surface distances, folding.

All functions take integer label maps as numpy arrays or torch tensors (any
device; they are copied to the CPU). Overlap metrics are per label value.

**Pinned definitions** (libraries disagree on ASD and HD95; these are ours):

* Surface of a mask: the mask minus its binary erosion with the full-connectivity
  structuring element (8-neighbourhood in 2-D, 26 in 3-D); voxels outside the
  array count as background, so a mask touching the border has a surface there.
* Directed distances A -> B: for every surface voxel of A, the Euclidean distance
  to the nearest surface voxel of B (``scipy.ndimage.distance_transform_edt``
  with ``sampling=spacing``), in voxels, or in mm when ``spacing`` is given.
* ASD (average symmetric surface distance): the mean of all A -> B and B -> A
  distances pooled (MONAI's ``symmetric=True``; DeepMind's surface-distance,
  which weights by surfel area, gives 6-17 % lower values on the same masks).
* HD: the largest of all pooled distances. HD95 (``percentile=95``): the larger
  of the two directed 95th percentiles (MONAI's definition; HD = HD100).

**Edge cases**: a 0/0 ratio is 1.0 when both masks are empty (nothing to find,
nothing found) and 0.0 otherwise (``zero_division=0``). Distances: both masks
empty -> 0.0; exactly one empty -> ``inf`` (callers that average must decide how
to treat it; :mod:`drdm.tasks` replaces ``inf`` by the image diagonal).

Arrays for the surface metrics are spatial ``(H, W)`` / ``(H, W, D)``, or
``(1, 1, H, W[, D])`` (batch and channel of size one are dropped).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
from scipy import ndimage

__all__ = [
    "dice", "sensitivity", "precision", "confusion",
    "surface", "surface_distances", "average_symmetric_surface_distance", "hausdorff_distance",
    "surface_metrics", "label_metrics", "negative_jacobian_pct", "wall_thickness",
]


# ---------------------------------------------------------------- inputs

def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _pair(pred, target) -> tuple[np.ndarray, np.ndarray]:
    p, t = _np(pred), _np(target)
    if p.shape != t.shape:
        raise ValueError(f"pred and target shapes differ: {p.shape} vs {t.shape}")
    for name, a in (("pred", p), ("target", t)):
        if a.dtype.kind == "f" and not np.array_equal(a, np.round(a)):
            raise ValueError(f"{name} must be an integer label map (got non-integer floats)")
    return p, t


def _labels(p: np.ndarray, t: np.ndarray, labels) -> tuple[list[int], bool]:
    """(label list, whether a single int was asked for)."""
    if labels is None:
        found = np.union1d(np.unique(p), np.unique(t))
        return [int(v) for v in found if v != 0], False
    if isinstance(labels, (int, np.integer)):
        return [int(labels)], True
    return [int(v) for v in labels], False


def _ratio(num: int, den: int, both_empty: bool) -> float:
    if den == 0:
        return 1.0 if both_empty else 0.0
    return num / den


def confusion(pred, target, label: int) -> tuple[int, int, int]:
    """``(TP, FP, FN)`` voxel counts of one label value."""
    p, t = _pair(pred, target)
    a, b = p == label, t == label
    tp = int(np.count_nonzero(a & b))
    return tp, int(np.count_nonzero(a)) - tp, int(np.count_nonzero(b)) - tp


def _per_label(fn, pred, target, labels):
    p, t = _pair(pred, target)
    labs, single = _labels(p, t, labels)
    out = {}
    for v in labs:
        a, b = p == v, t == v
        tp = int(np.count_nonzero(a & b))
        na, nb = int(np.count_nonzero(a)), int(np.count_nonzero(b))
        out[v] = fn(tp, na, nb, na == 0 and nb == 0)
    return out[labs[0]] if single else out


def dice(pred, target, labels=None):
    """Dice similarity coefficient ``2|A and B| / (|A| + |B|)`` per label.

    Args:
        pred, target: integer label maps of one shape (numpy or torch).
        labels: an int (returns a float), a sequence (returns ``{label: float}``)
            or ``None`` (every non-zero value present in either map).

    >>> a = np.zeros((4, 4), int); a[:2] = 1
    >>> b = np.zeros((4, 4), int); b[1:3] = 1
    >>> dice(a, b, 1)
    0.5
    """
    return _per_label(lambda tp, na, nb, e: _ratio(2 * tp, na + nb, e), pred, target, labels)


def sensitivity(pred, target, labels=None):
    """Sensitivity (recall) ``TP / (TP + FN) = |A and B| / |B|`` per label (``B`` = target)."""
    return _per_label(lambda tp, na, nb, e: _ratio(tp, nb, e), pred, target, labels)


def precision(pred, target, labels=None):
    """Precision ``TP / (TP + FP) = |A and B| / |A|`` per label (``A`` = prediction)."""
    return _per_label(lambda tp, na, nb, e: _ratio(tp, na, e), pred, target, labels)


# ---------------------------------------------------------------- surfaces

def _spatial(x: np.ndarray) -> np.ndarray:
    if x.ndim in (4, 5):
        if x.shape[0] != 1 or x.shape[1] != 1:
            raise ValueError(f"expected a spatial mask (H, W[, D]) or (1, 1, H, W[, D]); got {x.shape}")
        x = x[0, 0]
    if x.ndim not in (2, 3):
        raise ValueError(f"expected a 2-D or 3-D mask, got shape {x.shape}")
    return x


def _spacing(spacing, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    sp = tuple(float(s) for s in np.broadcast_to(np.asarray(spacing, float), (ndim,)))
    if not all(s > 0 for s in sp):
        raise ValueError(f"spacing must be positive, got {spacing}")
    return sp


def surface(mask) -> np.ndarray:
    """Boolean surface: ``mask`` minus its erosion (full connectivity, outside = background).

    >>> int(surface(np.ones((3, 3), bool)).sum())    # all but the centre of a 3x3 square
    8
    """
    m = _spatial(_np(mask)).astype(bool)
    if not m.any():
        return m
    structure = ndimage.generate_binary_structure(m.ndim, m.ndim)
    return m & ~ndimage.binary_erosion(m, structure=structure, border_value=0)


def surface_distances(a, b, spacing=None) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances ``(A -> B, B -> A)`` as 1-D float arrays.

    ``a`` and ``b`` are boolean masks (or label maps: non-zero is foreground) of one
    shape. Units: voxels, or mm when ``spacing`` (one value per axis) is given.
    If one mask is empty, the other's distances are ``inf`` and its own are empty.
    """
    A, B = _spatial(_np(a)).astype(bool), _spatial(_np(b)).astype(bool)
    if A.shape != B.shape:
        raise ValueError(f"mask shapes differ: {A.shape} vs {B.shape}")
    sp = _spacing(spacing, A.ndim)
    sa, sb = surface(A), surface(B)
    if not sa.any() or not sb.any():
        return (np.full(int(sa.sum()), np.inf), np.full(int(sb.sum()), np.inf))
    to_b = ndimage.distance_transform_edt(~sb, sampling=sp)
    to_a = ndimage.distance_transform_edt(~sa, sampling=sp)
    return to_b[sa].astype(np.float64), to_a[sb].astype(np.float64)


def _asd(d_ab: np.ndarray, d_ba: np.ndarray) -> float:
    n = d_ab.size + d_ba.size
    if n == 0:
        return 0.0
    if not (d_ab.size and d_ba.size):
        return float("inf")
    return float((d_ab.sum() + d_ba.sum()) / n)


def _hd(d_ab: np.ndarray, d_ba: np.ndarray, percentile: float | None) -> float:
    if d_ab.size + d_ba.size == 0:
        return 0.0
    if not (d_ab.size and d_ba.size):
        return float("inf")
    if percentile is None or percentile >= 100:
        return float(max(d_ab.max(), d_ba.max()))
    return float(max(np.percentile(d_ab, percentile), np.percentile(d_ba, percentile)))


def average_symmetric_surface_distance(a, b, spacing=None) -> float:
    """ASD: mean of the pooled A -> B and B -> A surface distances (module docstring).

    >>> a = np.zeros((8, 8), bool); a[2:6, 2:6] = True
    >>> float(average_symmetric_surface_distance(a, a))
    0.0
    """
    return _asd(*surface_distances(a, b, spacing))


def hausdorff_distance(a, b, spacing=None, percentile: float | None = None) -> float:
    """Hausdorff distance: the largest surface distance in either direction.

    ``percentile=95`` gives HD95, the larger of the two directed 95th percentiles.
    """
    return _hd(*surface_distances(a, b, spacing), percentile)


def surface_metrics(a, b, spacing=None, percentile: float = 95) -> dict[str, float]:
    """``{"asd", "hd", "hd95"}`` from one distance computation (``hd95`` uses ``percentile``)."""
    d = surface_distances(a, b, spacing)
    return {"asd": _asd(*d), "hd": _hd(*d, None), "hd95": _hd(*d, percentile)}


def label_metrics(pred, target, labels: Iterable[int], spacing=None,
                  surfaces: bool = True) -> dict[int, dict[str, float]]:
    """Every metric for each label: ``{label: {dice, sens, prec[, asd, hd, hd95]}}``.

    One spatial pair (see :func:`surface_distances` for accepted shapes).
    """
    p, t = _pair(pred, target)
    out = {}
    for v in labels:
        v = int(v)
        row = {"dice": dice(p, t, v), "sens": sensitivity(p, t, v), "prec": precision(p, t, v)}
        if surfaces:
            row.update(surface_metrics(p == v, t == v, spacing))
        out[v] = row
    return out


# ---------------------------------------------------------------- folding

def negative_jacobian_pct(ddf, mask=None) -> torch.Tensor:
    """Percentage of voxels with ``det(I + grad u) < 0`` per batch item, ``(B,)``.

    Delegates to :func:`drdm.spatial.negative_jacobian_fraction` (central
    differences; the one Jacobian of the package). ``ddf``: ``(B, ndim, *S)``
    voxels, numpy or torch. Multiply by 10 for Table 3's per-mille.
    """
    from .spatial import negative_jacobian_fraction
    u = ddf if isinstance(ddf, torch.Tensor) else torch.from_numpy(np.asarray(ddf))
    if mask is not None and not isinstance(mask, torch.Tensor):
        mask = torch.from_numpy(np.asarray(mask))
    return 100.0 * negative_jacobian_fraction(u.double(), mask)


def wall_thickness(mask) -> np.ndarray:
    """Local thickness (pixels) of a 2-D structure such as the myocardium, along its midline.

    The mask is upsampled 2x (each pixel to 2 x 2), so every wall is an even number of fine pixels
    wide; its midline is the fine pixels whose distance to the nearest outside pixel
    (``scipy.ndimage.distance_transform_edt``; outside the array counts as outside) is at least that
    of all 8 neighbours. A wall w pixels wide is 2w fine pixels wide, and its midline lies w fine
    pixels from the outside: the distance in fine pixels is the width in pixels. Exact for walls
    along the axes; about 0.1 px high on rasterised diagonal walls, within about half a pixel on
    curved ones. Returns one value per fine midline pixel (about two per pixel of wall length; empty
    for an empty mask).
    """
    a = np.asarray(_np(mask), bool)
    if a.ndim != 2:
        raise ValueError(f"wall_thickness takes a 2-D mask, got shape {a.shape}")
    m = np.pad(a.repeat(2, axis=0).repeat(2, axis=1), 1)
    dist = ndimage.distance_transform_edt(m)
    ridge = m & (dist >= ndimage.maximum_filter(dist, size=3))
    return dist[ridge]
