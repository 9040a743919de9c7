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

Recovery settings (``settings=``): Algorithm 2 leaves two resampling choices open,
and the release's code makes them differently from this package's own defaults:

``"release"``: what ``DeformDDPM.diff_recover`` does with ``Config/config_cmr.yaml``:
    the original image is warped **bicubically** with zero padding inside the loop,
    and the composition ``phi <- phi(x + psi) + psi`` reads ``phi`` with **zero**
    padding outside the image. In 3-D (``config_lct``): linear warps, border
    padding. One step reproduces the release's own step to about 1e-3 voxel
    (``tests/test_recovery_release.py``); the default for the release's weights.
``"drdm"``: linear image warps and border padding (this package's choice, used
    to train and sample its own models); the default for every other network.

The loop is chaotic: a 1e-4-voxel change of ``phi_{T':1}`` moves the final field by
about a voxel, so two correct implementations agree step by step and in
distribution, never sample by sample (book chapter 3, ``make fidelity``).

Speed: the network's convolutions are over 80 % of the cost (about 0.2 s per
256^2 recovery step on two CPU threads). On CPU, 2-D images of side >= 128 run the
network in channels-last memory format by default (a converted copy; the caller's
network is left as it is): about 1.3x faster, different float32 rounding, and the
same distribution of recovered fields (``make fidelity``). Reduced precision was
measured and rejected: with the release's weights, bfloat16 autocast of the U-Net
doubles the mean recovered |phi| at T'=30 (2.4 % -> 4.7 % of the side on ACDC
slices), so every field here stays float32. ``benchmarks/sampling.py`` prints the
float32 ceiling of a machine: the network's FLOPs at the measured matrix-multiply
peak.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch

from . import spatial
from .diffusion import DiffusionConfig, ForwardProcess

__all__ = ["RecoverySettings", "SETTINGS", "recovery_settings", "recovery_step", "sample_seed", "fast_layout",
           "network_input", "deform_input",
           "field_stats", "DeformResult", "network_grid", "process_for", "deform", "augment", "registration_pairs", "table1", "label_survival",
           "TABLE1_LEVELS"]

TABLE1_LEVELS = (30, 45, 55, 65, 70)


@dataclass(frozen=True)
class RecoverySettings:
    """The resampling choices of the recovery loop (module docstring).

    Attributes:
        name: ``"release"`` or ``"drdm"`` (recorded in every output).
        image_mode: warp of the original image by the composed field inside the loop
            (:func:`drdm.spatial.warp` mode).
        padding: how the accumulated field is read outside the image when a step is
            composed (``"zeros"`` or ``"border"``).
    """
    name: str
    image_mode: str
    padding: str


SETTINGS = ("release", "drdm")
_RELEASE = {2: RecoverySettings("release", "bicubic", "zeros"),      # config_cmr.yaml
            3: RecoverySettings("release", "linear", "border")}      # config_lct.yaml
_DRDM = RecoverySettings("drdm", "linear", "border")


def is_release(net) -> bool:
    """Whether ``net`` holds the release's weights (loaded by :func:`drdm.load_official`)."""
    return getattr(net, "weights_origin", None) == "release"


def recovery_settings(net, settings: str | RecoverySettings | None = None) -> RecoverySettings:
    """The :class:`RecoverySettings` for ``net``: ``settings`` by name, or by default
    ``"release"`` for the release's weights and ``"drdm"`` for every other network."""
    if isinstance(settings, RecoverySettings):
        return settings
    if settings is None:
        settings = "release" if is_release(net) else "drdm"
    if settings == "release":
        return _RELEASE[net.config.ndim]
    if settings == "drdm":
        return _DRDM
    raise ValueError(f"settings must be one of {SETTINGS}, got {settings!r}")


