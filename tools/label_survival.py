"""Label survival of DRDM augmentation on real M&Ms slices with the release's 2-D weights.

Run:  python tools/label_survival.py [--slices 30] [--n 2] [--levels 30,45]

Reads the M&Ms subset and the release's checkpoint found by drdm.shared (skips with a
reason when absent), takes a seeded random choice of labelled short-axis slices over all
subjects and both phases, preprocesses them to the network's 256^2 grid and counts,
per T', augmented label maps with a value not in the input and maps where an input
label vanished (drdm.evaluation.label_survival). Writes results/cpu/label_survival.json.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from drdm import data as D
from drdm import shared
from drdm.checkpoint import load_official
from drdm.provenance import save_results
from drdm.evaluation import label_survival


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=30)
    ap.add_argument("--n", type=int, default=2, help="samples per slice and level")
    ap.add_argument("--levels", default="30,45")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    mnms, ckpt = shared.mnms_dir(), shared.official_checkpoint()
    if mnms is None or ckpt is None:
        print("skipped:", shared.absent_reason("M&Ms subset and the release's checkpoint"))
        return 0
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    recs = D.slices(D.load_mnms(mnms))
    pick = np.random.default_rng(args.seed).choice(len(recs), size=min(args.slices, len(recs)), replace=False)
    chosen = [D.preprocess_record(recs[i], 256) for i in sorted(pick)]
    images = torch.from_numpy(np.stack([r.image for r in chosen])[:, None]).float()
    labels = torch.from_numpy(np.stack([r.label for r in chosen])[:, None].astype(np.int64))
    levels = [int(v) for v in args.levels.split(",")]
    res = label_survival(load_official(ckpt), images, labels, levels, args.n, seed=args.seed, batch=args.n, path="channels_last")
    for level, row in res.items():
        print(f"T'={level}: {row['samples']} samples, new labels in {row['new']}, a label vanished in "
              f"{row['vanished']} ({row['survival_pct']:.1f} % survive; by label {row['vanished_by_label']})")
    numbers = {"levels": res, "slices": [f"{r.subject}/{r.phase}/slice {r.meta.get('slice')}" for r in chosen],
               "n_per_slice_and_level": args.n, "checkpoint": ckpt.name, "recover": "level",
               "labels": "ACDC convention (1 RV, 2 myo, 3 LV), label-safe warp"}
    save_results("label_survival", numbers, profile="cpu", seed=args.seed, device="cpu",
                 wall_time_s=time.perf_counter() - t0, data="mnms_subset")
    return 0


if __name__ == "__main__":
    sys.exit(main())
