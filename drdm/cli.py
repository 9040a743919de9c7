"""``drdm`` command line: ``drdm train | augment | synth | table1 | experiment``.

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


def _int_list(what: str):
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


_levels = _int_list("levels")


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


#: ``--data`` keywords of ``drdm experiment`` (anything else must be a folder of NIfTI pairs)
DATASETS = ("phantom", "thorax3d", "mnms", "acdc", "acdc-h5")


def experiment_records(data: str, data_dir: str | None):
    """``--data`` of ``drdm experiment`` -> what the task runners take.

    ``phantom`` / ``thorax3d``: the embedded phantoms (returned as the runner's keyword);
    ``mnms`` / ``acdc`` / ``acdc-h5``: the loader of that layout on ``data_dir``;
    any other value: a folder of ``X.nii.gz`` images with ``X_gt.nii.gz`` labels.
    """
    from pathlib import Path
    from . import data as D
    if data in ("phantom", "thorax3d"):
        if data_dir:
            raise UsageError(f"--data-dir is not used with --data {data}")
        return data
    loaders = {"mnms": D.load_mnms, "acdc": D.load_acdc, "acdc-h5": D.load_acdc_h5}
    if data in loaders:
        if not data_dir:
            raise UsageError(f"--data {data} needs --data-dir (the dataset's root folder)")
        root, load = Path(data_dir), loaders[data]
    else:
        root, load = Path(data), D.load_nifti_folder
        if data_dir:
            raise UsageError("--data-dir is only for --data mnms|acdc|acdc-h5; give the folder as --data")
    if not root.is_dir():
        raise UsageError(f"{root}: no such data folder")
    try:
        records = load(root)
    except (D.DataError, OSError, ValueError) as e:
        raise UsageError(str(e)) from None
    if not records:
        raise UsageError(f"{root}: no labelled images found")
    return records


def middle_slices(records):
    """The middle labelled slice of each (subject, phase) of short-axis stacks (2-D records)."""
    from .data import slices
    by = {}
    for r in slices(records):
        by.setdefault((r.subject, r.phase), []).append(r)
    return [v[len(v) // 2] for v in by.values()]


def _cmd_experiment(args) -> int:
    import logging
    from pathlib import Path
    from .tasks import _common
    records = experiment_records(args.data, args.data_dir)
    overrides = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--set takes KEY=VALUE, got {item!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    for k, v in list(overrides.items()):
        if isinstance(v, list):
            overrides[k] = tuple(tuple(x) if isinstance(x, list) else x for x in v)
    kw = dict(profile=args.profile, drdm_checkpoint=args.checkpoint, device=args.device, **overrides)
    if args.seeds:
        kw["seeds"] = args.seeds
    if args.checkpoint is not None:
        from .sampling_cli import resolve_checkpoint
        kw["drdm_checkpoint"] = resolve_checkpoint(args.checkpoint)
        if not Path(kw["drdm_checkpoint"]).is_file():
            raise UsageError(f"{args.checkpoint}: no such checkpoint")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.task == "seg":
            from .tasks.segmentation import METHODS, run_segmentation as run
            if records == "thorax3d":
                raise UsageError("segmentation runs on 2-D cardiac data; --data thorax3d is for reg")
            if args.methods:
                kw["methods"] = args.methods
            name, choices = "segmentation", METHODS
        else:
            from .tasks.registration import SYNTHESIS, run_registration as run
            records = "phantom2d" if records == "phantom" else records
            if args.data in ("mnms", "acdc", "acdc-h5"):
                records = middle_slices(records)       # 2-D inter-subject pairs of mid-ventricular slices
            if args.methods:
                kw["synthesis"] = args.methods
            name, choices = "registration", SYNTHESIS
        bad = sorted(set(args.methods or ()) - set(choices))
        if bad:
            raise UsageError(f"--methods {','.join(bad)}: not a {name} method; choose from {','.join(choices)}")
        result = run(data=records, **kw)
    except (TypeError, ValueError, FileNotFoundError) as e:
        raise UsageError(str(e)) from None
    data = args.data if args.data in DATASETS else "folder"
    suffix = "" if data == "phantom" else "_" + data.replace("-", "_")     # phantom: the book's own file
    files = _common.write_outputs(name + suffix, result, result["markdown"], args.out, args.profile,
                                  int((result["config"].get("seeds") or [0])[0]), result["device"],
                                  result["wall_time_s"], data)
    print(result["markdown"])
    print(f"wrote {files['json']} and {files['markdown']} ({result['wall_time_s']:.0f} s)")
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

    e = sub.add_parser("experiment", help="Table 2 (seg) or Table 3 (reg) on phantoms or a dataset",
                       description="Run a downstream experiment and write <out>/<profile>/<task>[_<data>].json "
                                   "and .md (Table 2 / Table 3 layout, seeds, times, Wilcoxon p-values).")
    e.add_argument("task", choices=("seg", "reg"))
    e.add_argument("--profile", choices=("ci", "cpu", "gpu"), default="ci")
    e.add_argument("--data", default="phantom",
                   help="phantom | thorax3d (reg) | mnms | acdc | acdc-h5 (with --data-dir) | a folder of "
                        "X.nii.gz + X_gt.nii.gz (default phantom)")
    e.add_argument("--data-dir", dest="data_dir", help="root of the mnms / acdc / acdc-h5 dataset")
    e.add_argument("--checkpoint", help="DRDM checkpoint (a .pth or a shipped name such as phantom2d; "
                                        "default: the shipped model of the data's dimension)")
    e.add_argument("--methods", type=lambda v: [x for x in v.split(",") if x],
                   help="seg: none,bigaug,elastic,drdm; reg: none,mrbs,drdm (default all)")
    e.add_argument("--seeds", type=_int_list("seeds"), help="comma-separated training seeds (default: the profile's)")
    e.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a profile field, value in JSON (e.g. --set steps=200 --set n_aug=4)")
    e.add_argument("--device", default="auto")
    e.add_argument("--out", default="results", help="results root (default results)")
    e.set_defaults(func=_cmd_experiment)

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
