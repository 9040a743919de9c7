"""Downstream tasks: few-shot segmentation (Section 4, Table 2) and synthetic
pre-training of registration (Section 5, Table 3); and the paper's Table 1 judged on ACDC
with the release's weights (:mod:`drdm.tasks.table1`, ``python -m drdm.tasks.table1``).

``run_fewshot(records, protocol)`` is the one segmentation pipeline (phantoms: ``protocol="phantom-ci"``
with :func:`~drdm.tasks.fewshot.phantom_cohort`; ACDC: ``"cpu"``), and ``run_registration(profile="ci")``
runs Table 3 end to end on the embedded phantoms (or on :class:`drdm.data.Record` lists); both return
JSON-serialisable dicts with Markdown tables.
"""
from ._common import ProfileOptionError, write_outputs
from .fewshot import run_fewshot
from .registration import run_registration
from .unet import UNet
from .voxelmorph import VoxelMorph

__all__ = ["run_fewshot", "run_registration", "UNet", "VoxelMorph", "write_outputs", "ProfileOptionError"]
