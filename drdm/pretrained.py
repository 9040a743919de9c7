"""Models shipped inside the package (small, trained on the embedded phantoms).

``phantom2d``: 2-D, 32 x 32 cardiac phantoms, official network variant and
forward reading with ``unit_factor=4`` (the release's 2-D field statistics in %
of the side), K = 2, corrected loss; 4,000 steps of batch 8 on one CPU thread
(about 15 minutes). How it was made: ``results/phantom_model/`` (command,
config, training log). It is a small demonstration model: it reduces the size
and folding of random fields, far less than the release's weights do.

Load one with :func:`drdm.load` (``drdm.load("phantom2d")``).
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["PRETRAINED", "pretrained_path"]

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
