"""Figures: deformation grids, Jacobian maps, field magnitudes (matplotlib)."""
from __future__ import annotations

import inspect
import os

import numpy as np
import torch

from . import spatial

__all__ = ["checkerboard", "plot_grid", "plot_jacobian", "plot_magnitude", "show_image", "centre_sections",
           "show_sections", "SECTIONS", "explore", "BATCH_ENV", "plot_copies", "outline_labels"]

#: set to ``1`` where notebooks run unattended (``drdm.bookrun``, the test suite's nbval): :func:`explore`
#: then draws its figure once instead of building widgets
BATCH_ENV = "DRDM_BATCH"


def checkerboard(shape, square: int = 8) -> torch.Tensor:
    """A ``(1, 1, *shape)`` checkerboard in {0.2, 0.8}: deformations are easy to see on it."""
    idx = spatial.identity_grid(shape)
    return (0.2 + 0.6 * ((idx // square).sum(0) % 2))[None, None]


def _as2d(ddf: torch.Tensor) -> np.ndarray:
    if ddf.dim() != 4 or ddf.shape[:2] != (1, 2):
        raise ValueError(f"expected one 2-D field of shape (1, 2, H, W), got {tuple(ddf.shape)}")
    return ddf[0].detach().cpu().double().numpy()


def show_image(ax, image: torch.Tensor, title: str | None = None, **kw):
    """Show a ``(1, 1, H, W)`` or ``(H, W)`` image in grey, axes off."""
    img = image.detach().cpu().reshape(image.shape[-2:]).numpy()
    ax.imshow(img, cmap=kw.pop("cmap", "gray"), **kw)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)


def plot_grid(ax, ddf: torch.Tensor, step: int = 8, color: str = "C1", lw: float = 0.6):
    """Draw where a regular grid lands: lines through ``x + u(x)``.

    ``ddf``: ``(1, 2, H, W)`` voxels; rows are axis 0 (drawn downwards), columns axis 1.
    Because warping is pull-back, the picture shows the sampling positions in
    the source image for each output grid line.
    """
    u = _as2d(ddf)
    H, W = u.shape[1:]
    y, x = np.mgrid[0:H, 0:W].astype(float)
    py, px = y + u[0], x + u[1]
    for r in range(0, H, step):
        ax.plot(px[r], py[r], color=color, lw=lw)
    for c in range(0, W, step):
        ax.plot(px[:, c], py[:, c], color=color, lw=lw)
    ax.set_xlim(-0.5, W - 0.5)
    ax.set_ylim(H - 0.5, -0.5)
    ax.set_aspect("equal")
    ax.set_axis_off()


def plot_jacobian(ax, ddf: torch.Tensor, title: str | None = None):
    """Map of ``det(I + grad u)`` with folds (< 0) in red; returns the image handle."""
    det = spatial.jacobian_det(ddf.detach().double())[0].cpu().numpy()
    lim = max(2.0, float(np.abs(det - 1).max()) + 1)
    im = ax.imshow(det, cmap="RdBu", vmin=2 - lim, vmax=lim)
    ax.contour(det, levels=[0], colors="k", linewidths=0.5)
    ax.set_axis_off()
    frac = float((det < 0).mean()) * 100
    ax.set_title(title or f"|J|<0: {frac:.2f} %", fontsize=9)
    return im


def plot_magnitude(ax, ddf: torch.Tensor, title: str | None = None):
    """Displacement magnitude in % of the image side."""
    u = spatial.voxels_to_fraction(ddf.detach())
    mag = (u.norm(dim=1)[0] * 100).cpu().numpy()
    im = ax.imshow(mag, cmap="viridis")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    return im


#: names of the three centre sections of a volume ``(D, H, W)`` (axis 0 axial, as the thorax phantoms)
SECTIONS = ("axial", "coronal", "sagittal")


def centre_sections(volume) -> list[np.ndarray]:
    """The three orthogonal sections through the centre of a volume (``(D, H, W)`` or
    ``(1, 1, D, H, W)``, tensor or array): ``[volume[D//2], volume[:, H//2], volume[:, :, W//2]]``,
    named by :data:`SECTIONS` (the paper's Fig. 9 layout)."""
    v = volume.detach().cpu().numpy() if isinstance(volume, torch.Tensor) else np.asarray(volume)
    v = v.reshape(v.shape[-3:])
    D, H, W = v.shape
    return [v[D // 2], v[:, H // 2], v[:, :, W // 2]]


def show_sections(axes, volume, title: str | None = None, **kw):
    """Show :func:`centre_sections` of ``volume`` on three axes (a row or a column), grey, axes off;
    ``title`` above the first, the section names on the others."""
    for j, (ax, sec) in enumerate(zip(axes, centre_sections(volume))):
        ax.imshow(sec, cmap=kw.get("cmap", "gray"), **{k: v for k, v in kw.items() if k != "cmap"})
        ax.set_axis_off()
        ax.set_title(f"{title}, {SECTIONS[j]}" if (title and j == 0) else SECTIONS[j], fontsize=8)


def explore(show, **controls):
    """Sliders over ``show``'s keyword arguments in a live notebook; one call at their defaults in a batch run.

    ``controls`` are ipywidgets' abbreviations by argument name, e.g. ``level=(0, 79, 5)`` for an integer
    slider from 0 to 79 in steps of 5; no widget is built until a live notebook asks for one. Each slider
    starts at ``show``'s default for that argument, so every controlled argument needs one. In a live notebook this returns
    ``ipywidgets.interactive(show, **controls)``, which calls ``show`` again on every change. Where
    ``$DRDM_BATCH`` is ``1`` (set by :mod:`drdm.bookrun` and by the test suite for nbval), it calls
    ``show()`` once at its defaults, builds no widget and returns ``None``: nbclient, which papermill
    runs notebooks on, can wait forever on a cell that builds an ``interact`` widget
    (jupyter/nbclient#312; the book's own runs hit it about once in five side by side), and no one can
    move a slider there anyway.
    """
    params = inspect.signature(show).parameters
    missing = [n for n in controls if n not in params or params[n].default is inspect.Parameter.empty]
    if missing:
        raise TypeError(f"explore: show() needs a default for every control; none for {missing}")
    if os.environ.get(BATCH_ENV) == "1":
        show()
        return None
    import ipywidgets
    return ipywidgets.interactive(show, **controls)


def outline_labels(ax, label, linewidth: float = 0.7):
    """Outline each label value ``v`` > 0 of an ``(H, W)`` label map (or any tensor/array that squeezes to
    one) on its own, in matplotlib colour ``C{v-1}`` (the book's cardiac labels, ACDC's: 1 RV blue, 2 Myo orange,
    3 LV green)."""
    lb = (label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label))
    lb = lb.reshape(lb.shape[-2:])
    for v in np.unique(lb[lb > 0]):
        ax.contour((lb == v).astype(float), levels=[0.5], colors=[f"C{int(v) - 1}"], linewidths=linewidth)


def plot_copies(panel: dict, title: str | None = None, names: dict | None = None):
    """A row of images with their labels outlined (:func:`outline_labels`): ``panel`` maps a column group's
    name to ``(images (n, 1, H, W), labels (n, 1, H, W))`` (as :func:`drdm.tasks.augcache.panel_copies`
    gives), intensities in [0, 1]. ``names`` gives a group's title, or one title per image of the group (a
    list). Returns the figure."""
    import matplotlib.pyplot as plt
    cols = []
    for name, (ims, lbs) in panel.items():
        titles = (names or {}).get(name, name)
        titles = [titles] * len(ims) if isinstance(titles, str) else list(titles)
        cols += list(zip(titles, ims, lbs))
    fig, axes = plt.subplots(1, len(cols), figsize=(1.9 * len(cols), 2.6), squeeze=False)
    for ax, (name, im, lb) in zip(axes[0], cols):
        show_image(ax, im, vmin=0, vmax=1)
        outline_labels(ax, lb)
        ax.set_title(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig
