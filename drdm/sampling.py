"""Algorithms 2-4: instance deformation, augmentation and registration pairs, and Table 1.

Algorithm 2 (:func:`deform`): draw ``phi_{T':1}`` from the forward process, then
for each recovery step predict ``psi_hat_t`` from the current image and compose
``phi <- <psi_hat_t o phi>`` (Eq. 1 / Eq. 5); the current image is always the
*original* image warped once by the composed field (Eq. 4), never a re-warp.

Recovery steps (``recover=``):

``"level"`` (default, Algorithm 2): the network's steps ``T'-1, ..., 0`` (the
    paper's ``T', ..., 1`` in the release's 0-based time index).
``"all"``: ``T-1, ..., 0`` whatever ``T'`` is, as the release's augmentation
    script does (80 steps for every sample).

Speed: the network's convolutions are over 80 % of the cost (about 0.2 s per
256^2 recovery step on two CPU threads). ``channels_last=True`` cuts that by about
a quarter on CPU; it changes float32 rounding, and the recovery amplifies such
differences in single pixels, so it is off by default for bit-for-bit
reproducibility. Reduced precision was measured and rejected: with the
release's weights, bfloat16 autocast of the U-Net doubles the mean recovered
|phi| at T'=30 (2.4 % -> 4.7 % of the side on ACDC slices), so every field here
stays float32. ``benchmarks/sampling.py`` prints the float32 ceiling of a machine:
the network's FLOPs at the measured matrix-multiply peak (on two CPU cores, about
4x the release's one-thread loop at equal steps).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import spatial
from .diffusion import DiffusionConfig, ForwardProcess

__all__ = ["DeformResult", "network_grid", "process_for", "deform", "augment", "registration_pairs", "table1", "label_survival",
           "TABLE1_LEVELS"]

TABLE1_LEVELS = (30, 45, 55, 65, 70)


@dataclass
class DeformResult:
    """Output of :func:`deform` (all fields ``(B, ndim, *S)`` in voxels).

    Attributes:
        ddf: the generated DDF ``phi`` (random field composed with the recovery).
        random: the forward field ``phi_{T':1}`` alone.
        image: the original image warped by ``ddf``.
        steps: optional list of ``(t, image)`` after each recovery step (figures).
    """
    ddf: torch.Tensor
    random: torch.Tensor
    image: torch.Tensor
    steps: list = field(default_factory=list)


def network_grid(net) -> tuple[int, ...]:
    """The grid a network was trained on: ``train_config["image_size"]``, else the
    release's (256^2 in 2-D, 128^3 in 3-D)."""
    nd = net.config.ndim
    size = (getattr(net, "train_config", None) or {}).get("image_size") or (256 if nd == 2 else 128)
    return (int(size),) * nd if isinstance(size, (int, float)) else tuple(int(s) for s in size)


def process_for(net, image, process=None) -> ForwardProcess:
    """The forward process for ``image``: ``process`` if given (checked), else the
    one the network was trained with (``net.train_config``), else the official reading."""
    if process is not None:
        if tuple(process.config.image_size) != tuple(image.shape[2:]):
            raise ValueError(f"the forward process is for images of size {process.config.image_size}, "
                             f"got {tuple(image.shape[2:])}")
        return process
    cfg = getattr(net, "train_config", None) or {}
    return ForwardProcess(DiffusionConfig(reading=cfg.get("reading", "official"), ndim=image.dim() - 2,
                                          image_size=tuple(image.shape[2:]),
                                          timesteps=net.config.timesteps,
                                          sigma=cfg.get("sigma"), unit_factor=cfg.get("unit_factor", "official")))


@torch.no_grad()
def deform(net, image: torch.Tensor, level: int, *, generator: torch.Generator | None = None,
           process: ForwardProcess | None = None, recover: str = "level", padding: str = "border",
           return_steps: bool = False, random_ddf: torch.Tensor | None = None,
           channels_last: bool = False, grid=None) -> DeformResult:
    """Algorithm 2: a plausible deformation of each image in the batch.

    Args:
        net: a :class:`~drdm.network.DRDMNet` (eval mode is set here).
        image: ``(B, C, *S)`` float in [0, 1]; repeat it along B for several samples.
        level: ``T'``, in ``[0, T-1]`` (0: no random field beyond one step).
        generator: draws the random field; same seed -> same result on one device.
        process: the forward process (default: the one the network was trained with,
            or the official reading for the release's weights).
        recover: ``"level"`` or ``"all"`` (module docstring).
        padding: how the accumulated field is read outside the image during composition.
        return_steps: keep the image after every recovery step (for figures).
        random_ddf: use this ``phi_{T':1}`` instead of drawing one.
        channels_last: run the network in channels-last memory format (converts
            the network's parameters in place; faster on CPU, different rounding).
        grid: run the recovery on this grid (e.g. the one the network was trained
            on, :func:`network_grid`) and resample the fields to the image's grid
            (:func:`drdm.spatial.resize_ddf`); ``image`` is still warped at its own
            size. ``steps`` then hold network-grid images.

    Returns:
        :class:`DeformResult`.
    """
    if not isinstance(image, torch.Tensor) or image.dim() not in (4, 5) or not image.is_floating_point():
        got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image must be a float tensor (B, C, H, W) or (B, C, H, W, D); got {got}")
    if image.dim() - 2 != net.config.ndim:
        raise ValueError(f"a {image.dim() - 2}-D image for a {net.config.ndim}-D network")
    T = net.config.timesteps
    if grid is not None and tuple(int(g) for g in grid) != tuple(image.shape[2:]):
        grid = tuple(int(g) for g in grid)
        if len(grid) != image.dim() - 2:
            raise ValueError(f"grid must have {image.dim() - 2} sizes, got {grid}")
        mode = "bilinear" if image.dim() == 4 else "trilinear"
        small = torch.nn.functional.interpolate(image, size=grid, mode=mode, align_corners=True)
        res = deform(net, small, level, generator=generator, process=process, recover=recover, padding=padding,
                     return_steps=return_steps, channels_last=channels_last,
                     random_ddf=None if random_ddf is None else spatial.resize_ddf(random_ddf, grid))
        ddf = spatial.resize_ddf(res.ddf, image.shape[2:])
        return DeformResult(ddf, spatial.resize_ddf(res.random, image.shape[2:]), spatial.warp(image, ddf), res.steps)
    if not 0 <= int(level) < T:
        raise ValueError(f"level T' must lie in [0, {T - 1}] for this network (T={T}); got {level}")
    if recover not in ("level", "all"):
        raise ValueError(f"recover must be 'level' or 'all', got {recover!r}")
    net.eval()
    fmt = None
    if channels_last:
        fmt = torch.channels_last if image.dim() == 4 else torch.channels_last_3d
        net.to(memory_format=fmt)

    def predict(x, t):
        if fmt is None:
            return net(x, t)
        return net(x.contiguous(memory_format=fmt), t).contiguous()

    fp = process_for(net, image, process)
    B = image.shape[0]
    if random_ddf is None:
        random_ddf = fp.sample(torch.full((B,), int(level)), generator, device=image.device,
                               dtype=image.dtype).phi
    phi = random_ddf
    current = spatial.warp(image, phi)
    steps = [(int(level), current)] if return_steps else []
    first = int(level) - 1 if recover == "level" else T - 1
    for t in range(first, -1, -1):
        psi = predict(current, torch.full((B,), t, device=image.device))
        phi = spatial.compose(psi, phi, padding_mode=padding)
        current = spatial.warp(image, phi)
        if return_steps:
            steps.append((t, current))
    return DeformResult(phi, random_ddf, current, steps)


@torch.no_grad()
def augment(net, image: torch.Tensor, label: torch.Tensor | None, levels, n: int, *,
            generator: torch.Generator | None = None, batch: int = 8, mode: str = "linear", **kw):
    """Algorithm 3: ``n`` deformed copies of one image (and label) per level.

    Args:
        image: ``(1, C, *S)``; label: ``(1, 1, *S)`` integer or None.
        levels: iterable of ``T'``. n: samples per level. batch: samples per network call.
        mode: interpolation of the image (``linear`` or ``bicubic`` in 2D); labels
            always use the label-safe warp (no invented values, dtype kept).

    Yields:
        dicts with ``level``, ``index``, ``image`` ``(1, C, *S)``, ``label`` or None,
        ``ddf`` ``(1, ndim, *S)`` in voxels.
    """
    if image.shape[0] != 1:
        raise ValueError(f"augment takes one image (1, C, *S), got batch {image.shape[0]}")
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    for level in levels:
        done = 0
        while done < n:
            b = min(batch, n - done)
            res = deform(net, image.expand(b, *image.shape[1:]), level, generator=generator, **kw)
            imgs = spatial.warp(image.expand(b, *image.shape[1:]), res.ddf, mode=mode)
            labs = (spatial.warp(label.expand(b, *label.shape[1:]), res.ddf, mode="label")
                    if label is not None else None)
            for i in range(b):
                yield {"level": int(level), "index": done + i, "image": imgs[i:i + 1],
                       "label": None if labs is None else labs[i:i + 1], "ddf": res.ddf[i:i + 1]}
            done += b


@torch.no_grad()
def registration_pairs(net, image: torch.Tensor, pairs, *, generator=None, **kw):
    """Algorithm 4: ``(I_mv, I_fx, phi_syn)`` for each ``(T'_aug, T'_syn)`` in ``pairs``.

    ``I_mv = phi_aug(I_0)``; ``phi_syn`` is generated from ``I_mv`` (Algorithm 2) and
    ``I_fx = <phi_syn o phi_aug>(I_0)``, one resampling of the original. Warping
    ``I_mv`` by ``phi_syn`` gives ``I_fx`` (up to interpolation), so ``phi_syn`` is the
    registration target from fixed to moving in the pull-back convention.

    Args:
        image: ``(B, C, *S)``. Yields dicts ``t_aug``, ``t_syn``, ``moving``, ``fixed``,
        ``ddf`` (``phi_syn``, voxels) and ``ddf_aug``.
    """
    for t_aug, t_syn in pairs:
        aug = deform(net, image, t_aug, generator=generator, **kw)
        moving = aug.image
        syn = deform(net, moving, t_syn, generator=generator, **kw)
        both = spatial.compose(syn.ddf, aug.ddf)
        yield {"t_aug": int(t_aug), "t_syn": int(t_syn), "moving": moving,
               "fixed": spatial.warp(image, both), "ddf": syn.ddf, "ddf_aug": aug.ddf}


def _stats(ddf: torch.Tensor) -> dict:
    m = spatial.magnitude_stats(ddf.double())
    return {"max_pct": m["max_pct"], "mean_pct": m["mean_pct"],
            "negJ_pct": 100 * spatial.negative_jacobian_fraction(ddf.double())}


@torch.no_grad()
def table1(net, images: torch.Tensor, levels=TABLE1_LEVELS, *, seed: int = 0, batch: int = 8,
           progress: bool = True, **kw) -> dict:
    """Table 1: mean +- std over images of max and mean |phi| (% of the side) and |J|<0 (%).

    For each level, both the random forward field ``phi_{T':1}`` and the generated
    (recovered) field. Metrics: :func:`drdm.spatial.magnitude_stats` and
    :func:`drdm.spatial.negative_jacobian_fraction` (central differences, the
    release's evaluation definitions).

    Args:
        images: ``(N, C, *S)``; one sample per image and level.

    Returns:
        ``{level: {"random": {metric: {"mean", "std"}}, "recovered": {...}}}``.
    """
    from tqdm.auto import tqdm
    out = {}
    g = torch.Generator(images.device).manual_seed(seed)
    total = len(levels) * ((images.shape[0] + batch - 1) // batch)
    bar = tqdm(total=total, disable=not progress, desc="table1")
    for level in levels:
        rows = {"random": [], "recovered": []}
        for i in range(0, images.shape[0], batch):
            res = deform(net, images[i:i + batch], level, generator=g, **kw)
            rows["random"].append(_stats(res.random))
            rows["recovered"].append(_stats(res.ddf))
            bar.update(1)
        out[int(level)] = {
            kind: {k: {"mean": torch.cat([r[k] for r in rs]).mean().item(),
                       "std": torch.cat([r[k] for r in rs]).std().item() if images.shape[0] > 1 else 0.0}
                   for k in ("max_pct", "mean_pct", "negJ_pct")}
            for kind, rs in rows.items()}
    bar.close()
    return out


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
