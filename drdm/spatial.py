"""The one geometric kernel: warping, composition, Jacobians and units.

Conventions (the whole package follows them):

* Tensors are channel-first. Images are ``(B, C, *spatial)``; dense displacement
  fields (DDFs) are ``(B, ndim, *spatial)`` with ``ndim`` = 2 or 3.
* Displacements are in **voxels**. Component ``i`` moves along tensor spatial
  axis ``i`` (not ``grid_sample``'s reversed x/y/z order).
* Warping is pull-back: ``out(x) = in(x + u(x))``.
* Composition is Eq. 5 of the paper: ``<a o b>(x) = b(x + a(x)) + a(x)``; warping
  an image by ``<a o b>`` equals warping it by ``b`` first and then by ``a``.

Sampling uses ``torch.nn.functional.grid_sample``, but never with a grid built
from ``2x/(S-1) - 1``: that round trip through normalised coordinates is off by up
to ~5e-5 voxel, so a zero field would not be an exact identity. Instead the image
is padded to a power-of-two size, where the voxel <-> normalised conversion is
exact in floating point (see :class:`Sampler` and :func:`sample_at`).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "identity_grid",
    "warp",
    "compose",
    "jacobian_det",
    "negative_jacobian_fraction",
    "magnitude_stats",
    "resize_ddf",
    "voxels_to_normalized",
    "normalized_to_voxels",
    "voxels_to_fraction",
    "fraction_to_voxels",
    "ddf_to_sampling_grid",
    "Sampler",
    "sample_at",
]

LINEAR_MODES = ("linear", "bilinear", "trilinear")
MODES = LINEAR_MODES + ("nearest", "bicubic", "label")
PADDING = ("zeros", "border")


# ---------------------------------------------------------------- validation

def _shape_name(ndim: int, lead: str) -> str:
    return f"({lead}, " + ", ".join(("H", "W", "D")[:ndim]) + ")"


def check_ddf(ddf, name: str = "ddf", *, spatial: Sequence[int] | None = None,
              batch: int | None = None) -> int:
    """Validate a displacement field and return its number of spatial dims.

    Raises ``TypeError``/``ValueError`` naming ``name`` and the expected shape.
    """
    if not isinstance(ddf, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(ddf).__name__}")
    if ddf.dim() not in (4, 5):
        raise ValueError(f"{name} must have shape (B, 2, H, W) or (B, 3, H, W, D); "
                         f"got {tuple(ddf.shape)}")
    ndim = ddf.dim() - 2
    if ddf.shape[1] != ndim:
        raise ValueError(f"{name} must have shape {_shape_name(ndim, f'B, {ndim}')} "
                         f"(one component per spatial axis); got {tuple(ddf.shape)}")
    if not ddf.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {ddf.dtype}")
    if spatial is not None and tuple(ddf.shape[2:]) != tuple(spatial):
        raise ValueError(f"{name} must have spatial shape {tuple(spatial)}; got "
                         f"{tuple(ddf.shape[2:])} (full shape {tuple(ddf.shape)})")
    if batch is not None and ddf.shape[0] not in (1, batch):
        raise ValueError(f"{name} batch size {ddf.shape[0]} does not match {batch}")
    if not bool(torch.isfinite(ddf).all()):
        raise ValueError(f"{name} contains NaN or Inf values")
    return ndim


def _check_image(image, name: str, ndim: int, spatial, mode: str) -> None:
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(image).__name__}")
    if image.dim() != ndim + 2:
        raise ValueError(f"{name} must have shape {_shape_name(ndim, 'B, C')} to match a "
                         f"{ndim}-D field; got {tuple(image.shape)}")
    if tuple(image.shape[2:]) != tuple(spatial):
        raise ValueError(f"{name} spatial shape {tuple(image.shape[2:])} does not match the "
                         f"field's {tuple(spatial)}")
    if mode in ("label", "nearest"):
        if image.is_complex() or image.dtype == torch.bool:
            raise ValueError(f"{name} must be real-valued, got {image.dtype}")
    elif not image.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor for mode={mode!r}, got "
                         f"{image.dtype}; use mode='label' or 'nearest' for label maps")


# ---------------------------------------------------------------- grids

_GRID_CACHE: dict = {}


def identity_grid(shape: Sequence[int], device=None, dtype=torch.float32) -> torch.Tensor:
    """Voxel coordinates of a grid.

    Returns a tensor of shape ``(ndim, *shape)`` whose component ``i`` holds the
    index along axis ``i``. Cached per shape, device and dtype; do not modify it.

    >>> identity_grid((2, 3)).shape
    torch.Size([2, 2, 3])
    """
    key = (tuple(int(s) for s in shape), str(device), dtype)
    grid = _GRID_CACHE.get(key)
    if grid is None:
        axes = [torch.arange(s, device=device, dtype=dtype) for s in key[0]]
        grid = torch.stack(torch.meshgrid(*axes, indexing="ij"))
        if len(_GRID_CACHE) > 32:
            _GRID_CACHE.clear()
        _GRID_CACHE[key] = grid
    return grid


# ---------------------------------------------------------------- interpolation

def _padded_shape(spatial) -> list[int]:
    """Per-axis power-of-two sizes, cheapest axes first, within 4x the voxels."""
    pow2 = [1 << max(n - 1, 1).bit_length() for n in spatial]
    out = list(spatial)
    budget = 4.0
    for i in sorted(range(len(spatial)), key=lambda i: pow2[i] / spatial[i]):
        ratio = pow2[i] / spatial[i]
        if ratio <= budget:
            out[i] = pow2[i]
            budget /= ratio
    return out


class Sampler:
    """Precomputed ``grid_sample`` grid for sampling fields of one spatial shape
    at absolute voxel ``coords`` (B, ndim, *S_out); reusable across images.

    The image is padded (high side, zeros or replicate, matching ``padding``) up
    to a power-of-two size per axis, and ``grid_sample(align_corners=False)``
    is used: then the voxel -> normalised -> voxel round trip is exact in
    floating point, so integer positions (a zero field, an integer shift)
    reproduce voxels exactly. If padding every axis would cost more than 4x the
    voxels (some 3-D shapes), the remaining axes stay unpadded and carry
    round-off of ~1e-5 voxel.
    """

    def __init__(self, spatial, coords: torch.Tensor, padding: str):
        self.padding = padding
        padded = _padded_shape(spatial)
        self.pad = []
        for s, p in zip(reversed(spatial), reversed(padded)):
            self.pad += [0, p - s]
        # x_norm = (2 x + 1) / P - 1, exact when P is a power of two
        scale = torch.tensor([2.0 / p for p in reversed(padded)], dtype=coords.dtype,
                             device=coords.device)
        grid = coords.movedim(1, -1).flip(-1)                    # (B, *S_out, ndim), xyz order
        self.grid = torch.addcmul(scale * 0.5 - 1.0, grid, scale)

    def __call__(self, image: torch.Tensor, mode: str = "linear") -> torch.Tensor:
        if any(self.pad):
            image = F.pad(image, self.pad, mode="replicate" if self.padding == "border" else "constant")
        gs_mode = {"linear": "bilinear", "nearest": "nearest", "bicubic": "bicubic"}[mode]
        grid = self.grid if self.grid.dtype == image.dtype else self.grid.to(image.dtype)
        if grid.shape[0] != image.shape[0]:
            grid = grid.expand(image.shape[0], *grid.shape[1:])
        return F.grid_sample(image, grid, mode=gs_mode, padding_mode=self.padding,
                             align_corners=False)


def sample_at(image: torch.Tensor, coords: torch.Tensor, mode: str, padding: str) -> torch.Tensor:
    """Sample ``image`` (B, C, *S) at absolute voxel ``coords`` (B, ndim, *S_out), component i
    along axis i; ``mode`` ``"linear" | "nearest" | "bicubic"``, ``padding`` as ``grid_sample``'s.

    >>> img = torch.arange(6.0).view(1, 1, 2, 3)
    >>> sample_at(img, identity_grid((2, 3))[None], "linear", "zeros").equal(img)
    True
    """
    return Sampler(image.shape[2:], coords, padding)(image, mode)


def ddf_to_sampling_grid(ddf: torch.Tensor) -> torch.Tensor:
    """Turn a voxel DDF into a ``grid_sample`` grid (``align_corners=True``).

    Args:
        ddf: ``(B, ndim, *S)`` displacement in voxels, component i along axis i.

    Returns:
        ``(B, *S, ndim)`` absolute sampling positions in normalised [-1, 1] units,
        last axis in grid_sample's reversed (x, y[, z]) order.
    """
    ndim = check_ddf(ddf)
    spatial = ddf.shape[2:]
    pos = identity_grid(spatial, ddf.device, ddf.dtype)[None] + ddf
    norm = voxels_to_normalized(pos) - 1.0
    return norm.permute(0, *range(2, ndim + 2), 1).flip(-1)    # (B, *S, ndim), xyz order


def warp(image: torch.Tensor, ddf: torch.Tensor, mode: str = "linear",
         padding_mode: str = "zeros") -> torch.Tensor:
    """Pull-back warp: ``out(x) = image(x + ddf(x))``.

    Args:
        image: ``(B, C, *S)``; float for ``linear``/``bicubic``; any real dtype for
            ``nearest``; integer or float label values for ``label``.
        ddf: ``(B, ndim, *S)`` or ``(1, ndim, *S)``, voxels, component i along axis i.
        mode: ``"linear"`` (alias ``"bilinear"``/``"trilinear"``), ``"nearest"``,
            ``"bicubic"`` (2D only, via ``grid_sample``), or ``"label"``: each label
            value is warped as a one-hot channel with linear weights and the
            arg-max is taken, so no new label value can appear (out-of-field
            samples take the smallest label value, usually background 0).
        padding_mode: ``"zeros"`` or ``"border"`` for samples outside the image.

    Returns:
        ``(B, C, *S)`` with the input's dtype.

    >>> img = torch.zeros(1, 1, 5, 5); img[0, 0, 2, 2] = 1
    >>> u = torch.zeros(1, 2, 5, 5); u[:, 0] = 1.0       # sample one voxel down axis 0
    >>> warp(img, u)[0, 0, 1, 2].item()
    1.0
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if padding_mode not in PADDING:
        raise ValueError(f"padding_mode must be one of {PADDING}, got {padding_mode!r}")
    batch = image.shape[0] if isinstance(image, torch.Tensor) and image.dim() >= 1 else None
    ndim = check_ddf(ddf, batch=batch)
    _check_image(image, "image", ndim, ddf.shape[2:], mode)
    B = image.shape[0]
    if ddf.shape[0] != B:
        ddf = ddf.expand(B, *ddf.shape[1:])
    if mode == "label":
        return _warp_labels(image, ddf, padding_mode)
    if mode == "bicubic":
        if ndim != 2:
            raise ValueError("mode='bicubic' is only available for 2-D images; use 'linear' in 3-D")
        coords = identity_grid(ddf.shape[2:], ddf.device, ddf.dtype)[None] + ddf
        return sample_at(image, coords, "bicubic", padding_mode)
    coords = identity_grid(ddf.shape[2:], ddf.device, ddf.dtype)[None] + ddf
    if mode == "nearest":
        if image.is_floating_point():
            return sample_at(image, coords, "nearest", padding_mode)
        # integer maps: float64 holds every int32 exactly
        return sample_at(image.double(), coords.double(), "nearest", padding_mode).to(image.dtype)
    return sample_at(image, coords, "linear", padding_mode)


