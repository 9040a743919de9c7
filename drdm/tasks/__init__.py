"""Downstream tasks: few-shot segmentation (Section 4, Table 2) and synthetic
pre-training of registration (Section 5, Table 3); and the paper's Table 1 judged on ACDC
with the release's weights (:mod:`drdm.tasks.table1`, ``python -m drdm.tasks.table1``).

``run_segmentation(profile="ci")`` and ``run_registration(profile="ci")`` run the
experiments end to end on the embedded phantoms (or on :class:`drdm.data.Record`
lists) and return JSON-serialisable dicts with a markdown table in the paper's layout.
"""
from ._common import ProfileOptionError, write_outputs
from .registration import run_registration
from .segmentation import UNet, run_segmentation
from .voxelmorph import VoxelMorph

__all__ = ["run_segmentation", "run_registration", "UNet", "VoxelMorph", "write_outputs", "ProfileOptionError"]
