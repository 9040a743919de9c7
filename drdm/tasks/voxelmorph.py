"""The registration network of Section 5: a VoxelMorph-style U-Net and its smoothness terms.

Balakrishnan et al. 2019: strided 3x3(x3) convolutions with LeakyReLU 0.2, an encoder
and a decoder with skip connections, extra convolutions and a flow layer initialised
near zero. It maps ``(moving, fixed)`` to a displacement in voxels (component i along
axis i) for the pull-back :func:`drdm.spatial.warp`. Used by :mod:`drdm.tasks.registration`.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..network import default_init_

__all__ = ["VoxelMorph", "gradient_l1", "gradient_l2"]


class VoxelMorph(nn.Module):
    """VoxelMorph-style registration U-Net for 2-D or 3-D pairs.

    Input: ``moving``, ``fixed`` ``(B, C, *S)``; output: displacement ``(B, ndim, *S)``
    in voxels (component i along axis i). Sizes that are not a multiple of
    ``2 ** len(enc)`` are padded and cropped back. Initial weights are drawn from
    ``generator`` when one is given (:func:`drdm.network.default_init_`), else from the global RNG.
    """

    def __init__(self, ndim: int = 2, in_channels: int = 1, enc: Sequence[int] = (16, 32, 32, 32),
                 dec: Sequence[int] = (32, 32, 32, 32), extra: Sequence[int] = (16, 16), *,
                 generator: torch.Generator | None = None):
        super().__init__()
        if ndim not in (2, 3):
            raise ValueError(f"ndim must be 2 or 3, got {ndim}")
        if len(dec) != len(enc):
            raise ValueError(f"dec needs one width per encoder level ({len(enc)}), got {len(dec)}")
        Conv = (nn.Conv2d, nn.Conv3d)[ndim - 2]
        self.ndim, self.levels = ndim, len(enc)

        def conv(cin, cout, stride=1):
            return nn.Sequential(Conv(cin, cout, 3, stride=stride, padding=1), nn.LeakyReLU(0.2))

        # with a generator: build with the global RNG left as it was, then replay PyTorch's
        # default draws from the generator, so the flow layer's draw below sees the same stream
        with torch.random.fork_rng(devices=[], enabled=generator is not None):
            chans = [2 * in_channels] + list(enc)
            self.enc = nn.ModuleList([conv(chans[i], chans[i + 1], 2) for i in range(len(enc))])
            self.dec = nn.ModuleList()
            c = enc[-1]
            for i in range(len(dec)):
                skip = chans[len(enc) - 1 - i]                  # the encoder output one level up
                self.dec.append(conv(c + skip, dec[i]))
                c = dec[i]
            self.extra = nn.Sequential(*[conv(a, b) for a, b in zip([c] + list(extra[:-1]), extra)])
            c = extra[-1] if extra else c
            self.flow = Conv(c, ndim, 3, padding=1)
        if generator is not None:
            default_init_(self, generator)
        with torch.no_grad():                               # start near the identity, as VoxelMorph
            self.flow.weight.normal_(0.0, 1e-5, generator=generator)
            self.flow.bias.zero_()

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        x = torch.cat([moving, fixed], 1)
        size = x.shape[2:]
        m = 2 ** self.levels
        pad = []
        for s in reversed(size):
            pad += [0, (-s) % m]
        if any(pad):
            x = F.pad(x, pad)
        skips = [x]
        for layer in self.enc:
            x = layer(x)
            skips.append(x)
        for i, layer in enumerate(self.dec):
            skip = skips[self.levels - 1 - i]
            x = F.interpolate(x, size=skip.shape[2:], mode="nearest")
            x = layer(torch.cat([x, skip], 1))
        x = self.flow(self.extra(x))
        if any(pad):
            x = x[(slice(None), slice(None)) + tuple(slice(0, s) for s in size)]
        return x


def _diffs(u: torch.Tensor):
    return [torch.diff(u, dim=2 + i) for i in range(u.dim() - 2)]


def gradient_l1(u: torch.Tensor) -> torch.Tensor:
    """Eq. 20's ``E_x |grad u|_1``: forward differences, mean absolute value per axis, summed over axes."""
    return sum(d.abs().mean() for d in _diffs(u))


def gradient_l2(u: torch.Tensor) -> torch.Tensor:
    """VoxelMorph's smoothness: forward differences, mean square per axis, averaged over axes."""
    ds = _diffs(u)
    return sum(d.pow(2).mean() for d in ds) / len(ds)
