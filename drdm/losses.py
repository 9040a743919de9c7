"""Eq. 14: distance, angle and regularisation terms of the DRDM training loss.

All fields are ``(B, ndim, *S)`` in voxels. The target ``psi`` is the forward
step's DVF and ``pred`` the network's estimate of its inverse; the loss looks at
``a(x) = pred(x + psi(x))`` so that ``psi + a = <psi o pred>`` (Eq. 5) vanishes
for an exact inverse.

Two codings (``coding=``):

``"corrected"`` (default)
    The paper's intent: the regulariser penalises real folding,
    ``mean relu(-det(I + grad pred))`` with the Jacobian of :mod:`drdm.spatial`,
    plus the thresholded L1 of forward differences.
``"official"``
    The release's code: the same L1 term plus 2 x a "determinant" built from two
    x-derivatives one voxel apart (no identity). That term is exactly zero for
    every affine field, so real folding is never penalised; it is kept only to
    reproduce the release.

Both use the release's squared distance ratio (Eq. 14 writes the unsquared norm
ratio; ``distance="ratio"`` gives that) and its sign for the angle term: it
minimises the cosine between ``a`` and ``psi`` (anti-parallel is right; Eq. 14's
leading minus sign is a typo). The angle term is reported as ``1 + cos`` so that
it is 0 at the optimum; the gradient equals the release's.
"""
from __future__ import annotations

import torch

from . import spatial

__all__ = ["distance_loss", "angle_loss", "thresholded_gradient_l1", "negative_jacobian_penalty",
           "official_pseudo_det_penalty", "drdm_loss"]


def _pullback(pred, psi, padding):
    return spatial.warp(pred, psi, padding_mode=padding)         # a(x) = pred(x + psi(x))


def distance_loss(pred, psi, *, squared: bool = True, eps: float = 1e-7, padding: str = "border"):
    """``|psi + a|^p / (|psi|^p + eps)`` averaged, in fractions of the side (the release's units;
    ``eps`` 1e-7 is its effective value)."""
    a = spatial.voxels_to_fraction(_pullback(pred, psi, padding))
    p = spatial.voxels_to_fraction(psi)
    num = (p + a).pow(2).sum(1)
    den = p.pow(2).sum(1)
    if not squared:
        num, den = num.sqrt(), den.sqrt()
    return (num / (den + eps)).mean()


def angle_loss(pred, psi, *, padding: str = "border"):
    """``1 + cos(a, psi)`` averaged: 0 when the prediction points exactly against ``psi``."""
    a = _pullback(pred, psi, padding)
    dot = (a * psi).sum(1)
    norm = a.norm(dim=1) * psi.norm(dim=1)
    return (1 + dot / (norm + 1e-12)).mean()


def thresholded_gradient_l1(pred, threshold: float = 1e-4):
    """Mean over axes of ``relu(|forward difference| - threshold)``, in fractions of the side per voxel."""
    u = spatial.voxels_to_fraction(pred)
    nd = u.shape[1]
    terms = [torch.relu(torch.diff(u, dim=2 + i).abs() - threshold).mean() for i in range(nd)]
    return torch.stack(terms).mean()


def negative_jacobian_penalty(pred):
    """``mean relu(-det(I + grad pred))``: positive exactly where the field folds."""
    return torch.relu(-spatial.jacobian_det(pred)).mean()


def official_pseudo_det_penalty(pred):
    """The release's inert "negative Jacobian" term (fractions of the side).

    Its rows are the same axis-0 difference taken one voxel apart, without the
    identity; for any affine field the two rows are equal and the term is 0.
    """
    u = spatial.voxels_to_fraction(pred)
    d = torch.diff(u, dim=2)                           # axis-0 forward differences
    r0, r1 = d[:, :, :-1], d[:, :, 1:]                 # the two "rows", one voxel apart
    if u.shape[1] == 2:
        det = r0[:, 0] * r1[:, 1] - r0[:, 1] * r1[:, 0]
    else:
        r2 = d[:, :, 1:]
        det = (r0[:, 0] * (r1[:, 1] * r2[:, 2] - r1[:, 2] * r2[:, 1])
               - r0[:, 1] * (r1[:, 0] * r2[:, 2] - r1[:, 2] * r2[:, 0])
               + r0[:, 2] * (r1[:, 0] * r2[:, 1] - r1[:, 1] * r2[:, 0]))
    return torch.relu(-det).mean()


def drdm_loss(pred, psi, *, coding: str = "corrected", weights=(1.0, 1.0, 10.0),
              distance: str = "squared", padding: str = "border") -> dict:
    """Eq. 14 with weights ``(lambda_1, lambda_2, lambda_3)`` (1, 1, 10 in paper and release).

    Returns a dict with ``loss`` (scalar to minimise) and the terms ``dist``,
    ``angle``, ``reg``. ``padding`` is how ``pred`` is read outside the image
    (``border`` so that a constant exact inverse scores 0 at the edges too).
    """
    if coding not in ("corrected", "official"):
        raise ValueError(f"coding must be 'corrected' or 'official', got {coding!r}")
    if distance not in ("squared", "ratio"):
        raise ValueError(f"distance must be 'squared' or 'ratio', got {distance!r}")
    spatial.check_ddf(pred, "pred")
    spatial.check_ddf(psi, "psi", spatial=pred.shape[2:], batch=pred.shape[0])
    dist = distance_loss(pred, psi, squared=distance == "squared", padding=padding)
    ang = angle_loss(pred, psi, padding=padding)
    fold = negative_jacobian_penalty(pred) if coding == "corrected" else 2 * official_pseudo_det_penalty(pred)
    reg = thresholded_gradient_l1(pred) + fold
    w1, w2, w3 = weights
    return {"loss": w1 * dist + w2 * ang + w3 * reg, "dist": dist, "angle": ang, "reg": reg}
