"""The map between an input voxel grid and a network's grid (2-D, 3-D, or slice by slice).

A network needs sides divisible by 8 and was trained on one grid
(``train_config["image_size"]``; 256 for the release's 2-D weights, 128 for 3-D weights
without a config). An input of any shape and voxel spacing is resampled, for the
network only, to an **isotropic** grid of the network's size: one voxel size for every
axis so the whole field of view fits, the longest physical extent filling its axis, the
others padded symmetrically with background (:func:`drdm.data.preprocess`: anti-aliased
resampling with voxel centres aligned, 0.5/99.5 percentile clip, min-max to [0, 1]).
Each generated field ``u`` (network voxels) is brought back to the input grid by sampling
it at the network coordinates of every input voxel centre,
``y_i = (x_i + 0.5) / s_i - 0.5 + pad_i``, and multiplying component ``i`` by ``s_i``
(input voxels per network voxel along axis ``i``). This is the exact change of
coordinates of the resampling above, and it commutes with composition (Eq. 5);
:func:`drdm.spatial.resize_ddf` (corner-aligned grids) differs from it by up to half a
network voxel and ignores the padding.

:class:`SliceGrid` does the same for every slice of a 3-D stack with a 2-D network, as
the release augments cardiac short-axis stacks.

Every door from an image grid to a network's grid goes through this map:

- :func:`drdm.sampling.deform_input` runs Algorithm 2 through it; ``drdm augment``,
  :class:`drdm.transforms.RandDRDMd`, ``drdm.sampling.augment(grid=InputGrid(...))`` and the
  segmentation tasks' DRDM copies call it, so they agree to the voxel
  (``tests/test_one_path.py``, square, non-square and anisotropic);
- :func:`drdm.sampling.registration_pairs` runs Algorithm 4 through it, for ``drdm synth``
  and the registration task;
- Table 1 (``drdm table1``, chapter 3) takes its images to the network grid with
  ``InputGrid(..., isotropic=False, threshold=(None, None)).to_network``: the release's
  protocol, each slice stretched to 256^2 and min-max scaled.

:func:`drdm.sampling.deform` itself runs at the size of the image it is given (an image
already on the network's grid).
"""
from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["MAX_GRID_VOXELS", "check_grid", "InputGrid", "SliceGrid"]

#: Largest network grid the commands accept (about 5800^2 or 320^3 voxels); the
#: paper's grids are 256^2 and 128^3. Larger grids would exhaust memory in the
#: forward process (fields on a 2x enlarged grid) before producing anything.
MAX_GRID_VOXELS = 2 ** 25


def check_grid(size) -> tuple[int, ...]:
    """Refuse network grids that are not divisible by 8 or would exhaust memory."""
    size = tuple(int(s) for s in size)
    if any(s < 8 or s % 8 for s in size):
        raise ValueError(f"network grid {'x'.join(map(str, size))}: every side must be a positive "
                         "multiple of 8 (three 2x down-samplings)")
    if math.prod(size) > MAX_GRID_VOXELS:
        raise ValueError(f"network grid {'x'.join(map(str, size))} is too large ({math.prod(size)} voxels > "
                         f"{MAX_GRID_VOXELS}); pass a smaller --size")
    return size


