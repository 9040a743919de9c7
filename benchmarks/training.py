"""Training throughput (images/s) and peak memory, 2-D 128^2 and 3-D 64^3 (GPU: paper sizes too).

Run:  python benchmarks/training.py [--quick] [--device cpu|cuda] [--amp/--no-amp] [--paper-sizes]
Each case runs in its own process so its peak memory is its own. On CUDA, training uses mixed
precision (float16 autocast with a gradient scaler, ``TrainConfig.amp``) unless ``--no-amp``;
on the CPU it always runs in float32. ``--paper-sizes`` keeps only the paper's sizes (2-D 256^2
batch 64, 3-D 128^3 batch 4; CUDA only). A CUDA run writes ``results/bench/training_cuda.json``.
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
cfg = TrainConfig(ndim={ndim}, image_size={size}, batch={batch}, n_subjects=4, device={device!r}, steps=1,
                  amp={amp})
tr = Trainer(cfg, tempfile.mkdtemp(), progress=False)
if tr.device.type == "cuda":
    torch.cuda.reset_peak_memory_stats()
r = rate(tr.train_step, cfg.batch, {min_time}, min_calls=2)
mem = torch.cuda.max_memory_allocated() / 2**20 if tr.device.type == "cuda" else peak_rss_mib()
print(json.dumps({{"ndim": {ndim}, "size": {size}, "batch": {batch}, "images_per_s": r,
                  "peak_mib": mem, "memory": "cuda max allocated" if tr.device.type == "cuda" else "peak RSS",
                  "device": device_name(tr.device), "amp": tr.amp}}))
"""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                    help="mixed precision on CUDA (default: on; the CPU always runs float32)")
    ap.add_argument("--paper-sizes", action="store_true", help="only the paper's sizes (CUDA)")
    ap.add_argument("--min-time", type=float, help="seconds timed per case (default 10, --quick 1)")
    args = ap.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if args.paper_sizes and not cuda:
        ap.error("--paper-sizes needs --device cuda (2-D 256^2 batch 64 and 3-D 128^3 batch 4)")
    cases = [(2, 128, 8), (3, 64, 1)]
    if args.quick:
        cases = [(2, 32, 2)]
    if cuda:
        paper = [(2, 256, 64), (3, 128, 4)]
        cases = paper if args.paper_sizes else cases + paper
    min_time = args.min_time or (1.0 if args.quick else 10.0)
    rows = []
    for ndim, size, batch in cases:
        code = CASE.format(bench=str(Path(__file__).parent), threads=args.threads, ndim=ndim, size=size,
                           batch=batch, device=args.device, min_time=min_time, amp=args.amp)
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1200)
        if r.returncode != 0:
            print(r.stderr[-2000:])
            raise SystemExit(1)
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
        print(f"{ndim}-D {size}^{ndim} batch {batch}: {rows[-1]['images_per_s']:.2f} images/s, "
              f"peak {rows[-1]['peak_mib']:.0f} MiB ({rows[-1]['memory']}), "
              f"{'mixed precision' if rows[-1]['amp'] else 'float32'}", flush=True)
    write("training", {"rows": rows, "threads": args.threads, "quick": args.quick, "amp": args.amp and cuda},
          device=args.device)


if __name__ == "__main__":
    main()
