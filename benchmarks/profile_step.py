"""Where a recovery step's time goes: the network's convolutions, the other network operations,
and the warps and compositions of the loop, at 256^2 (the release's grid).

Run:  python benchmarks/profile_step.py [--size 256] [--steps 6]

Profiles (``torch.profiler``, CPU time by operator, summed into four groups) one sample of
Algorithm 2 in the release setting on three paths: ``plain`` and ``channels_last`` on 2 threads
(one sample uses both cores), and ``fast`` on 1 thread (what each worker thread runs when the fast
path spreads samples over the threads). Writes ``results/bench/profile_step.json``; chapter 7
shows the table. Weights are untrained (the time does not depend on them).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).parent))
from _common import write  # noqa: E402

from drdm.network import DRDMNet, NetworkConfig  # noqa: E402
from drdm.sampling import deform  # noqa: E402

GROUPS = ("convolutions", "other network operations", "warps and compositions", "rest")
_WARPS = ("grid_sampler", "grid_sample")


def _group(name: str) -> str:
    if "conv" in name:
        return "convolutions"
    if any(w in name for w in _WARPS):
        return "warps and compositions"
    if name.startswith(("graph_", "## Call Compiled", "Torch-Compiled")) or name in (
            "aten::leaky_relu", "aten::native_batch_norm", "aten::instance_norm", "aten::cat", "aten::add",
            "aten::mul", "aten::addmm", "aten::copy_", "aten::minimum", "aten::maximum", "aten::embedding"):
        return "other network operations"
    return "rest"


def profile_path(net, size: int, steps: int, path: str, threads: int) -> dict:
    torch.set_num_threads(threads)
    img = torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(0))
    deform(net, img, 2, path=path)                                  # warm-up (and compilation)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        deform(net, img, steps, path=path, generator=torch.Generator().manual_seed(1))
        wall = (time.perf_counter() - t0) / steps
    totals = dict.fromkeys(GROUPS, 0.0)
    for e in prof.key_averages():
        totals[_group(e.key)] += e.self_cpu_time_total / 1e6     # seconds of CPU time
    cpu = sum(totals.values())
    return {"path": path, "threads": threads, "ms_per_step": 1000 * wall,
            "share": {g: totals[g] / cpu for g in GROUPS}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args(argv)
    net = DRDMNet(NetworkConfig(ndim=2), generator=torch.Generator().manual_seed(0)).eval()
    net.weights_origin = "release"
    rows = [profile_path(net, args.size, args.steps, p, t) for p, t in (("plain", 2), ("channels_last", 2),
                                                                       ("fast", 1))]
    for r in rows:
        print(f"{r['path']:14s} {r['threads']} thread(s): {r['ms_per_step']:.0f} ms per step (profiled); "
              + ", ".join(f"{g} {100 * v:.0f} %" for g, v in r["share"].items()))
    write("profile_step", {"size": args.size, "steps": args.steps, "rows": rows,
                           "note": "CPU time by operator group under torch.profiler (which adds overhead: "
                                   "ms_per_step is slower than benchmarks/sampling.py's rates)"}, device="cpu")


if __name__ == "__main__":
    main()
