"""Helpers shared by the downstream tasks: profiles, threads, data tensors, the DRDM model, output, and the
experiment skeleton (statistics: :mod:`drdm.stats`; what chapters show of recorded runs: :mod:`drdm.book`)."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

log = logging.getLogger("drdm.tasks")


class ProfileOptionError(TypeError):
    """An override names no field of the experiment's profile (a usage error, not a bug)."""


def apply_overrides(profile, overrides: dict):
    """A copy of the profile dataclass with ``overrides`` (unknown names raise
    :class:`ProfileOptionError`, a ``TypeError``)."""
    names = {f.name for f in dataclasses.fields(profile)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ProfileOptionError(f"unknown profile option(s) {unknown}; known: {sorted(names)}")
    return dataclasses.replace(profile, **overrides)


@contextlib.contextmanager
def num_threads(n: int | None):
    """Temporarily set torch's intra-op threads (``None``: leave unchanged)."""
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


# ---------------------------------------------------------------- checkpoints

def load_drdm(checkpoint, ndim: int, device) -> tuple[object | None, str | None, str | None]:
    """The tasks' "skip with a reason" door to :func:`drdm.checkpoint.resolve`: ``(net, path, None)``,
    or ``(None, None, reason)`` when no ``ndim``-D model is shipped and none was given, or the
    network has another dimension. A named checkpoint that does not exist is an error, not a skip."""
    from ..checkpoint import CheckpointError, load, resolve
    try:
        path = resolve(checkpoint, ndim)
    except CheckpointError as e:
        if checkpoint is not None:
            raise
        return None, None, str(e)
    net = load(path, device=device)
    if net.config.ndim != ndim:
        return None, None, f"{path}: a {net.config.ndim}-D DRDM network, the data are {ndim}-D"
    return net, str(path), None


# ---------------------------------------------------------------- data

def to_tensors(records) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images (N, 1, *S) float32, labels (N, 1, *S) int64)``; every record needs a label."""
    missing = [r.subject for r in records if r.label is None]
    if missing:
        raise ValueError(f"records without label maps (subjects {sorted(set(missing))[:5]})")
    shapes = {tuple(r.image.shape) for r in records}
    if len(shapes) != 1:
        raise ValueError(f"records have different shapes {sorted(shapes)[:4]}; preprocess them to one size")
    imgs = torch.from_numpy(np.stack([np.asarray(r.image, np.float32) for r in records]))[:, None]
    labs = torch.from_numpy(np.stack([np.asarray(r.label).astype(np.int64) for r in records]))[:, None]
    return imgs, labs


def fit_size(records, size: int):
    """Preprocess (Section 3.2) records whose shape is not ``size`` per axis."""
    from ..data import preprocess_record
    out = []
    for r in records:
        if tuple(r.image.shape) != (size,) * r.image.ndim:
            r = preprocess_record(r, size)
        out.append(r)
    return out


def split_subjects(records, test_fraction: float, seed: int) -> tuple[list, list]:
    """Subject-level train/test split (:func:`drdm.data.subject_split`); ``ValueError`` if a subject is in both."""
    from ..data import subject_split
    parts = subject_split(records, (1.0 - test_fraction, 0.0, test_fraction), seed=seed)
    train, test = parts["train"], parts["test"]
    leak = {r.subject for r in train} & {r.subject for r in test}
    if leak:
        raise ValueError(f"subjects in both train and test: {sorted(leak)}")
    if not train or not test:
        raise ValueError(f"need at least one training and one test subject; got {len(train)} and "
                         f"{len(test)} records from {len({r.subject for r in records})} subjects")
    return train, test


def write_outputs(name: str, result: dict, markdown: str, out_dir, profile: str, seed: int,
                  device: str, wall: float, data: str) -> dict:
    """``<out_dir>/<profile>/<name>.json`` (with provenance) and ``<name>.md``; returns the paths."""
    from ..provenance import save_results
    path = save_results(name, result, profile=profile, seed=seed, device=device, wall_time_s=wall,
                        out_dir=out_dir, data=data)
    md = path.with_suffix(".md")
    md.write_text(markdown + "\n")
    return {"json": str(path), "markdown": str(md)}


def jsonable(x):
    """Check that ``x`` survives ``json.dumps`` (inf/nan are not JSON): raises otherwise."""
    json.dumps(x, allow_nan=False)
    return x


# ---------------------------------------------------------------- the experiment skeleton

class Experiment:
    """What the downstream runners share: the profile, seeds, device and clock; the DRDM model
    (loaded, or skipped with its reason); and the result's common fields and files.

    ``Experiment(task, table, profile, overrides, seeds, methods, allowed, device)``; then, inside
    ``with num_threads(exp.prof.threads)``, :meth:`load_drdm` and finally :meth:`finish`.
    """

    def __init__(self, task: str, table: dict, profile: str, overrides: dict, seeds, methods: Sequence[str],
                 allowed: Sequence[str], device: str = "auto"):
        import time
        if profile not in table:
            raise ValueError(f"profile must be one of {sorted(table)}, got {profile!r}")
        self.task, self.profile = task, profile
        self.prof = apply_overrides(table[profile], overrides)
        self.seeds = tuple(self.prof.seeds if seeds is None else seeds)
        self.methods = tuple(methods)
        if not self.methods or set(self.methods) - set(allowed):
            raise ValueError(f"{task} methods must be taken from "
                             f"{tuple(allowed)}, got {self.methods}")
        from ..runner import pick_device
        self.device = pick_device(device)
        self.t0 = time.perf_counter()
        self.skipped: dict[str, str] = {}
        self.net, self.checkpoint = None, None

    def load_drdm(self, checkpoint, ndim: int, levels: Sequence[int]):
        """Load the DRDM model when ``"drdm"`` is asked for; record why when it cannot be."""
        if "drdm" not in self.methods:
            return None
        self.net, self.checkpoint, reason = load_drdm(checkpoint, ndim, self.device)
        if self.net is None:
            self.skipped["drdm"] = reason
            log.warning("%s: skipping drdm: %s", self.task, reason)
        else:
            from ..sampling import check_levels
            check_levels(levels, self.net.config.timesteps, "DRDM level T'")
        return self.net

    def finish(self, data, fields: dict, config: dict, markdown, out_dir=None, name: str | None = None) -> dict:
        """The result: common header, ``fields``, Markdown (``markdown(result)``), wall time; written
        to ``<out_dir>/<profile>/<name>.json`` and ``.md`` when ``out_dir`` is given."""
        import time
        result = {"task": self.task, "profile": self.profile, "data": data if isinstance(data, str) else "records",
                  "config": {**dataclasses.asdict(self.prof), "seeds": list(self.seeds), **config},
                  "device": str(self.device),
                  "drdm_checkpoint": None if self.checkpoint is None else Path(str(self.checkpoint)).name,
                  "skipped": self.skipped, **fields}
        result["markdown"] = markdown(result)
        result["wall_time_s"] = round(time.perf_counter() - self.t0, 2)
        jsonable(result)
        if out_dir is not None:
            result["files"] = write_outputs(name or self.task, result, result["markdown"], out_dir, self.profile,
                                            self.seeds[0], str(self.device), result["wall_time_s"], result["data"])
        return result
