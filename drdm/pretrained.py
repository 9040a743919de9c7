"""Models shipped inside the package (small, trained on the embedded phantoms).

``phantom2d``: 2-D, 32 x 32 cardiac phantoms, official network variant and
forward reading with ``unit_factor=4`` (the release's 2-D field statistics in %
of the side), K = 2, corrected loss; 4,000 steps of batch 8 on one CPU thread
(about 15 minutes). How it was made: ``results/phantom_model/`` (command,
config, training log). It is a small demonstration model: it reduces the size
and folding of random fields, far less than the release's weights do.

``phantom3d``: 3-D, 24^3 thorax phantoms, official network variant in 3-D and forward reading
with ``unit_factor=4.0`` (as ``phantom2d``: at the release's consistent 3-D factor a random 3-D
field never folds, so there would be no folding to remove) integrated by squaring, K = 2,
corrected loss; 1,500 steps of batch 4 on the CPU (about an hour), stored in float16 (the time
table in float32) to stay under 5 MiB. How it was made and its held-out check: ``results/phantom3d_model/``
(``tools/ship_model.py``). Like ``phantom2d`` it is a demonstration model: it shows that the 3-D
pipeline runs end to end, not what a model trained on real CT would do.

Load one with :func:`drdm.load` (``drdm.load("phantom2d")``).
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["PRETRAINED", "pretrained_path"]

_HERE = Path(__file__).resolve().parent / "weights"
PRETRAINED = {"phantom2d": "phantom2d_32.pth", "phantom3d": "phantom3d_24.pth"}


def pretrained_path(name: str = "phantom2d") -> Path:
    """Path of a shipped checkpoint; ``ValueError`` for an unknown name."""
    if name not in PRETRAINED:
        raise ValueError(f"unknown pretrained model {name!r}; available: {sorted(PRETRAINED)}")
    path = _HERE / PRETRAINED[name]
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from this installation (reinstall drdm)")
    return path
