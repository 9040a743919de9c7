"""Algorithms 2-4: instance deformation, augmentation and registration pairs.

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

Paths (``path=``, :mod:`drdm.runner`): how the network runs. ``"fast"``, the default on CPU for
2-D images of side >= 128, is a compiled channels-last copy with one sample per thread;
``"channels_last"`` and ``"plain"`` stay selectable. :func:`augment` through an input grid with one
copy per level (the release's augmentation schedule) runs the levels side by side in the same way.
All give the same distribution of fields (``make fidelity``, run on the fast path), never the same
bits, since the loop is chaotic.

Why a sample at a time on CPU: batched convolutions round differently from single ones and the
chaotic loop turns that into different samples, so CPU results never depend on the batch.
bfloat16 autocast was rejected: with the release's weights it doubles the mean recovered |phi| at
T'=30, so every field stays float32. ``benchmarks/sampling.py`` measures the paths against the
release-style loop and prints a machine's float32 ceiling; book chapter 7 has the profile.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from . import spatial
from .diffusion import DiffusionConfig, ForwardProcess
from .seeds import sample_seed
from .runner import PATHS, default_for, default_path, fast_layout, per_sample, predictor

__all__ = ["RecoverySettings", "SETTINGS", "recovery_settings", "recovery_step", "check_levels", "PATHS", "default_path", "path_for", "fast_layout", "predictor",
           "apply_field", "network_input", "deform_input", "DeformResult", "network_grid", "process_for", "deform",
           "augment", "registration_pairs"]


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
    return net.weights_origin == "release"


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


def path_for(net, device="cpu", size=None) -> str:
    """The :func:`default_path` of ``net`` on ``device`` for images of spatial ``size`` (default: its
    training grid, :func:`network_grid`): what a run that maps its images to that grid records."""
    return default_for(device, tuple(size) if size is not None else network_grid(net))


def check_levels(levels, T: int, what: str = "level T'") -> None:
    """The one level check: every ``T'`` in ``levels`` must lie in ``[0, T - 1]`` for a network of
    ``T`` steps (``ValueError`` naming the first bad value and the range otherwise)."""
    for lv in levels:
        if not 0 <= int(lv) < T:
            raise ValueError(f"{what} {lv} is out of range: this network has T={T} steps, "
                             f"so T' must lie in [0, {T - 1}]")


@dataclass
class DeformResult:
    """Output of :func:`deform` (all fields ``(B, ndim, *S)`` in voxels).

    Attributes:
        ddf: the generated DDF ``phi`` (random field composed with the recovery).
        random: the forward field ``phi_{T':1}`` alone.
        image: the original image warped by ``ddf`` (the setting's image warp).
        steps: optional list of ``(t, image)`` after each recovery step (figures).
        settings: the name of the :class:`RecoverySettings` used.
        path: the :data:`PATHS` entry the network ran on.
    """
    ddf: torch.Tensor
    random: torch.Tensor
    image: torch.Tensor
    steps: list = field(default_factory=list)
    settings: str = "drdm"
    path: str = "plain"


def network_grid(net) -> tuple[int, ...]:
    """The grid a network was trained on: ``train_config["image_size"]``, else the
    release's (256^2 in 2-D, 128^3 in 3-D)."""
    nd = net.config.ndim
    size = (net.train_config or {}).get("image_size") or (256 if nd == 2 else 128)
    return (int(size),) * nd if isinstance(size, (int, float)) else tuple(int(s) for s in size)


def process_for(net, image, process=None) -> ForwardProcess:
    """The forward process for ``image``: ``process`` if given (checked), else the
    one the network was trained with (``net.train_config``: reading, sigma, unit factor and
    integration), else the official reading."""
    if process is not None:
        if tuple(process.config.image_size) != tuple(image.shape[2:]):
            raise ValueError(f"the forward process is for images of size {process.config.image_size}, "
                             f"got {tuple(image.shape[2:])}")
        return process
    cfg = net.train_config or {}
    return ForwardProcess(DiffusionConfig(reading=cfg.get("reading", "official"), ndim=image.dim() - 2,
                                          image_size=tuple(image.shape[2:]),
                                          timesteps=net.config.timesteps,
                                          sigma=cfg.get("sigma"), unit_factor=cfg.get("unit_factor", "official"),
                                          integration=cfg.get("integration", "euler")))


@torch.no_grad()
def deform(net, image: torch.Tensor, level: int, *, generator: torch.Generator | None = None,
           process: ForwardProcess | None = None, recover: str = "level",
           settings: str | RecoverySettings | None = None,
           return_steps: bool = False, random_ddf: torch.Tensor | None = None,
           path: str | None = None) -> DeformResult:
    """Algorithm 2: a plausible deformation of each image in the batch, on its own grid.

    The image is taken to be on the network's grid already (a phantom, a preprocessed
    slice). An image on its own voxel grid goes through :func:`deform_input` with a
    :class:`drdm.grid.InputGrid`, the one map every entry point shares.

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
        path: how the network runs, ``"fast"``, ``"channels_last"`` or ``"plain"`` (module
            docstring); ``None``: :func:`default_path` (fast on CPU for 2-D sides >= 128).
            Every path gives each sample the same bits whatever the batch.

    Returns:
        :class:`DeformResult`.
    """
    if not isinstance(image, torch.Tensor) or image.dim() not in (4, 5) or not image.is_floating_point():
        got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image must be a float tensor (B, C, H, W) or (B, C, H, W, D); got {got}")
    if image.dim() - 2 != net.config.ndim:
        raise ValueError(f"a {image.dim() - 2}-D image for a {net.config.ndim}-D network")
    T = net.config.timesteps
    check_levels([level], T)
    if recover not in ("level", "all"):
        raise ValueError(f"recover must be 'level' or 'all', got {recover!r}")
    rs = recovery_settings(net, settings)
    net.eval()
    predict, taken = predictor(net, image, path)
    fp = process_for(net, image, process)
    B = image.shape[0]
    if random_ddf is None:
        random_ddf = fp.sample(torch.full((B,), int(level)), generator, device=image.device,
                               dtype=image.dtype).phi
    first = int(level) - 1 if recover == "level" else T - 1

    def loop(img, phi):
        current = spatial.warp(img, phi, mode=rs.image_mode)
        steps = [(int(level), current)] if return_steps else []
        for t in range(first, -1, -1):
            _, phi, current = recovery_step(predict, img, phi, current, t, rs)
            if return_steps:
                steps.append((t, current))
        return phi, current, steps

    if image.device.type != "cpu":                    # batched on accelerators
        phi, current, steps = loop(image, random_ddf)
        return DeformResult(phi, random_ddf, current, steps, rs.name, taken)
    # on CPU one sample at a time (module docstring), on the fast path one sample per thread
    if hasattr(predict, "prepare"):
        predict.prepare(image[:1], torch.full((1,), max(first, 0), device=image.device))
    outs = per_sample(lambda i: loop(image[i:i + 1], random_ddf[i:i + 1]), B, spread=taken == "fast")
    steps = [(t, torch.cat([o[2][k][1] for o in outs])) for k, (t, _) in enumerate(outs[0][2])]
    return DeformResult(torch.cat([o[0] for o in outs]), random_ddf, torch.cat([o[1] for o in outs]), steps,
                        rs.name, taken)


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


def apply_field(net, image: torch.Tensor, ddf: torch.Tensor, label: torch.Tensor | None = None, *,
                settings: str | RecoverySettings | None = None, mode: str | None = None,
                padding_mode: str = "border"):
    """The one way a generated field is applied to an image (and its label map) on its own grid.

    The image is warped with the recovery setting's interpolation (``settings``, default the
    network's: bicubic for the release's 2-D weights, linear otherwise; ``mode`` overrides it)
    and ``padding_mode`` (border: no black corners on a reader's image); the label map with the
    label-safe warp (no invented values, dtype kept). ``drdm augment`` / ``drdm synth``,
    :func:`augment`, :class:`drdm.transforms.RandDRDMd` and the registration task's synthetic
    pairs all call this, so one field gives one image whichever door it comes in by.

    Args:
        image: ``(B, C, *S)`` float; ddf: ``(B, ndim, *S)`` voxels of that grid; label:
            ``(B, 1, *S)`` integer or None.

    Returns:
        ``(image, label)`` warped (``label`` None when none was given).
    """
    mode = mode or recovery_settings(net, settings).image_mode
    out = spatial.warp(image, ddf.to(image.dtype), mode=mode, padding_mode=padding_mode)
    lab = None if label is None else spatial.warp(label, ddf.to(torch.float32), mode="label")
    return out, lab


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
    device, m, x, fp = _network_side(net, grid, image, device, process, network_image)
    fields = []
    for seeds in field_seeds:
        for s in ([seeds] if m == 1 else list(seeds)):
            g = torch.Generator(device).manual_seed(int(s))
            fields.append(fp.sample(torch.tensor([int(level)]), g, device=device).phi)
    k = len(fields) // m
    res = deform(net, x.repeat(k, *[1] * (x.dim() - 1)), level, process=fp, recover=recover, settings=settings,
                 random_ddf=torch.cat(fields))
    return res.ddf, _to_input(grid, res.ddf)


def _network_side(net, grid, image, device, process, network_image):
    """``(device, m, x, fp)``: what both input-grid algorithms need on the network's side: the
    image there (``network_image`` or :func:`network_input`), ``m`` network images per sample, and
    the forward process."""
    if net.config.in_channels != 1:
        raise ValueError(f"the input-grid map feeds one channel; this network takes {net.config.in_channels}")
    device = torch.device(device) if device is not None else next(net.parameters()).device
    x = network_image if network_image is not None else network_input(net, grid, image, device)
    return device, grid.images_per_sample, x, process_for(net, x, process)


def _to_input(grid, u: torch.Tensor) -> torch.Tensor:
    """``(k m, ndim, *size)`` network-voxel fields, ``m = grid.images_per_sample`` per sample ->
    ``(k, ndim', *grid.shape)`` input voxels."""
    m = grid.images_per_sample
    return torch.cat([grid.ddf_to_input(u[j:j + m]) for j in range(0, u.shape[0], m)])


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
        **kw: passed to :func:`deform` (``settings``, ``recover``, ...), which runs at the
            image's own size. With ``grid=`` a :class:`drdm.grid.InputGrid` of the image, the
            image (any intensities, one channel) goes through :func:`deform_input`, sample ``i``
            of level ``T'`` draws its field from ``sample_seed(seed, "field", T', i)`` (as ``drdm augment``),
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
    grid = kw.pop("grid", None)
    if grid is not None:                                   # an InputGrid: the one input-grid path
        if not hasattr(grid, "ddf_to_input"):
            raise TypeError(f"grid must be a drdm.grid.InputGrid of the image, got {type(grid).__name__}")
        if generator is not None or image.shape[1] != 1:
            raise ValueError("augment with an InputGrid takes one channel and draws sample i of level T' from "
                             "sample_seed(seed, 'field', T', i): pass seed=, not generator=")
        yield from _augment_input(net, image, label, levels, n, grid, seed, mode, batch, **kw)
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


def _augment_input(net, image, label, levels, n, grid, seed, mode, batch, settings=None, recover="level", **kw):
    if kw:
        raise TypeError(f"augment with an InputGrid takes settings and recover only, not {sorted(kw)}")
    x = network_input(net, grid, image[0, 0].cpu().numpy(), image.device)
    fp = process_for(net, x)
    jobs = [(int(level), range(start, min(n, start + batch))) for level in levels for start in range(0, n, batch)]
    # one sample per job (one copy per level, as in the release's augmentation schedule): on the fast
    # path the jobs run side by side, one per thread (runner.per_sample), as deform spreads a batch's
    # samples; each copy then has the bits of a one-thread run, whatever the thread count
    side = (x.device.type == "cpu" and all(len(idx) == 1 for _, idx in jobs)
            and path_for(net, x.device, x.shape[2:]) == "fast")
    width = max(1, torch.get_num_threads()) if side else 1

    def run(job):
        level, idx = job
        return deform_input(net, grid, None, level, [sample_seed(seed, "field", level, i) for i in idx],
                            settings=settings, recover=recover, process=fp, network_image=x)

    for g in range(0, len(jobs), width):
        group = jobs[g:g + width]
        for (level, idx), (ddf_net, ddf) in zip(group, per_sample(lambda k: run(group[k]), len(group), spread=side)):
            imgs, labs = apply_field(net, image.expand(len(idx), *image.shape[1:]), ddf, None if label is None else
                                     label.expand(len(idx), *label.shape[1:]), mode=mode)
            for j, i in enumerate(idx):
                yield {"level": level, "index": i, "image": imgs[j:j + 1], "ddf": ddf[j:j + 1],
                       "label": None if labs is None else labs[j:j + 1], "ddf_network": ddf_net[j:j + 1]}


@torch.no_grad()
def registration_pairs(net, grid, image: np.ndarray | None, pair, seeds, *, settings=None, recover: str = "level",
                       process: ForwardProcess | None = None, device=None,
                       network_image: torch.Tensor | None = None) -> dict:
    """Algorithm 4 for an image on its own voxel grid, through the one grid map (:mod:`drdm.grid`).

    ``I_mv = phi_aug(I_0)``; ``phi_syn`` is generated from ``I_mv`` (Algorithm 2, on the
    network grid) and ``I_fx = <phi_syn o phi_aug>(I_0)``, one resampling of the original:
    warping ``I_mv`` by ``phi_syn`` gives ``I_fx`` up to interpolation, so ``phi_syn`` is the
    registration target from fixed to moving (pull-back). ``drdm synth`` and the registration
    task (:func:`drdm.tasks.registration.synthetic_pairs`) both call this.

    Args:
        grid: the input's :class:`~drdm.grid.InputGrid` (or :class:`~drdm.grid.SliceGrid`).
        image: the input's spatial array ``grid.shape``; unused with ``network_image``.
        pair: ``(T'_aug, T'_syn)``. seeds: one per sample; sample ``j`` draws its
            ``phi_aug`` and then its ``phi_syn`` random fields (all the slices of a stack at
            once) from one generator seeded ``seeds[j]``.
        process, network_image: as :func:`deform_input`.

    Returns:
        ``{"aug", "syn", "both"}``: ``(k, ndim', *grid.shape)`` input-voxel fields of ``k``
        samples (``both`` is ``phi_syn o phi_aug``, the fixed image's field), and ``"network"``:
        the same three ``(k m, ndim, *grid.size)`` in network voxels.
    """
    t_aug, t_syn = (int(t) for t in pair)
    if not len(seeds):
        raise ValueError("registration_pairs needs at least one seed (one per sample)")
    device, m, x, fp = _network_side(net, grid, image, device, process, network_image)
    gens = [torch.Generator(device).manual_seed(int(s)) for s in seeds]
    k = len(gens)

    def draw(level):
        return torch.cat([fp.sample(torch.full((m,), level), g, device=device, dtype=x.dtype).phi for g in gens])

    phi_aug = draw(t_aug)
    phi_syn = draw(t_syn)
    aug = deform(net, x.repeat(k, *[1] * (x.dim() - 1)), t_aug, process=fp, random_ddf=phi_aug,
                 settings=settings, recover=recover)
    syn = deform(net, aug.image, t_syn, process=fp, random_ddf=phi_syn, settings=settings, recover=recover)
    fields = {"aug": aug.ddf, "syn": syn.ddf, "both": spatial.compose(syn.ddf, aug.ddf)}
    out = {name: _to_input(grid, u) for name, u in fields.items()}
    out["network"] = fields
    return out
