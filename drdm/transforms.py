"""DRDM as a MONAI-style dictionary transform: :class:`RandDRDMd`.

One random DRDM deformation (Algorithm 2, :func:`drdm.sampling.deform`) per call,
applied to every listed key of a sample dict: label keys with the label-safe warp
(``spatial.warp(..., mode="label")``: no new label values, dtype kept), the others with
the recovery setting's interpolation (:func:`drdm.sampling.apply_field`: bicubic for the
release's 2-D weights, linear otherwise, as ``drdm augment`` writes them). Arrays are channel-first without a batch axis,
``(C, H, W)`` or ``(C, H, W, D)``, numpy or torch (MONAI ``MetaTensor`` included,
its metadata kept); each comes back as the type it came in.

MONAI is optional. When it is installed the class derives from
``monai.transforms.Randomizable``, so ``Compose(...).set_random_state(seed)`` seeds it
like any MONAI random transform; without it the class is self-contained.
"""
from __future__ import annotations

from pathlib import Path
from typing import Hashable, Mapping

import numpy as np
import torch

try:  # optional: become a MONAI Randomizable so Compose.set_random_state reaches us
    from monai.transforms.transform import Randomizable as _Base
except ImportError:  # pragma: no cover - exercised in a subprocess test without MONAI
    _Base = object

__all__ = ["RandDRDMd"]

_MAX_SEED = 2 ** 32