class InputGrid:
    """The map between an input voxel grid and the network's isotropic padded grid.

    Args:
        shape: input spatial shape (2 or 3 ints). spacing: mm per input axis (``None``:
            isotropic voxels). size: network grid (ndim ints).
        isotropic: ``False`` stretches every axis to the network grid (no padding; Table 1's
            protocol, which resizes each slice to 256^2 whatever its aspect).
        threshold: the intensity clip of :func:`drdm.data.preprocess` (``None``: its
            0.5/99.5 percentiles; ``(None, None)``: plain min-max, as Table 1).

    Attributes:
        new: the resampled field of view inside the network grid (before padding).
        pads: ``(low, high)`` padding per axis, network voxels.
        scale: input voxels per network voxel, per axis.
    """

    def __init__(self, shape, spacing, size, *, isotropic: bool = True, threshold=None):
        from .data import geometry
        self.shape = tuple(int(s) for s in shape)
        self.spacing = (1.0,) * len(self.shape) if spacing is None else tuple(float(s) for s in spacing)
        self.size = tuple(int(s) for s in size)
        self.isotropic, self.threshold = bool(isotropic), threshold
        self.new, self.pads, self.scale = geometry(self.shape, self.size, self.spacing, self.isotropic)

    @classmethod
    def of(cls, net, shape, spacing=None, **kw) -> "InputGrid":
        """The map from an input of ``shape`` to the grid ``net`` was trained on
        (:func:`drdm.sampling.network_grid`)."""
        from .sampling import network_grid
        return cls(shape, spacing, network_grid(net), **kw)

    def to_network(self, image: np.ndarray) -> np.ndarray:
        """The input image on the network grid, in [0, 1] (:func:`drdm.data.preprocess`)."""
        from .data import preprocess
        return preprocess(image, self.size, spacing=self.spacing, isotropic=self.isotropic, threshold=self.threshold)

    def ddf_to_input(self, ddf: torch.Tensor) -> torch.Tensor:
        """``(B, ndim, *size)`` network voxels -> ``(B, ndim, *shape)`` input voxels.

        Samples ``ddf`` at ``y_i = (x_i + 0.5) / s_i - 0.5 + pad_i`` and multiplies
        component ``i`` by ``s_i`` (module docstring).
        """
        from .spatial import check_ddf, sample_at
        check_ddf(ddf, spatial=self.size)
        nd = len(self.shape)
        axes = [(torch.arange(n, dtype=torch.float64) + 0.5) / s - 0.5 + lo
                for n, s, (lo, _) in zip(self.shape, self.scale, self.pads)]
        coords = torch.stack(torch.meshgrid(*axes, indexing="ij"))[None]          # (1, nd, *shape)
        coords = coords.to(device=ddf.device, dtype=ddf.dtype).expand(ddf.shape[0], *coords.shape[1:])
        out = sample_at(ddf, coords, "linear", "border")
        scale = torch.tensor(self.scale, dtype=ddf.dtype, device=ddf.device).view(1, nd, *[1] * nd)
        return out * scale

    def describe(self) -> dict:
        return {"network_grid": list(self.size), "field_of_view": list(self.new),
                "padding": [list(p) for p in self.pads], "input_voxels_per_network_voxel": list(self.scale)}

    #: network images per output sample, and whether they are the slices of a stack (:class:`SliceGrid`)
    images_per_sample = 1
    slicewise = False

    def network_images(self, image: np.ndarray) -> np.ndarray:
        """``(1, *size)``: the input on the network grid."""
        return self.to_network(image)[None]

    def per_image(self, ddf_in: torch.Tensor) -> torch.Tensor:
        """An input-grid DDF as the batch of fields its metrics are taken over (here itself)."""
        return ddf_in


class SliceGrid:
    """A 3-D stack ``(H, W, D)`` deformed slice by slice with a 2-D network (``--slicewise``).

    Every slice along the last axis is mapped to the network grid on its own
    (:class:`InputGrid` with the in-plane spacing) and gets its own random field, as
    the release augments cardiac stacks. The sample's DDF is ``(1, 3, H, W, D)`` in
    input voxels with a zero through-plane component, so it is an ordinary 3-D DDF
    of the stack; slices are never mixed.
    """

    slicewise = True

    def __init__(self, shape, spacing, size):
        if len(shape) != 3 or len(size) != 2:
            raise ValueError(f"slice-wise needs a 3-D stack and a 2-D network grid, got {shape} and {size}")
        self.shape = tuple(int(s) for s in shape)
        self.plane = InputGrid(self.shape[:2], tuple(spacing)[:2], size)
        self.size = self.plane.size
        self.images_per_sample = self.shape[2]

    def network_images(self, image: np.ndarray) -> np.ndarray:
        """``(D, *size)``: every slice on the network grid (each normalised on its own)."""
        return np.stack([self.plane.to_network(image[..., k]) for k in range(self.shape[2])])

    def ddf_to_input(self, ddf: torch.Tensor) -> torch.Tensor:
        """``(D, 2, *size)`` network voxels, one field per slice -> ``(1, 3, H, W, D)`` input voxels."""
        if ddf.shape[0] != self.shape[2]:
            raise ValueError(f"expected {self.shape[2]} slice fields, got {ddf.shape[0]}")
        plane = self.plane.ddf_to_input(ddf)                                   # (D, 2, H, W)
        out = torch.zeros(1, 3, *self.shape, dtype=ddf.dtype, device=ddf.device)
        out[0, :2] = plane.permute(1, 2, 3, 0)
        return out

    def per_image(self, ddf_in: torch.Tensor) -> torch.Tensor:
        """``(1, 3, H, W, D)`` -> ``(D, 2, H, W)``: the in-plane field of every slice."""
        return ddf_in[0, :2].permute(3, 0, 1, 2).contiguous()

    def describe(self) -> dict:
        return {**self.plane.describe(), "slicewise": True, "slice_axis": 2, "slices": self.shape[2]}
