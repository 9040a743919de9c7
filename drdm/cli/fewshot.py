"""``drdm fewshot``: the few-shot segmentation experiment with converged U-Nets, resumable."""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from .common import DATASETS, UsageError, data_records, overrides, resolve_checkpoint

HELP = "few-shot segmentation (Table 2 at 5 and 20 labelled subjects), resumable"
DESCRIPTION = ("Split the subjects by group (test, validation, three labelled draws of one subject per group and "
               "a larger nested set), choose one step budget per set size in a pilot on the validation "
               "subjects, train U-Nets to it with no augmentation, BigAug, elastic and DRDM copies (cached on "
               "disk), score the test subjects, and write <out>/<protocol>/segmentation_<data>.json and .md. "
               "Finished cells and their weights are kept in --work: the same command resumes, and "
               "--test-data-dir scores them on a second test set without training.")


def add_arguments(p) -> None:
    """``drdm fewshot``'s options."""
    p.add_argument("--data", default="acdc-h5", help="acdc-h5 (either SSL4MIS form) | acdc | mnms (with --data-dir) | "
                                                     "a folder of X.nii.gz + X_gt.nii.gz | phantom (the embedded "
                                                     "cardiac phantoms, protocol phantom-<protocol>) (default acdc-h5)")
    p.add_argument("--data-dir", dest="data_dir", help="root of the dataset")
    p.add_argument("--test-data-dir", dest="test_data_dir",
                   help="a second labelled test set of the same dataset as --data (acdc-h5, acdc, mnms): every "
                        "finished cell's weights are scored on it, in a table of its own (with --report-only, "
                        "nothing is trained first)")
    p.add_argument("--protocol", choices=("ci", "cpu", "gpu"), default="cpu")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a protocol field, value in JSON (e.g. --set n_aug=4 --set 'budget={\"small\": 300, "
                        "\"large\": 300}'); the cells' run key follows, so they are not mixed with the protocol's")
    p.add_argument("--methods", type=lambda v: [x for x in v.split(",") if x],
                   help="train only these (comma-separated subset of none,bigaug,elastic,drdm,drdm_low; default "
                        "all); the record still reports every method's finished cells: it is the run's record")
    p.add_argument("--checkpoint", help="DRDM checkpoint: a .pth or a shipped name (default: the release's 2-D "
                                        "weights from ../shared; phantom2d for --data phantom)")
    p.add_argument("--work", default="runs/fewshot", help="cells and cached copies (default runs/fewshot)")
    p.add_argument("--restore", metavar="RECORD",
                   help="a saved record of this run (e.g. results/cpu/segmentation_acdc.json): the finished cells "
                        "and pilots it carries are written back into --work where missing (without their weights), "
                        "so a lost work folder does not mean training them again")
    p.add_argument("--report-only", dest="report_only", action="store_true",
                   help="train nothing: write the record from the cells finished so far")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="results", help="results root (default results)")


def cmd_fewshot(args) -> int:
    import logging
    from ..tasks import ProfileOptionError, write_outputs
    from ..tasks._common import apply_overrides
    from ..data import DATASET_LOADERS
    from ..tasks.fewshot import METHODS, PROTOCOLS, phantom_cohort, run_fewshot
    if args.data == "thorax3d":
        raise UsageError("segmentation runs on 2-D cardiac data; --data thorax3d is for drdm experiment reg")
    bad = sorted(set(args.methods or ()) - set(METHODS))
    if bad:
        raise UsageError(f"--methods {','.join(bad)}: not a segmentation method; choose from {','.join(METHODS)}")
    if args.test_data_dir is not None and args.data not in DATASET_LOADERS:
        raise UsageError(f"--test-data-dir is for --data {'|'.join(DATASET_LOADERS)} (a second folder of that "
                         f"dataset), not --data {args.data}")
    phantom = args.data == "phantom"
    try:
        prot = apply_overrides(PROTOCOLS[f"phantom-{args.protocol}" if phantom else args.protocol], overrides(args.set))
    except ProfileOptionError as e:
        raise UsageError(str(e)) from None
    # resolved here, before the data load: a one-line error when it names no checkpoint
    checkpoint = resolve_checkpoint(args.checkpoint) if args.checkpoint is not None else (
        "phantom2d" if phantom else None)
    records = phantom_cohort(prot) if phantom else data_records(args.data, args.data_dir)
    test_records = None if args.test_data_dir is None else data_records(args.data, args.test_data_dir)
    restore = None
    if args.restore is not None:
        try:
            restore = json.loads(Path(args.restore).read_text())
        except (OSError, ValueError) as e:
            raise UsageError(f"--restore {args.restore}: not a readable record ({e})") from None
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # the run's command: --report-only, --restore and --methods only choose what this call trains
    once = ("--restore", "--methods")
    argv = [a for i, a in enumerate(sys.argv[1:]) if a != "--report-only" and not a.startswith(once)
            and sys.argv[i] not in once]
    command = "drdm " + " ".join(shlex.quote(a) for a in argv) if argv[:1] == ["fewshot"] else None
    try:
        result = run_fewshot(records, prot, work_dir=args.work, methods=METHODS, train=args.methods or METHODS,
                             checkpoint=checkpoint, device=args.device, command=command, test_records=test_records,
                             stop_after=0 if args.report_only else None, restore=restore)
    except ValueError as e:                          # a split the data cannot fill, a level out of range
        raise UsageError(str(e)) from None
    name = {"phantom": "segmentation", "mnms": "segmentation_mnms", "acdc": "segmentation_acdc",
            "acdc-h5": "segmentation_acdc"}.get(args.data, "segmentation_folder")
    files = write_outputs(name, result, result["markdown"], args.out, args.protocol, prot.aug_seed,
                          result["device"], result["wall_time_s"], args.data if args.data in DATASETS else "folder")
    print(result["markdown"])
    print(f"wrote {files['json']} and {files['markdown']} ({result['n_cells']} cells, "
          f"{result['wall_time_s'] / 60:.0f} min of training and augmentation in all)")
    if name == "segmentation_acdc":                   # the chapter's panel of copies, beside the record
        figure = Path(files["json"]).with_name(f"{name}_copies.png")
        try:
            write_copies_figure(records, result["split"], prot, checkpoint, figure, device=result["device"])
            print(f"wrote {figure}")
        except ValueError as e:                       # the record stands; only its panel could not be drawn
            print(f"drdm: no panel of copies: {e}", file=sys.stderr)
    return 0


def write_copies_figure(records, split: dict, prot, checkpoint, path, *, device="cpu") -> None:
    """:func:`drdm.tasks.fewshot_report.copies_figure` with the run's DRDM model on the run's ``device`` (so its
    copies are the cached ones; no model where the checkpoint is absent: then BigAug and elastic only), saved
    atomically as a PNG at ``path``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ..files import atomic_write
    from ..tasks.augcache import drdm_identity
    from ..tasks.fewshot_report import copies_figure
    net, _, _ = drdm_identity(checkpoint, device)
    fig = copies_figure(records, split, prot, net, device=device)
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=100, bbox_inches="tight", format="png"))
    plt.close(fig)
