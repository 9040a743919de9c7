"""Loading weights safely: plain state_dicts only (``torch.load(weights_only=True)``)."""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from .network import DRDMNet, NetworkConfig

__all__ = ["CheckpointError", "safe_load", "load_state_dict", "load_official"]


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
