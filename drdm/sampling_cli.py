"""``drdm augment | synth | table1``: Algorithms 3 and 4 and Table 1 on a reader's files.

Geometry (a documented choice). The network needs sides divisible by 8 and was
trained on one grid (``train_config["image_size"]``; 256 for the release's 2-D
weights, 128 for 3-D weights without a config). An input of any shape and voxel
spacing is therefore resampled, for the network only, to an **isotropic** grid of
the network's size: one voxel size for every axis so the whole field of view fits,
the longest physical extent filling its axis, the others padded symmetrically with
background (:func:`drdm.data.preprocess`: anti-aliased resampling with voxel
centres aligned, 0.5/99.5 percentile clip, min-max to [0, 1]). DRDM runs there.
Each generated field ``u`` (network voxels) is brought back to the input grid by
sampling it at the network coordinates of every input voxel centre,
``y_i = (x_i + 0.5) / s_i - 0.5 + pad_i``, and multiplying component ``i`` by
``s_i`` (input voxels per network voxel along axis ``i``). This is the exact
change of coordinates of the resampling above (``spatial.resize_ddf`` assumes
corner-aligned grids, which differ from it by up to half a network voxel and
ignore the padding), and it commutes with composition (Eq. 5). The ORIGINAL input
is then warped once at its own resolution, so every output overlays the input in
world coordinates and keeps its affine and header.

Outputs are written atomically (temporary file + rename); ``manifest.json`` is
rewritten atomically after every sample, so a killed run resumes when re-run with
the same arguments: samples the manifest lists (files present, checksums equal)
are kept, files of samples it does not list are leftovers of the same run and are
replaced, stale temporary files are removed. Outputs of another run (a different
manifest ``run`` record: checkpoint, inputs, levels, n, seed, ...) or files without a
manifest are refused unless ``--overwrite``, which replaces them and removes the
files the old manifest listed that the new run does not produce. Every sample draws its random field
from its own generator seeded by ``(seed, level, index)`` (and slice, with ``--slicewise``),
so outputs do not depend on ``--batch`` or on where a run was interrupted, up to
floating-point rounding (which varies with the network's batch size).

Slice-wise (``--slicewise``): a 3-D stack with a 2-D network, e.g. a cardiac
short-axis stack with the release's weights. Every slice along the last axis is
mapped to the network grid on its own (in-plane spacing, per-slice intensity
normalisation, as the release pre-processes slices) and deformed by its own
random field; the saved DDF is the stack's 3-D field with a zero through-plane
component, and images and labels are warped slice by slice, so slices never mix.
``--batch`` then counts slices.

The DDF files are NIfTI vector images of shape ``(*input_file_shape, ndim)``
(intent ``vector``), float32, in **voxels of the input grid**, component ``i``
along array axis ``i``, pull-back convention ``out(x) = in(x + u(x))``.
"""
from __future__ import annotations

import argparse
import csv
import functools
import hashlib
import io
import json
import math
import os
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .checkpoint import CheckpointError
from .data import DataError
from .provenance import _temp_affixes
from .sampling import SETTINGS, recovery_settings, sample_seed

__all__ = ["add_commands", "load_network", "network_size", "InputGrid", "MAX_GRID_VOXELS"]

#: Largest network grid the commands accept (about 5800^2 or 320^3 voxels); the
#: paper's grids are 256^2 and 128^3. Larger grids would exhaust memory in the
#: forward process (fields on a 2x enlarged grid) before producing anything.
MAX_GRID_VOXELS = 2 ** 25

#: Phantom subjects for ``table1 --phantoms`` (training draws subjects from seed 10000 on).
PHANTOM_SEED = 20_000

DDF_CONVENTION = ("float32 NIfTI vector image (*input_file_shape, ndim), intent 'vector'; voxels of the "
                  "input grid, component i along array axis i; pull-back: out(x) = in(x + u(x))")


def _line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


# ---------------------------------------------------------------- the network

def load_network(path, device="cpu"):
    """Our checkpoint or the release's state_dict, via :func:`drdm.training.load_model`
    (which refuses pickles, malformed files and non-float or non-finite weights)."""
    from .training import load_model
    return load_model(path, device)


def resolve_checkpoint(path) -> Path:
    """A checkpoint path, or a shipped model's name (``phantom2d``) turned into its path."""
    from .pretrained import PRETRAINED, pretrained_path
    if str(path) in PRETRAINED and not Path(path).exists():
        return pretrained_path(str(path))
    return Path(path)


def network_size(net, ndim: int | None = None) -> tuple[int, ...]:
    """The grid the network was trained on (:func:`drdm.sampling.network_grid`)."""
    from .sampling import network_grid
    return network_grid(net)


def check_grid(size) -> tuple[int, ...]:
    """Refuse network grids that are not divisible by 8 or would exhaust memory."""
    size = tuple(int(s) for s in size)
    if any(s < 8 or s % 8 for s in size):
        raise ValueError(f"network grid {'x'.join(map(str, size))}: every side must be a positive "
                         "multiple of 8 (three 2x down-samplings)")
    if math.prod(size) > MAX_GRID_VOXELS:
        raise ValueError(f"network grid {'x'.join(map(str, size))} is too large ({math.prod(size)} voxels > "
                         f"{MAX_GRID_VOXELS}); pass a smaller --size")
    return size


# ---------------------------------------------------------------- geometry

