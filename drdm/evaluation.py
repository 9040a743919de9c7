"""Measurements of what Algorithms 2-3 produce: Table 1 (magnitude and folding of the
random and recovered fields per level) and the label survival of augmented label maps.
"""
from __future__ import annotations

import torch

from . import spatial
from .sampling import augment, deform, process_for
from .seeds import sample_seed

__all__ = ["TABLE1_LEVELS", "field_stats", "table1", "label_survival"]

TABLE1_LEVELS = (30, 45, 55, 65, 70)


def field_stats(ddf: torch.Tensor) -> dict:
    """Table 1's metrics per field: ``{"max_pct", "mean_pct", "negJ_pct"}``, each ``(B,)``
    float64: max and mean |u| in % of the side, and % of voxels with ``det(I + grad u) < 0``
    (``numpy.gradient`` differences, as the release evaluates them)."""
    m = spatial.magnitude_stats(ddf.double())
    return {"max_pct": m["max_pct"], "mean_pct": m["mean_pct"],
            "negJ_pct": 100 * spatial.negative_jacobian_fraction(ddf.double())}


@torch.no_grad()
def table1(net, images: torch.Tensor, levels=TABLE1_LEVELS, *, seed: int = 0, batch: int = 8,
           progress: bool = True, return_rows: bool = False, **kw) -> dict:
    """Table 1: mean +- std over images of max and mean |phi| (% of the side) and |J|<0 (%).

    For each level, both the random forward field ``phi_{T':1}`` and the generated
    (recovered) field. Metrics: :func:`drdm.spatial.magnitude_stats` and
    :func:`drdm.spatial.negative_jacobian_fraction` (central differences, the
    release's evaluation definitions). Image ``i`` at level ``L`` draws its random
    field from its own generator (:func:`sample_seed` of ``(seed, L, i)``), so the
    numbers do not depend on ``batch``.

    Args:
        images: ``(N, C, *S)``; one sample per image and level.
        return_rows: also return the per-image values, ``{level: {kind: {metric:
            [N values]}}}``.
        **kw: passed to :func:`deform` (``settings``, ``recover``, ...).

    Returns:
        ``{level: {"random": {metric: {"mean", "std"}}, "recovered": {...}}}``; with
        ``return_rows``, the tuple ``(that, per_image)``.
    """
    from tqdm.auto import tqdm
    out, per_image = {}, {}
    dev = images.device
    total = len(levels) * ((images.shape[0] + batch - 1) // batch)
    bar = tqdm(total=total, disable=not progress, desc="table1")
    fp = process_for(net, images, kw.pop("process", None))
    for level in levels:
        rows = {"random": [], "recovered": []}
        for i in range(0, images.shape[0], batch):
            chunk = images[i:i + batch]
            phi = torch.cat([fp.sample(torch.tensor([int(level)]),
                                       torch.Generator(dev).manual_seed(sample_seed(seed, "field", level, i + j)),
                                       device=dev, dtype=images.dtype).phi for j in range(chunk.shape[0])])
            res = deform(net, chunk, level, process=fp, random_ddf=phi, **kw)
            rows["random"].append(field_stats(res.random))
            rows["recovered"].append(field_stats(res.ddf))
            bar.update(1)
        cat = {kind: {k: torch.cat([r[k] for r in rs]) for k in ("max_pct", "mean_pct", "negJ_pct")}
               for kind, rs in rows.items()}
        per_image[int(level)] = {kind: {k: v.tolist() for k, v in m.items()} for kind, m in cat.items()}
        out[int(level)] = {kind: {k: {"mean": v.mean().item(), "std": v.std().item() if v.numel() > 1 else 0.0}
                                  for k, v in m.items()} for kind, m in cat.items()}
    bar.close()
    return (out, per_image) if return_rows else out


@torch.no_grad()
def label_survival(net, images: torch.Tensor, labels: torch.Tensor, levels=(30, 45), n: int = 4, *,
                   seed: int = 0, batch: int = 4, progress: bool = True, **kw) -> dict:
    """Label safety of Algorithm 3: do augmented label maps keep the input's label set?

    For each image, level and sample, the label map is warped (label-safe) by a
    generated DDF. Counted per level: samples with a value not in the input
    (``new``, must be 0 by construction), samples where a label present in the
    input vanished (``vanished``), and which labels vanished.

    Args:
        images: ``(N, C, *S)`` in [0, 1]; labels: ``(N, 1, *S)`` integer.
        n: samples per image and level.

    Returns:
        ``{level: {"samples", "new", "vanished", "survival_pct", "vanished_by_label"}}``.
    """
    from tqdm.auto import tqdm
    if labels.shape[0] != images.shape[0] or labels.shape[2:] != images.shape[2:]:
        raise ValueError(f"labels {tuple(labels.shape)} do not match images {tuple(images.shape)}")
    g = torch.Generator(images.device).manual_seed(seed)
    out = {}
    bar = tqdm(total=len(levels) * images.shape[0], disable=not progress, desc="label survival")
    for level in levels:
        row = {"samples": 0, "new": 0, "vanished": 0, "vanished_by_label": {}}
        for i in range(images.shape[0]):
            before = set(torch.unique(labels[i]).tolist())
            for item in augment(net, images[i:i + 1], labels[i:i + 1], [level], n, generator=g, batch=batch, **kw):
                after = set(torch.unique(item["label"]).tolist())
                row["samples"] += 1
                row["new"] += bool(after - before)
                lost = sorted(before - after)
                row["vanished"] += bool(lost)
                for v in lost:
                    row["vanished_by_label"][str(v)] = row["vanished_by_label"].get(str(v), 0) + 1
            bar.update(1)
        row["survival_pct"] = 100.0 * (row["samples"] - row["vanished"]) / max(row["samples"], 1)
        out[int(level)] = row
    bar.close()
    return out
