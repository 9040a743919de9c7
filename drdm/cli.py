"""``drdm`` command line: ``drdm train | augment | synth | table1``.

Bad input ends with exit code 2 and one line on stderr (``drdm: error: ...``);
nothing partial is left behind.
"""
from __future__ import annotations

import argparse
import json
import sys

__all__ = ["main"]


class UsageError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def _levels(text: str) -> list[int]:
    try:
        out = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"levels must be comma-separated integers, got {text!r}") from None
    if not out:
        raise argparse.ArgumentTypeError("levels must name at least one T'")
    return out


def _positive(text: str) -> int:
    v = int(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {v}")
    return v


def _cmd_train(args) -> int:
    from .training import TrainConfig, train
    opts = {}
    if args.config:
        with open(args.config) as f:
            opts.update(json.load(f))
    for k in ("ndim", "image_size", "reading", "unit_factor", "batch", "lr", "steps", "seed", "device",
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


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="drdm", description="Deformation-Recovery Diffusion Model")
    sub = ap.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="Algorithm 1: train the recovery network (resumes from OUT/last.pth)")
    t.add_argument("--out", required=True, help="run folder (checkpoints, log.csv, config.json)")
    t.add_argument("--config", help="JSON file of TrainConfig options (flags override it)")
    t.add_argument("--ndim", type=int, choices=(2, 3))
    t.add_argument("--image-size", dest="image_size", type=int)
    t.add_argument("--reading", choices=("official", "paper"))
    t.add_argument("--unit-factor", dest="unit_factor")
    t.add_argument("--batch", type=_positive)
    t.add_argument("--lr", type=float)
    t.add_argument("--steps", type=_positive)
    t.add_argument("--seed", type=int)
    t.add_argument("--device")
    t.add_argument("--loss-coding", dest="loss_coding", choices=("corrected", "official"))
    t.add_argument("--checkpoint-every", dest="checkpoint_every", type=_positive)
    t.add_argument("--n-subjects", dest="n_subjects", type=_positive)
    t.set_defaults(func=_cmd_train)

    try:
        from . import sampling_cli
    except ImportError:
        sampling_cli = None
    if sampling_cli is not None:
        sampling_cli.add_commands(sub, _levels, _positive)
    return ap


def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as e:
        print(f"drdm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("drdm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    from drdm.cli import main as _main   # one UsageError class under python -m drdm.cli
    sys.exit(_main())
