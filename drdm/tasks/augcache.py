"""Augmented copies: one dispatcher per method and one on-disk cache (Algorithm 3 and its baselines).

* :func:`make_copies`: ``n`` copies of one slice by ``"bigaug"`` (:class:`drdm.baselines.BigAug`),
  ``"elastic"`` (its elastic part) or ``"drdm"`` (Algorithm 3, :func:`drdm.sampling.augment`,
  through the slice's :class:`drdm.grid.InputGrid` to the network's grid and back).
* :class:`AugCache`: copies on disk, one file per (method, subject, phase, slice).
  The file name carries a hash of everything that determines the copies (method and its
  settings, number of copies, DRDM levels, recovery setting and checkpoint sha256, the
  augmentation seed, the preprocessing), so a changed checkpoint or setting misses the
  cache and regenerates, while other training seeds, labelled sets and re-runs reuse it.
* :func:`copy_seed`: the seed of one slice's copies, ``sample_seed(seed, "copies", method, slice)``.

The slices themselves come from :func:`drdm.data.crops.prepare_slices`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..data.crops import Slice
from ..seeds import sample_seed

__all__ = ["AugCache", "copy_seed", "make_copies", "method_params", "CACHE_FORMAT", "AUGMENTERS", "drdm_identity",
           "augmenter", "copy_params", "copies", "panel_copies"]

#: the augmenters :func:`make_copies` dispatches to
AUGMENTERS = ("bigaug", "elastic", "drdm")
#: bump when the cached content changes meaning (part of every key); 2: seeds from drdm.seeds
CACHE_FORMAT = 2
#: the map DRDM copies are made through; copies made another way (before issue 15: a corner-aligned
#: stretch to the network grid) have other keys and are made again
DRDM_GRID = "InputGrid"


def copy_seed(seed: int, method: str, s: Slice) -> int:
    """The generator seed of one slice's copies: fixed by (seed, method, slice), nothing else."""
    return sample_seed(seed, "copies", method, s.name)


def make_copies(method: str, image: torch.Tensor, label: torch.Tensor, n: int, seed: int, *,
                net=None, levels: Sequence[int] = (20,), device="cpu", settings: str | None = None):
    """``n`` augmented copies ``(n, 1, *S)`` of one image ``(1, 1, *S)`` and its label.

    ``seed`` fixes the copies (one generator per image and method; for DRDM, copy ``i``
    of level ``T'`` draws its field from ``sample_seed(seed, "field", T', i)``, and the copies
    are spread evenly over ``levels``). DRDM goes through the image's
    :class:`drdm.grid.InputGrid` to the network's training grid and back, as ``drdm augment``
    does; ``settings`` picks the recovery setting (default: the network's,
    :func:`drdm.sampling.recovery_settings`).
    """
    from ..baselines import BigAug, elastic
    g = torch.Generator().manual_seed(seed)
    if method == "bigaug":
        return BigAug()(image.expand(n, *image.shape[1:]), label.expand(n, *label.shape[1:]), g)
    if method == "elastic":
        return elastic(image.expand(n, *image.shape[1:]), label.expand(n, *label.shape[1:]), g)
    if method == "drdm":
        from ..grid import InputGrid
        from ..sampling import augment
        per = int(math.ceil(n / len(levels)))
        imgs, labs = [], []
        grid = InputGrid.of(net, image.shape[2:])
        for item in augment(net, image.to(device), label.to(device), levels, per, grid=grid, seed=seed,
                            settings=settings):
            imgs.append(item["image"].cpu())
            labs.append(item["label"].cpu())
        return torch.cat(imgs)[:n], torch.cat(labs)[:n]
    raise ValueError(f"unknown augmentation method {method!r}; choose from {AUGMENTERS}")


