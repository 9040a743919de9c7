"""Models shipped inside the package (small, trained on the embedded phantoms).

``phantom2d``: 2-D, 32 x 32 cardiac phantoms, official network variant and
forward reading with ``unit_factor=4`` (the release's 2-D field statistics in %
of the side), K = 2, corrected loss; 4,000 steps of batch 8 on one CPU thread
(about 15 minutes). How it was made: ``results/phantom_model/`` (command,
config, training log). It is a small demonstration model: it reduces the size
and folding of random fields, far less than the release's weights do.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["PRETRAINED", "pretrained_path", "load_pretrained", "resolve", "load"]

_HERE = Path(__file__).resolve().parent / "weights"
PRETRAINED = {"phantom2d": "phantom2d_32.pth"}


def pretrained_path(name: str = "phantom2d") -> Path:
    """Path of a shipped checkpoint; ``ValueError`` for an unknown name."""
    if name not in PRETRAINED:
        raise ValueError(f"unknown pretrained model {name!r}; available: {sorted(PRETRAINED)}")
    path = _HERE / PRETRAINED[name]
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from this installation (reinstall drdm)")
    return path


def load_pretrained(name: str = "phantom2d", device="cpu"):
    """The shipped :class:`~drdm.network.DRDMNet` in eval mode (``train_config`` attached)."""
    from .training import load_model
    return load_model(pretrained_path(name), device=device)


def resolve(path_or_name) -> Path:
    """A checkpoint path, or a shipped model's name (``phantom2d``) turned into its path
    (a file of that name in the current folder wins)."""
    if str(path_or_name) in PRETRAINED and not Path(path_or_name).exists():
        return pretrained_path(str(path_or_name))
    return Path(path_or_name)


def load(path_or_name, device="cpu"):
    """The one loader: a shipped model's name, our training checkpoint or the release's
    state_dict -> a :class:`~drdm.network.DRDMNet` in eval mode on ``device``.

    Every file is read with ``torch.load(weights_only=True)``; pickles, malformed files and
    non-float or non-finite weights are refused with a one-line
    :class:`~drdm.checkpoint.CheckpointError`. The release's weights carry
    ``weights_origin = "release"`` (sampling then uses the release's recovery settings);
    ours carry their ``train_config``.
    """
    from .training import load_model
    return load_model(resolve(path_or_name), device=device)
