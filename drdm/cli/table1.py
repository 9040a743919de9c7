"""``drdm table1``: Table 1 (magnitude and folding of random and recovered fields) on
NIfTI middle slices or embedded phantoms; prints the table, writes JSON and CSV."""
from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path

import torch

from ..data import DataError
from ..grid import check_grid
from ..outputs import check_creatable, sha256_file, write_text
from ..evaluation import TABLE1_LEVELS
from ..sampling import default_path, network_grid, recovery_settings
from .common import (PHANTOM_SEED, add_sampling_args, check_levels, levels_arg, load_network, pick_device,
                     positive, resolve_checkpoint)


def check_out_file(path, overwrite: bool) -> Path | None:
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
        check_creatable(p)
    elif not os.access(p.parent, os.W_OK | os.X_OK):
        raise DataError(f"{p}: output folder {p.parent} is not writable")
    return p


def table1_images(args, net, size) -> torch.Tensor:
    from ..data import load_nifti
    from ..grid import InputGrid
    nd = net.config.ndim
    if args.phantoms is not None:
        from ..phantoms import cardiac_dataset, thorax_dataset
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
            image = InputGrid(image.shape, spacing, size, isotropic=False, threshold=(None, None)).to_network(image)
        elif image.ndim == 3:
            image = InputGrid(image.shape, spacing, size, threshold=(None, None)).to_network(image)
        else:
            raise DataError(f"{path}: a 2-D image for a 3-D network")
        out.append(torch.from_numpy(image)[None])
    return torch.stack(out)


def table1_text(res: dict) -> str:
    lines = [f"{'T_prime':>7}  {'field':<9}  {'max |phi| (% side)':>20}  {'mean |phi| (% side)':>20}  {'|J|<0 (%)':>16}"]
    for lv, kinds in res.items():
        for kind, m in kinds.items():
            cells = [f"{m[k]['mean']:.3f} +- {m[k]['std']:.3f}" for k in ("max_pct", "mean_pct", "negJ_pct")]
            lines.append(f"{lv:>7}  {kind:<9}  {cells[0]:>20}  {cells[1]:>20}  {cells[2]:>16}")
    return "\n".join(lines)


def cmd_table1(args) -> int:
    """Table 1: displacement magnitude and folding of random and recovered fields per level."""
    from ..evaluation import table1
    device = pick_device(args.device)
    out_json = check_out_file(args.out, args.overwrite)
    out_csv = check_out_file(args.csv, args.overwrite)
    if out_json is not None and out_csv is not None and out_json.resolve() == out_csv.resolve():
        raise ValueError("--out and --csv name the same file")
    args.checkpoint = resolve_checkpoint(args.checkpoint)
    net = load_network(args.checkpoint, device)
    args.settings = recovery_settings(net, None if args.settings == "auto" else args.settings).name
    check_levels(args.levels, net.config.timesteps)
    nd = net.config.ndim
    size = check_grid((args.size,) * nd if args.size else network_grid(net))
    images = table1_images(args, net, size).to(device)
    images = images.expand(-1, net.config.in_channels, *[-1] * nd)
    res = table1(net, images, [int(v) for v in args.levels], seed=args.seed, batch=args.batch,
                 progress=sys.stderr.isatty(), recover=args.recover, settings=args.settings)
    print(table1_text(res))
    from .. import __version__
    doc = {"format": "drdm-table1-1", "drdm_version": __version__, "checkpoint": str(args.checkpoint),
           "checkpoint_sha256": sha256_file(args.checkpoint), "seed": args.seed, "levels": [int(v) for v in args.levels],
           "size": list(size), "recover": args.recover, "settings": args.settings, "device": str(device),
           "path": default_path(images),
           "images": [str(p) for p in args.images] if args.images else None, "phantoms": args.phantoms,
           "phantom_seed": PHANTOM_SEED if args.phantoms else None,
           "n_images": int(images.shape[0]),
           "units": "max/mean |phi| in % of the image side (component i / side i), |J|<0 in % of voxels",
           "results": {str(k): v for k, v in res.items()}}
    if out_json is not None:
        out_json.parent.mkdir(parents=True, exist_ok=True)
        write_text(out_json, json.dumps(doc, indent=1) + "\n", overwrite=True)
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
        write_text(out_csv, buf.getvalue(), overwrite=True)
    return 0


HELP = "Table 1: magnitude and folding of random and recovered fields"
DESCRIPTION = ("Table 1 on middle slices of NIfTI volumes (min-max per slice, resized to the network "
               "grid) or on embedded phantoms; prints the table, writes JSON and CSV.")


def add_arguments(p) -> None:
    """``drdm table1``'s options."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", nargs="+", help="NIfTI images or volumes (middle slice of each volume)")
    src.add_argument("--phantoms", type=positive, help="use N embedded phantoms instead")
    p.add_argument("--levels", type=levels_arg, default=list(TABLE1_LEVELS),
                   help="comma-separated T' (default 30,45,55,65,70)")
    p.add_argument("--out", help="results JSON")
    p.add_argument("--csv", help="results CSV")
    p.add_argument("--batch", type=positive, default=8)
    add_sampling_args(p, size_help="grid side the slices are resized to (default: the network's; 256 for the release)")