def sample_seed(seed: int, *keys: int) -> int:
    """A per-sample seed from a run seed and the sample's keys (independent streams), so a
    sample never depends on how samples are batched or on which ran before it.

    >>> sample_seed(0, 30, 1) == sample_seed(0, 30, 1) != sample_seed(0, 30, 2)
    True
    """
    state = np.random.SeedSequence([int(seed), *[int(k) for k in keys]]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def fast_layout(net, image, channels_last: bool | None):
    """A channels-last copy of ``net`` (or ``net`` itself) and the memory format to feed it."""
    if channels_last is None:   # auto: where it was measured faster (CPU, 2-D, side >= 128)
        channels_last = image.device.type == "cpu" and image.dim() == 4 and min(image.shape[2:]) >= 128
    if not channels_last:
        return net, None
    fmt = torch.channels_last if image.dim() == 4 else torch.channels_last_3d
    return copy.deepcopy(net).to(memory_format=fmt), fmt


@dataclass
class DeformResult:
    """Output of :func:`deform` (all fields ``(B, ndim, *S)`` in voxels).

    Attributes:
        ddf: the generated DDF ``phi`` (random field composed with the recovery).
        random: the forward field ``phi_{T':1}`` alone.
        image: the original image warped by ``ddf`` (the setting's image warp).
        steps: optional list of ``(t, image)`` after each recovery step (figures).
        settings: the name of the :class:`RecoverySettings` used.
    """
    ddf: torch.Tensor
    random: torch.Tensor
    image: torch.Tensor
    steps: list = field(default_factory=list)
    settings: str = "drdm"


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
           process: ForwardProcess | None = None, recover: str = "level",
           settings: str | RecoverySettings | None = None,
           return_steps: bool = False, random_ddf: torch.Tensor | None = None,
           channels_last: bool | None = None, grid=None) -> DeformResult:
    """Algorithm 2: a plausible deformation of each image in the batch.

    Args:
        net: a :class:`~drdm.network.DRDMNet` (eval mode is set here).
        image: ``(B, C, *S)`` float in [0, 1]; repeat it along B for several samples.
        level: ``T'``, in ``[0, T-1]`` (0: no random field beyond one step).
        generator: draws the random field; same seed -> same result on one device.
        process: the forward process (default: the one the network was trained with,
            or the official reading for the release's weights).
        recover: ``"level"`` or ``"all"`` (module docstring).
        settings: ``"release"``, ``"drdm"`` or a :class:`RecoverySettings` (module
            docstring); default: ``"release"`` for the release's weights, else ``"drdm"``.
        return_steps: keep the image after every recovery step (for figures).
        random_ddf: use this ``phi_{T':1}`` instead of drawing one.
        channels_last: run a channels-last copy of the network (faster on CPU,
            different rounding); ``None``: on CPU for 2-D images of side >= 128.
        grid: run the recovery on this grid (e.g. the one the network was trained
            on, :func:`network_grid`): the image is stretched there corner-aligned and the
            fields come back by :func:`drdm.spatial.resize_ddf`; ``image`` is still warped
            at its own size. ``steps`` then hold network-grid images. For an image on its
            own voxel grid, :func:`deform_input` with a :class:`drdm.grid.InputGrid` is the
            map ``drdm augment``, ``RandDRDMd`` and ``augment(grid=InputGrid)`` share; the
            downstream tasks still use this stretch, with which their recorded runs were made.

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
        res = deform(net, small, level, generator=generator, process=process, recover=recover, settings=settings,
                     return_steps=return_steps, channels_last=channels_last,
                     random_ddf=None if random_ddf is None else spatial.resize_ddf(random_ddf, grid))
        ddf = spatial.resize_ddf(res.ddf, image.shape[2:])
        mode = recovery_settings(net, settings).image_mode
        return DeformResult(ddf, spatial.resize_ddf(res.random, image.shape[2:]), spatial.warp(image, ddf, mode=mode),
                            res.steps, res.settings)
    if not 0 <= int(level) < T:
        raise ValueError(f"level T' must lie in [0, {T - 1}] for this network (T={T}); got {level}")
    if recover not in ("level", "all"):
        raise ValueError(f"recover must be 'level' or 'all', got {recover!r}")
    rs = recovery_settings(net, settings)
    net.eval()
    run, fmt = fast_layout(net, image, channels_last)

    # On CPU the network sees one image at a time: batched convolutions round differently
    # from single ones, the chaotic loop turns that into different samples, and CPU gains
    # nothing from batching (benchmarks/sampling.py). So CPU results never depend on the batch.
    one_by_one = image.device.type == "cpu"

    def predict(x, t):
        if fmt is not None:
            x = x.contiguous(memory_format=fmt)
        if one_by_one and x.shape[0] > 1:
            return torch.cat([run(x[i:i + 1], t[i:i + 1]).contiguous() for i in range(x.shape[0])])
        return run(x, t).contiguous()

    fp = process_for(net, image, process)
    B = image.shape[0]
    if random_ddf is None:
        random_ddf = fp.sample(torch.full((B,), int(level)), generator, device=image.device,
                               dtype=image.dtype).phi
    phi = random_ddf
    current = spatial.warp(image, phi, mode=rs.image_mode)
    steps = [(int(level), current)] if return_steps else []
    first = int(level) - 1 if recover == "level" else T - 1
    for t in range(first, -1, -1):
        _, phi, current = recovery_step(predict, image, phi, current, t, rs)
        if return_steps:
            steps.append((t, current))
    return DeformResult(phi, random_ddf, current, steps, rs.name)


def recovery_step(net, image: torch.Tensor, phi: torch.Tensor, current: torch.Tensor, t: int,
                  settings: RecoverySettings):
    """One step of Algorithm 2's loop, as :func:`deform` runs it.

    Args:
        net: the network, or any callable ``(x, t) -> psi`` in voxels.
        image: the original image ``(B, C, *S)``; phi: the accumulated field
            ``(B, ndim, *S)`` in voxels; current: ``image`` warped by ``phi``.
        t: the network's 0-based time index for this step.
        settings: a :class:`RecoverySettings` (:func:`recovery_settings`).

    Returns:
        ``(psi, phi_next, current_next)``: the prediction, ``phi(x + psi) + psi``
        (Eq. 5, read with the setting's padding) and the original image warped
        once by ``phi_next`` (the setting's image warp).
    """
    psi = net(current, torch.full((image.shape[0],), int(t), device=image.device))
    phi = spatial.compose(psi, phi, padding_mode=settings.padding)
    return psi, phi, spatial.warp(image, phi, mode=settings.image_mode)


def network_input(net, grid, image: np.ndarray, device=None) -> torch.Tensor:
    """``(m, C, *grid.size)``: an input-grid image (``grid.shape``, any intensities) on the network
    grid by ``grid`` (:mod:`drdm.grid`), repeated over the network's input channels."""
    device = torch.device(device) if device is not None else next(net.parameters()).device
    x = torch.from_numpy(grid.network_images(np.asarray(image)))[:, None].to(device)
    return x.expand(-1, net.config.in_channels, *[-1] * net.config.ndim)


@torch.no_grad()
def deform_input(net, grid, image: np.ndarray, level: int, field_seeds, *, settings=None, recover: str = "level",
                 process: ForwardProcess | None = None, device=None, network_image: torch.Tensor | None = None):
    """Algorithm 2 for an image on its own voxel grid, through the one grid map (:mod:`drdm.grid`).

    The image goes to the network grid by ``grid`` (:class:`drdm.grid.InputGrid`: isotropic,
    padded, anti-aliased, normalised; or :class:`~drdm.grid.SliceGrid` for the slices of a stack),
    each sample's random field is drawn from its own generator (one per entry of
    ``field_seeds``; per slice with a :class:`~drdm.grid.SliceGrid`, the entries are lists), the
    recovery runs there, and the fields come back by ``grid.ddf_to_input``. ``drdm augment``,
    :class:`drdm.transforms.RandDRDMd` and :func:`augment` with ``grid=InputGrid(...)`` all
    call this, so one image, seed and setting give one DDF whichever door it comes in by.

    Args:
        image: the input's spatial array ``grid.shape`` (any intensities). level: ``T'``.
        field_seeds: one seed per sample (ints; lists of ``grid.images_per_sample`` ints for a stack).
        process, network_image: the forward process and :func:`network_input`'s result, when a
            caller that deforms one image many times has them already (``image`` is then unused).

    Returns:
        ``(ddf_net, ddf_in)``: ``(k m, ndim, *grid.size)`` network voxels and
        ``(k, ndim', *grid.shape)`` input voxels, for ``k`` samples of ``m`` network images each.
    """
    if net.config.in_channels != 1:
        raise ValueError(f"the input-grid map feeds one channel; this network takes {net.config.in_channels}")
    device = torch.device(device) if device is not None else next(net.parameters()).device
    m = grid.images_per_sample
    x = network_image if network_image is not None else network_input(net, grid, image, device)
    fp = process_for(net, x, process)
    fields = []
    for seeds in field_seeds:
        for s in ([seeds] if m == 1 else list(seeds)):
            g = torch.Generator(device).manual_seed(int(s))
            fields.append(fp.sample(torch.tensor([int(level)]), g, device=device).phi)
    k = len(fields) // m
    res = deform(net, x.repeat(k, *[1] * (x.dim() - 1)), level, process=fp, recover=recover, settings=settings,
                 random_ddf=torch.cat(fields))
    ddf_in = torch.cat([grid.ddf_to_input(res.ddf[j * m:(j + 1) * m]) for j in range(k)])
    return res.ddf, ddf_in


@torch.no_grad()
def augment(net, image: torch.Tensor, label: torch.Tensor | None, levels, n: int, *,
            generator: torch.Generator | None = None, batch: int = 8, mode: str | None = None, seed: int = 0, **kw):
    """Algorithm 3: ``n`` deformed copies of one image (and label) per level.

    Args:
        image: ``(1, C, *S)``; label: ``(1, 1, *S)`` integer or None.
        levels: iterable of ``T'``. n: samples per level. batch: samples per network call.
        mode: interpolation of the image (``linear`` or ``bicubic`` in 2D; default: the
            recovery setting's, bicubic for the release's weights in 2-D); labels
            always use the label-safe warp (no invented values, dtype kept).
        **kw: passed to :func:`deform` (``settings``, ``recover``, ``grid``, ...).
            With ``grid=`` a :class:`drdm.grid.InputGrid` of the image, the image (any
            intensities, one channel) goes through :func:`deform_input`, sample ``i`` of
            level ``T'`` draws its field from ``sample_seed(seed, T', i)`` (as ``drdm augment``),
            and the image is warped with border padding; ``generator`` is not used.

    Yields:
        dicts with ``level``, ``index``, ``image`` ``(1, C, *S)``, ``label`` or None,
        ``ddf`` ``(1, ndim, *S)`` in voxels.
    """
    if image.shape[0] != 1:
        raise ValueError(f"augment takes one image (1, C, *S), got batch {image.shape[0]}")
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    mode = mode or recovery_settings(net, kw.get("settings")).image_mode
    if hasattr(kw.get("grid"), "ddf_to_input"):          # an InputGrid: the one input-grid path
        if generator is not None or image.shape[1] != 1:
            raise ValueError("augment with an InputGrid takes one channel and draws sample i of level T' from "
                             "sample_seed(seed, T', i): pass seed=, not generator=")
        yield from _augment_input(net, image, label, levels, n, kw.pop("grid"), seed, mode, **kw)
        return
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


def _augment_input(net, image, label, levels, n, grid, seed, mode, settings=None, recover="level", **kw):
    if kw:
        raise TypeError(f"augment with an InputGrid takes settings and recover only, not {sorted(kw)}")
    for level in levels:
        for i in range(n):
            ddf_net, ddf = deform_input(net, grid, image[0, 0].cpu().numpy(), level,
                                        [sample_seed(seed, int(level), i)], settings=settings, recover=recover,
                                        device=image.device)
            img = spatial.warp(image, ddf.to(image.dtype), mode=mode, padding_mode="border")
            lab = None if label is None else spatial.warp(label, ddf.to(torch.float32), mode="label")
            yield {"level": int(level), "index": i, "image": img, "label": lab, "ddf": ddf, "ddf_network": ddf_net}


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
                                       torch.Generator(dev).manual_seed(sample_seed(seed, level, i + j)),
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
