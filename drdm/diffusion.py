"""The forward process: random multi-scale deformation diffusion (Section 2.1).

Two readings of the method are implemented and selected by ``reading``:

``"paper"``
    Eq. 6 at the field resolution: every diffusion step draws an independent
    multi-scale DVF on the enlarged field (``h = 2H``, centre-cropped at the end,
    Section 3.3). Scale ``i`` is a grid of nodes spaced ``2**i`` voxels with
    i.i.d. ``N(0, (2**i sigma)**2)`` values, linearly interpolated between nodes.
    ``psi_t`` composes ``n_t = floor(t**alpha / beta)`` DVFs (Eq. 9); ``phi_{t:1}``
    is ``psi_t`` composed after the remaining ``n_{t:1} - n_t`` DVFs, each DVF
    of ``phi`` carrying an added 5 % perturbation, with ``n_{t:1}`` either the practical
    ``floor(t**1.3 / 1.5)`` of Section 3.3 or Eq. 11's ``t**(alpha+1)/((alpha+1) beta)``.
    Variances follow Eqs. 7, 8 and 10 (exactly at voxels on the coarsest node
    lattice, see :func:`dvf_variance`).

``"official"``
    What github.com/jianqingzheng/def_diff_rec does (see the book's
    reproducibility chapter): ONE stationary velocity ``v`` per sample on a fixed
    64-cell control grid spanning ``2S`` (4 scales 64/32/16/8, std
    ``sigma * 64/s`` in fractions of the grid side, ``sigma = 4e-5``, bilinear
    up-sampling with ``align_corners=False``); the target ``psi_t`` is ``v``
    self-composed ``n_t = floor(t**0.6)`` times, the image field ``phi_{t:1}`` is
    ``v`` with an 8 % composed perturbation self-composed
    ``clamp(floor(2 t**1.3 / 3), 1, 200)`` times, compositions with border
    padding; both are multiplied by ``S/64`` (not the geometric 2: 2-D fields at
    S = 256 come out twice as large as the integrated flow), up-sampled to ``2S``
    and centre-cropped. ``t`` runs over 0..T-1.

All returned fields are in **image voxels**, component ``i`` along spatial axis
``i`` (see :mod:`drdm.spatial`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Sequence

import torch
import torch.nn.functional as F

from . import spatial
from .spatial import Sampler, identity_grid, sample_at

__all__ = [
    "DiffusionConfig", "ForwardProcess", "ForwardSample",
    "n_t", "n_t1", "dvf_variance", "discontinuity_variance", "ddf_variance",
]

READINGS = ("paper", "official")


# ---------------------------------------------------------------- theory (Eqs. 7-11)

def n_t(t, alpha: float = 0.6, beta: float = 1.0):
    """Eq. 9 with the paper's floor: number of DVF integrations at step ``t``."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return torch.floor(t.clamp_min(0) ** alpha / beta + 1e-9).long()


def n_t1(t, alpha: float = 0.6, beta: float = 1.0, schedule: str = "practical"):
    """Integrated noise scale ``n_{t:1}``.

    ``schedule="practical"``: ``floor(t**1.3 / 1.5)`` (Section 3.3, used by the
    paper and the official code); ``"theory"``: Eq. 11,
    ``floor(t**(alpha+1) / ((alpha+1) beta))``.
    """
    t = torch.as_tensor(t, dtype=torch.float64).clamp_min(0)
    if schedule == "practical":
        return torch.floor(t ** 1.3 / 1.5 + 1e-9).long()
    if schedule == "theory":
        return torch.floor(t ** (alpha + 1) / ((alpha + 1) * beta) + 1e-9).long()
    raise ValueError(f"schedule must be 'practical' or 'theory', got {schedule!r}")


def dvf_variance(sigma: float, m: int, n=1):
    """Eq. 7: per-component variance ``(4**(m+1) - 1)/3 * sigma**2 * n``.

    ``m + 1`` scales with std ``2**i sigma``, summed; ``n`` independent DVFs add
    their variances (small-deformation approximation of composition).
    """
    return (4 ** (m + 1) - 1) / 3 * sigma ** 2 * torch.as_tensor(n, dtype=torch.float64)