class AugCache:
    """Augmented copies on disk under ``root/<method>/<slice name>_<key>.pt``.

    ``params`` (any JSON-serialisable dict) is hashed with the slice's identity into
    the key; the file holds ``images`` ``(n, 1, S, S)`` float32 and ``labels``
    ``(n, 1, S, S)`` uint8, ``seconds`` (the time it took to make) and ``source`` (the slice's
    :attr:`Slice.digest`: a file made from other pixels or labels is made again), and is
    written atomically.
    """

    def __init__(self, root):
        self.root = Path(root)
        self.hits = 0
        self.misses = 0

    def key(self, method: str, s: Slice, params: dict) -> str:
        doc = {"format": CACHE_FORMAT, "method": method, "slice": s.name, **params}
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def path(self, method: str, s: Slice, params: dict) -> Path:
        return self.root / method / f"{s.name}_{self.key(method, s, params)}.pt"

    def get(self, method: str, items: Sequence[Slice], params: dict,
            make: Callable[[Slice], tuple[torch.Tensor, torch.Tensor]], *, progress: bool = True,
            label: str | None = None):
        """``[(images, labels)]`` for ``items``, generating (``make(slice)``) only the misses; ``label``
        names them in the progress bar and in a failure's message (default ``method``; e.g. the few-shot arm
        ``drdm_low``)."""
        import time
        from tqdm.auto import tqdm
        from ..faults import guard
        from ..files import atomic_write
        paths = [self.path(method, s, params) for s in items]
        found = {}
        for i, p in enumerate(paths):
            if p.is_file():
                d = torch.load(p, weights_only=True)
                if d.get("source") == items[i].digest:
                    found[i] = d
        todo = [i for i in range(len(items)) if i not in found]
        name = label or method
        self.hits += len(found)
        self.misses += len(todo)
        for i in tqdm(todo, desc=f"augment {name}", unit="slice", disable=not progress or not todo):
            with guard(f"{name} copies of slice {items[i].name}"):     # one line, no partial cache file
                t0 = time.perf_counter()
                imgs, labs = make(items[i])
                seconds = time.perf_counter() - t0
                data = {"images": imgs.detach().cpu().float().contiguous(),
                        "labels": labs.detach().cpu().to(torch.uint8).contiguous(), "seconds": seconds,
                        "source": items[i].digest}
                atomic_write(paths[i], lambda tmp: torch.save(data, tmp))
            found[i] = data
        return [(found[i]["images"], found[i]["labels"].long()) for i in range(len(items))]

    def ledger(self, method: str, items: Sequence[Slice], params: dict) -> dict[str, dict]:
        """``{slice name: {"copies", "bytes", "seconds"}}`` for the copies of ``items`` on disk (the
        seconds their latest making took); generates nothing."""
        out = {}
        for s in items:
            p = self.path(method, s, params)
            if p.is_file():
                d = torch.load(p, weights_only=True, mmap=True)       # the tensors stay on disk
                if d.get("source") == s.digest:
                    out[s.name] = {"copies": int(d["images"].shape[0]), "bytes": p.stat().st_size,
                                   "seconds": round(float(d.get("seconds", 0.0)), 2)}
        return out


def method_params(method: str, *, n_aug: int, seed: int, prep: dict, levels=(), settings: str | None = None,
                  checkpoint_sha256: str | None = None) -> dict:
    """Everything that fixes one method's copies (the cache key's ``params``)."""
    from ..baselines import BigAug
    params = {"n_aug": int(n_aug), "seed": int(seed), "prep": prep}
    if method == "bigaug":
        params["bigaug"] = dataclasses.asdict(BigAug())
    elif method == "elastic":
        import inspect
        from ..baselines import elastic
        params["elastic"] = {k: v.default for k, v in inspect.signature(elastic).parameters.items()
                             if v.kind is inspect.Parameter.KEYWORD_ONLY}
    elif method == "drdm":
        # grid: the image-grid <-> network-grid map the copies went through (drdm.grid.InputGrid)
        params.update(levels=[int(t) for t in levels], settings=settings, checkpoint=checkpoint_sha256,
                      grid=DRDM_GRID)
    else:
        raise ValueError(f"no augmented copies for method {method!r}")
    return params


# ---------------------------------------------------------------- a protocol's DRDM model and copies