def _warp_labels(label: torch.Tensor, ddf: torch.Tensor, padding: str) -> torch.Tensor:
    values = torch.unique(label)
    if values.numel() > 256:
        raise ValueError(f"label has {values.numel()} distinct values; mode='label' expects a "
                         "label map (<= 256 classes). Use mode='linear' for intensities")
    if label.is_floating_point() and not bool((label == label.round()).all()):
        raise ValueError("label contains non-integer values; mode='label' expects a label map")
    coords = identity_grid(ddf.shape[2:], ddf.device, ddf.dtype)[None] + ddf
    B, C = label.shape[:2]
    best = None
    best_score = None
    for v in values:                       # one channel at a time keeps memory at 2 maps
        onehot = (label == v).to(ddf.dtype)
        score = sample_at(onehot, coords, "linear", padding)
        if best is None:
            best = torch.full_like(label, v)
            best_score = score
        else:
            take = score > best_score
            best = torch.where(take, v.to(label.dtype), best)
            best_score = torch.where(take, score, best_score)
    return best


# ---------------------------------------------------------------- composition

def compose(a: torch.Tensor, b: torch.Tensor, padding_mode: str = "border") -> torch.Tensor:
    """Eq. 5: ``<a o b>(x) = b(x + a(x)) + a(x)``.

    Warping an image by the result equals warping it by ``b`` first, then by ``a``
    (without the blur of two resamplings). Both fields ``(B, ndim, *S)`` in voxels.
    ``padding_mode`` says how ``b`` is read outside its grid (``border`` by default,
    as the official release does for its deformation fields).
    """
    check_ddf(a, "a")
    check_ddf(b, "b", spatial=a.shape[2:])
    if b.shape[0] != a.shape[0] and 1 not in (a.shape[0], b.shape[0]):
        raise ValueError(f"a and b batch sizes differ: {a.shape[0]} vs {b.shape[0]}")
    B = max(a.shape[0], b.shape[0])
    a = a.expand(B, *a.shape[1:])
    b = b.expand(B, *b.shape[1:])
    coords = identity_grid(a.shape[2:], a.device, a.dtype)[None] + a
    return sample_at(b, coords, "linear", padding_mode) + a