def discontinuity_variance(sigma: float, m: int, dx, n=1):
    """Eq. 8: variance of ``psi[x + dx] - psi[x]`` per component.

    ``2 n sigma**2 sum_i min(|dx|_inf, 2**i)**2``; ``dx`` is the Chebyshev
    distance in voxels (scalar or tensor).
    """
    dx = torch.as_tensor(dx, dtype=torch.float64)
    s = sum(torch.clamp(dx, max=2.0 ** i) ** 2 for i in range(m + 1))
    return 2 * torch.as_tensor(n, dtype=torch.float64) * sigma ** 2 * s


def ddf_variance(sigma: float, m: int, n_t1_value):
    """Eq. 10: variance of ``phi_{t:1}``, ``(4**(m+1) - 1)/3 * n_{t:1} * sigma**2``."""
    return dvf_variance(sigma, m, n_t1_value)


# ---------------------------------------------------------------- configuration

@dataclass(frozen=True)
class DiffusionConfig:
    """Forward-process settings. ``None`` picks the reading's default.

    Attributes:
        reading: ``"official"`` or ``"paper"`` (module docstring).
        ndim: 2 or 3. image_size: int or per-axis sizes of the image grid.
        timesteps: T (80 in the paper).
        sigma: DVF unit std. Official: fraction of the 64-grid side (4e-5).
            Paper: voxels (default 0.02, so 2-D fields at T=80 reach a mean
            |phi| of about 5 % of the image side; the paper gives no value).
        n_scales: ``m + 1``. Official: 4. Paper: ``log2(h) - 3`` (coarsest node
            spacing h/16).
        perturbation: relative std of the training perturbation (official 0.08,
            composed onto v; paper 0.05, added to every DVF of phi).
        alpha, beta: Eq. 9. schedule: ``"practical"`` or ``"theory"`` (paper only).
        field_factor: enlarged field ``h = field_factor * H`` (2).
        padding: how compositions read outside the field (official ``border``;
            paper ``zeros``, the friction the enlarged field exists to avoid).
        control_grid: official control-grid cells per axis (64).
        unit_factor: official only: ``"official"`` multiplies by S/64 as the
            release does, ``"geometric"`` by 2 (the consistent factor), or a number.
            Statistics in % of the side and |J|<0 depend on this factor only, not
            on S: ``4.0`` reproduces the release's 2-D S = 256 fields at any size.
        integration: official only: ``"squaring"`` (binary powers of the
            stationary field, O(log n) compositions) or ``"euler"`` (n sequential
            compositions, the release's loop).
    """
    reading: str = "official"
    ndim: int = 2
    image_size: int | tuple = 256
    timesteps: int = 80
    sigma: float | None = None
    n_scales: int | None = None
    perturbation: float | None = None
    alpha: float = 0.6
    beta: float = 1.0
    schedule: str = "practical"
    field_factor: int = 2
    padding: str | None = None
    control_grid: int = 64
    unit_factor: str | float = "official"
    integration: str = "euler"

    def __post_init__(self):
        if self.reading not in READINGS:
            raise ValueError(f"reading must be one of {READINGS}, got {self.reading!r}")
        if self.ndim not in (2, 3):
            raise ValueError(f"ndim must be 2 or 3, got {self.ndim}")
        size = self.image_size
        size = (int(size),) * self.ndim if isinstance(size, (int, float)) else tuple(int(s) for s in size)
        if len(size) != self.ndim or min(size) < 4:
            raise ValueError(f"image_size must be an int or {self.ndim} ints >= 4, got {self.image_size}")
        object.__setattr__(self, "image_size", size)
        if math.prod(n * self.field_factor for n in size) * self.ndim > 2 ** 28:
            raise ValueError(f"image_size {size} is too large for the forward process (a field of "
                             f"{self.field_factor}x that size would not fit in memory); resample the "
                             f"image to a smaller grid")
        if self.timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {self.timesteps}")
        if self.integration not in ("squaring", "euler"):
            raise ValueError(f"integration must be 'squaring' or 'euler', got {self.integration!r}")
        if not (self.unit_factor in ("official", "geometric")
                or (isinstance(self.unit_factor, (int, float)) and self.unit_factor > 0)):
            raise ValueError(f"unit_factor must be 'official', 'geometric' or a positive number, "
                             f"got {self.unit_factor!r}")
        if self.schedule not in ("practical", "theory"):
            raise ValueError(f"schedule must be 'practical' or 'theory', got {self.schedule!r}")
        official = self.reading == "official"
        h = max(size) * self.field_factor
        defaults = {
            "sigma": 4e-5 if official else 0.02,
            "n_scales": 4 if official else max(1, int(math.log2(h)) - 3),
            "perturbation": 0.08 if official else 0.05,
            "padding": "border" if official else "zeros",
        }
        for k, v in defaults.items():
            if getattr(self, k) is None:
                object.__setattr__(self, k, v)
        if self.padding not in spatial.PADDING:
            raise ValueError(f"padding must be one of {spatial.PADDING}, got {self.padding!r}")

    @property
    def m(self) -> int:
        return self.n_scales - 1

    @property
    def t_max(self) -> int:
        """Largest valid t: T-1 for the official reading (0..79), T for the paper's."""
        return self.timesteps - 1 if self.reading == "official" else self.timesteps

    def to_dict(self) -> dict:
        d = asdict(self)
        d["image_size"] = list(self.image_size)
        return d


