"""``drdm fewshot``: the few-shot segmentation experiment with converged U-Nets, resumable."""
from __future__ import annotations

import dataclasses
import shlex
import sys

from .common import UsageError, data_records, int_list

HELP = "few-shot segmentation (Table 2 at 1 and 5 labelled subjects), resumable"
DESCRIPTION = ("Train U-Nets to a validation-chosen stop on 1 and 5 labelled subjects with no augmentation, "
               "BigAug, elastic and DRDM copies (cached on disk), score a fixed test set per subject, and "
               "write <out>/<protocol>/segmentation_<data>.json and .md. Finished cells are kept in "
               "--work: the same command resumes.")


def add_arguments(p) -> None:
    """``drdm fewshot``'s options."""
    p.add_argument("--data", default="mnms", help="mnms | acdc | acdc-h5 (with --data-dir) | a folder of "
                                                  "X.nii.gz + X_gt.nii.gz (default mnms)")
    p.add_argument("--data-dir", dest="data_dir", help="root of the mnms / acdc / acdc-h5 dataset")
    p.add_argument("--protocol", choices=("ci", "cpu"), default="cpu")
    p.add_argument("--methods", type=lambda v: [x for x in v.split(",") if x],
                   help="comma-separated subset of none,bigaug,elastic,drdm (default all)")
    p.add_argument("--seeds", type=int_list("seeds"), help="training seeds (default: the protocol's)")
    p.add_argument("--labelled", type=int_list("labelled"), help="labelled subject counts (default 1,5)")
    p.add_argument("--checkpoint", help="DRDM checkpoint: a .pth or a shipped name (default: the release's 2-D "
                                        "weights from ../shared)")
    p.add_argument("--work", default="runs/fewshot", help="cells and cached copies (default runs/fewshot)")
    p.add_argument("--report-only", dest="report_only", action="store_true",
                   help="train nothing: write the record from the cells finished so far")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="results", help="results root (default results)")


def cmd_fewshot(args) -> int:
    import logging
    from ..tasks import write_outputs
    from ..tasks.fewshot import METHODS, PROTOCOLS, run_fewshot
    if args.data in ("phantom", "thorax3d"):
        raise UsageError("drdm fewshot runs on real labelled data; the phantom version is drdm experiment seg")
    bad = sorted(set(args.methods or ()) - set(METHODS))
    if bad:
        raise UsageError(f"--methods {','.join(bad)}: choose from {','.join(METHODS)}")
    prot = PROTOCOLS[args.protocol]
    changes = {k: tuple(v) for k, v in (("seeds", args.seeds), ("labelled", args.labelled)) if v}
    prot = dataclasses.replace(prot, **changes)
    records = data_records(args.data, args.data_dir)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    argv = [a for a in sys.argv[1:] if a != "--report-only"]
    command = "drdm " + " ".join(shlex.quote(a) for a in argv) if argv[:1] == ["fewshot"] else None
    result = run_fewshot(records, prot, work_dir=args.work, methods=args.methods or METHODS,
                         checkpoint=args.checkpoint, device=args.device, command=command,
                         stop_after=0 if args.report_only else None)
    name = "segmentation_" + args.data.replace("-", "_") if args.data in ("mnms", "acdc", "acdc-h5") else \
        "segmentation_folder"
    files = write_outputs(name, result, result["markdown"], args.out, args.protocol, int(prot.seeds[0]),
                          result["device"], result["wall_time_s"], args.data)
    print(result["markdown"])
    print(f"wrote {files['json']} and {files['markdown']} ({result['n_cells']} cells, "
          f"{result['wall_time_s'] / 60:.0f} min of training and augmentation in all)")
    return 0