class InputGrid:
    """The map between an input voxel grid and the network's isotropic padded grid.

    Args:
        shape: input spatial shape (2 or 3 ints). spacing: mm per input axis.
        size: network grid (ndim ints).

    Attributes:
        new: the resampled field of view inside the network grid (before padding).
        pads: ``(low, high)`` padding per axis, network voxels.
        scale: input voxels per network voxel, per axis.
    """

    def __init__(self, shape, spacing, size):
        from .data import _geometry
        self.shape = tuple(int(s) for s in shape)
        self.spacing = tuple(float(s) for s in spacing)
        self.size = tuple(int(s) for s in size)
        self.new, self.pads, self.scale = _geometry(self.shape, self.size, self.spacing, True)

    def to_network(self, image: np.ndarray) -> np.ndarray:
        """The input image on the network grid, in [0, 1] (:func:`drdm.data.preprocess`)."""
        from .data import preprocess
        return preprocess(image, self.size, spacing=self.spacing, isotropic=True)

    def ddf_to_input(self, ddf: torch.Tensor) -> torch.Tensor:
        """``(B, ndim, *size)`` network voxels -> ``(B, ndim, *shape)`` input voxels.

        Samples ``ddf`` at ``y_i = (x_i + 0.5) / s_i - 0.5 + pad_i`` and multiplies
        component ``i`` by ``s_i`` (module docstring).
        """
        from .spatial import _sample, check_ddf
        check_ddf(ddf, spatial=self.size)
        nd = len(self.shape)
        axes = [(torch.arange(n, dtype=torch.float64) + 0.5) / s - 0.5 + lo
                for n, s, (lo, _) in zip(self.shape, self.scale, self.pads)]
        coords = torch.stack(torch.meshgrid(*axes, indexing="ij"))[None]          # (1, nd, *shape)
        coords = coords.to(device=ddf.device, dtype=ddf.dtype).expand(ddf.shape[0], *coords.shape[1:])
        out = _sample(ddf, coords, "linear", "border")
        scale = torch.tensor(self.scale, dtype=ddf.dtype, device=ddf.device).view(1, nd, *[1] * nd)
        return out * scale

    def describe(self) -> dict:
        return {"network_grid": list(self.size), "field_of_view": list(self.new),
                "padding": [list(p) for p in self.pads], "input_voxels_per_network_voxel": list(self.scale)}

    #: network images per output sample, and whether they are the slices of a stack (:class:`SliceGrid`)
    images_per_sample = 1
    slicewise = False

    def network_images(self, image: np.ndarray) -> np.ndarray:
        """``(1, *size)``: the input on the network grid."""
        return self.to_network(image)[None]

    def per_image(self, ddf_in: torch.Tensor) -> torch.Tensor:
        """An input-grid DDF as the batch of fields its metrics are taken over (here itself)."""
        return ddf_in


class SliceGrid:
    """A 3-D stack ``(H, W, D)`` deformed slice by slice with a 2-D network (``--slicewise``).

    Every slice along the last axis is mapped to the network grid on its own
    (:class:`InputGrid` with the in-plane spacing) and gets its own random field, as
    the release augments cardiac stacks. The sample's DDF is ``(1, 3, H, W, D)`` in
    input voxels with a zero through-plane component, so it is an ordinary 3-D DDF
    of the stack; slices are never mixed.
    """

    slicewise = True

    def __init__(self, shape, spacing, size):
        if len(shape) != 3 or len(size) != 2:
            raise ValueError(f"slice-wise needs a 3-D stack and a 2-D network grid, got {shape} and {size}")
        self.shape = tuple(int(s) for s in shape)
        self.plane = InputGrid(self.shape[:2], tuple(spacing)[:2], size)
        self.size = self.plane.size
        self.images_per_sample = self.shape[2]

    def network_images(self, image: np.ndarray) -> np.ndarray:
        """``(D, *size)``: every slice on the network grid (each normalised on its own)."""
        return np.stack([self.plane.to_network(image[..., k]) for k in range(self.shape[2])])

    def ddf_to_input(self, ddf: torch.Tensor) -> torch.Tensor:
        """``(D, 2, *size)`` network voxels, one field per slice -> ``(1, 3, H, W, D)`` input voxels."""
        if ddf.shape[0] != self.shape[2]:
            raise ValueError(f"expected {self.shape[2]} slice fields, got {ddf.shape[0]}")
        plane = self.plane.ddf_to_input(ddf)                                   # (D, 2, H, W)
        out = torch.zeros(1, 3, *self.shape, dtype=ddf.dtype, device=ddf.device)
        out[0, :2] = plane.permute(1, 2, 3, 0)
        return out

    def per_image(self, ddf_in: torch.Tensor) -> torch.Tensor:
        """``(1, 3, H, W, D)`` -> ``(D, 2, H, W)``: the in-plane field of every slice."""
        return ddf_in[0, :2].permute(3, 0, 1, 2).contiguous()

    def describe(self) -> dict:
        return {**self.plane.describe(), "slicewise": True, "slice_axis": 2, "slices": self.shape[2]}


# ---------------------------------------------------------------- inputs

