"""The one seed derivation of the package: every generator a task seeds comes from :func:`sample_seed`.

A run has one integer seed. Each random stream it needs (a sample's field, a slice's augmented
copies, a U-Net's batches, a registration network's pairs) gets its own seed from
``sample_seed(seed, purpose, *keys)``: a :class:`numpy.random.SeedSequence` of the run seed, the
purpose and the keys. Streams of different purposes or keys are independent, and no stream depends
on how work is batched or on what ran before it.

The purpose ``"field"`` (a DRDM sample's random field, keyed by ``(T', i)`` and so on) keeps the
entropy ``[seed, *keys]`` it has had since the first release of the book, so the recorded Table 1,
fidelity and CLI outputs did not move when this module arrived; every other purpose adds its own
code to the entropy.
"""
from __future__ import annotations

import zlib

import numpy as np

__all__ = ["sample_seed", "PURPOSES"]

#: the purposes in use; a new stream names itself here, so two tasks never share one by accident
PURPOSES = ("field", "copies", "unet-init", "unet-batches", "registration-init", "registration-batches",
            "synthetic-pairs", "training-rank", "chaos-direction")


def _code(key) -> int:
    """A key as a non-negative integer: ints as they are, strings by CRC-32 of their UTF-8 bytes."""
    if isinstance(key, str):
        return zlib.crc32(key.encode())
    key = int(key)
    if key < 0:
        raise ValueError(f"seed keys must be non-negative, got {key}")
    return key


def sample_seed(seed: int, purpose: str, *keys) -> int:
    """The seed (a non-negative int below 2**63) of one random stream.

    Args:
        seed: the run's seed (non-negative).
        purpose: one of :data:`PURPOSES`.
        keys: what tells this stream from its siblings (ints or strings), e.g. ``(T', i)`` for a
            sample's field, ``(method, slice name)`` for a slice's copies.

    >>> sample_seed(0, "field", 30, 1) == sample_seed(0, "field", 30, 1) != sample_seed(0, "field", 30, 2)
    True
    >>> sample_seed(0, "copies", "drdm", "p001_ED_03") != sample_seed(0, "copies", "bigaug", "p001_ED_03")
    True
    """
    if purpose not in PURPOSES:
        raise ValueError(f"unknown seed purpose {purpose!r}; add it to drdm.seeds.PURPOSES")
    entropy = [_code(seed)] + ([] if purpose == "field" else [_code(purpose)]) + [_code(k) for k in keys]
    state = np.random.SeedSequence(entropy).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))