class RandDRDMd(_Base):
    """Deform a sample dict with one random DRDM deformation.

    Args:
        keys: keys to deform (a string or a sequence); all must share one spatial shape.
        checkpoint: a drdm training checkpoint or the release's state_dict (path), or a
            loaded :class:`~drdm.network.DRDMNet`. A path is loaded lazily, once, on the
            first call by :func:`drdm.load` (a shipped name such as ``phantom2d``, our
            checkpoint or the release's weights; weights only, checked).
        levels: the ``T'`` values; each call draws one uniformly. Must lie in ``[0, T-1]``.
        prob: probability of deforming; otherwise the dict is returned unchanged.
        label_keys: keys holding label maps (warped label-safe); keys not listed in
            ``keys`` are ignored. The network sees the first key that is not a label key.
        seed: seeds the transform's random state (same as :meth:`set_random_state`).
        device: where the network runs (``"cpu"``, ``"cuda"``, ...); results return to
            each array's own device.
        recover: ``"level"`` (Algorithm 2) or ``"all"`` (see :mod:`drdm.sampling`).
        settings: the recovery's resampling, ``"release"`` or ``"drdm"`` (see
            :mod:`drdm.sampling`); ``None``: release for the release's weights, else drdm.
        spatial_size: the grid the network runs on. ``"network"`` (default): the grid it
            was trained on (``train_config["image_size"]``, 256 for the release's 2-D
            weights); ``None``: the data's own grid (sides divisible by 8); or an int /
            ``ndim`` ints. The input goes there and its field comes back by the one grid map,
            :class:`drdm.grid.InputGrid` (isotropic, padded, anti-aliased, percentile-normalised;
            the exact inverse for the field), as in ``drdm augment``: the same image, seed
            and setting give the same DDF (:meth:`deform_with`).
        spacing: voxel size per axis for the isotropic map (default: a MetaTensor's ``pixdim``,
            else 1).
        padding_mode: how image keys are read outside the field of view (``"border"`` or
            ``"zeros"``); label keys always take the smallest label (background) there.
        allow_missing_keys: skip keys absent from the dict instead of raising ``KeyError``.

    After a call, ``last_ddf`` holds the field applied, ``(ndim, *S)`` in voxels
    (component i along spatial axis i), or ``None`` when the call left the data as it was.

    Example (``ckpt`` a checkpoint path)::

        t = RandDRDMd(("image", "label"), checkpoint=ckpt, levels=(30, 45), prob=0.8)
        t.set_random_state(0)
        out = t({"image": img, "label": lab})     # img (1, H, W) float, lab (1, H, W) int
    """

    def __init__(self, keys=("image", "label"), checkpoint=None, levels=(30,), prob: float = 1.0,
                 label_keys=("label",), seed: int | None = None, device="cpu", recover: str = "level",
                 settings: str | None = None, spatial_size="network", padding_mode: str = "border",
                 allow_missing_keys: bool = False, spacing=None):
        self.keys = (keys,) if isinstance(keys, (str, bytes)) else tuple(keys)
        if not self.keys:
            raise ValueError("keys must name at least one key")
        self.label_keys = ((label_keys,) if isinstance(label_keys, (str, bytes))
                           else tuple(label_keys or ()))
        self.image_keys = tuple(k for k in self.keys if k not in self.label_keys)
        if not self.image_keys:
            raise ValueError(f"keys {self.keys} are all label keys; the network needs an image key "
                             "(one not in label_keys) to look at")
        levels = (levels,) if np.ndim(levels) == 0 else tuple(levels)
        if not levels or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0
                                 for v in levels):
            raise ValueError(f"levels must be non-negative integers T', got {levels!r}")
        self.levels = tuple(int(v) for v in levels)
        if not 0.0 <= float(prob) <= 1.0:
            raise ValueError(f"prob must lie in [0, 1], got {prob}")
        self.prob = float(prob)
        if recover not in ("level", "all"):
            raise ValueError(f"recover must be 'level' or 'all', got {recover!r}")
        self.recover = recover
        from .sampling import SETTINGS
        if settings is not None and settings not in SETTINGS:
            raise ValueError(f"settings must be one of {SETTINGS} or None, got {settings!r}")
        self.settings = settings
        if padding_mode not in ("border", "zeros"):
            raise ValueError(f"padding_mode must be 'border' or 'zeros', got {padding_mode!r}")
        self.padding_mode = padding_mode
        if not (spatial_size is None or spatial_size == "network" or np.ndim(spatial_size) in (0, 1)):
            raise ValueError(f"spatial_size must be 'network', None, an int or a sequence of ints, "
                             f"got {spatial_size!r}")
        self.spatial_size = spatial_size
        self.spacing = None if spacing is None else tuple(float(v) for v in np.ravel(spacing))
        self.device = torch.device(device)
        self.allow_missing_keys = bool(allow_missing_keys)
        if checkpoint is None:
            raise ValueError("checkpoint is required: a checkpoint path or a loaded DRDMNet")
        if isinstance(checkpoint, torch.nn.Module):
            if not hasattr(checkpoint, "config") or not hasattr(checkpoint.config, "timesteps"):
                raise TypeError("checkpoint must be a DRDMNet (or a path), got "
                                f"{type(checkpoint).__name__}")
            self._net = checkpoint.to(self.device).eval()
            self._check_levels()
            self.checkpoint = None
        elif isinstance(checkpoint, (str, Path)):
            self.checkpoint = Path(checkpoint)
            self._net = None
        else:
            raise TypeError(f"checkpoint must be a path or a DRDMNet, got {type(checkpoint).__name__}")
        self.R = np.random.RandomState()
        self.last_ddf = None
        self._do, self._level, self._seed = True, self.levels[0], 0
        if seed is not None:
            self.set_random_state(seed)

    # -- randomness (MONAI's protocol: every draw from self.R, in randomize)
    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        """Seed the transform (``seed``) or hand it a ``numpy.random.RandomState``; returns self."""
        if seed is not None:
            self.R = np.random.RandomState(int(seed) % _MAX_SEED)
        elif state is not None:
            if not isinstance(state, np.random.RandomState):
                raise TypeError(f"state must be None or a numpy.random.RandomState, got {type(state).__name__}")
            self.R = state
        else:
            self.R = np.random.RandomState()
        return self

    def randomize(self, data=None) -> None:
        """Draw whether to deform, ``T'`` and the seed of the field (always all three)."""
        self._do = bool(self.R.rand() < self.prob)
        self._level = int(self.levels[self.R.randint(len(self.levels))])
        self._seed = int(self.R.randint(0, 2 ** 31 - 1))

    # -- the network, loaded once
    @property
    def net(self):
        if self._net is None:
            from .checkpoint import load
            self._net = load(self.checkpoint, self.device)
            self._check_levels()
        return self._net

    def _check_levels(self):
        from .sampling import check_levels
        check_levels(self.levels, self._net.config.timesteps)

    def _spacing(self, value, nd: int) -> tuple[float, ...]:
        """Voxel size per axis: the ``spacing`` argument, else a MONAI MetaTensor's ``pixdim``, else 1."""
        if self.spacing is not None:
            return self.spacing
        pixdim = getattr(value, "pixdim", None)
        if pixdim is not None:
            return tuple(float(v) for v in np.asarray(pixdim).ravel()[:nd])
        return (1.0,) * nd

    def _grid(self, spatial) -> tuple[int, ...]:
        nd = len(spatial)
        if self.spatial_size is None:
            size = tuple(spatial)
        elif self.spatial_size == "network":
            from .sampling import network_grid
            size = network_grid(self.net)
        else:
            size = ((int(self.spatial_size),) * nd if np.ndim(self.spatial_size) == 0
                    else tuple(int(s) for s in self.spatial_size))
        if len(size) != nd or any(s < 8 or s % 8 for s in size):
            where = " (the data's own grid; pass spatial_size)" if self.spatial_size is None else ""
            raise ValueError(f"the network grid {size}{where} must have {nd} sides, each a positive multiple of 8")
        return size

    # -- applying
    def _tensor(self, key, value, nd) -> torch.Tensor:
        if isinstance(value, torch.Tensor):
            t = value.as_tensor() if hasattr(value, "as_tensor") else value
        elif isinstance(value, np.ndarray):
            t = torch.from_numpy(np.ascontiguousarray(value))
        else:
            raise TypeError(f"data[{key!r}] must be a numpy array or torch tensor, got {type(value).__name__}")
        if t.dim() != nd + 1:
            hint = " (add a channel axis, e.g. EnsureChannelFirstd)" if t.dim() == nd else ""
            raise ValueError(f"data[{key!r}] must be channel-first (C, {', '.join('HWD'[:nd])}) for this "
                             f"{nd}-D network, no batch axis; got shape {tuple(t.shape)}{hint}")
        return t

    @staticmethod
    def _restore(original, result: torch.Tensor):
        if isinstance(original, np.ndarray):
            return result.cpu().numpy()
        result = result.to(original.device)
        if type(original) is not torch.Tensor:          # a subclass (MetaTensor): keep its metadata
            out = original.clone()
            if out.dtype != result.dtype:
                out = out.to(result.dtype)
            with torch.no_grad():
                out.copy_(result)
            return out
        return result

    def __call__(self, data: Mapping[Hashable, object], randomize: bool = True) -> dict:
        if not isinstance(data, Mapping):
            raise TypeError(f"RandDRDMd takes a dict of arrays, got {type(data).__name__}")
        missing = [k for k in self.keys if k not in data]
        if missing and not self.allow_missing_keys:
            raise KeyError(f"keys {missing} not in the data (has {list(data)}); pass allow_missing_keys=True to skip them")
        if randomize:
            self.randomize(data)
        self.last_ddf = None
        if not self._do:
            return dict(data)
        return self.deform_with(data, self._level, self._seed)

    def deform_with(self, data: Mapping[Hashable, object], level: int, field_seed: int) -> dict:
        """Deform ``data`` at ``T' = level`` with the random field drawn from ``field_seed``
        (what a call does after :meth:`randomize`; ``drdm augment`` draws sample ``i`` of a level
        from ``sample_seed(seed, "field", level, i)``, so passing that seed reproduces its DDF)."""
        from . import spatial
        from .grid import InputGrid
        from .sampling import apply_field, deform_input
        d = dict(data)
        net = self.net
        nd = net.config.ndim
        present = [k for k in self.keys if k in d]
        ref_key = next((k for k in self.image_keys if k in d), None)
        if ref_key is None:
            raise KeyError(f"none of the image keys {self.image_keys} is in the data; the network needs one")
        tensors = {k: self._tensor(k, d[k], nd) for k in present}
        S = tuple(tensors[ref_key].shape[1:])
        for k, t in tensors.items():
            if tuple(t.shape[1:]) != S:
                raise ValueError(f"data[{k!r}] has spatial shape {tuple(t.shape[1:])}, but data[{ref_key!r}] has "
                                 f"{S}; all keys must share one grid")
        if min(S) < 2:
            raise ValueError(f"data[{ref_key!r}] spatial shape {S} needs at least 2 voxels per axis")

        # the network's view: one channel, on its grid by the one grid map (drdm.grid)
        x = tensors[ref_key].to(torch.float32)
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"data[{ref_key!r}] contains NaN or Inf values")
        if net.config.in_channels != 1:
            raise ValueError(f"RandDRDMd feeds the network one channel (the mean of data[{ref_key!r}]'s); this "
                             f"network takes {net.config.in_channels}")
        grid = InputGrid(S, self._spacing(d[ref_key], nd), self._grid(S))
        _, ddf = deform_input(net, grid, x.mean(0).cpu().numpy(), int(level), [int(field_seed)],
                              settings=self.settings, recover=self.recover, device=self.device)
        self.last_ddf = ddf[0].cpu()                                                   # (nd, *S), data voxels

        for k, t in tensors.items():
            if k in self.label_keys:
                lab = t.to(self.device)
                try:
                    out = spatial.warp(lab[None], ddf.to(torch.float32 if not lab.is_floating_point() else lab.dtype),
                                       mode="label")[0]
                except ValueError as e:
                    raise ValueError(f"data[{k!r}]: {e}") from None
            else:
                img = t.to(self.device)
                if not img.is_floating_point():
                    img = img.float()
                out = apply_field(net, img[None], ddf, settings=self.settings, padding_mode=self.padding_mode)[0][0]
            d[k] = self._restore(d[k], out)
        return d
