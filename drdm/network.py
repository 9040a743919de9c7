"""The DRDM recovery network: a recursive U-Net of ACNN-II blocks with a time embedding.

Table B.4 (layout) and Table B.5 (ACNN-II block) of the paper, 2-D and 3-D from one
definition. Two variants:

``"official"``
    Exactly the released ``RecResACNet``, so its checkpoint loads key for key:
    frozen 80 x 100 sinusoidal time table (the release's quirk: sin and cos share
    the even-index frequencies ``10000**(-2 j / d)``), time MLPs with ReLU,
    InstanceNorm only in encoder and bottleneck blocks, 4x4 stride-2 (transposed)
    convolutions, LeakyReLU slope 1e-6 in the blocks, raw output in fractions of
    the image side clamped to +-(S-1)/S.
``"paper"``
    The tables as written: an 80-wide embedding, LeakyReLU 0.01 in the time MLPs,
    InstanceNorm in every block. Same layout otherwise.

:class:`DRDMNet` returns displacements in **voxels** (component i along axis i)
whatever the internal unit. Internal recursion (Eq. 12): pass k sees the input
re-warped by the composition of the earlier passes, and the passes are composed,
``psi = psi_K o ... o psi_1``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from . import spatial

__all__ = ["NetworkConfig", "DRDMNet", "ACNNBlock", "sinusoidal_table", "default_init_", "fan_in"]


@dataclass(frozen=True)
class NetworkConfig:
    """Network hyper-parameters (saved with every checkpoint).

    Attributes:
        ndim: 2 or 3. in_channels: image channels.
        channels: encoder widths per level (Table B.4: 10, 20, 40).
        timesteps: size of the time table (T = 80).
        time_dim: embedding width (official 100; the paper's table says 80).
        variant: ``"official"`` or ``"paper"`` (module docstring).
        recursion: internal recursions K (Eq. 12; 2 in paper and release).
    """
    ndim: int = 2
    in_channels: int = 1
    channels: tuple = (10, 20, 40)
    timesteps: int = 80
    time_dim: int | None = None
    variant: str = "official"
    recursion: int = 2

    def __post_init__(self):
        if self.ndim not in (2, 3):
            raise ValueError(f"ndim must be 2 or 3, got {self.ndim}")
        if self.variant not in ("official", "paper"):
            raise ValueError(f"variant must be 'official' or 'paper', got {self.variant!r}")
        if self.recursion < 1:
            raise ValueError(f"recursion must be >= 1, got {self.recursion}")
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if len(self.channels) != 3:
            raise ValueError(f"channels must list 3 widths, got {self.channels}")
        if self.time_dim is None:
            object.__setattr__(self, "time_dim", 100 if self.variant == "official" else 80)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d


def sinusoidal_table(n: int, d: int, official: bool = True) -> torch.Tensor:
    """``(n, d)`` time table. ``official``: interleaved sin/cos at ``10000**(-2 (j - j%2) / d)``
    (the release's table); otherwise the usual ``10000**(-(j - j%2) / d)``."""
    t = torch.arange(n, dtype=torch.float64)[:, None]
    j = torch.arange(d, dtype=torch.float64)
    even = j - j % 2
    freq = 10000.0 ** (-(2 * even if official else even) / d)
    table = torch.where(j % 2 == 0, torch.sin(t * freq), torch.cos(t * freq))
    return table.float()


# ---------------------------------------------------------------- seeded initialisation

_FAN_IN_UNIFORM = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d,
                   nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NO_DRAWS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm1d, nn.InstanceNorm2d,
             nn.InstanceNorm3d, nn.GroupNorm, nn.LayerNorm)


def fan_in(weight: torch.Tensor) -> int:
    """Inputs per output of a linear or (transposed) convolution weight: ``shape[1] * prod(shape[2:])``,
    as ``torch.nn.init`` counts them."""
    return weight.shape[1] * math.prod(weight.shape[2:])


@torch.no_grad()
def default_init_(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """Re-draw ``module``'s parameters as PyTorch's default initialisation does, from ``generator``.

    Layers are visited in ``module.modules()`` order, which for the networks of this
    package is the order in which they are built; so with
    ``torch.Generator().manual_seed(s)`` the weights equal, bit for bit on the CPU,
    those of seeding the global RNG with ``s`` before construction, and the global RNG is
    never used. Linear and (transposed) convolution layers: ``kaiming_uniform_(a=sqrt(5))``
    weights and ``U(+-1/sqrt(fan_in))`` biases; embeddings ``N(0, 1)``; normalisation
    layers ones and zeros. Any other layer with parameters raises ``TypeError``.

    >>> a = default_init_(nn.Linear(3, 2), torch.Generator().manual_seed(0))
    >>> b = default_init_(nn.Linear(3, 2), torch.Generator().manual_seed(0))
    >>> torch.equal(a.weight, b.weight)
    True
    """
    for m in module.modules():
        if isinstance(m, _FAN_IN_UNIFORM):
            n = fan_in(m.weight)
            # torch.nn.init.kaiming_uniform_(a=sqrt(5)), term by term so the bound rounds the same
            bound = math.sqrt(3.0) * (nn.init.calculate_gain("leaky_relu", math.sqrt(5)) / math.sqrt(n))
            m.weight.uniform_(-bound, bound, generator=generator)
            if m.bias is not None and n > 0:
                b = 1 / math.sqrt(n)
                m.bias.uniform_(-b, b, generator=generator)
        elif isinstance(m, nn.Embedding):
            m.weight.normal_(0.0, 1.0, generator=generator)
            if m.padding_idx is not None:
                m.weight[m.padding_idx].fill_(0)
        elif isinstance(m, _NO_DRAWS):
            m.reset_parameters()
        elif any(True for _ in m.parameters(recurse=False)):
            raise TypeError(f"default_init_ does not know how PyTorch initialises {type(m).__name__}")
    return module


# ---------------------------------------------------------------- building blocks

def _conv(ndim):
    return getattr(nn, f"Conv{ndim}d")


class ACNNBlock(nn.Module):
    """ACNN-II block (Table B.5): conv -> [InstanceNorm] = x; r = conv(d1) . act . conv(d3) . act (x);
    out = act(r + x). Key names follow the release (``conv0``, ``ln``, ``convs``)."""

    def __init__(self, ndim: int, c_in: int, c_out: int, norm: bool, slope: float):
        super().__init__()
        Conv = _conv(ndim)
        self.conv0 = Conv(c_in, c_out, 3, padding=1)
        self.ln = getattr(nn, f"InstanceNorm{ndim}d")(c_out, affine=True) if norm else None
        self.convs = nn.ModuleList([Conv(c_out, c_out, 3, padding=1),
                                    Conv(c_out, c_out, 3, padding=3, dilation=3)])
        self.act = nn.LeakyReLU(slope)

    def forward(self, x):
        x = self.conv0(x)
        if self.ln is not None:
            x = self.ln(x)
        r = self.act(x)
        r = self.act(self.convs[0](r))
        r = self.convs[1](r)
        return self.act(r + x)


def _stack(ndim, widths, norm, slope):
    return nn.Sequential(*[ACNNBlock(ndim, a, b, norm, slope) for a, b in zip(widths[:-1], widths[1:])])


def _time_mlp(d, c, slope):
    act = nn.ReLU() if slope is None else nn.LeakyReLU(slope)
    return nn.Sequential(nn.Linear(d, c), act, nn.Linear(c, c))


class DRDMNet(nn.Module):
    """Recursive U-Net ``D_theta(I, t)`` predicting a recovering DVF (Eq. 12).

    Args:
        config: :class:`NetworkConfig`.
        generator: draws the initial weights (:func:`default_init_`); ``None``: the global RNG,
            as any PyTorch module.

    ``forward(image, t, recursion=None)``: ``image`` ``(B, C, *S)`` (S divisible by 8),
    ``t`` int or ``(B,)`` integer steps in ``[0, timesteps)``. Returns ``(B, ndim, *S)``
    in voxels.

    >>> net = DRDMNet(NetworkConfig(ndim=2))
    >>> net(torch.rand(2, 1, 32, 32), torch.tensor([3, 40])).shape
    torch.Size([2, 2, 32, 32])
    """

    def __init__(self, config: NetworkConfig | None = None, *, generator: torch.Generator | None = None,
                 **overrides):
        super().__init__()
        cfg = config or NetworkConfig(**overrides)
        self.config = cfg
        #: where the weights come from: ``"release"`` for the release's checkpoint (sampling then
        #: defaults to the release's recovery settings), ``None`` otherwise (:mod:`drdm.checkpoint`)
        self.weights_origin: str | None = None
        #: the training configuration a checkpoint carried (its grid, reading, ...), or ``None``
        self.train_config: dict | None = None
        # with a generator the layers are built with the global RNG forked (left as it was) and
        # initialised from the generator instead (default_init_); without one, PyTorch's usual way
        with torch.random.fork_rng(devices=[], enabled=generator is not None):
            self._build(cfg)
        if generator is not None:
            default_init_(self, generator)
        self.time_embed.weight.data.copy_(sinusoidal_table(cfg.timesteps, cfg.time_dim, cfg.variant == "official"))
        self.time_embed.requires_grad_(False)

    def _build(self, cfg: NetworkConfig) -> None:
        nd, (c1, c2, c3), d = cfg.ndim, cfg.channels, cfg.time_dim
        official = cfg.variant == "official"
        slope = 1e-6 if official else 0.01          # block activations
        t_slope = None if official else 0.01        # time MLP: ReLU in the release
        dec_norm = not official                     # release: no InstanceNorm in the decoder
        Conv, ConvT = _conv(nd), getattr(nn, f"ConvTranspose{nd}d")
        self.time_embed = nn.Embedding(cfg.timesteps, d)          # the frozen time table, filled in __init__
        cin = cfg.in_channels
        self.te1, self.b1 = _time_mlp(d, cin, t_slope), _stack(nd, (cin, c1, c1, c1), True, slope)
        self.down1 = Conv(c1, c1, 4, 2, 1)
        self.te2, self.b2 = _time_mlp(d, c1, t_slope), _stack(nd, (c1, c2, c2, c2), True, slope)
        self.down2 = Conv(c2, c2, 4, 2, 1)
        self.te3, self.b3 = _time_mlp(d, c2, t_slope), _stack(nd, (c2, c3, c3, c3), True, slope)
        self.down3 = Conv(c3, c3, 4, 2, 1)
        self.te_mid, self.b_mid = _time_mlp(d, c3, t_slope), _stack(nd, (c3, c2, c2, c3), True, slope)
        self.up1 = ConvT(c3, c3, 4, 2, 1)
        self.te4, self.b4 = _time_mlp(d, 2 * c3, t_slope), _stack(nd, (2 * c3, c3, c2, c2), dec_norm, slope)
        self.up2 = ConvT(c2, c2, 4, 2, 1)
        self.te5, self.b5 = _time_mlp(d, 2 * c2, t_slope), _stack(nd, (2 * c2, c2, c1, c1), dec_norm, slope)
        self.up3 = ConvT(c1, c1, 4, 2, 1)
        self.te_out, self.b_out = _time_mlp(d, 2 * c1, t_slope), _stack(nd, (2 * c1, c1, c1, c1), dec_norm, slope)
        self.conv_out = Conv(c1, nd, 3, padding=1)

    # -- one pass of the U-Net: output in fractions of the image side
    def unet(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        nd = self.config.ndim
        emb = self.time_embed(t)                                  # (B, d)

        def te(mlp):
            return mlp(emb).view(emb.shape[0], -1, *[1] * nd)     # (B, c, 1, ..., 1)

        h1 = self.b1(x + te(self.te1))
        h2 = self.b2(self.down1(h1) + te(self.te2))
        h3 = self.b3(self.down2(h2) + te(self.te3))
        mid = self.b_mid(self.down3(h3) * te(self.te_mid))
        y = self.b4(torch.cat([h3, self.up1(mid)], 1) + te(self.te4))
        y = self.b5(torch.cat([h2, self.up2(y)], 1) + te(self.te5))
        y = self.b_out(torch.cat([h1, self.up3(y)], 1) + te(self.te_out))
        out = self.conv_out(y)
        bound = torch.tensor([(s - 1) / s for s in x.shape[2:]], dtype=out.dtype, device=out.device)
        bound = bound.view(1, nd, *[1] * nd)
        return torch.maximum(torch.minimum(out, bound), -bound)

    def _check(self, image, t):
        nd = self.config.ndim
        if not isinstance(image, torch.Tensor) or image.dim() != nd + 2 or image.shape[1] != self.config.in_channels:
            got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise ValueError(f"image must have shape (B, {self.config.in_channels}, "
                             f"{', '.join('HWD'[:nd])}) for this {nd}-D network; got {got}")
        if not image.is_floating_point():
            raise ValueError(f"image must be floating point, got {image.dtype}")
        if any(s % 8 for s in image.shape[2:]):
            raise ValueError(f"image sides must be divisible by 8 (three 2x down-samplings); got {tuple(image.shape[2:])}")
        t = torch.as_tensor(t, device=image.device)
        if t.dim() == 0:
            t = t.expand(image.shape[0])
        if t.dtype.is_floating_point or t.shape != (image.shape[0],):
            raise ValueError(f"t must be an int or a ({image.shape[0]},) integer tensor; got {t!r}")
        if bool(((t < 0) | (t >= self.config.timesteps)).any()):
            raise ValueError(f"t must lie in [0, {self.config.timesteps - 1}], got {t.tolist()}")
        return t.long()

    def forward(self, image: torch.Tensor, t, recursion: int | None = None) -> torch.Tensor:
        t = self._check(image, t)
        K = recursion or self.config.recursion
        psi = None
        x = image
        for k in range(K):
            # under autocast only the U-Net runs in reduced precision: sampling grids of
            # 256 voxels need float32 (bfloat16 rounds coordinates to whole voxels)
            u = spatial.fraction_to_voxels(self.unet(x, t).to(image.dtype))
            with torch.autocast(image.device.type, enabled=False):
                # Eq. 12: psi <- u o psi; the release composes with border padding
                psi = u if psi is None else spatial.compose(u, psi, padding_mode="border")
                if k + 1 < K:       # the next pass sees the original image warped once by psi
                    x = spatial.warp(image, psi, padding_mode="zeros")
        return psi

    @property
    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.state_dict().values())