def drdm_identity(checkpoint, device="cpu"):
    """``(net or None, checkpoint sha256, reason)`` for the DRDM checkpoint (path or shipped name;
    default the release's 2-D weights from ``../shared``), loaded on ``device``."""
    from ..checkpoint import load, resolve
    from ..outputs import sha256_file
    if checkpoint is None:
        from ..shared import absent_reason, official_checkpoint
        checkpoint = official_checkpoint()
        if checkpoint is None:
            return None, None, absent_reason("the release's 2-D checkpoint")
    path = resolve(checkpoint)
    net = load(path, device=device)
    if net.config.ndim != 2:
        return None, None, f"{path.name}: a {net.config.ndim}-D network; the slices are 2-D"
    return net, sha256_file(path), None


def augmenter(method: str) -> str:
    """The :func:`make_copies` method behind a protocol's method (``drdm_low`` is ``drdm``)."""
    return "drdm" if method.startswith("drdm") else method


def copy_params(method: str, prot, *, net=None, checkpoint_sha256=None) -> dict:
    """The cache key's ``params`` for one method's copies under ``prot``
    (a :class:`drdm.tasks.fewshot.FewShotProtocol`)."""
    aug = augmenter(method)
    settings = None
    if aug == "drdm":
        from ..sampling import recovery_settings
        settings = recovery_settings(net, None if prot.settings == "auto" else prot.settings).name
    params = method_params(aug, n_aug=prot.n_aug, seed=prot.aug_seed, prep=prot.prep,
                           levels=prot.levels(method) if aug == "drdm" else (), settings=settings,
                           checkpoint_sha256=checkpoint_sha256)
    if aug == "drdm":
        from ..sampling import path_for
        params["path"] = path_for(net, next(net.parameters()).device)     # copies of another path: other bits
    return params


def copies(cache: AugCache, method: str, items: Sequence[Slice], prot, *, net=None, checkpoint_sha256=None,
           device="cpu", progress=True):
    """``[(images (n, 1, S, S), labels (n, 1, S, S))]`` per slice, from the cache or made now."""
    params = copy_params(method, prot, net=net, checkpoint_sha256=checkpoint_sha256)

    def make(s: Slice):
        return _slice_copies(method, s, prot, prot.n_aug, prot.levels(method), net=net, device=device,
                             settings=params.get("settings"))

    return cache.get(augmenter(method), items, params, make, progress=progress, label=method)


def _slice_copies(method: str, s: Slice, prot, n: int, levels: Sequence[int], *, net=None, device="cpu",
                  settings=None):
    """``n`` copies of one slice by a protocol's ``method``, from the slice's own seed (:func:`copy_seed`)."""
    aug = augmenter(method)
    img = torch.from_numpy(s.image)[None, None]
    lab = torch.from_numpy(s.label)[None, None]
    with torch.no_grad():
        return make_copies(aug, img, lab, n, copy_seed(prot.aug_seed, aug, s), net=net, levels=levels,
                           device=device, settings=settings)


def panel_copies(example: Slice, prot, methods: Sequence[str], *, net=None, n: int = 2, device="cpu") -> dict:
    """One slice and ``n`` of its copies per method, for a figure: ``{"original": (image, label), method:
    (images (n, 1, S, S), labels (n, 1, S, S))}``, the original ``(1, 1, S, S)``.

    Every copy shown is one the run cached and its U-Nets trained on (on the same ``device`` and model): DRDM's
    (``drdm``, ``drdm_low``) are copy 0 of the protocol's first ``n`` levels under the run's seed, BigAug's and
    elastic's the first ``n`` of the slice's copies (their generator draws copy after copy).
    """
    out = {"original": (torch.from_numpy(example.image)[None, None], torch.from_numpy(example.label)[None, None])}
    for m in methods:
        out[m] = _slice_copies(m, example, prot, n, prot.levels(m)[:n], net=net, device=device,
                               settings=copy_params(m, prot, net=net).get("settings"))
    return out
