"""What the ``drdm`` commands share: argument types, the network and its inputs, the run's
output folder and manifest (:class:`Job`), per-sample seeds and metrics."""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data import DataError
from ..grid import InputGrid, SliceGrid, check_grid
from ..outputs import DDF_CONVENTION, OutputDir, sha256_file
from ..checkpoint import load as load_network, resolve as resolve_checkpoint
from ..runner import pick_device
from ..evaluation import field_stats
from ..sampling import SETTINGS, check_levels, network_grid, path_for, recovery_settings  # noqa: F401 (check_levels: for the commands)

#: Phantom subjects for ``table1 --phantoms`` (training draws subjects from seed 10000 on).
PHANTOM_SEED = 20_000

SLICEWISE_HELP = ("a 3-D stack with a 2-D network: deform every slice along the last axis with its own "
                  "field (the release's way with cardiac stacks); the DDF has a zero through-plane component. "
                  "A single 2-D slice is processed as usual")


class UsageError(ValueError):
    """A user-facing error: printed as one line, exit code 2 (as every ``ValueError`` and
    ``OSError`` a command raises; :func:`drdm.cli.main`)."""


def line(exc: BaseException) -> str:
    """An exception as one line of text."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


# ---------------------------------------------------------------- argument types

def int_list(what: str):
    """An argparse type: comma-separated integers, at least one."""
    def parse(text: str) -> list[int]:
        try:
            out = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be comma-separated integers, got {text!r}") from None
        if not out:
            raise argparse.ArgumentTypeError(f"{what} must name at least one value")
        return out
    return parse


levels_arg = int_list("levels")


def positive(text: str) -> int:
    """An argparse type: a positive integer."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {v}")
    return v


#: most samples one ``augment`` / ``synth`` run makes (``--n`` x levels or pairs): the run's plan
#: and manifest hold every sample, so a larger request is refused at once; split it into runs
MAX_SAMPLES = 10_000


def sample_count(text: str) -> int:
    """An argparse type: a positive integer up to :data:`MAX_SAMPLES`."""
    v = positive(text)
    if v > MAX_SAMPLES:
        raise argparse.ArgumentTypeError(f"at most {MAX_SAMPLES:,} samples per run, got {v:,}; split the "
                                         "request into several runs (other --seed or --out)")
    return v


def check_total(n: int, groups: int, what: str) -> None:
    """Refuse a run of more than :data:`MAX_SAMPLES` samples (``n`` per level or pair) at once."""
    if n * groups > MAX_SAMPLES:
        raise UsageError(f"--n {n} x {groups} {what} = {n * groups:,} samples; at most {MAX_SAMPLES:,} per run")


def nonneg(text: str) -> int:
    """An argparse type: a non-negative integer."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {v}")
    return v


def one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Usage errors of ``parser`` as one line, exit code 2."""
    def error(message):
        parser.exit(2, f"drdm: error: {parser.prog.split()[-1]}: {' '.join(str(message).split())}\n")
    parser.error = error
    return parser


def command_parser(subparsers, name: str, help: str, description: str) -> argparse.ArgumentParser:
    """A sub-command's parser whose usage errors are one line, exit code 2.

    Options must be spelled in full (no argparse abbreviations), so a recorded command is the one that ran.
    """
    return one_line_errors(subparsers.add_parser(name, help=help, description=description, allow_abbrev=False))


def add_sampling_args(p, size_help="network grid side (default: the grid the network was trained on; 256 for "
                                   "the release's 2-D weights)"):
    """The options ``augment``, ``synth`` and ``table1`` share."""
    p.add_argument("--checkpoint", required=True, help="our training checkpoint, the release's state_dict (.pth), or a shipped model name (phantom2d)")
    p.add_argument("--seed", type=nonneg, default=0, help="run seed; each sample gets its own stream (default 0)")
    p.add_argument("--recover", choices=("level", "all"), default="level",
                   help="recovery steps: T'-1..0 (Algorithm 2, default) or all T-1..0 (the release's script)")
    p.add_argument("--settings", choices=("auto",) + SETTINGS, default="auto",
                   help="recovery resampling: release (bicubic image warps, zero-padded composition, as the "
                        "release's diff_recover) or drdm (linear, border); auto: release for the release's "
                        "weights, drdm otherwise (default)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default auto)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs of another run")
    p.add_argument("--size", type=positive, default=None, help=size_help)


# ---------------------------------------------------------------- datasets (experiment, fewshot)

