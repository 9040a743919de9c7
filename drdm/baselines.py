"""The paper's baselines: BigAug (segmentation, Table 2) and MRBS (registration, Table 3).

Neither has public code; both are written here from their papers' descriptions.

* :class:`BigAug` (Zhang et al., IEEE TMI 2020, "deep stacked transformation"):
  nine transforms, each applied with probability 0.5, in three groups -- image
  quality (sharpening, blurring, Gaussian noise), appearance (brightness,
  contrast, intensity perturbation) and spatial (rotation, scaling, elastic
  deformation). :func:`elastic` is the elastic part alone (an ablation, and the
  "Elastic transform" of the paper's Fig. A.14).
* :func:`mrbs_field` (Eppenhof and Pluim, IEEE TMI 2019): random multi-resolution
  cubic B-spline deformations, used to synthesise registration training pairs.

All randomness comes from a ``torch.Generator`` (CPU; draws are made there and
moved to the data's device), so one seed gives one output. Displacements follow
the package conventions (voxels, component i along axis i, pull-back) and every
warp goes through :func:`drdm.spatial.warp`: linear for images, the label-safe
``mode="label"`` for label maps (no new label values, dtype kept), one
resampling for all spatial transforms together.

The cubic B-spline is evaluated explicitly: a field on a control grid of spacing
``s`` is ``u(x) = sum_k c_k prod_i B3(x_i / s_i - k_i + 1)`` with the cubic
B-spline kernel ``B3`` (:func:`bspline_upsample`), separably, as one small basis
matrix per axis. It is an approximating spline: the dense field is smooth (C2)
and linear in the coefficients, so zero coefficients give an exactly zero field.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from . import spatial

__all__ = ["BigAug", "elastic", "elastic_field", "mrbs_field", "bspline_upsample",
           "bspline_kernel", "gaussian_blur"]


# ---------------------------------------------------------------- helpers

def _gen(generator: torch.Generator | None) -> torch.Generator:
    if generator is not None:
        return generator
    g = torch.Generator()
    g.seed()                            # a non-deterministic seed; the global RNG is left alone
    return g


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return float(lo) + (float(hi) - float(lo)) * torch.rand((), generator=g, dtype=torch.float64).item()


def _check_image(image, label):
    if not isinstance(image, torch.Tensor) or image.dim() not in (4, 5) or not image.is_floating_point():
        got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image must be a float tensor (B, C, H, W) or (B, C, H, W, D); got {got}")
    if label is not None:
        if not isinstance(label, torch.Tensor) or label.dim() != image.dim():
            raise ValueError(f"label must be a tensor shaped like the image (B, C_l, *S); got "
                             f"{tuple(getattr(label, 'shape', ()))}")
        if label.shape[0] != image.shape[0] or label.shape[2:] != image.shape[2:]:
            raise ValueError(f"label shape {tuple(label.shape)} does not match image {tuple(image.shape)}")


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing of ``(B, C, *S)`` with std ``sigma`` voxels (replicate border).

    ``sigma <= 0`` returns ``x`` itself.
    """
    if sigma <= 0:
        return x
    ndim = x.dim() - 2
    radius = max(1, int(math.ceil(3.0 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    conv = (F.conv2d, F.conv3d)[ndim - 2]
    B, C = x.shape[:2]
    y = x.reshape(B * C, 1, *x.shape[2:])
    for axis in range(ndim):
        r = min(radius, y.shape[2 + axis] - 1)
        kk = k[radius - r: radius + r + 1] if r < radius else k
        kk = kk / kk.sum()
        shape = [1, 1] + [1] * ndim
        shape[2 + axis] = kk.numel()
        pad = [0, 0] * ndim
        pad[2 * (ndim - 1 - axis)] = pad[2 * (ndim - 1 - axis) + 1] = r
        y = conv(F.pad(y, pad, mode="replicate"), kk.view(shape))
    return y.reshape(x.shape)


# ---------------------------------------------------------------- cubic B-splines

def bspline_kernel(t: torch.Tensor) -> torch.Tensor:
    """The cubic B-spline ``B3(t)``: ``(4 - 6t^2 + 3|t|^3)/6`` for ``|t|<1``, ``(2-|t|)^3/6`` for ``|t|<2``.

    >>> bspline_kernel(torch.tensor([0.0, 1.0, 2.0])).tolist()
    [0.6666666865348816, 0.1666666716337204, 0.0]
    """
    a = t.abs()
    inner = (4.0 - 6.0 * a ** 2 + 3.0 * a ** 3) / 6.0
    outer = (2.0 - a).clamp_min(0.0) ** 3 / 6.0
    return torch.where(a < 1, inner, outer)


def _basis(size: int, n: int, dtype, device) -> torch.Tensor:
    """``(size, n)``: weight of control point k (knot at ``(k - 1) s``) at voxel x, ``s = (size-1)/(n-3)``."""
    s = (size - 1) / (n - 3) if size > 1 else 1.0
    x = torch.arange(size, dtype=torch.float64)[:, None] / s
    k = torch.arange(n, dtype=torch.float64)[None, :] - 1.0
    return bspline_kernel(x - k).to(dtype=dtype, device=device)


def bspline_upsample(coeffs: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Dense cubic B-spline field from control-point coefficients.

    Args:
        coeffs: ``(B, C, n_1, ..., n_d)`` with every ``n_i >= 4``. Control point
            ``k`` sits at ``(k - 1) * s_i`` with ``s_i = (S_i - 1) / (n_i - 3)``,
            so the grid covers the image with one extra point beyond each side.
        shape: the dense spatial shape ``(S_1, ..., S_d)``.

    Returns:
        ``(B, C, *shape)``, same dtype and device, ``sum_k c_k prod_i B3(x_i/s_i - k_i + 1)``.
        Linear in ``coeffs``; constant coefficients give a constant field (the
        B-spline basis sums to one).
    """
    shape = tuple(int(s) for s in shape)
    ndim = coeffs.dim() - 2
    if len(shape) != ndim or ndim not in (2, 3):
        raise ValueError(f"coeffs (B, C, *n) with 2 or 3 grid axes must match shape; got "
                         f"{tuple(coeffs.shape)} and {shape}")
    if min(coeffs.shape[2:]) < 4:
        raise ValueError(f"a cubic B-spline needs >= 4 control points per axis, got {tuple(coeffs.shape[2:])}")
    out = coeffs
    for axis in range(ndim):
        W = _basis(shape[axis], coeffs.shape[2 + axis], coeffs.dtype, coeffs.device)   # (S, n)
        out = torch.movedim(torch.tensordot(out, W, dims=([2 + axis], [1])), -1, 2 + axis)
    return out


def _grid_points(size: int, spacing: float) -> int:
    """Control points per axis for a requested spacing (the actual spacing is at most that)."""
    return int(math.ceil(max(size - 1, 1) / float(spacing) - 1e-9)) + 3


# ---------------------------------------------------------------- MRBS (Eppenhof and Pluim 2019)

def default_mrbs_levels(shape: Sequence[int]) -> tuple[float, ...]:
    """Control-point spacings ``(S/2, S/4, S/8)`` voxels (``S`` the mean side; at least 2)."""
    side = sum(shape) / len(shape)
    return tuple(max(2.0, side / f) for f in (2, 4, 8))


def mrbs_field(shape: Sequence[int], generator: torch.Generator | None = None,
               levels: Sequence[float] | None = None, magnitudes: Sequence[float] | float | None = None,
               *, batch: int = 1, combine: str = "sum", distribution: str = "uniform",
               dtype=torch.float32, device=None) -> torch.Tensor:
    """Random multi-resolution cubic B-spline deformation (the MRBS baseline of Table 3).

    One cubic B-spline field per level; level ``l`` has control points every
    ``levels[l]`` voxels (rounded down so the grid fits the image exactly) and
    coefficients drawn independently per point and per component, ``U(-m_l, m_l)``
    (``distribution="uniform"``) or ``N(0, m_l^2)`` (``"normal"``). The levels are
    then summed (``combine="sum"``, default; the field is linear in the
    magnitudes) or composed coarse to fine with :func:`drdm.spatial.compose`
    (``"compose"``: warping by the result equals warping by the coarsest field
    first, then each finer one).

    Args:
        shape: spatial shape, 2 or 3 ints.
        generator: the only randomness; unit draws do not depend on the magnitudes,
            so one seed with magnitudes ``a m`` gives ``a`` times the field (sum).
        levels: control-point spacings in voxels (default :func:`default_mrbs_levels`).
        magnitudes: per-level amplitude in voxels (one number: the same for all).
            Default ``0.1 * spacing`` per level, well inside the cubic B-spline
            folding bound (about 0.4 spacing per level).
        batch: independent fields. combine: ``"sum"`` or ``"compose"``.

    Returns:
        ``(batch, ndim, *shape)`` displacement in voxels.

    >>> u = mrbs_field((32, 32), torch.Generator().manual_seed(0))
    >>> tuple(u.shape)
    (1, 2, 32, 32)
    """
    shape = tuple(int(s) for s in shape)
    ndim = len(shape)
    if ndim not in (2, 3) or min(shape) < 2:
        raise ValueError(f"shape must be 2 or 3 sizes >= 2, got {shape}")
    if combine not in ("sum", "compose"):
        raise ValueError(f"combine must be 'sum' or 'compose', got {combine!r}")
    if distribution not in ("uniform", "normal"):
        raise ValueError(f"distribution must be 'uniform' or 'normal', got {distribution!r}")
    levels = tuple(float(s) for s in (default_mrbs_levels(shape) if levels is None else levels))
    if not levels or min(levels) <= 0:
        raise ValueError(f"levels must be positive control-point spacings (voxels), got {levels}")
    if magnitudes is None:
        mags = tuple(0.1 * s for s in levels)
    elif isinstance(magnitudes, (int, float)):
        mags = (float(magnitudes),) * len(levels)
    else:
        mags = tuple(float(m) for m in magnitudes)
    if len(mags) != len(levels) or min(mags) < 0:
        raise ValueError(f"magnitudes must be {len(levels)} non-negative numbers, got {magnitudes}")
    g = _gen(generator)
    fields = []
    for spacing, m in zip(levels, mags):
        n = [_grid_points(S, spacing) for S in shape]
        if distribution == "uniform":
            unit = torch.rand(batch, ndim, *n, generator=g, dtype=torch.float64) * 2 - 1
        else:
            unit = torch.randn(batch, ndim, *n, generator=g, dtype=torch.float64)
        coeffs = (unit * m).to(dtype=dtype, device=device)
        fields.append(bspline_upsample(coeffs, shape))
    if combine == "sum":
        out = fields[0]
        for f in fields[1:]:
            out = out + f
        return out
    out = fields[0]
    for f in fields[1:]:
        out = spatial.compose(f, out)
    return out


# ---------------------------------------------------------------- elastic deformation

def elastic_field(shape: Sequence[int], generator: torch.Generator | None = None, *, points: int = 7,
                  magnitude: float = 0.04, batch: int = 1, dtype=torch.float32, device=None) -> torch.Tensor:
    """Random elastic displacement: a cubic B-spline on ``points`` control points per axis.

    Coefficients ``U(-m_i, m_i)`` with ``m_i = magnitude * S_i`` voxels (a fraction
    of the side along each axis); control points span the image, plus one beyond
    each side. Returns ``(batch, ndim, *shape)`` voxels; ``magnitude=0`` gives zeros.
    """
    shape = tuple(int(s) for s in shape)
    ndim = len(shape)
    if points < 2:
        raise ValueError(f"points must be >= 2, got {points}")
    g = _gen(generator)
    n = [points + 2] * ndim
    unit = torch.rand(batch, ndim, *n, generator=g, dtype=torch.float64) * 2 - 1
    scale = torch.tensor([magnitude * S for S in shape], dtype=torch.float64).view(1, ndim, *[1] * ndim)
    return bspline_upsample((unit * scale).to(dtype=dtype, device=device), shape)


def elastic(image: torch.Tensor, label: torch.Tensor | None = None,
            generator: torch.Generator | None = None, *, points: int = 7, magnitude: float = 0.04,
            padding_mode: str = "zeros", return_ddf: bool = False):
    """The elastic-deformation part of BigAug on its own (always applied).

    One :func:`elastic_field` per batch item; the image is warped linearly, the
    label with the label-safe warp.

    Args:
        image: ``(B, C, *S)`` float. label: ``(B, C_l, *S)`` integer map or ``None``.
        points, magnitude: see :func:`elastic_field`.

    Returns:
        ``(image, label)`` (label ``None`` if not given), plus the ``(B, ndim, *S)``
        field when ``return_ddf``.
    """
    _check_image(image, label)
    g = _gen(generator)
    ddf = elastic_field(image.shape[2:], g, points=points, magnitude=magnitude, batch=image.shape[0],
                        dtype=image.dtype, device=image.device)
    out = spatial.warp(image, ddf, mode="linear", padding_mode=padding_mode)
    lab = None if label is None else spatial.warp(label, ddf, mode="label", padding_mode=padding_mode)
    return (out, lab, ddf) if return_ddf else (out, lab)


# ---------------------------------------------------------------- BigAug (Zhang et al. 2020)

def _rotation_matrix(angle: float, axis: torch.Tensor | None, ndim: int) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    if ndim == 2:
        return torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    x, y, z = (float(v) for v in axis)
    K = torch.tensor([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]], dtype=torch.float64)
    return torch.eye(3, dtype=torch.float64) + s * K + (1 - c) * (K @ K)      # Rodrigues


@dataclass
class BigAug:
    """Nine stacked transforms, each applied independently with probability ``p``.

    Applied in the order of Zhang et al. (2020): image quality, appearance, spatial.
    Intensity parameters are in units of the image's standard deviation (``std``,
    per batch item over all channels) because BigAug works on z-scored images;
    for images in [0, 1] this keeps the original ranges meaningful. Outputs are
    not clipped (noise and sharpening may leave [0, 1], as they do in z units).

    1. sharpening: ``b + alpha (b - G_{sigma2}(b))`` with ``b = G_{sigma1}(x)``,
       ``sigma1 ~ U(sharpen_sigma)``, ``sigma2 = sharpen_sigma2``, ``alpha ~ U(sharpen_alpha)``
       (unsharp masking of a pre-smoothed image, so noise is not amplified 30-fold).
    2. blurring: Gaussian, ``sigma ~ U(blur_sigma)`` voxels (0.25-1.5).
    3. noise: ``x + N(0, (r std)^2)``, ``r ~ U(noise_std)`` (0.1-1).
    4. brightness: ``x + b std``, ``b ~ U(-brightness, brightness)`` (0.1).
    5. contrast: gamma on the min-max rescaled image, ``log gamma ~ U(log gamma[0], log gamma[1])``
       (0.5-4.5, log-uniform so darkening and brightening are balanced in log scale).
    6. intensity perturbation: ``x + a (x - mean) + b std``, ``a ~ U(+-intensity_scale)``,
       ``b ~ U(+-intensity_shift)`` (0.1 each).
    7. rotation: ``U(-rotate, rotate)`` degrees (20) about the centre; in 3-D about a
       uniformly random axis.
    8. scaling: isotropic zoom ``U(scale)`` (0.4-1.6; > 1 enlarges the content).
    9. elastic deformation: :func:`elastic_field` (``elastic_points``, ``elastic_magnitude``).

    Rotation, scaling and the elastic field form one displacement
    ``u(x) = c + M (x + u_el(x) - c) - x`` (``M`` = rotation / zoom about the centre
    ``c``), applied with one :func:`drdm.spatial.warp` to image (linear) and
    label (label-safe). Every parameter is drawn for every item whether or not its
    transform fires, so the random stream does not depend on earlier coin flips.
    Neutral settings (``p=0``, or zero magnitudes / unit gamma and zoom) give the
    input back exactly.

    Call: ``image, label = BigAug()(image, label, generator)`` with ``image``
    ``(B, C, *S)`` float (2-D or 3-D) and ``label`` ``(B, C_l, *S)`` integer or ``None``.
    """
    p: float = 0.5
    sharpen_sigma: tuple = (0.25, 1.5)
    sharpen_sigma2: float = 0.5
    sharpen_alpha: tuple = (10.0, 30.0)
    blur_sigma: tuple = (0.25, 1.5)
    noise_std: tuple = (0.1, 1.0)
    brightness: float = 0.1
    gamma: tuple = (0.5, 4.5)
    intensity_scale: float = 0.1
    intensity_shift: float = 0.1
    rotate: float = 20.0
    scale: tuple = (0.4, 1.6)
    elastic_points: int = 7
    elastic_magnitude: float = 0.04
    padding_mode: str = "zeros"

    NAMES = ("sharpen", "blur", "noise", "brightness", "contrast", "intensity", "rotate", "scale", "elastic")

    def __post_init__(self):
        if not 0 <= self.p <= 1:
            raise ValueError(f"p must lie in [0, 1], got {self.p}")
        if min(self.gamma) <= 0 or min(self.scale) <= 0:
            raise ValueError(f"gamma and scale ranges must be positive, got {self.gamma}, {self.scale}")

    # one item ------------------------------------------------------------
    def _draw(self, g: torch.Generator, ndim: int, shape) -> dict:
        fire = (torch.rand(9, generator=g, dtype=torch.float64) < self.p).tolist()
        d = dict(zip(self.NAMES, fire))
        d["sharpen_sigma"] = _uniform(g, *self.sharpen_sigma)
        d["sharpen_alpha"] = _uniform(g, *self.sharpen_alpha)
        d["blur_sigma"] = _uniform(g, *self.blur_sigma)
        d["noise_std"] = _uniform(g, *self.noise_std)
        d["noise_seed"] = int(torch.randint(0, 2 ** 62, (), generator=g).item())
        d["brightness_b"] = _uniform(g, -self.brightness, self.brightness)
        d["gamma_g"] = math.exp(_uniform(g, math.log(self.gamma[0]), math.log(self.gamma[1])))
        d["intensity_a"] = _uniform(g, -self.intensity_scale, self.intensity_scale)
        d["intensity_b"] = _uniform(g, -self.intensity_shift, self.intensity_shift)
        d["angle"] = math.radians(_uniform(g, -self.rotate, self.rotate))
        d["axis"] = F.normalize(torch.randn(3, generator=g, dtype=torch.float64), dim=0)
        d["zoom"] = _uniform(g, *self.scale)
        d["elastic_seed"] = int(torch.randint(0, 2 ** 62, (), generator=g).item())
        return d

    def _intensity(self, x: torch.Tensor, d: dict) -> torch.Tensor:
        """x: (1, C, *S)."""
        std = x.std() if x.numel() > 1 else x.new_tensor(0.0)
        if d["sharpen"]:
            b = gaussian_blur(x, d["sharpen_sigma"])
            x = b + d["sharpen_alpha"] * (b - gaussian_blur(b, self.sharpen_sigma2)) if d["sharpen_alpha"] else b
        if d["blur"]:
            x = gaussian_blur(x, d["blur_sigma"])
        if d["noise"] and d["noise_std"] > 0:
            gn = torch.Generator().manual_seed(d["noise_seed"])
            noise = torch.randn(x.shape, generator=gn, dtype=torch.float64).to(x)
            x = x + noise * (d["noise_std"] * std)
        if d["brightness"] and d["brightness_b"] != 0:
            x = x + d["brightness_b"] * std
        if d["contrast"] and d["gamma_g"] != 1.0:
            lo, hi = x.min(), x.max()
            if hi > lo:
                x = lo + (hi - lo) * ((x - lo) / (hi - lo)).clamp(0, 1) ** d["gamma_g"]
        if d["intensity"]:
            if d["intensity_a"] != 0:
                x = x + d["intensity_a"] * (x - x.mean())
            if d["intensity_b"] != 0:
                x = x + d["intensity_b"] * std
        return x

    def _ddf(self, shape, d: dict, dtype, device) -> torch.Tensor | None:
        ndim = len(shape)
        M = torch.eye(ndim, dtype=torch.float64)
        if d["rotate"] and d["angle"] != 0:
            M = _rotation_matrix(d["angle"], d["axis"], ndim) @ M
        if d["scale"] and d["zoom"] != 1.0:
            M = M / d["zoom"]                           # pull-back: zoom > 1 enlarges the content
        u_el = None
        if d["elastic"] and self.elastic_magnitude != 0:
            u_el = elastic_field(shape, torch.Generator().manual_seed(d["elastic_seed"]),
                                 points=self.elastic_points, magnitude=self.elastic_magnitude,
                                 dtype=dtype, device=device)
        affine = not torch.equal(M, torch.eye(ndim, dtype=torch.float64))
        if not affine:
            return u_el
        centre = torch.tensor([(s - 1) / 2 for s in shape], dtype=dtype, device=device).view(ndim, *[1] * ndim)
        x = spatial.identity_grid(shape, device, dtype) - centre                    # x - c
        Mt = M.to(dtype=dtype, device=device)
        A = Mt - torch.eye(ndim, dtype=dtype, device=device)
        u = torch.einsum("ij,j...->i...", A, x)[None]                            # (M - I)(x - c)
        if u_el is not None:
            u = u + torch.einsum("ij,bj...->bi...", Mt, u_el)                   # + M u_el(x)
        return u

    def __call__(self, image: torch.Tensor, label: torch.Tensor | None = None,
                 generator: torch.Generator | None = None, return_params: bool = False):
        _check_image(image, label)
        g = _gen(generator)
        shape = tuple(image.shape[2:])
        imgs, labs, params = [], [], []
        for b in range(image.shape[0]):
            d = self._draw(g, len(shape), shape)
            x = self._intensity(image[b:b + 1], d)
            lab = None if label is None else label[b:b + 1]
            u = self._ddf(shape, d, image.dtype, image.device)
            if u is not None:
                x = spatial.warp(x, u, mode="linear", padding_mode=self.padding_mode)
                if lab is not None:
                    lab = spatial.warp(lab, u, mode="label", padding_mode=self.padding_mode)
            imgs.append(x)
            labs.append(lab)
            params.append({k: v for k, v in d.items() if k != "axis"})
        out = torch.cat(imgs), (None if label is None else torch.cat(labs))
        return (*out, params) if return_params else out