# ---------------------------------------------------------------- Jacobian

def jacobian_det(ddf: torch.Tensor) -> torch.Tensor:
    """``det(I + grad u)`` per voxel.

    Derivatives by central differences in the interior and one-sided differences
    at the border (``numpy.gradient`` convention, which the official evaluation
    uses). ``J_ij = delta_ij + d u_i / d x_j``.

    Args:
        ddf: ``(B, ndim, *S)`` in voxels.

    Returns:
        ``(B, *S)`` determinant (dimensionless).
    """
    ndim = check_ddf(ddf)
    if min(ddf.shape[2:]) < 2:
        raise ValueError(f"ddf needs at least 2 voxels along every axis; got {tuple(ddf.shape)}")
    dims = tuple(range(1, ndim + 1))
    # grads[i][j] = d u_i / d x_j, each (B, *S)
    grads = [torch.gradient(ddf[:, i], dim=dims) for i in range(ndim)]
    J = [[grads[i][j] + (1.0 if i == j else 0.0) for j in range(ndim)] for i in range(ndim)]
    if ndim == 2:
        return J[0][0] * J[1][1] - J[0][1] * J[1][0]
    return (J[0][0] * (J[1][1] * J[2][2] - J[1][2] * J[2][1])
            - J[0][1] * (J[1][0] * J[2][2] - J[1][2] * J[2][0])
            + J[0][2] * (J[1][0] * J[2][1] - J[1][1] * J[2][0]))


