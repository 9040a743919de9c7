"""``drdm experiment reg``: Table 3 on phantoms or a dataset (Table 2 is ``drdm fewshot``)."""
from __future__ import annotations

from .common import DATASETS, UsageError, data_records, int_list, overrides, resolve_checkpoint


def middle_slices(records):
    """The middle labelled slice of each (subject, phase) of short-axis stacks (2-D records)."""
    from ..data import slices
    by = {}
    for r in slices(records):
        by.setdefault((r.subject, r.phase), []).append(r)
    return [v[len(v) // 2] for v in by.values()]


def cmd_experiment(args) -> int:
    import logging
    from ..tasks import ProfileOptionError, write_outputs
    from ..tasks.registration import SYNTHESIS, run_registration
    if args.task == "seg":
        raise UsageError("segmentation (Table 2) is drdm fewshot, on phantoms too: drdm fewshot --data phantom")
    records = data_records(args.data, args.data_dir)
    kw = dict(profile=args.profile, drdm_checkpoint=args.checkpoint, device=args.device, **overrides(args.set))
    if args.seeds:
        kw["seeds"] = args.seeds
    if args.checkpoint is not None:
        kw["drdm_checkpoint"] = resolve_checkpoint(args.checkpoint)      # a one-line error when it is none
    bad = sorted(set(args.methods or ()) - set(SYNTHESIS))
    if bad:
        raise UsageError(f"--methods {','.join(bad)}: not a registration method; choose from {','.join(SYNTHESIS)}")
    if args.methods:
        kw["synthesis"] = args.methods
    records = "phantom2d" if records == "phantom" else records
    if args.data in ("mnms", "acdc", "acdc-h5"):
        records = middle_slices(records)       # 2-D inter-subject pairs of mid-ventricular slices
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        result = run_registration(data=records, **kw)
    except (ProfileOptionError, ValueError, FileNotFoundError) as e:     # a TypeError elsewhere is a bug: traceback
        raise UsageError(str(e)) from None
    data = args.data if args.data in DATASETS else "folder"
    suffix = "" if data == "phantom" else "_" + data.replace("-", "_")     # phantom: the book's own file
    files = write_outputs("registration" + suffix, result, result["markdown"], args.out, args.profile,
                          int((result["config"].get("seeds") or [0])[0]), result["device"], result["wall_time_s"], data)
    print(result["markdown"])
    print(f"wrote {files['json']} and {files['markdown']} ({result['wall_time_s']:.0f} s)")
    return 0


HELP = "Table 3 (reg) on phantoms or a dataset"
DESCRIPTION = ("Run the registration experiment and write <out>/<profile>/registration[_<data>].json "
               "and .md (Table 3 layout, seeds, times, Wilcoxon p-values). Table 2 is drdm fewshot.")


def add_arguments(p) -> None:
    """``drdm experiment``'s options."""
    p.add_argument("task", choices=("seg", "reg"), help="reg: Table 3 (seg, Table 2, is drdm fewshot)")
    p.add_argument("--profile", choices=("ci", "cpu", "gpu"), default="ci")
    p.add_argument("--data", default="phantom",
                   help="phantom | thorax3d | mnms | acdc | acdc-h5 (with --data-dir) | a folder of "
                        "X.nii.gz + X_gt.nii.gz (default phantom)")
    p.add_argument("--data-dir", dest="data_dir", help="root of the mnms / acdc / acdc-h5 dataset")
    p.add_argument("--checkpoint", help="DRDM checkpoint (a .pth or a shipped name such as phantom2d; "
                                        "default: the shipped model of the data's dimension)")
    p.add_argument("--methods", type=lambda v: [x for x in v.split(",") if x],
                   help="synthesis methods: none,mrbs,drdm (default all)")
    p.add_argument("--seeds", type=int_list("seeds"), help="comma-separated training seeds (default: the profile's)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a profile field, value in JSON (e.g. --set pretrain_steps=200)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="results", help="results root (default results)")