#: ``--data`` keywords of ``drdm experiment`` and ``drdm fewshot`` (anything else: a folder of NIfTI pairs)
DATASETS = ("phantom", "thorax3d", "mnms", "acdc", "acdc-h5")


def data_records(data: str, data_dir: str | None):
    """``--data`` / ``--data-dir`` -> what the task runners take: ``phantom`` / ``thorax3d`` (the
    embedded phantoms, returned as the runner's keyword), else :func:`drdm.data.load_dataset`."""
    from ..data import DATASET_LOADERS, load_dataset
    if data in ("phantom", "thorax3d"):
        if data_dir:
            raise UsageError(f"--data-dir is not used with --data {data}")
        return data
    if data in DATASET_LOADERS and not data_dir:
        raise UsageError(f"--data {data} needs --data-dir (the dataset's root folder)")
    if data not in DATASET_LOADERS and data_dir:
        raise UsageError(f"--data-dir is only for --data {'|'.join(DATASET_LOADERS)}; give the folder as --data")
    return load_dataset(data, data_dir)


def overrides(items) -> dict:
    """``--set KEY=VALUE`` items -> ``{key: value}`` (values read as JSON, else kept as strings;
    JSON lists become tuples, lists of lists tuples of tuples, as the protocol dataclasses hold them)."""
    import json
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--set takes KEY=VALUE, got {item!r}")
        try:
            v = json.loads(value)
        except json.JSONDecodeError:
            v = value
        out[key] = tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v
    return out


# ---------------------------------------------------------------- the network and the inputs



class Inputs:
    """An image (and label) read with :func:`drdm.data.load_nifti`, plus the file's own shape."""

    def __init__(self, image_path, label_path=None, slicewise: bool = False):
        import nibabel as nib
        from ..data import load_nifti
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
        out = {"image": sha256_file(self.image_path)}
        if self.label_path is not None:
            out["label"] = sha256_file(self.label_path)
        return out



@dataclass(frozen=True)
class Run:
    """The values of an ``augment`` / ``synth`` run that its outputs and manifest depend on, taken
    from the parsed arguments once (:func:`setup`); the rest of the CLI never sees the Namespace."""
    checkpoint: Path
    seed: int
    recover: str
    settings: str
    n: int
    out: str
    overwrite: bool
    batch: int = 8


def setup(args):
    """``(net, inputs, grid, device, run)``: the network, the inputs, the network grid and the run's
    values (:class:`Run`), with every check done before anything is written."""
    device = pick_device(args.device)
    checkpoint = resolve_checkpoint(args.checkpoint)
    net = load_network(checkpoint, device)
    settings = recovery_settings(net, None if args.settings == "auto" else args.settings).name
    run = Run(checkpoint, args.seed, args.recover, settings, args.n, args.out, args.overwrite,
              getattr(args, "batch", 8))
    slicewise = getattr(args, "slicewise", False)
    inputs = Inputs(args.image, args.label, slicewise=slicewise)
    if slicewise and inputs.ndim == 2 and net.config.ndim == 2:
        slicewise = False            # a single slice (e.g. stored as (H, W, 1)): the plain 2-D path
    if slicewise and not (inputs.ndim == 3 and net.config.ndim == 2):
        raise ValueError(f"--slicewise deforms the slices of a 3-D stack with a 2-D network; got a "
                         f"{inputs.ndim}-D image {tuple(inputs.image.shape)} and a {net.config.ndim}-D network")
    if inputs.ndim != net.config.ndim and not slicewise:
        raise ValueError(f"{inputs.image_path}: a {inputs.ndim}-D image {tuple(inputs.image.shape)} for a "
                         f"{net.config.ndim}-D network ({checkpoint})"
                         + ("; pass --slicewise to deform each slice along the last axis, or one 2-D slice"
                            if inputs.ndim == 3 else ""))
    nd = net.config.ndim
    size = check_grid((args.size,) * nd if args.size else network_grid(net))
    grid = (SliceGrid if slicewise else InputGrid)(inputs.image.shape, inputs.spacing, size)
    return net, inputs, grid, device, run


