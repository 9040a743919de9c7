"""DRDM: Deformation-Recovery Diffusion Model, an open re-implementation.

Modules: :mod:`drdm.spatial` (warp, compose, Jacobian, units),
:mod:`drdm.diffusion` (the forward process, paper and official readings),
:mod:`drdm.network`, :mod:`drdm.losses`, :mod:`drdm.training` (Algorithm 1),
:mod:`drdm.sampling` (Algorithms 2-4, the release's recovery settings),
:mod:`drdm.evaluation` (Table 1, label survival),
:mod:`drdm.fidelity` (against the release's own loop), :mod:`drdm.grid` (image grid <-> network
grid), :mod:`drdm.outputs` (atomic files, manifests), :mod:`drdm.data`, :mod:`drdm.phantoms`,
:mod:`drdm.metrics`, :mod:`drdm.baselines` (BigAug, elastic, MRBS), :mod:`drdm.tasks` (Tables 2, 3),
:mod:`drdm.transforms` (RandDRDMd),
:mod:`drdm.viz` (figures), :mod:`drdm.provenance` (result files).
"""
from . import diffusion, network, sampling, spatial
from .checkpoint import load, load_official, load_pretrained
from .provenance import results_dir
from .diffusion import DiffusionConfig, ForwardProcess
from .spatial import compose, jacobian_det, negative_jacobian_fraction, warp

__version__ = "0.1.0"

__all__ = ["load", "spatial", "diffusion", "network", "sampling", "load_official", "load_pretrained", "DiffusionConfig", "ForwardProcess", "warp", "compose",
           "jacobian_det", "negative_jacobian_fraction", "results_dir", "__version__"]
