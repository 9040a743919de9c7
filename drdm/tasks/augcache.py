"""Few-shot slices and the on-disk cache of their augmented copies (issue: Table 2 that can speak).

Two pieces of the few-shot protocol (:mod:`drdm.tasks.fewshot`) that must not change
between a run and its resumption:

* :func:`prepare_slices`: every labelled 2-D slice cut to one grid: a centre crop (or pad)
  of ``crop`` pixels, resized to ``size`` (image: antialiased bilinear; label: one-hot
  channels resized the same way, then arg-max, so thin structures are not dropped by
  nearest-neighbour decimation), intensities clipped to per-slice percentiles and scaled
  to [0, 1].
* :class:`AugCache`: augmented copies on disk, one file per (method, subject, phase, slice).
  The file name carries a hash of everything that determines the copies (method and its
  settings, number of copies, DRDM levels, recovery setting and checkpoint sha256, the
  augmentation seed, the preprocessing), so a changed checkpoint or setting misses the
  cache and regenerates, while other training seeds, label counts and re-runs reuse it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Slice", "prepare_slices", "AugCache", "slice_seed", "method_params", "CACHE_FORMAT"]

#: bump when the cached content changes meaning (part of every key)
CACHE_FORMAT = 1
#: the map DRDM copies are made through; copies made another way (before issue 15: a corner-aligned
#: stretch to the network grid) have other keys and are made again
DRDM_GRID = "InputGrid"


@dataclass(frozen=True, eq=False)
class Slice:
    """One labelled 2-D slice on the protocol's grid.

    Attributes:
        subject, vendor, phase: identity (vendor ``"?"`` when the data do not say).
        index: slice index in its volume (0 for 2-D records).
        image: ``(size, size)`` float32 in [0, 1]. label: ``(size, size)`` int64, ACDC values.
    """
    subject: str
    vendor: str
    phase: str
    index: int
    image: np.ndarray
    label: np.ndarray

    @property
    def name(self) -> str:
        return f"{self.subject}_{self.phase}_{self.index:02d}"

    @property
    def digest(self) -> str:
        """sha256 (16 hex digits) of the pixels and the label map: what a cached copy was made from."""
        h = hashlib.sha256(np.ascontiguousarray(self.image, np.float32).tobytes())
        h.update(np.ascontiguousarray(self.label, np.int64).tobytes())
        return h.hexdigest()[:16]


def _crop_or_pad(a: np.ndarray, crop: int, fill) -> np.ndarray:
    """Centre crop (or pad with ``fill``) both axes of a 2-D array to ``crop``."""
    out = np.full((crop, crop), fill, dtype=a.dtype)
    src, dst = [], []
    for n in a.shape:
        if n >= crop:
            o = (n - crop) // 2
            src.append(slice(o, o + crop))
            dst.append(slice(0, crop))
        else:
            o = (crop - n) // 2
            src.append(slice(0, n))
            dst.append(slice(o, o + n))
    out[tuple(dst)] = a[tuple(src)]
    return out


def prepare_slices(records, *, crop: int = 160, size: int = 96, percentiles=(1.0, 99.0),
                   n_classes: int = 4) -> list[Slice]:
    """Labelled 2-D slices of ``records`` (:class:`drdm.data.Record`, 2-D or 3-D) on one grid.

    Slices without any foreground label are dropped. The crop is taken around the
    image centre on the stored grid (the M&Ms subset's headers say 1 mm, its true
    spacing is lost, so there is no spacing to resample to).
    """
    from ..data import slices as cut
    lo_p, hi_p = percentiles
    if not 0 <= lo_p < hi_p <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= lo < hi <= 100, got {percentiles}")
    out = []
    for r in cut(list(records)):
        if r.label is None:
            raise ValueError(f"subject {r.subject}: a slice without a label map")
        lab = np.asarray(r.label).astype(np.int64)
        if lab.max() >= n_classes or lab.min() < 0:
            raise ValueError(f"subject {r.subject}: label values {np.unique(lab).tolist()} outside 0..{n_classes - 1}")
        img = np.asarray(r.image, np.float32)
        lo, hi = np.percentile(img, [lo_p, hi_p])
        img = (np.clip(img, lo, hi) - lo) / max(float(hi - lo), 1e-6)
        img, lab = _crop_or_pad(img, crop, 0.0), _crop_or_pad(lab, crop, 0)
        x = torch.from_numpy(img)[None, None]
        onehot = F.one_hot(torch.from_numpy(lab), n_classes).movedim(-1, 0)[None].float()
        if crop != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            onehot = F.interpolate(onehot, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        lab = onehot[0].argmax(0).numpy()
        if not lab.any():
            continue
        out.append(Slice(r.subject, str(r.meta.get("vendor", "?")), str(r.phase or "-"), int(r.meta.get("slice", 0)),
                         x[0, 0].clamp(0, 1).numpy().astype(np.float32), lab.astype(np.int64)))
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})[:3]
        raise ValueError(f"slices {dup} share a name (subject, phase, slice index): give 2-D records a "
                         "distinct meta['slice'] or phase")
    return out


def slice_seed(seed: int, method: str, s: Slice) -> int:
    """The generator seed of one slice's copies: fixed by (seed, method, slice), nothing else."""
    return int(seed) * 1_000_003 + zlib.crc32(f"{method}|{s.name}".encode())


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
            make: Callable[[Slice], tuple[torch.Tensor, torch.Tensor]], *, progress: bool = True):
        """``[(images, labels)]`` for ``items``, generating (``make(slice)``) only the misses."""
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
        self.hits += len(found)
        self.misses += len(todo)
        for i in tqdm(todo, desc=f"augment {method}", unit="slice", disable=not progress or not todo):
            with guard(f"{method} copies of slice {items[i].name}"):     # one line, no partial cache file
                t0 = time.perf_counter()
                imgs, labs = make(items[i])
                seconds = time.perf_counter() - t0
                data = {"images": imgs.detach().cpu().float().contiguous(),
                        "labels": labs.detach().cpu().to(torch.uint8).contiguous(), "seconds": seconds,
                        "source": items[i].digest}
                atomic_write(paths[i], lambda tmp: torch.save(data, tmp))
            found[i] = data
        return [(found[i]["images"], found[i]["labels"].long()) for i in range(len(items))]

    def recorded(self, method: str, items: Sequence[Slice], params: dict) -> tuple[int, float]:
        """``(copies on disk, seconds they took to make)`` for ``items``; generates nothing."""
        n, seconds = 0, 0.0
        for s in items:
            p = self.path(method, s, params)
            if p.is_file():
                d = torch.load(p, weights_only=True, mmap=True)       # the tensors stay on disk
                if d.get("source") != s.digest:
                    continue
                n += int(d["images"].shape[0])
                seconds += float(d.get("seconds", 0.0))
        return n, seconds

    def size_bytes(self) -> int:
        """Bytes of every cached file under ``root``."""
        return sum(p.stat().st_size for p in self.root.rglob("*.pt")) if self.root.is_dir() else 0


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