def negative_jacobian_fraction(ddf: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Fraction of voxels with ``det(I + grad u) < 0`` ("|J|<0"), per batch item.

    Returns ``(B,)`` in [0, 1] (multiply by 100 for Table 1's percent). An optional
    boolean ``mask`` ``(B or 1, *S)`` restricts the count to a region.
    """
    det = jacobian_det(ddf)
    neg = (det < 0).to(ddf.dtype)
    if mask is None:
        return neg.flatten(1).mean(1)
    mask = mask.to(ddf.dtype).expand_as(neg)
    return (neg * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1)


def magnitude_stats(ddf: torch.Tensor) -> dict[str, torch.Tensor]:
    """Max and mean displacement magnitude as % of the image size (Table 1).

    Component ``i`` is divided by the size of axis ``i`` before taking the norm,
    so for a square image of side S this is ``100 * |u| / S`` (the official
    release's fraction-of-side unit times 100).

    Returns:
        ``{"max_pct": (B,), "mean_pct": (B,)}``.
    """
    u = voxels_to_fraction(ddf)
    mag = u.norm(dim=1).flatten(1) * 100.0
    return {"max_pct": mag.amax(1), "mean_pct": mag.mean(1)}


# ---------------------------------------------------------------- resizing and units

def resize_ddf(ddf: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resample a voxel DDF onto a grid of another size, rescaling its vectors.

    The first and last voxel centres of both grids coincide (the ``align_corners
    =True`` convention the warp uses), so component ``i`` is multiplied by
    ``(new_i - 1) / (old_i - 1)``. Affine fields are reproduced exactly.

    Args:
        ddf: ``(B, ndim, *S)`` voxels. size: the new spatial shape (ndim ints).
    """
    ndim = check_ddf(ddf)
    size = tuple(int(s) for s in size)
    if len(size) != ndim or min(size) < 2:
        raise ValueError(f"size must be {ndim} integers >= 2, got {size}")
    mode = "bilinear" if ndim == 2 else "trilinear"
    out = F.interpolate(ddf, size=size, mode=mode, align_corners=True)
    scale = [(n - 1) / (o - 1) for n, o in zip(size, ddf.shape[2:])]
    return out * torch.tensor(scale, dtype=ddf.dtype, device=ddf.device).view(1, ndim, *[1] * ndim)


def _per_axis(ddf: torch.Tensor, values) -> torch.Tensor:
    ndim = ddf.shape[1]
    return torch.tensor(values, dtype=ddf.dtype, device=ddf.device).view(1, ndim, *[1] * ndim)


def voxels_to_normalized(ddf: torch.Tensor) -> torch.Tensor:
    """Voxels -> ``grid_sample`` normalised units (``align_corners=True``): ``2u/(S_i-1)``.

    Component order is unchanged (component i along axis i); use
    :func:`ddf_to_sampling_grid` for a ready-made ``grid_sample`` grid.
    """
    check_ddf(ddf)
    return ddf * _per_axis(ddf, [2.0 / (s - 1) for s in ddf.shape[2:]])


def normalized_to_voxels(ddf: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`voxels_to_normalized`."""
    check_ddf(ddf)
    return ddf * _per_axis(ddf, [(s - 1) / 2.0 for s in ddf.shape[2:]])


def voxels_to_fraction(ddf: torch.Tensor) -> torch.Tensor:
    """Voxels -> the official release's unit, a fraction of the side: ``u_i / S_i``."""
    check_ddf(ddf)
    return ddf * _per_axis(ddf, [1.0 / s for s in ddf.shape[2:]])


def fraction_to_voxels(ddf: torch.Tensor) -> torch.Tensor:
    """Official fraction-of-side unit -> voxels: ``u_i * S_i``."""
    check_ddf(ddf)
    return ddf * _per_axis(ddf, [float(s) for s in ddf.shape[2:]])