@dataclass
class ForwardSample:
    """One draw of the forward process (all fields in image voxels).

    Attributes:
        phi: ``(B, ndim, *S)`` random DDF ``phi_{t:1}`` that deforms ``I_0`` to ``I_t``.
        psi: ``(B, ndim, *S)`` training target ``psi_t`` (the last step's DVF).
        n_phi, n_psi: ``(B,)`` numbers of compositions used.
        intermediates: optional list of ``(n, phi_n)`` for figures.
    """
    phi: torch.Tensor
    psi: torch.Tensor
    n_phi: torch.Tensor
    n_psi: torch.Tensor
    intermediates: list = field(default_factory=list)


# ---------------------------------------------------------------- the process

class ForwardProcess:
    """Samples ``(phi_{t:1}, psi_t)`` pairs; stateless apart from its config.

    >>> fp = ForwardProcess(DiffusionConfig(reading="official", image_size=64))
    >>> s = fp.sample(torch.tensor([10, 40]), generator=torch.Generator().manual_seed(0))
    >>> s.phi.shape, s.psi.shape
    (torch.Size([2, 2, 64, 64]), torch.Size([2, 2, 64, 64]))
    """

    def __init__(self, config: DiffusionConfig | None = None, **overrides):
        config = config or DiffusionConfig()
        self.config = replace(config, **overrides) if overrides else config

    # -- schedules
    def schedule(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        """``(n_{t:1}, n_t)`` for integer steps ``t`` (tensor or int)."""
        c = self.config
        t = torch.as_tensor(t)
        if c.reading == "official":
            n_phi = n_t1(t, schedule="practical").clamp(1, 200)
            n_psi = n_t(t, 0.6, 1.0)
        else:
            n_psi = n_t(t, c.alpha, c.beta)
            n_phi = torch.maximum(n_t1(t, c.alpha, c.beta, c.schedule), n_psi)
        return n_phi, n_psi

    def _check_t(self, t) -> torch.Tensor:
        t = torch.as_tensor(t)
        if t.dim() == 0:
            t = t[None]
        if t.dim() != 1 or t.dtype.is_floating_point or t.dtype == torch.bool:
            raise ValueError(f"t must be an int or a 1-D integer tensor (B,), got {t!r}")
        lo, hi = 0, self.config.t_max
        if bool(((t < lo) | (t > hi)).any()):
            raise ValueError(f"t must lie in [{lo}, {hi}] for the {self.config.reading!r} reading "
                             f"(T={self.config.timesteps}); got {t.tolist()}")
        return t.long()

    # -- Eq. 6
    def multiscale_dvf(self, batch: int, std: float, generator=None, device=None,
                       dtype=torch.float32) -> torch.Tensor:
        """One multi-scale DVF per batch item on the working grid (Eq. 6).

        Paper: ``(B, ndim, *h)`` in voxels of the enlarged field. Official:
        ``(B, ndim, *[64]*ndim)`` in voxels of the control grid.
        """
        c = self.config
        nd = c.ndim
        mode = "bilinear" if nd == 2 else "trilinear"
        if c.reading == "official":
            g = c.control_grid
            out = torch.zeros(batch, nd, *[g] * nd, device=device, dtype=dtype)
            for i in range(c.n_scales):
                s = g >> i
                noise = torch.randn(batch, nd, *[s] * nd, generator=generator, device=device, dtype=dtype)
                noise = noise * (std * (g / s) * g)      # grid-side fraction -> grid voxels
                out += noise if s == g else F.interpolate(noise, size=[g] * nd, mode=mode, align_corners=False)
            return out
        h = [s * c.field_factor for s in c.image_size]
        out = torch.zeros(batch, nd, *h, device=device, dtype=dtype)
        for i in range(c.n_scales):
            step = 2 ** i
            nodes = [math.ceil((n - 1) / step) + 1 for n in h]
            noise = torch.randn(batch, nd, *nodes, generator=generator, device=device, dtype=dtype)
            noise = noise * (std * step)
            if step > 1:
                # nodes land exactly on voxels 0, step, 2 step, ... (align_corners=True)
                full = [(k - 1) * step + 1 for k in nodes]
                noise = F.interpolate(noise, size=full, mode=mode, align_corners=True)
                noise = noise[(slice(None), slice(None)) + tuple(slice(0, n) for n in h)]
            out += noise
        return out

    # -- integration
    def _compose(self, a, b):
        coords = identity_grid(a.shape[2:], a.device, a.dtype)[None] + a
        return sample_at(b, coords, "linear", self.config.padding) + a

    def _power(self, v, n, record: Sequence[int] = ()):
        """``v`` self-composed ``n`` (B,) times: the release's ``ddf <- v + ddf o (id + v)``."""
        out = torch.zeros_like(v)
        inter = []
        if int(n.max()) == 0:
            return out, inter
        if self.config.integration == "euler" or record:
            record = set(int(r) for r in record)
            # every step reads the accumulated field at the same x + v(x)
            at_v = Sampler(v.shape[2:], identity_grid(v.shape[2:], v.device, v.dtype)[None] + v,
                            self.config.padding)
            uniform = bool((n == n[0]).all())
            for k in range(1, int(n.max()) + 1):
                new = at_v(out) + v
                out = new if uniform else torch.where((n >= k).view(-1, *[1] * (v.dim() - 1)), new, out)
                if k in record:
                    inter.append((k, out.clone()))
            return out, inter
        power = v
        k = 0
        while True:
            bit = ((n >> k) & 1).bool()
            if bool(bit.any()):
                out = torch.where(bit.view(-1, *[1] * (v.dim() - 1)), self._compose(power, out), out)
            k += 1
            if not bool((n >> k).any()):
                return out, inter
            power = self._compose(power, power)

    def _official_to_image(self, u: torch.Tensor) -> torch.Tensor:
        """Control-grid voxels -> image voxels: scale, up-sample to 2S, centre-crop S."""
        c = self.config
        g = c.control_grid
        S = c.image_size
        nd = c.ndim
        # fraction of grid side -> fraction of image side (x S/64 or x 2) -> image voxels (x S_i)
        if c.unit_factor == "official":
            k = max(S) / g
        elif c.unit_factor == "geometric":
            k = float(c.field_factor)
        else:
            k = float(c.unit_factor)
        factors = [k * s / g for s in S]
        # F.interpolate(align_corners=False) to 2S then crop [S/2, 3S/2): sample the grid there
        axes = []
        for s in S:
            big = c.field_factor * s
            j = torch.arange((big - s) // 2, (big - s) // 2 + s, device=u.device, dtype=u.dtype)
            axes.append(((j + 0.5) * (g / big) - 0.5).clamp_min(0))
        coords = torch.stack(torch.meshgrid(*axes, indexing="ij"))[None].expand(u.shape[0], nd, *S)
        out = sample_at(u, coords, "linear", "border")
        return out * torch.tensor(factors, dtype=u.dtype, device=u.device).view(1, nd, *[1] * nd)

    def _crop(self, u: torch.Tensor) -> torch.Tensor:
        S = self.config.image_size
        idx = tuple(slice((h - s) // 2, (h - s) // 2 + s) for h, s in zip(u.shape[2:], S))
        return u[(slice(None), slice(None)) + idx]

    # -- sampling
    @torch.no_grad()
    def sample(self, t, generator: torch.Generator | None = None, device=None,
               dtype=torch.float32, return_intermediates: bool = False) -> ForwardSample:
        """Draw ``phi_{t:1}`` and ``psi_t`` for each step in ``t`` (Algorithm 1, line 5).

        Args:
            t: int or ``(B,)`` integer tensor of steps.
            generator: ``torch.Generator`` on ``device``; same seed -> same fields.
            return_intermediates: also return ``phi`` after each schedule level
                ``n_{tau:1}`` for ``tau <= t`` (first batch item's schedule).

        Returns:
            :class:`ForwardSample` with fields in image voxels.
        """
        c = self.config
        t = self._check_t(t)
        if device is None and generator is not None:
            device = generator.device
        n_phi, n_psi = self.schedule(t)
        n_phi, n_psi = n_phi.to(device), n_psi.to(device)
        B = t.shape[0]
        record = []
        if return_intermediates:
            record = sorted(set(int(v) for v in self.schedule(torch.arange(0, int(t[0]) + 1))[0].tolist()))
        if c.reading == "official":
            v = self.multiscale_dvf(B, c.sigma, generator, device, dtype)
            noise = self.multiscale_dvf(B, c.sigma * c.perturbation, generator, device, dtype)
            v_noisy = self._compose(v, noise)               # v(x) + noise(x + v(x))
            phi, inter = self._power(v_noisy, n_phi, record)
            psi, _ = self._power(v, n_psi)
            to_img = self._official_to_image
            return ForwardSample(to_img(phi), to_img(psi), n_phi, n_psi,
                                 [(k, to_img(p)) for k, p in inter])
        return self._sample_paper(n_phi, n_psi, generator, device, dtype, record)

    def _sample_paper(self, n_phi, n_psi, generator, device, dtype, record):
        c = self.config
        B = n_phi.shape[0]
        shape = (B, c.ndim, *[s * c.field_factor for s in c.image_size])
        bshape = (-1,) + (1,) * (len(shape) - 1)
        phi = torch.zeros(shape, device=device, dtype=dtype)
        psi = torch.zeros(shape, device=device, dtype=dtype)
        inter = []
        # DVFs are drawn newest first (psi_t's n_t, then the earlier n_{t:1} - n_t)
        # and each older one is composed *under* the accumulated field,
        # acc <- <acc o dvf>, so every fresh DVF is resampled once and the
        # accumulated field is never re-interpolated (no numerical diffusion).
        for k in range(1, int(n_phi.max()) + 1):
            dvf = self.multiscale_dvf(B, c.sigma, generator, device, dtype)
            pert = self.multiscale_dvf(B, c.sigma * c.perturbation, generator, device, dtype)
            phi = torch.where((n_phi >= k).view(bshape), self._compose(phi, dvf + pert), phi)
            in_psi = (n_psi >= k).view(bshape)
            if bool(in_psi.any()):
                psi = torch.where(in_psi, self._compose(psi, dvf), psi)
            if k in record:
                inter.append((k, self._crop(phi).clone()))
        return ForwardSample(self._crop(phi), self._crop(psi), n_phi, n_psi, inter)

    def q_sample(self, image: torch.Tensor, t, generator=None, mode: str = "linear"):
        """Deform ``image`` ``(B, C, *S)`` to ``I_t = phi_{t:1}(I_0)`` (Eq. 4).

        Returns ``(I_t, ForwardSample)``.
        """
        c = self.config
        if not isinstance(image, torch.Tensor) or tuple(image.shape[2:]) != c.image_size:
            got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise ValueError(f"image must have shape (B, C, {', '.join(map(str, c.image_size))}) "
                             f"for this process; got {got}")
        t = self._check_t(t)
        if t.shape[0] == 1 and image.shape[0] > 1:
            t = t.expand(image.shape[0])
        if t.shape[0] != image.shape[0]:
            raise ValueError(f"t has {t.shape[0]} steps for a batch of {image.shape[0]} images")
        s = self.sample(t, generator, device=image.device, dtype=image.dtype)
        return spatial.warp(image, s.phi, mode=mode), s
