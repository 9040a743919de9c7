"""``drdm train``: Algorithm 1 (resumes from OUT/last.pth)."""
from __future__ import annotations

import json

from .common import UsageError, positive


def cmd_train(args) -> int:
    from ..training import TrainConfig, train
    opts = {}
    if args.config:
        with open(args.config) as f:
            opts.update(json.load(f))
    for k in ("ndim", "image_size", "reading", "unit_factor", "integration", "batch", "lr", "steps", "seed", "device",
              "loss_coding", "checkpoint_every", "n_subjects"):
        v = getattr(args, k)
        if v is not None:
            opts[k] = v
    if isinstance(opts.get("unit_factor"), str):
        try:
            opts["unit_factor"] = float(opts["unit_factor"])
        except ValueError:
            pass
    try:
        cfg = TrainConfig.from_dict(opts)
    except (TypeError, ValueError) as e:
        raise UsageError(str(e)) from None
    tr = train(cfg, args.out)
    print(f"trained {tr.step} steps; checkpoint {args.out}/last.pth")
    return 0


HELP = "Algorithm 1: train the recovery network (resumes from OUT/last.pth)"
DESCRIPTION = HELP


def add_arguments(p) -> None:
    """``drdm train``'s options."""
    p.add_argument("--out", required=True, help="run folder (checkpoints, log.csv, config.json)")
    p.add_argument("--config", help="JSON file of TrainConfig options (flags override it)")
    p.add_argument("--ndim", type=int, choices=(2, 3))
    p.add_argument("--image-size", dest="image_size", type=int)
    p.add_argument("--reading", choices=("official", "paper"))
    p.add_argument("--unit-factor", dest="unit_factor")
    p.add_argument("--integration", choices=("euler", "squaring"),
                   help="official reading: the release's Euler loop (default) or squaring (much faster in 3-D)")
    p.add_argument("--batch", type=positive)
    p.add_argument("--lr", type=float)
    p.add_argument("--steps", type=positive)
    p.add_argument("--seed", type=int)
    p.add_argument("--device")
    p.add_argument("--loss-coding", dest="loss_coding", choices=("corrected", "official"))
    p.add_argument("--checkpoint-every", dest="checkpoint_every", type=positive)
    p.add_argument("--n-subjects", dest="n_subjects", type=positive)
