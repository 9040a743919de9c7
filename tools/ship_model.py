"""Ship a trained checkpoint as a named model inside the package, with its held-out check.

Run:  python tools/ship_model.py runs/phantom3d phantom3d [--levels 30,55] [--images 4]

Reads ``RUN/last.pth`` (a ``drdm train`` run folder), writes ``drdm/weights/<name>_<size>.pth``
(the drdm checkpoint format without optimizer and generator states; weights stored in float16,
except the frozen time table, to stay under 5 MiB: a 3-D network's 1.3 M float32 weights take 5.0
MiB) and ``results/<name>_model/`` (``config.json``, ``log.csv``, ``heldout.json``: Table 1 on
held-out phantoms, seeds 70000 and up, random field against the shipped model's result, with the
weights as shipped). Register the file in :data:`drdm.pretrained.PRETRAINED` by hand.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

from drdm.checkpoint import FORMAT, load, load_checkpoint
from drdm.evaluation import table1
from drdm.files import atomic_write
from drdm.provenance import repo_root

KEEP_FLOAT32 = ("time_embed.weight",)     # the sinusoidal table: exact values, not trained


def ship(run: Path, name: str, note: str) -> Path:
    """Write the shipped checkpoint of ``run/last.pth``; returns its path."""
    ck = load_checkpoint(run / "last.pth")
    cfg = ck["train_config"]
    weights = {k: (v if k in KEEP_FLOAT32 else v.half()) for k, v in ck["model"].items()}
    obj = {"format": FORMAT, "step": ck["step"], "train_config": cfg, "network_config": ck["network_config"],
           "model": weights, "extra": {"note": note, "stored": "float16 (time table float32)"}}
    out = repo_root() / "drdm" / "weights" / f"{name}_{cfg['image_size']}.pth"
    atomic_write(out, lambda tmp: torch.save(obj, tmp))
    return out


def heldout(path: Path, levels, n_images: int) -> dict:
    """Table 1 (random field vs recovered) of the shipped file on ``n_images`` unseen phantoms."""
    from drdm.phantoms import cardiac_dataset, thorax_dataset
    net = load(path)
    cfg = net.train_config
    S = cfg["image_size"]
    if cfg["ndim"] == 3:
        images, _, _ = thorax_dataset(n_images, S, seed=70_000)
    else:
        images, _, _ = cardiac_dataset(n_images, S, seed=70_000)
    tab = table1(net, images, levels, seed=0, batch=2, progress=True)
    return {"images": f"{n_images} {'thorax' if cfg['ndim'] == 3 else 'cardiac'} phantoms, seeds 70000+",
            "levels": list(levels), "table1": {str(k): v for k, v in tab.items()}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a drdm train run folder (last.pth, config.json, log.csv)")
    ap.add_argument("name", help="the model's name (e.g. phantom3d)")
    ap.add_argument("--levels", default="30,55", help="T' of the held-out check")
    ap.add_argument("--images", type=int, default=4, help="held-out phantoms")
    ap.add_argument("--note", default="", help="a sentence stored in the checkpoint")
    args = ap.parse_args(argv)
    path = ship(args.run, args.name, args.note)
    res = repo_root() / "results" / f"{args.name}_model"
    res.mkdir(parents=True, exist_ok=True)
    for f in ("config.json", "log.csv"):
        shutil.copyfile(args.run / f, res / f)
    check = heldout(path, [int(x) for x in args.levels.split(",")], args.images)
    check["shipped"] = path.relative_to(repo_root()).as_posix()
    check["size_mib"] = round(path.stat().st_size / 2 ** 20, 2)
    (res / "heldout.json").write_text(json.dumps(check, indent=1) + "\n")
    for L, row in check["table1"].items():
        r, d = row["random"], row["recovered"]
        print(f"T'={L}: mean |phi| {r['mean_pct']['mean']:.2f} -> {d['mean_pct']['mean']:.2f} % of the side; "
              f"|J|<0 {r['negJ_pct']['mean']:.2f} -> {d['negJ_pct']['mean']:.2f} %")
    print(f"wrote {path} ({check['size_mib']} MiB) and {res}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