class Inputs:
    """An image (and label) read with :func:`drdm.data.load_nifti`, plus the file's own shape."""

    def __init__(self, image_path, label_path=None, slicewise: bool = False):
        import nibabel as nib
        from .data import load_nifti
        self.image_path = Path(image_path)
        self.label_path = None if label_path is None else Path(label_path)
        self.image, self.affine, self.spacing = load_nifti(self.image_path)
        self.file_shape = tuple(int(s) for s in nib.load(str(self.image_path)).shape)
        self.ndim = self.image.ndim
        # slice-wise stacks may have any number of slices; every deformed axis needs 4 voxels
        if min(self.image.shape[:2] if slicewise else self.image.shape) < 4:
            raise DataError(f"{self.image_path}: image {tuple(self.image.shape)} is too small "
                            f"(at least 4 voxels per {'in-plane ' if slicewise else ''}axis)")
        self.label = None
        if self.label_path is not None:
            self.label, lab_affine, _ = load_nifti(self.label_path, label=True, allow_empty=True)
            if self.label.shape != self.image.shape:
                raise DataError(f"{self.label_path}: label shape {tuple(self.label.shape)} differs from "
                                f"image shape {tuple(self.image.shape)} ({self.image_path})")
            if not np.allclose(lab_affine, self.affine, atol=1e-3, rtol=1e-5):
                raise DataError(f"{self.label_path}: label grid (affine) differs from the image's "
                                f"({self.image_path}); resample the label onto the image grid first")

    def sha256(self) -> dict:
        out = {"image": _sha256(self.image_path)}
        if self.label_path is not None:
            out["label"] = _sha256(self.label_path)
        return out


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------- atomic files

def atomic_write(path: Path, write: Callable[[str], None], *, overwrite: bool = True) -> Path:
    """:func:`drdm.provenance.atomic_write`, with the CLI's message for an existing output."""
    from .provenance import atomic_write as _atomic_write
    try:
        return _atomic_write(path, write, overwrite=overwrite)
    except FileExistsError:
        raise DataError(f"{path}: exists; pass --overwrite to replace it") from None


def _write_text(path: Path, text: str, overwrite: bool = True) -> Path:
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    return atomic_write(path, write, overwrite=overwrite)


def save_ddf(path: Path, ddf: np.ndarray, like: Path, overwrite: bool = True) -> Path:
    """A NIfTI vector image ``(*spatial, ndim)`` with ``like``'s affine and header, atomically."""
    import nibabel as nib
    ref = nib.load(str(like))
    ddf = np.ascontiguousarray(ddf, dtype=np.float32)
    img = nib.Nifti1Image(ddf, ref.affine, header=ref.header.copy())
    img.set_data_dtype(np.float32)
    img.header.set_slope_inter(1.0, 0.0)
    zooms = tuple(float(np.linalg.norm(ref.affine[:3, i])) or 1.0 for i in range(ddf.ndim - 1))
    img.header.set_zooms(zooms + (1.0,))
    img.header.set_intent("vector", (), name="ddf voxels")
    return atomic_write(path, lambda tmp: nib.save(img, tmp), overwrite=overwrite)


# ---------------------------------------------------------------- output folders and manifests

