"""Training throughput (images/s) and peak memory, 2-D 128^2 and 3-D 64^3 (GPU: paper sizes too).

Run:  python benchmarks/training.py [--quick] [--device cpu]
Each case runs in its own process so its peak memory is its own.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import write  # noqa: E402

CASE = r"""
import json, sys, tempfile, time, torch
sys.path.insert(0, {bench!r})
from _common import device_name, peak_rss_mib, rate
from drdm.training import TrainConfig, Trainer
torch.set_num_threads({threads})
cfg = TrainConfig(ndim={ndim}, image_size={size}, batch={batch}, n_subjects=4, device={device!r}, steps=1)
tr = Trainer(cfg, tempfile.mkdtemp(), progress=False)
if tr.device.type == "cuda":
    torch.cuda.reset_peak_memory_stats()
r = rate(tr.train_step, cfg.batch, {min_time}, min_calls=2)
mem = torch.cuda.max_memory_allocated() / 2**20 if tr.device.type == "cuda" else peak_rss_mib()
print(json.dumps({{"ndim": {ndim}, "size": {size}, "batch": {batch}, "images_per_s": r,
                  "peak_mib": mem, "memory": "cuda max allocated" if tr.device.type == "cuda" else "peak RSS",
                  "device": device_name(tr.device)}}))
"""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    cases = [(2, 128, 8), (3, 64, 1)]
    if args.quick:
        cases = [(2, 32, 2)]
    if args.device.startswith("cuda"):
        cases += [(2, 256, 64), (3, 128, 4)]
    rows = []
    for ndim, size, batch in cases:
        code = CASE.format(bench=str(Path(__file__).parent), threads=args.threads, ndim=ndim, size=size,
                           batch=batch, device=args.device, min_time=1.0 if args.quick else 10.0)
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1200)
        if r.returncode != 0:
            print(r.stderr[-2000:])
            raise SystemExit(1)
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
        print(f"{ndim}-D {size}^{ndim} batch {batch}: {rows[-1]['images_per_s']:.2f} images/s, "
              f"peak {rows[-1]['peak_mib']:.0f} MiB ({rows[-1]['memory']})", flush=True)
    write("training", {"rows": rows, "threads": args.threads, "quick": args.quick})


if __name__ == "__main__":
    main()
