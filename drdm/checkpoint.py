"""Loading weights safely (``torch.load(weights_only=True)``), and the one loader :func:`load`.

:func:`load` takes whatever a user has: a shipped model's name (``phantom2d``), a drdm
training checkpoint (:data:`FORMAT`, written by :mod:`drdm.training`) or the release's
plain state_dict (:func:`load_official`), and returns a :class:`~drdm.network.DRDMNet` in
eval mode. Every entry point (the CLI, :class:`~drdm.transforms.RandDRDMd`, the tasks,
the notebooks) goes through it.
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from .network import DRDMNet, NetworkConfig
from .pretrained import PRETRAINED, pretrained_path

__all__ = ["FORMAT", "CheckpointError", "safe_load", "load_state_dict", "load_official", "load_checkpoint",
           "resolve", "load", "load_pretrained"]

#: ``format`` field of drdm training checkpoints
FORMAT = "drdm-checkpoint-1"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and the reason."""


def safe_load(path: str | Path):
    """``torch.load(path, map_location="cpu", weights_only=True)`` with one-line errors.

    Pickled objects other than tensors and plain containers are refused: loading
    a checkpoint never runs code from it.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsupported object"
        if not zipfile.is_zipfile(path) and "invalid load key" in first:
            raise CheckpointError(f"{path}: not a torch checkpoint (corrupt, or not a .pth file)") from None
        raise CheckpointError(f"{path}: refused, the file holds pickled objects that are not plain "
                              f"tensors (weights_only=True): {first}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable torch checkpoint (truncated or corrupt?): {msg}") from None


def load_state_dict(path: str | Path) -> dict:
    """Read a tensor-only checkpoint (a state_dict) onto the CPU, refusing anything else."""
    path = Path(path)
    obj = safe_load(path)
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state_dict (name -> tensor), got {type(obj).__name__}")
    return obj


def load_official(path: str | Path, ndim: int | None = None, in_channels: int | None = None) -> DRDMNet:
    """Build the ``official`` variant of :class:`DRDMNet` and load a released checkpoint.

    ``ndim`` and ``in_channels`` are read from the weights when not given. Raises
    :class:`CheckpointError` naming missing or unexpected keys and shape mismatches.

    The returned network is in eval mode; its outputs are in voxels (the release's
    fraction-of-side outputs times the image side). It carries ``weights_origin =
    "release"``, so :func:`drdm.sampling.deform` recovers with the release's settings.
    """
    sd = load_state_dict(path)
    w = sd.get("b1.0.conv0.weight")
    if w is None:
        raise CheckpointError(f"{path}: not an official DRDM checkpoint (no 'b1.0.conv0.weight')")
    found_ndim = w.dim() - 2
    if ndim is not None and ndim != found_ndim:
        raise CheckpointError(f"{path}: a {found_ndim}-D checkpoint, but ndim={ndim} was asked for")
    emb = sd["time_embed.weight"] if "time_embed.weight" in sd else torch.zeros(80, 100)
    cfg = NetworkConfig(ndim=found_ndim, in_channels=in_channels or w.shape[1],
                        channels=(w.shape[0], sd.get("b2.0.conv0.weight", w).shape[0],
                                  sd.get("b3.0.conv0.weight", w).shape[0]),
                        timesteps=emb.shape[0], time_dim=emb.shape[1], variant="official")
    net = DRDMNet(cfg)
    own = net.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    wrong = sorted(k for k in set(own) & set(sd) if own[k].shape != sd[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(f"{path}: does not match the official network: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}, wrong shape {wrong[:5]}")
    if not all(v.is_floating_point() for v in sd.values()):
        raise CheckpointError(f"{path}: non-floating-point weights")
    net.load_state_dict(sd, strict=True)
    net.weights_origin = "release"      # sampling then defaults to the release's recovery settings
    return net.eval()


def load_checkpoint(path) -> dict:
    """Read a drdm training checkpoint (``weights_only=True``); :class:`CheckpointError` on anything else."""
    path = Path(path)
    obj = safe_load(path)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a drdm training checkpoint (use drdm.load_official for the release's weights)")
    return obj


def resolve(path_or_name=None, ndim: int | None = None) -> Path:
    """The one resolution of a checkpoint argument: a shipped model's name (``phantom2d``; a file
    of that name in the current folder wins) or a path to an existing file; ``None``: the shipped
    model of ``ndim`` dimensions. Anything else is a one-line :class:`CheckpointError` that says
    what would work. (Callers that skip DRDM with a reason catch it:
    :func:`drdm.tasks._common.load_drdm`.)"""
    shipped = ", ".join(sorted(PRETRAINED))
    if path_or_name is None:
        names = sorted(n for n in PRETRAINED if ndim is not None and n.endswith(f"{ndim}d"))
        if not names:
            raise CheckpointError(f"no {ndim}-D DRDM model is shipped (shipped: {shipped}); pass a checkpoint "
                                  "(a .pth of drdm train, or the release's weights)")
        path_or_name = names[0]
    if str(path_or_name) in PRETRAINED and not Path(path_or_name).exists():
        try:
            return pretrained_path(str(path_or_name))
        except FileNotFoundError as e:
            raise CheckpointError(str(e)) from None
    path = Path(path_or_name)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file (a path to a .pth, or a shipped model: {shipped})")
    return path


def load(path_or_name, device="cpu") -> DRDMNet:
    """The one loader: a shipped model's name, our training checkpoint or the release's
    state_dict -> a :class:`~drdm.network.DRDMNet` in eval mode on ``device``.

    Pickles, malformed files and non-float or non-finite weights are refused with a
    one-line :class:`CheckpointError`. The release's weights carry ``weights_origin =
    "release"`` (sampling then uses the release's recovery settings); ours carry their
    ``train_config``.

    >>> load("phantom2d").train_config["image_size"]
    32
    """
    path = resolve(path_or_name)
    try:
        ck = load_checkpoint(path)
    except CheckpointError as e:
        if "not a drdm training checkpoint" not in str(e):
            raise
        return load_official(path).to(device)
    try:
        net = DRDMNet(NetworkConfig(**{**ck["network_config"], "channels": tuple(ck["network_config"]["channels"])}))
        weights = ck["model"]
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: malformed drdm checkpoint ({type(e).__name__}: {e})") from None
    if not all(isinstance(v, torch.Tensor) and v.is_floating_point() for v in weights.values()):
        raise CheckpointError(f"{path}: non-floating-point weights")
    bad = [k for k, v in weights.items() if not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{path}: NaN or Inf in weights ({bad[0]!r})")
    try:
        net.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the network described in it: "
                              f"{str(e).splitlines()[0]}") from None
    net.train_config = ck.get("train_config")
    return net.to(device).eval()


def load_pretrained(name: str = "phantom2d", device="cpu") -> DRDMNet:
    """A shipped model by name (:data:`drdm.pretrained.PRETRAINED`); ``ValueError`` for an unknown one."""
    return load(pretrained_path(name), device=device)