def _check_creatable(path: Path) -> None:
    """``path`` does not exist yet: its nearest existing ancestor must be a writable folder."""
    parent = path.parent
    while not parent.exists() and not parent.is_symlink():
        parent = parent.parent
    if not parent.is_dir():
        raise DataError(f"{path}: cannot create it, {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DataError(f"{path}: cannot create it, {parent} is not writable")


class OutputDir:
    """Validates an output folder before anything is written, and resumes a killed run.

    Args:
        root: the folder. names: every file the run will write (besides ``manifest.json``).
        run: what determines the outputs (compared with the manifest's ``run`` to resume).
        overwrite: replace outputs of another run / files of unknown origin.

    After :meth:`prepare`, ``done`` maps sample keys to manifest entries that are
    complete (files present, checksums equal).
    """

    MANIFEST = "manifest.json"

    def __init__(self, root, names, run: dict, overwrite: bool):
        self.root = Path(root)
        self.names = list(names)
        self.run = json.loads(json.dumps(run))
        self.overwrite = overwrite
        self.done: dict = {}
        self.stale: list[str] = []

    def _check_writable(self):
        r = self.root
        if r.is_symlink():
            raise DataError(f"{r}: the output path is a symlink; refusing to write through it")
        if r.exists():
            if not r.is_dir():
                raise DataError(f"{r}: exists and is not a folder")
            if not os.access(r, os.W_OK | os.X_OK):
                raise DataError(f"{r}: output folder is not writable")
            return
        _check_creatable(r)

    def prepare(self) -> dict:
        self._check_writable()
        for name in self.names + [self.MANIFEST]:
            p = self.root / name
            if p.is_symlink():
                raise DataError(f"{p}: the output path is a symlink; refusing to write through it")
            if p.exists() and not p.is_file():
                raise DataError(f"{p}: exists and is not a file")
        existing = [n for n in self.names if (self.root / n).exists()]
        man_path = self.root / self.MANIFEST
        manifest = None
        if man_path.exists():
            try:
                manifest = json.loads(man_path.read_text())
                if not isinstance(manifest, dict):
                    raise ValueError("not an object")
            except (ValueError, OSError, UnicodeDecodeError):
                if not self.overwrite:
                    raise DataError(f"{man_path}: unreadable manifest; pass --overwrite to start afresh") from None
                manifest = None
        same_run = manifest is not None and manifest.get("run") == self.run
        if same_run:
            for entry in manifest.get("outputs", []):
                files = entry.get("files", {})
                sums = entry.get("sha256", {})
                ok = bool(files) and all((self.root / f).is_file() and _sha256(self.root / f) == sums.get(k)
                                         for k, f in files.items())
                if ok:
                    self.done[entry["key"]] = entry
        elif manifest is not None and not self.overwrite:
            diff = sorted(k for k in set(self.run) | set(manifest.get("run") or {})
                          if self.run.get(k) != (manifest.get("run") or {}).get(k))
            raise DataError(f"{self.root}: holds outputs of a different run (differs in {', '.join(diff[:4])}); "
                            "pass --overwrite or choose another --out")
        elif existing and not self.overwrite:
            raise DataError(f"{self.root / existing[0]}: exists ({len(existing)} output file(s) present); "
                            "pass --overwrite to replace them")
        if manifest is not None and not same_run:
            # --overwrite: outputs listed by the old run that this run will not produce go
            planned = set(self.names)
            for entry in manifest.get("outputs", []):
                for f in entry.get("files", {}).values():
                    if isinstance(f, str) and f not in planned and "/" not in f and f != self.MANIFEST:
                        self.stale.append(f)
        return self.done

    def create(self):
        """Make the folder, drop stale temporary files and old outputs (after :meth:`prepare`)."""
        self.root.mkdir(parents=True, exist_ok=True)
        prefixes = [_temp_affixes(n) for n in self.names + [self.MANIFEST]]
        for p in self.root.iterdir():
            n = p.name
            if n.startswith(".") and any(n.startswith(a) and n.endswith(b) for a, b in prefixes) and p.is_file():
                p.unlink()
        for n in self.stale:
            p = self.root / n
            if p.is_file() and not p.is_symlink():
                p.unlink()

    def write_manifest(self, manifest: dict):
        _write_text(self.root / self.MANIFEST, json.dumps(manifest, indent=1, sort_keys=False) + "\n")


# ---------------------------------------------------------------- shared steps

def _check_levels(levels, T: int, what: str = "level T'"):
    for lv in levels:
        if not 0 <= int(lv) < T:
            raise ValueError(f"{what} {lv} is out of range: this network has T={T} steps, "
                             f"so T' must lie in [0, {T - 1}]")


def _device(name: str) -> torch.device:
    from .training import pick_device
    try:
        device = pick_device(name)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as e:
        raise ValueError(f"device {name!r} is not available ({_line(e)})") from None
    return device


def _setup(args):
    """Network, inputs and the network grid, with every check done before writing."""
    device = _device(args.device)
    args.checkpoint = resolve_checkpoint(args.checkpoint)
    net = load_network(args.checkpoint, device)
    args.settings = recovery_settings(net, None if args.settings == "auto" else args.settings).name
    slicewise = getattr(args, "slicewise", False)
    inputs = Inputs(args.image, args.label, slicewise=slicewise)
    if slicewise and inputs.ndim == 2 and net.config.ndim == 2:
        slicewise = False            # a single slice (e.g. stored as (H, W, 1)): the plain 2-D path
    if slicewise and not (inputs.ndim == 3 and net.config.ndim == 2):
        raise ValueError(f"--slicewise deforms the slices of a 3-D stack with a 2-D network; got a "
                         f"{inputs.ndim}-D image {tuple(inputs.image.shape)} and a {net.config.ndim}-D network")
    if inputs.ndim != net.config.ndim and not slicewise:
        raise ValueError(f"{inputs.image_path}: a {inputs.ndim}-D image {tuple(inputs.image.shape)} for a "
                         f"{net.config.ndim}-D network ({args.checkpoint})"
                         + ("; pass --slicewise to deform each slice along the last axis, or one 2-D slice"
                            if inputs.ndim == 3 else ""))
    nd = net.config.ndim
    size = check_grid((args.size,) * nd if args.size else network_size(net))
    grid = (SliceGrid if slicewise else InputGrid)(inputs.image.shape, inputs.spacing, size)
    return net, inputs, grid, device


def _warp_outputs(inputs: Inputs, ddf_in: torch.Tensor, grid):
    """Warp the original image (linear, border) and label (label-safe) by an input-grid DDF;
    a slice-wise stack is warped slice by slice with its in-plane fields."""
    from . import spatial
    stack = grid.slicewise
    ddf = grid.per_image(ddf_in)

    def batch(a):       # (*shape) -> (B, 1, *plane)
        t = torch.from_numpy(a).to(ddf.device)
        return t.permute(2, 0, 1)[:, None] if stack else t[None, None]

    def back(t):        # (B, 1, *plane) -> (*shape)
        return (t[:, 0].permute(1, 2, 0) if stack else t[0, 0]).cpu().numpy()

    img = batch(inputs.image)
    out = back(spatial.warp(img, ddf.to(img.dtype), mode="linear", padding_mode="border"))
    lab = None
    if inputs.label is not None:
        lab = back(spatial.warp(batch(inputs.label.astype(np.int64)), ddf.to(torch.float32), mode="label"))
    return out, lab


def _metrics(ddf: torch.Tensor) -> dict:
    """Max and mean |u| (% of the side) and |J|<0 (%) of ``(B, ndim, *S)`` fields, over the
    whole batch (B > 1: the slices of a slice-wise sample, all of one size)."""
    from . import spatial
    d = ddf.double()
    m = spatial.magnitude_stats(d)
    return {"max_pct": round(float(m["max_pct"].max()), 6), "mean_pct": round(float(m["mean_pct"].mean()), 6),
            "negJ_pct": round(100 * float(spatial.negative_jacobian_fraction(d).mean()), 6)}


def _write_sample(out: OutputDir, inputs: Inputs, names: dict, images: dict, labels: dict, ddf_in) -> dict:
    """Write one sample's files atomically; returns their sha256 by role."""
    from .data import save_nifti
    sums = {}
    for role, arr in images.items():
        p = out.root / names[role]
        save_nifti(p, arr.reshape(inputs.file_shape), like=inputs.image_path, overwrite=True)
        sums[role] = _sha256(p)
    for role, arr in labels.items():
        p = out.root / names[role]
        save_nifti(p, arr.reshape(inputs.file_shape), like=inputs.label_path, label=True, overwrite=True)
        sums[role] = _sha256(p)
    if ddf_in is not None:
        p = out.root / names["ddf"]
        u = ddf_in[0].cpu().numpy()                                   # (nd, *shape)
        u = np.moveaxis(u, 0, -1).reshape(*inputs.file_shape, inputs.ndim)  # (*file_shape, nd)
        save_ddf(p, u, inputs.image_path)
        sums["ddf"] = _sha256(p)
    return sums


def _progress(total, initial, desc):
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit="sample", disable=not sys.stderr.isatty())


