"""DRDM: Deformation-Recovery Diffusion Model, an open re-implementation.

Modules: :mod:`drdm.spatial` (warp, compose, Jacobian, units),
:mod:`drdm.diffusion` (the forward process, paper and official readings),
:mod:`drdm.viz` (figures), :mod:`drdm.provenance` (result files).
"""
from . import diffusion, network, spatial
from .checkpoint import load_official
from .diffusion import DiffusionConfig, ForwardProcess
from .spatial import compose, jacobian_det, negative_jacobian_fraction, warp

__version__ = "0.1.0"

__all__ = ["spatial", "diffusion", "network", "load_official", "DiffusionConfig", "ForwardProcess", "warp", "compose",
           "jacobian_det", "negative_jacobian_fraction", "__version__"]