def warp_outputs(net, settings: str, inputs: Inputs, ddf_in: torch.Tensor, grid):
    """Warp the original image and label by an input-grid DDF (:func:`drdm.sampling.apply_field`:
    the recovery setting's interpolation, border padding; label-safe labels); a slice-wise stack
    is warped slice by slice with its in-plane fields."""
    from ..sampling import apply_field
    stack = grid.slicewise
    ddf = grid.per_image(ddf_in)

    def batch(a):       # (*shape) -> (B, 1, *plane)
        t = torch.from_numpy(a).to(ddf.device)
        return t.permute(2, 0, 1)[:, None] if stack else t[None, None]

    def back(t):        # (B, 1, *plane) -> (*shape)
        return (t[:, 0].permute(1, 2, 0) if stack else t[0, 0]).cpu().numpy()

    label = None if inputs.label is None else batch(inputs.label.astype(np.int64))
    out, lab = apply_field(net, batch(inputs.image), ddf, label, settings=settings)
    return back(out), None if lab is None else back(lab)


def field_metrics(ddf: torch.Tensor) -> dict:
    """Max and mean |u| (% of the side) and |J|<0 (%) of ``(B, ndim, *S)`` fields, over the
    whole batch (B > 1: the slices of a slice-wise sample, all of one size): Table 1's
    per-field metrics (:func:`drdm.evaluation.field_stats`), max of the maxima, mean of the rest."""
    st = field_stats(ddf)
    return {"max_pct": round(float(st["max_pct"].max()), 6), "mean_pct": round(float(st["mean_pct"].mean()), 6),
            "negJ_pct": round(float(st["negJ_pct"].mean()), 6)}


def write_sample(out: OutputDir, inputs: Inputs, names: dict, images: dict, labels: dict, ddf_in) -> dict:
    """Write one sample's files atomically; returns their sha256 by role."""
    from ..data import save_nifti
    sums = {}
    for role, arr in images.items():
        p = out.root / names[role]
        save_nifti(p, arr.reshape(inputs.file_shape), like=inputs.image_path, overwrite=True)
        sums[role] = sha256_file(p)
    for role, arr in labels.items():
        p = out.root / names[role]
        save_nifti(p, arr.reshape(inputs.file_shape), like=inputs.label_path, label=True, overwrite=True)
        sums[role] = sha256_file(p)
    if ddf_in is not None:
        p = out.root / names["ddf"]
        u = ddf_in[0].cpu().numpy()                                   # (nd, *shape)
        u = np.moveaxis(u, 0, -1).reshape(*inputs.file_shape, inputs.ndim)  # (*file_shape, nd)
        save_nifti(p, u, like=inputs.image_path, vector=True, overwrite=True)
        sums["ddf"] = sha256_file(p)
    return sums


def progress(total, initial, desc):
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit="sample", disable=not sys.stderr.isatty())


class Job:
    """What ``augment`` and ``synth`` share: the output folder (checked, then created), the
    manifest (rewritten after every sample, so a killed run resumes) and the progress bar.

    Args:
        command: ``"augment"`` or ``"synth"``. names: sample key -> {role: file name}.
        run: what determines the outputs (resume key). extra: more manifest fields.
    """

    def __init__(self, command: str, opts: Run, net, inputs: Inputs, grid: InputGrid, device, names: dict,
                 run: dict, **extra):
        from .. import __version__
        self.command, self.names = command, names
        self.out = OutputDir(opts.out, [f for d in names.values() for f in d.values()], run, opts.overwrite)
        done = self.out.prepare()
        self.out.create()
        self.manifest = {
            "format": f"drdm-{command}-1", "command": command, "drdm_version": __version__,
            "checkpoint": str(opts.checkpoint), "checkpoint_sha256": run["checkpoint_sha256"],
            "image": str(inputs.image_path), "label": None if inputs.label_path is None else str(inputs.label_path),
            "seed": opts.seed, "recover": opts.recover, "settings": opts.settings, "device": str(device),
            "path": path_for(net, device, grid.size),
            "network": {"ndim": net.config.ndim, "timesteps": net.config.timesteps, "variant": net.config.variant},
            "geometry": grid.describe(), "ddf_convention": DDF_CONVENTION,
            "run": run, "complete": False, "outputs": [], **extra}
        self.entries = {k: done[k] for k in names if k in done}
        self.kept = len(self.entries)
        self._flush()
        self.bar = progress(len(names), self.kept, command)

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


def run_record(command: str, opts: Run, inputs: Inputs, grid, **plan) -> dict:
    """What determines a run's outputs (compared with the manifest's to resume); ``slicewise``
    appears only when set, so plain runs keep the record they always had."""
    run = {"command": command, "checkpoint_sha256": sha256_file(opts.checkpoint), **inputs.sha256(), **plan,
           "n": opts.n, "seed": opts.seed, "recover": opts.recover, "settings": opts.settings,
           "network_grid": list(grid.size)}
    if grid.slicewise:
        run["slicewise"] = True
    return run