class _Job:
    """What ``augment`` and ``synth`` share: the output folder (checked, then created), the
    manifest (rewritten after every sample, so a killed run resumes) and the progress bar.

    Args:
        command: ``"augment"`` or ``"synth"``. names: sample key -> {role: file name}.
        run: what determines the outputs (resume key). extra: more manifest fields.
    """

    def __init__(self, command: str, args, net, inputs: Inputs, grid: InputGrid, device, names: dict,
                 run: dict, **extra):
        from . import __version__
        self.command, self.names = command, names
        self.out = OutputDir(args.out, [f for d in names.values() for f in d.values()], run, args.overwrite)
        done = self.out.prepare()
        self.out.create()
        self.manifest = {
            "format": f"drdm-{command}-1", "command": command, "drdm_version": __version__,
            "checkpoint": str(args.checkpoint), "checkpoint_sha256": run["checkpoint_sha256"],
            "image": str(inputs.image_path), "label": None if inputs.label_path is None else str(inputs.label_path),
            "seed": args.seed, "recover": args.recover, "settings": args.settings, "device": str(device),
            "network": {"ndim": net.config.ndim, "timesteps": net.config.timesteps, "variant": net.config.variant},
            "geometry": grid.describe(), "ddf_convention": DDF_CONVENTION,
            "run": run, "complete": False, "outputs": [], **extra}
        self.entries = {k: done[k] for k in names if k in done}
        self.kept = len(self.entries)
        self._flush()
        self.bar = _progress(len(names), self.kept, command)

    def todo(self) -> list:
        """Sample keys still to make, in plan order."""
        return [k for k in self.names if k not in self.entries]

    def _flush(self, complete: bool = False):
        self.manifest["outputs"] = [self.entries[k] for k in self.names if k in self.entries]
        self.manifest["complete"] = complete
        self.out.write_manifest(self.manifest)

    def record(self, key: str, entry: dict):
        """One sample's files are written: list it in the manifest."""
        self.entries[key] = {"key": key, **entry, "files": self.names[key]}
        self._flush()
        self.bar.update(1)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        self.bar.close()
        if exc_type is None:
            self._flush(complete=True)
            print(f"{self.command}: {len(self.names)} sample(s) in {self.out.root} "
                  f"({self.kept} kept from an earlier run)")
        return False


def _run_record(command: str, args, inputs: Inputs, grid, **plan) -> dict:
    """What determines a run's outputs (compared with the manifest's to resume); ``slicewise``
    appears only when set, so plain runs keep the record they always had."""
    run = {"command": command, "checkpoint_sha256": _sha256(args.checkpoint), **inputs.sha256(), **plan,
           "n": args.n, "seed": args.seed, "recover": args.recover, "settings": args.settings,
           "network_grid": list(grid.size)}
    if grid.slicewise:
        run["slicewise"] = True
    return run


def _network_image(net, inputs: Inputs, grid, device) -> torch.Tensor:
    """The input on the network grid, ``(m, C, *size)``: ``m = grid.images_per_sample``."""
    image = torch.from_numpy(grid.network_images(inputs.image))[:, None].to(device)
    return image.expand(-1, net.config.in_channels, *[-1] * net.config.ndim)


# ---------------------------------------------------------------- augment (Algorithm 3)

def _augment_names(level: int, index: int, with_label: bool) -> dict:
    tag = f"L{level}_{index:03d}.nii.gz"
    names = {"image": f"img_{tag}", "ddf": f"ddf_{tag}"}
    if with_label:
        names["label"] = f"lbl_{tag}"
    return names


