"""How far the live phantom comparison of chapter 5 moves when only the seed changes.

``make book`` re-runs the 2-D phantom Table 3 (chapter 5) in the ``cpu`` profile with one seed. Its
numbers differ between machines (float rounding of the CPU kernels, amplified by training); a seed
change moves them at least as much, and is measurable on one machine. This runs the experiment with
the ``cpu`` profile's chapter settings (``notebooks/params/cpu.yaml``) at several seeds and records,
for every comparison the chapter states, its value per seed and its spread (max - min over seeds):
``results/cpu/phantom_spread.json``. The chapter reads it and calls a phantom difference better or
worse only when it exceeds that spread (:func:`drdm.stats.compare_sentence`). Chapter 4's phantom
run needs no such record: its intervals resample labelled draws and training seeds themselves
(:mod:`drdm.tasks.fewshot`).

Run: ``python tools/phantom_spread.py [--seeds 0,1]`` (``make spread``); resumable, one seed at a
time in ``runs/phantom_spread``. About 6 min per seed on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def _reg(seed: int, overrides: dict) -> dict:
    from drdm.tasks.registration import run_registration
    res = run_registration("cpu", data="phantom2d", seeds=(seed,), device="cpu", **overrides)
    out = {key: d["mean"] for key, d in res["dice_difference"].items() if d}
    out.update({f"{row} DSC": r["dice"]["mean"] for row, r in res["rows"].items()})
    return out


def main(argv=None) -> int:
    import torch
    from drdm.bookrun import load_params
    from drdm.files import atomic_write
    from drdm.provenance import output_dir, repo_root, save_results
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--work", default="runs/phantom_spread")
    ap.add_argument("--out", default="results")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    seeds = [int(s) for s in args.seeds.split(",")]
    params = load_params("cpu", repo_root())
    runs = {"registration": (_reg, params["05_registration"].get("overrides", {}))}
    work = output_dir(args.work)
    values, seconds = {}, 0.0
    for name, (fn, overrides) in runs.items():
        for seed in seeds:
            part = work / f"{name}_seed{seed}.json"
            if part.is_file():
                rec = json.loads(part.read_text())
            else:
                print(f"phantom spread: {name}, seed {seed}", file=sys.stderr, flush=True)
                t0 = time.perf_counter()
                rec = {"values": fn(seed, overrides), "seconds": time.perf_counter() - t0,
                       "overrides": overrides}
                atomic_write(part, lambda tmp: Path(tmp).write_text(json.dumps(rec)))
            seconds += rec["seconds"]
            for k, v in rec["values"].items():
                values.setdefault(name, {}).setdefault(k, {})[str(seed)] = v
    spread = {name: {k: {"per_seed": v, "min": min(v.values()), "max": max(v.values()),
                         "spread": max(v.values()) - min(v.values()),
                         "same_sign": len({np.sign(x) for x in v.values()}) == 1}
                     for k, v in block.items()} for name, block in values.items()}
    numbers = {"command": "python tools/phantom_spread.py " + " ".join(sys.argv[1:] if argv is None else argv),
               "seeds": seeds, "units": "fractions (Dice / DSC), as the experiments' dice_difference",
               "overrides": {k: v[1] for k, v in runs.items()}, "spread": spread}
    path = save_results("phantom_spread", numbers, profile="cpu", seed=seeds[0], device="cpu, 2 threads",
                        wall_time_s=seconds, out_dir=args.out)
    for name, block in spread.items():
        for k, v in block.items():
            print(f"{name:13s} {k:45s} " + " ".join(f"{100 * x:+6.1f}" for x in v["per_seed"].values())
                  + f"   spread {100 * v['spread']:.1f} points")
    print("wrote", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
