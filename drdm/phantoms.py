"""Embedded procedural phantoms: the book runs end to end without any download.

* :func:`cardiac_phantom`: a 2-D cardiac short-axis MR slice with ACDC labels
  (0 background, 1 RV, 2 myocardium, 3 LV): body, lungs, LV blood pool with
  papillary muscles, myocardial ring, RV crescent, smooth texture, a bias
  field and Rician-like noise. Subject-to-subject variation of sizes, wall
  thickness, RV shape and angle, position and rotation; ``phase="ES"`` gives a
  plausible contraction of the same subject.
* :func:`thorax_phantom`: a 3-D thorax CT-like volume (body, two lungs with
  vessel-like texture, heart, spine) with a lung mask (1 left, 2 right lung).

Everything is drawn from ``numpy.random.default_rng(seed)``: the same seed
gives the same subject on every machine. Intensities are in [0, 1].
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["cardiac_phantom", "cardiac_dataset", "thorax_phantom", "thorax_dataset", "phantom_records",
           "ACDC_LABELS", "LUNG_LABELS"]

ACDC_LABELS = {0: "background", 1: "RV", 2: "myocardium", 3: "LV"}
LUNG_LABELS = {0: "background", 1: "left lung", 2: "right lung"}


def _smooth_noise(rng, shape, cells: int, amp: float) -> np.ndarray:
    """Smooth random field: ``cells``-per-side Gaussian values, bilinear/trilinear upsampled."""
    coarse = torch.from_numpy(rng.standard_normal((1, 1) + (cells,) * len(shape)).astype(np.float32))
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    out = torch.nn.functional.interpolate(coarse, size=tuple(shape), mode=mode, align_corners=True)
    return out[0, 0].numpy() * amp


def _soft(d: np.ndarray, width: float = 0.7) -> np.ndarray:
    """Partial-volume edge: 1 inside (d < 0), 0 outside, a ramp of ``width`` voxels."""
    return np.clip(0.5 - d / width, 0.0, 1.0)


def cardiac_phantom(seed: int, size: int = 128, phase: str = "ED") -> tuple[np.ndarray, np.ndarray]:
    """One 2-D short-axis slice.

    Args:
        seed: the subject; the same seed gives the same anatomy for ED and ES.
        size: image side in pixels (>= 32); anatomy scales with it.
        phase: ``"ED"`` (end-diastole) or ``"ES"`` (end-systole: LV radius -30 %,
            wall +35 %, RV -25 %).

    Returns:
        ``image`` float32 ``(size, size)`` in [0, 1]; ``label`` int64 ``(size, size)``
        in the ACDC convention. All four labels are present.
    """
    if phase not in ("ED", "ES"):
        raise ValueError(f"phase must be 'ED' or 'ES', got {phase!r}")
    if size < 32:
        raise ValueError(f"size must be >= 32 pixels, got {size}")
    rng = np.random.default_rng(seed)
    s = size / 128.0                                   # anatomy is designed at 128 px
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    cy, cx = size / 2 + rng.uniform(-6, 6, 2) * s
    theta = rng.uniform(-0.6, 0.6)                     # in-plane rotation of the whole body (rad)
    c, si = np.cos(theta), np.sin(theta)
    y = (yy - cy) * c - (xx - cx) * si                 # body frame, pixels
    x = (yy - cy) * si + (xx - cx) * c

    body_a, body_b = rng.uniform(44, 52) * s, rng.uniform(56, 62) * s
    body = np.sqrt((y / body_a) ** 2 + (x / body_b) ** 2)
    lung_r = rng.uniform(15, 19, 2) * s
    lungs = [np.sqrt(((y + 4 * s) / (1.4 * r)) ** 2 + ((x - sx * 30 * s) / r) ** 2)
             for r, sx in zip(lung_r, (-1, 1))]

    # heart, left of the body centre (image right), with its own orientation
    hy, hx = rng.uniform(-6, 4) * s, rng.uniform(6, 14) * s
    es = phase == "ES"
    lv_r = rng.uniform(10, 14) * s * (0.7 if es else 1.0)
    wall = rng.uniform(3.5, 5.5) * s * (1.35 if es else 1.0)
    d_lv = np.hypot(y - hy, x - hx)
    lv = d_lv - lv_r
    myo = d_lv - (lv_r + wall)
    # RV: a crescent hugging the septum, wrapped around the LV towards the body centre
    rv_angle = np.pi + rng.uniform(-0.5, 0.5)          # direction from LV centre to RV
    rv_dist = (lv_r + wall) * rng.uniform(0.75, 0.95)
    ry, rx = hy + rv_dist * np.sin(rv_angle), hx + rv_dist * np.cos(rv_angle)
    rv_a = (lv_r + wall) * rng.uniform(1.0, 1.25) * (0.75 if es else 1.0)
    rv_b = rv_a * rng.uniform(0.55, 0.75)
    ca, sa = np.cos(rv_angle), np.sin(rv_angle)
    ru = (y - ry) * sa + (x - rx) * ca                 # along the LV->RV direction
    rw = (y - ry) * ca - (x - rx) * sa
    rv = np.sqrt((ru / rv_b) ** 2 + (rw / rv_a) ** 2) - 1
    rv_mask = (rv < 0) & (myo > 0.5)

    # papillary muscles: two dark blobs inside the LV near the wall
    pap = np.full_like(y, np.inf)
    for k in range(2):
        a = rv_angle + np.pi + (k - 0.5) * rng.uniform(0.9, 1.4)
        py, px = hy + 0.6 * lv_r * np.sin(a), hx + 0.6 * lv_r * np.cos(a)
        pap = np.minimum(pap, np.hypot(y - py, x - px) - rng.uniform(1.5, 2.5) * s)

    label = np.zeros((size, size), np.int64)
    label[myo < 0] = 2
    label[lv < 0] = 3
    label[rv_mask] = 1

    # intensities (bright blood, grey muscle, dark lungs, mid fat/tissue)
    tissue = 0.45 + _smooth_noise(rng, (size, size), 9, 0.05)
    img = _soft(body - 1, 0.02) * tissue
    for L in lungs:
        img = img * (1 - 0.85 * _soft(L - 1, 0.06))
    img = np.where(myo < 1.0, img * (1 - _soft(myo)) + 0.32 * _soft(myo), img)
    blood = 0.85 + _smooth_noise(rng, (size, size), 6, 0.03)
    img = img * (1 - _soft(lv)) + blood * _soft(lv)
    img = img * (1 - _soft(pap)) + 0.35 * _soft(pap)
    rv_soft = _soft(rv * rv_b) * (myo > 0).astype(float)
    img = img * (1 - rv_soft) + 0.8 * rv_soft
    img = img * (1 + _smooth_noise(rng, (size, size), 3, 0.12))          # coil bias field
    noise = rng.standard_normal((2, size, size)) * 0.03
    img = np.sqrt((img + noise[0]) ** 2 + noise[1] ** 2)                 # Rician magnitude
    img = np.clip(img / max(img.max(), 1e-6), 0, 1).astype(np.float32)
    return img, label


def cardiac_dataset(n: int, size: int = 128, seed: int = 0, phases=("ED",)):
    """``n`` subjects (seeds ``seed .. seed+n-1``), each in every phase listed.

    Returns:
        ``images`` float32 tensor ``(n * len(phases), 1, size, size)``, ``labels``
        int64 tensor of the same shape, and ``subjects``: a list of
        ``(subject_id, phase)`` per item (the same id for one subject's phases).
    """
    imgs, labs, subj = [], [], []
    for k in range(n):
        for ph in phases:
            i, lab = cardiac_phantom(seed + k, size, ph)
            imgs.append(i)
            labs.append(lab)
            subj.append((f"phantom{seed + k:04d}", ph))
    return (torch.from_numpy(np.stack(imgs))[:, None], torch.from_numpy(np.stack(labs))[:, None], subj)


def thorax_phantom(seed: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A 3-D thorax (axes: axial z, anterior-posterior y, left-right x).

    Returns ``image`` float32 ``(size,)*3`` in [0, 1] (CT-like: air dark, tissue
    mid, bone bright) and ``lungs`` int64 mask (1 left, 2 right lung).
    """
    if size < 24:
        raise ValueError(f"size must be >= 24 voxels, got {size}")
    rng = np.random.default_rng(seed)
    s = size / 64.0
    z, y, x = np.mgrid[0:size, 0:size, 0:size].astype(np.float64) - size / 2
    z, y, x = z, y - rng.uniform(-2, 2) * s, x - rng.uniform(-2, 2) * s
    body = np.sqrt((y / (rng.uniform(21, 25) * s)) ** 2 + (x / (rng.uniform(27, 30) * s)) ** 2)
    lungs = np.zeros(z.shape, np.int64)
    lung_d = []
    for k, side in enumerate((-1, 1)):
        a = rng.uniform(8, 10) * s
        b = rng.uniform(8, 10.5) * s
        h = rng.uniform(24, 28) * s
        cz = rng.uniform(-3, 3) * s
        taper = 1 - 0.35 * np.clip((z - cz) / h + 0.5, 0, 1)         # narrower at the apex
        d = np.sqrt(((y + 1 * s) / (a * taper + 1e-6)) ** 2 + ((x - side * 12 * s) / (b * taper + 1e-6)) ** 2
                    + ((z - cz) / h) ** 2)
        lung_d.append(d)
        lungs[d < 1] = k + 1
    heart_r = rng.uniform(7, 9) * s
    heart = np.sqrt(((y + 6 * s) / heart_r) ** 2 + ((x - 3 * s) / (1.2 * heart_r)) ** 2 + (z / (1.6 * heart_r)) ** 2)
    lungs[heart < 1] = 0
    spine = np.sqrt(((y - 16 * s) / (3.5 * s)) ** 2 + (x / (3.5 * s)) ** 2)

    img = 0.1 + 0.9 * (_soft(body - 1, 0.03) * (0.5 + _smooth_noise(rng, z.shape, 6, 0.03)))
    vessels = np.abs(_smooth_noise(rng, z.shape, 12, 1.0))            # ridges of |noise| look like vessels
    lung_img = 0.08 + 0.25 * np.exp(-vessels / 0.12)
    in_lung = (lungs > 0).astype(np.float64)
    img = img * (1 - in_lung) + lung_img * in_lung
    img = img * (1 - _soft(heart - 1, 0.08)) + 0.55 * _soft(heart - 1, 0.08)
    img = img * (1 - _soft(spine - 1, 0.1)) + 0.95 * _soft(spine - 1, 0.1)
    img = img + rng.standard_normal(z.shape) * 0.015
    return np.clip(img, 0, 1).astype(np.float32), lungs


def thorax_dataset(n: int, size: int = 64, seed: int = 0):
    """``n`` thorax subjects: ``images`` ``(n, 1, size, size, size)`` float32, ``masks`` int64, ids."""
    out = [thorax_phantom(seed + k, size) for k in range(n)]
    imgs = torch.from_numpy(np.stack([o[0] for o in out]))[:, None]
    masks = torch.from_numpy(np.stack([o[1] for o in out]))[:, None]
    return imgs, masks, [f"thorax{seed + k:04d}" for k in range(n)]


def phantom_records(kind: str, n: int, size: int, seed: int, phases=("ED",)):
    """Phantom subjects as :class:`drdm.data.Record` (2-D cardiac or 3-D thorax)."""
    from .data import ACDC_CONVENTION, Record
    records = []
    for k in range(n):
        if kind == "cardiac":
            for ph in phases:
                img, lab = cardiac_phantom(seed + k, size, ph)
                records.append(Record(img, lab, (1.0, 1.0), np.eye(4), f"phantom{seed + k:04d}", ph,
                                      "phantom", ACDC_CONVENTION, "", {}))
        elif kind == "thorax":
            img, lab = thorax_phantom(seed + k, size)
            records.append(Record(img, lab, (1.0, 1.0, 1.0), np.eye(4), f"thorax{seed + k:04d}", None,
                                  "phantom", "lung mask: 0 background, 1 left, 2 right lung", "", {}))
        else:
            raise ValueError(f"unknown phantom kind {kind!r}")
    return records