def cmd_augment(args) -> int:
    """Algorithm 3: ``--n`` deformed copies of an image (and label) per level."""
    from .sampling import deform, process_for
    net, inputs, grid, device = _setup(args)
    _check_levels(args.levels, net.config.timesteps)
    levels = list(dict.fromkeys(int(v) for v in args.levels))
    names = {f"L{lv}_{i}": _augment_names(lv, i, inputs.label is not None) for lv in levels for i in range(args.n)}
    run = _run_record("augment", args, inputs, grid, levels=levels)
    image_net = _network_image(net, inputs, grid, device)            # (m, C, *size)
    m = grid.images_per_sample
    fp = process_for(net, image_net)
    per_call = max(1, args.batch // m)

    def random_fields(lv, i):
        # one generator per sample (per slice of a stack): independent of --batch and of resuming
        keys = [(args.seed, lv, i)] if m == 1 else [(args.seed, lv, i, k) for k in range(m)]
        return [fp.sample(torch.tensor([lv]), torch.Generator(device).manual_seed(sample_seed(*kk)),
                          device=device).phi for kk in keys]

    with _Job("augment", args, net, inputs, grid, device, names, run,
              levels=levels, n=args.n, batch=args.batch) as job:
        todo = set(job.todo())
        for lv in levels:
            mine = [i for i in range(args.n) if f"L{lv}_{i}" in todo]
            for c in range(0, len(mine), per_call):
                idx = mine[c:c + per_call]
                res = deform(net, image_net.repeat(len(idx), *[1] * (image_net.dim() - 1)), lv, process=fp,
                             recover=args.recover, settings=args.settings, random_ddf=torch.cat([f for i in idx for f in random_fields(lv, i)]))
                for j, i in enumerate(idx):
                    key = f"L{lv}_{i}"
                    ddf_net = res.ddf[j * m:(j + 1) * m]
                    ddf_in = grid.ddf_to_input(ddf_net)
                    img, lab = _warp_outputs(inputs, ddf_in, grid)
                    sums = _write_sample(job.out, inputs, names[key], {"image": img},
                                         {} if lab is None else {"label": lab}, ddf_in)
                    job.record(key, {"level": lv, "t_prime": lv, "index": i, "sha256": sums,
                                     "metrics": _metrics(grid.per_image(ddf_in)),
                                     "metrics_network_grid": _metrics(ddf_net)})
    return 0


# ---------------------------------------------------------------- synth (Algorithm 4)

def _pairs(text: str) -> list[tuple[int, int]]:
    out = []
    for part in (p for p in text.split(",") if p.strip()):
        try:
            a, s = part.split(":")
            out.append((int(a), int(s)))
        except ValueError:
            raise argparse.ArgumentTypeError(f"pairs must look like 30:10,45:15 (T'_aug:T'_syn), got {text!r}") from None
    if not out:
        raise argparse.ArgumentTypeError("pairs must name at least one T'_aug:T'_syn")
    return out


def _synth_names(ta: int, ts: int, index: int, with_label: bool) -> dict:
    tag = f"A{ta}_S{ts}_{index:03d}.nii.gz"
    names = {"moving": f"moving_{tag}", "fixed": f"fixed_{tag}", "ddf": f"ddf_{tag}"}
    if with_label:
        names.update(moving_label=f"moving_lbl_{tag}", fixed_label=f"fixed_lbl_{tag}")
    return names


def cmd_synth(args) -> int:
    """Algorithm 4: moving/fixed pairs with the registration target ``phi_syn``."""
    from . import spatial
    from .sampling import registration_pairs
    net, inputs, grid, device = _setup(args)
    T = net.config.timesteps
    pairs = list(dict.fromkeys((int(a), int(s)) for a, s in args.pairs))
    _check_levels([a for a, _ in pairs], T, "T'_aug")
    _check_levels([s for _, s in pairs], T, "T'_syn")
    plan = {f"A{a}_S{s}_{i}": (a, s, i) for a, s in pairs for i in range(args.n)}
    names = {k: _synth_names(*p, inputs.label is not None) for k, p in plan.items()}
    run = _run_record("synth", args, inputs, grid, pairs=[list(p) for p in pairs])
    image_net = _network_image(net, inputs, grid, device)
    with _Job("synth", args, net, inputs, grid, device, names, run, pairs=[list(p) for p in pairs], n=args.n,
              note="ddf = phi_syn: warping moving by it gives fixed (pull-back), up to interpolation") as job:
        for key in job.todo():
            a, s, i = plan[key]
            g = torch.Generator(device).manual_seed(sample_seed(args.seed, a, s, i))
            r = next(registration_pairs(net, image_net, [(a, s)], generator=g, recover=args.recover,
                                           settings=args.settings))
            both = spatial.compose(r["ddf"], r["ddf_aug"])          # moving's field, then phi_syn
            aug_in, both_in, syn_in = (grid.ddf_to_input(u) for u in (r["ddf_aug"], both, r["ddf"]))
            mv, mv_lab = _warp_outputs(inputs, aug_in, grid)
            fx, fx_lab = _warp_outputs(inputs, both_in, grid)
            labels = {} if mv_lab is None else {"moving_label": mv_lab, "fixed_label": fx_lab}
            sums = _write_sample(job.out, inputs, names[key], {"moving": mv, "fixed": fx}, labels, syn_in)
            job.record(key, {"t_aug": a, "t_syn": s, "t_prime": [a, s], "index": i, "sha256": sums,
                             "metrics": _metrics(grid.per_image(syn_in)), "metrics_aug": _metrics(grid.per_image(aug_in))})
    return 0


# ---------------------------------------------------------------- table1

def _check_out_file(path, overwrite: bool) -> Path | None:
    if path is None:
        return None
    p = Path(path)
    if p.is_symlink():
        raise DataError(f"{p}: the output path is a symlink; refusing to write through it")
    if p.exists() and not p.is_file():
        raise DataError(f"{p}: exists and is not a file")
    if p.exists() and not overwrite:
        raise DataError(f"{p}: exists; pass --overwrite to replace it")
    if not p.exists():
        _check_creatable(p)
    elif not os.access(p.parent, os.W_OK | os.X_OK):
        raise DataError(f"{p}: output folder {p.parent} is not writable")
    return p


def _table1_images(args, net, size) -> torch.Tensor:
    from .data import load_nifti, preprocess
    nd = net.config.ndim
    if args.phantoms is not None:
        from .phantoms import cardiac_dataset, thorax_dataset
        if nd == 2:
            return cardiac_dataset(args.phantoms, size[0], seed=PHANTOM_SEED)[0]
        if len(set(size)) != 1 or size[0] < 24:
            raise ValueError(f"3-D phantoms need a cubic grid of at least 24 voxels, got {size}")
        return thorax_dataset(args.phantoms, size[0], seed=PHANTOM_SEED)[0]
    out = []
    for path in args.images:
        image, _, spacing = load_nifti(path)
        if nd == 2:
            if image.ndim == 3:                          # the middle slice of a volume
                image, spacing = image[..., image.shape[-1] // 2], spacing[:2]
            # Table 1 protocol: stretched to the network grid, min-max per slice
            image = preprocess(image, size, threshold=(None, None), isotropic=False)
        elif image.ndim == 3:
            image = preprocess(image, size, spacing=spacing, threshold=(None, None), isotropic=True)
        else:
            raise DataError(f"{path}: a 2-D image for a 3-D network")
        out.append(torch.from_numpy(image)[None])
    return torch.stack(out)


def _format_table(res: dict) -> str:
    lines = [f"{'T_prime':>7}  {'field':<9}  {'max |phi| (% side)':>20}  {'mean |phi| (% side)':>20}  {'|J|<0 (%)':>16}"]
    for lv, kinds in res.items():
        for kind, m in kinds.items():
            cells = [f"{m[k]['mean']:.3f} +- {m[k]['std']:.3f}" for k in ("max_pct", "mean_pct", "negJ_pct")]
            lines.append(f"{lv:>7}  {kind:<9}  {cells[0]:>20}  {cells[1]:>20}  {cells[2]:>16}")
    return "\n".join(lines)


def cmd_table1(args) -> int:
    """Table 1: displacement magnitude and folding of random and recovered fields per level."""
    from .sampling import table1
    device = _device(args.device)
    out_json = _check_out_file(args.out, args.overwrite)
    out_csv = _check_out_file(args.csv, args.overwrite)
    if out_json is not None and out_csv is not None and out_json.resolve() == out_csv.resolve():
        raise ValueError("--out and --csv name the same file")
    args.checkpoint = resolve_checkpoint(args.checkpoint)
    net = load_network(args.checkpoint, device)
    args.settings = recovery_settings(net, None if args.settings == "auto" else args.settings).name
    _check_levels(args.levels, net.config.timesteps)
    nd = net.config.ndim
    size = check_grid((args.size,) * nd if args.size else network_size(net))
    images = _table1_images(args, net, size).to(device)
    images = images.expand(-1, net.config.in_channels, *[-1] * nd)
    res = table1(net, images, [int(v) for v in args.levels], seed=args.seed, batch=args.batch,
                 progress=sys.stderr.isatty(), recover=args.recover, settings=args.settings)
    print(_format_table(res))
    from . import __version__
    doc = {"format": "drdm-table1-1", "drdm_version": __version__, "checkpoint": str(args.checkpoint),
           "checkpoint_sha256": _sha256(args.checkpoint), "seed": args.seed, "levels": [int(v) for v in args.levels],
           "size": list(size), "recover": args.recover, "settings": args.settings, "device": str(device),
           "images": [str(p) for p in args.images] if args.images else None, "phantoms": args.phantoms,
           "phantom_seed": PHANTOM_SEED if args.phantoms else None,
           "n_images": int(images.shape[0]),
           "units": "max/mean |phi| in % of the image side (component i / side i), |J|<0 in % of voxels",
           "results": {str(k): v for k, v in res.items()}}
    if out_json is not None:
        out_json.parent.mkdir(parents=True, exist_ok=True)
        _write_text(out_json, json.dumps(doc, indent=1) + "\n", overwrite=True)
    if out_csv is not None:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["level", "field", "max_pct_mean", "max_pct_std", "mean_pct_mean", "mean_pct_std",
                    "negJ_pct_mean", "negJ_pct_std"])
        for lv, kinds in res.items():
            for kind, m in kinds.items():
                w.writerow([lv, kind] + [f"{m[k][s]:.6g}" for k in ("max_pct", "mean_pct", "negJ_pct")
                                         for s in ("mean", "std")])
        out_csv.parent.mkdir(parents=True, exist_ok=True)
        _write_text(out_csv, buf.getvalue(), overwrite=True)
    return 0


# ---------------------------------------------------------------- argparse wiring

def _guard(fn):
    """Package errors (bad data, bad checkpoints, bad values, I/O) -> one line, exit code 2.

    The line is printed here (as ``drdm.cli`` prints its ``UsageError``) rather than
    re-raised as ``UsageError``, so the behaviour is the same under ``python -m drdm.cli``,
    where the running ``cli`` module is ``__main__`` and its ``UsageError`` another class.
    """
    @functools.wraps(fn)
    def run(args):
        try:
            return fn(args)
        except (DataError, CheckpointError, ValueError, OSError) as e:
            print(f"drdm: error: {_line(e)}", file=sys.stderr)
            return 2
        except Exception as e:
            if type(e).__name__ != "UsageError":
                raise
            print(f"drdm: error: {_line(e)}", file=sys.stderr)
            return 2
    return run


def _one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    def error(message):
        parser.exit(2, f"drdm: error: {parser.prog.split()[-1]}: {' '.join(str(message).split())}\n")
    parser.error = error
    return parser


def _nonneg(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {v}")
    return v


SLICEWISE_HELP = ("a 3-D stack with a 2-D network: deform every slice along the last axis with its own "
                  "field (the release's way with cardiac stacks); the DDF has a zero through-plane component. "
                  "A single 2-D slice is processed as usual")


def add_commands(subparsers, levels_type, positive_type) -> None:
    """Register ``augment``, ``synth`` and ``table1`` on ``drdm``'s sub-parsers."""
    def common(p, size_help="network grid side (default: the grid the network was trained on; 256 for the "
                            "release's 2-D weights)"):
        p.add_argument("--checkpoint", required=True, help="our training checkpoint, the release's state_dict (.pth), or a shipped model name (phantom2d)")
        p.add_argument("--seed", type=_nonneg, default=0, help="run seed; each sample gets its own stream (default 0)")
        p.add_argument("--recover", choices=("level", "all"), default="level",
                       help="recovery steps: T'-1..0 (Algorithm 2, default) or all T-1..0 (the release's script)")
        p.add_argument("--settings", choices=("auto",) + SETTINGS, default="auto",
                       help="recovery resampling: release (bicubic image warps, zero-padded composition, as the "
                            "release's diff_recover) or drdm (linear, border); auto: release for the release's "
                            "weights, drdm otherwise (default)")
        p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default auto)")
        p.add_argument("--overwrite", action="store_true", help="replace existing outputs of another run")
        p.add_argument("--size", type=positive_type, default=None, help=size_help)

    a = _one_line_errors(subparsers.add_parser(
        "augment", help="Algorithm 3: deformed copies of a NIfTI image (and label) with their DDFs",
        description="Algorithm 3 on a 2-D image, a 2-D slice stored as (H, W, 1), a 3-D volume, or "
                    "(--slicewise) the slices of a 3-D stack with a 2-D network. "
                    "Writes DIR/img_L{level}_{index}.nii.gz, lbl_..., ddf_... (voxels of the input grid) "
                    "and DIR/manifest.json; re-running with the same arguments resumes."))
    a.add_argument("--image", required=True, help="input image (.nii or .nii.gz)")
    a.add_argument("--label", help="optional label map on the same grid (integer values)")
    a.add_argument("--levels", type=levels_type, required=True, help="comma-separated T' values, e.g. 30,45")
    a.add_argument("--n", type=positive_type, required=True, help="samples per level")
    a.add_argument("--out", required=True, help="output folder")
    a.add_argument("--batch", type=positive_type, default=8,
                   help="images per network call (default 8; with --slicewise each slice counts, and one "
                        "whole stack goes per call at least)")
    a.add_argument("--slicewise", action="store_true", help=SLICEWISE_HELP)
    common(a)
    a.set_defaults(func=_guard(cmd_augment))

    s = _one_line_errors(subparsers.add_parser(
        "synth", help="Algorithm 4: moving/fixed registration pairs with the target DDF phi_syn",
        description="Algorithm 4: for each T'_aug:T'_syn pair, --n (moving, fixed, phi_syn) triples "
                    "(+ labels warped the same way) and DIR/manifest.json; re-running resumes."))
    s.add_argument("--image", required=True)
    s.add_argument("--label")
    s.add_argument("--pairs", type=_pairs, required=True, help="T'_aug:T'_syn pairs, e.g. 30:10,45:15")
    s.add_argument("--n", type=positive_type, default=1, help="pairs per T'_aug:T'_syn (default 1)")
    s.add_argument("--out", required=True)
    s.add_argument("--slicewise", action="store_true", help=SLICEWISE_HELP)
    common(s)
    s.set_defaults(func=_guard(cmd_synth))

    from .sampling import TABLE1_LEVELS
    t = _one_line_errors(subparsers.add_parser(
        "table1", help="Table 1: magnitude and folding of random and recovered fields",
        description="Table 1 on middle slices of NIfTI volumes (min-max per slice, resized to the network "
                    "grid) or on embedded phantoms; prints the table, writes JSON and CSV."))
    src = t.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", nargs="+", help="NIfTI images or volumes (middle slice of each volume)")
    src.add_argument("--phantoms", type=positive_type, help="use N embedded phantoms instead")
    t.add_argument("--levels", type=levels_type, default=list(TABLE1_LEVELS),
                   help="comma-separated T' (default 30,45,55,65,70)")
    t.add_argument("--out", help="results JSON")
    t.add_argument("--csv", help="results CSV")
    t.add_argument("--batch", type=positive_type, default=8)
    common(t, size_help="grid side the slices are resized to (default: the network's; 256 for the release)")
    t.set_defaults(func=_guard(cmd_table1))
