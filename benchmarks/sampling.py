"""Sampling speed: drdm's Algorithm 2 paths against a re-implementation of the release's loop.

Run:  python benchmarks/sampling.py [--quick] [--device cpu] [--threads 2]

The "release-style" loop follows the release's control flow at equal recovery steps: one sample
at a time, contiguous convolutions, zero-padded composition, and at every step the image *and* a
4-channel soft label map are re-warped bicubically (the release's augmentation script). drdm runs
the same recovery settings (``settings="release"``), the same weights and the same number of network
calls, on each of its paths (``drdm.sampling.PATHS``): ``fast`` (the default on CPU: channels-last,
compiled U-Net pass, one sample per thread), ``channels_last`` (the default before it) and ``plain``;
labels are warped once, at the end, with the label-safe warp.

Two cases: T' = 30 (Algorithm 2, 30 steps) and the release's augmentation schedule (T' 48..80 by its
parity rule, and every sample recovers through all 80 steps, so each copy costs 80 network calls
whatever its T'; timed at T' = 64). Everything is measured on the same threads in the same run:
the release-style loop on 1 thread and on ``--threads``, drdm on ``--threads``.

The target (issue: sampling at 2.5x): the default path >= min(2.5x, 65 % of the float32 ceiling at
equal threads) against the release-style loop on the same threads, in both cases. The ceiling: the
network's FLOPs per sample (``torch.utils.flop_counter``) at this machine's float32 matrix-multiply
rate on those threads, measured here (a large ``torch.mm``), everything else free; "at equal
threads" divides it by the release-style loop's rate. Also printed: the peak resident memory each
path adds (VmHWM, reset before each row), and the copies per minute of the few-shot copy generator
(``drdm.tasks.augcache.make_copies``, 8 DRDM copies of a 96^2 slice through its InputGrid: at T'=30,
and at the release's augmentation schedule, one copy per level, the levels run side by side).
A bfloat16-autocast row is timed for information only (it changes the recovered fields).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).parent))
from _common import device_name, rate, write  # noqa: E402

from drdm import spatial  # noqa: E402
from drdm.network import DRDMNet, NetworkConfig  # noqa: E402
from drdm.sampling import deform, process_for  # noqa: E402

TARGET, CEILING_SHARE = 2.5, 0.65


def release_style(net, image, soft_labels, level, steps, fp, g):
    """One sample at a time; re-warp image and soft labels bicubically after every step."""
    outs = []
    for b in range(image.shape[0]):
        img0, lab0 = image[b:b + 1], soft_labels[b:b + 1]
        ddf = fp.sample(torch.tensor([level]), g, device=image.device).phi
        img = spatial.warp(img0, ddf, mode="bicubic")
        lab = spatial.warp(lab0, ddf, mode="bicubic")
        for t in range(steps - 1, -1, -1):
            psi = net(img, torch.tensor([t], device=image.device))
            ddf = spatial.compose(psi, ddf, padding_mode="zeros")
            img = spatial.warp(img0, ddf, mode="bicubic")
            lab = spatial.warp(lab0, ddf, mode="bicubic")
        outs.append((img, lab))
    return outs


def matmul_peak(threads: int, dtype=torch.float32, n: int = 2048, device="cpu") -> float:
    """FLOP/s of a large square matrix multiply on ``threads`` threads: the practical peak."""
    torch.set_num_threads(threads)
    a = torch.rand(n, n, dtype=dtype, device=device)
    b = torch.rand(n, n, dtype=dtype, device=device)
    return 2 * n ** 3 * rate(lambda: a @ b, 1, 1.0, min_calls=3)


def flops_per_step(net, image) -> float:
    """FLOPs of one recovery step (one network call, all K internal passes)."""
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        net(image, torch.tensor([1], device=image.device))
    return float(fc.get_total_flops())


def _reset_peak() -> bool:
    """Reset this process's VmHWM (Linux); False where it cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_mib() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def copy_rate(net, threads: int, levels, min_time: float, device="cpu", n: int = 8) -> float:
    """Copies per minute of the few-shot generator: ``n`` DRDM copies of a 96^2 slice, spread evenly
    over ``levels`` (one level: a batch of ``n``; the release's schedule: one copy per level)."""
    from drdm.tasks.augcache import make_copies
    torch.set_num_threads(threads)
    img = torch.rand(1, 1, 96, 96, generator=torch.Generator().manual_seed(0))
    lab = torch.randint(0, 4, (1, 1, 96, 96), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return 60 * rate(lambda: make_copies("drdm", img, lab, n, 0, net=net, levels=tuple(levels), device=device),
                         n, min_time, min_calls=1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="64^2, one short case (a smoke run)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--gpu-batch", type=int, default=64, help="batch of the default path on CUDA")
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    cpu = dev.type == "cpu"
    torch.set_num_threads(args.threads)
    net = DRDMNet(NetworkConfig(ndim=2), generator=torch.Generator().manual_seed(0)).to(dev).eval()
    net.weights_origin = "release"          # the release's architecture and settings; weights do not change time
    S = 64 if args.quick else args.size
    T = net.config.timesteps
    cases = [(10, "level", "T'=10")] if args.quick else [(30, "level", "T'=30"),
                                                           (64, "all", "release schedule (80 steps)")]
    mt = 0.3 if args.quick else 2.0
    batch = 2 * args.threads if cpu else args.gpu_batch
    paths = ("fast", "channels_last", "plain") if cpu else (None, "plain")
    with torch.inference_mode():            # warm-up of every path (allocator, kernels, compilation)
        w = torch.rand(batch, 1, S, S, device=dev)
        for p in paths:
            deform(net, w[:1 if p in ("channels_last", "plain") else batch], 2, path=p)

    def inputs(b):
        img = torch.rand(b, 1, S, S, device=dev)
        lab = torch.randint(0, 4, (b, 1, S, S), device=dev)
        return img, lab, torch.nn.functional.one_hot(lab[:, 0], 4).permute(0, 3, 1, 2).float()

    step_flops = flops_per_step(net, torch.rand(1, 1, S, S, device=dev))
    peak = {str(dt).split(".")[-1]: matmul_peak(args.threads, dt, device=dev) if cpu else None
            for dt in (torch.float32, torch.bfloat16)}
    torch.set_num_threads(args.threads)
    if cpu:
        print(f"network: {step_flops / 1e9:.2f} GFLOP per recovery step; matrix-multiply peak on {args.threads} "
              f"threads: float32 {peak['float32'] / 1e9:.0f} GFLOP/s, bfloat16 {peak['bfloat16'] / 1e9:.0f} GFLOP/s",
              flush=True)
    rows, ref, cases_out = [], {}, []
    for level, recover, label in cases:
        steps = level if recover == "level" else T
        img, lab, soft = inputs(1)
        fp = process_for(net, img)
        for threads in sorted({1, args.threads}):
            torch.set_num_threads(threads)
            g = torch.Generator(dev).manual_seed(0)
            with torch.inference_mode():
                ref[(level, threads)] = rate(lambda: release_style(net, img, soft, level, steps, fp, g), 1, mt,
                                             min_calls=1, warmup=args.quick)
            print(f"release-style loop {label} threads={threads}: {ref[(level, threads)]:.4f} samples/s", flush=True)
        torch.set_num_threads(args.threads)
        same = ref[(level, args.threads)]
        # (name, path, batch, bfloat16); path None: deform's default
        variants = [("drdm default", None, batch, False), ("drdm default, one sample", None, 1, False),
                    ("channels-last (old default)", "channels_last", 1, False), ("plain", "plain", 1, False)]
        if not cpu:                        # on CUDA the default is the plain network, batched
            variants = [v for v in variants if v[1] != "channels_last"]
        if cpu and not args.quick:
            variants.append(("bfloat16 (info only)", "channels_last", 1, True))
        for name, path, b, bf16 in variants:
            img, lab, _ = inputs(b)
            g = torch.Generator(dev).manual_seed(0)
            taken = []

            def ours():
                with torch.inference_mode(), torch.autocast(dev.type, torch.bfloat16, enabled=bf16):
                    r = deform(net, img, level, generator=g, recover=recover, path=path)
                    spatial.warp(lab, r.ddf, mode="label")
                    taken.append(r.path)
            reset = cpu and _reset_peak()
            r = rate(ours, b, mt, min_calls=1, warmup=args.quick)
            rows.append({"method": name, "path": taken[-1], "case": label, "size": S, "level": level,
                         "recover": recover, "steps": steps, "batch": b, "threads": args.threads,
                         "samples_per_s": r, "informational": bf16,
                         "network_gflop_per_s": r * steps * step_flops / 1e9,
                         "peak_rss_mib": _peak_mib() if reset else None,
                         "release_style_1thread_per_s": ref[(level, 1)], "release_style_same_threads_per_s": same,
                         "ratio_vs_release_1thread": r / ref[(level, 1)], "ratio_vs_release_same_threads": r / same})
            print(f"{name} ({taken[-1]}) {label} batch={b}: {r:.4f} samples/s, {r / same:.2f}x the release-style "
                  f"loop at equal threads ({r * steps * step_flops / 1e9:.0f} GFLOP/s in the network)", flush=True)
        case = {"case": label, "level": level, "steps": steps}
        if cpu:
            # every network FLOP at the float32 matmul peak, everything else free
            c = peak["float32"] / (steps * step_flops)
            case.update(ceiling_samples_per_s=c, ceiling_ratio_same_threads=c / same,
                        target_ratio=min(TARGET, CEILING_SHARE * c / same))
        cases_out.append(case)
    print(f"\n{'method':30s} {'case':28s} {'batch':>5s} {'samples/s':>9s} {'x release (same threads)':>24s} "
          f"{'x release (1 thread)':>20s} {'peak MiB':>8s}")
    for r in rows:
        pk = "-" if r["peak_rss_mib"] is None else f"{r['peak_rss_mib']:.0f}"
        print(f"{r['method']:30s} {r['case']:28s} {r['batch']:>5d} {r['samples_per_s']:9.4f} "
              f"{r['ratio_vs_release_same_threads']:23.2f}x {r['ratio_vs_release_1thread']:19.2f}x {pk:>8s}")
    verdicts = []
    for case in cases_out:
        default = next(r for r in rows if r["method"] == "drdm default" and r["case"] == case["case"])
        got = default["ratio_vs_release_same_threads"]
        if "target_ratio" in case:
            need = case["target_ratio"]
            v = "met" if got >= need else f"MISSED by {need - got:.2f}x"
            line = (f"{case['case']}: default path {got:.2f}x the release-style loop at equal threads; float32 "
                    f"ceiling at equal threads {case['ceiling_ratio_same_threads']:.2f}x; target min({TARGET}x, "
                    f"{CEILING_SHARE:.0%} of the ceiling) = {need:.2f}x: {v}")
        else:
            v, line = "n/a", f"{case['case']}: default path {got:.2f}x the release-style loop (no ceiling off CPU)"
        case.update(default_ratio=got, verdict=v)
        verdicts.append(v)
        print("target: " + line)
    copies = {}
    if not args.quick:
        from drdm.tasks.fewshot import release_levels
        n_copies = 8 if cpu else 32            # the cpu and gpu few-shot protocols' copies per slice
        for key, levels in (("30", (30,)), ("release", release_levels(n_copies))):
            copies[key] = copy_rate(net, args.threads, levels, mt, dev, n_copies)
            what = "T'=30" if key == "30" else f"the release's schedule, one copy per T' in {levels[0]}..{levels[-1]}"
            print(f"few-shot copy generator ({n_copies} DRDM copies of a 96^2 slice, {what}, Algorithm 2, "
                  f"{dev.type}): {copies[key]:.1f} copies/min", flush=True)
    write("sampling", {"rows": rows, "cases": cases_out, "threads": args.threads, "device": device_name(dev),
                       "quick": args.quick, "size": S, "target": f"min({TARGET}x, {CEILING_SHARE:.0%} of the float32 "
                       "ceiling at equal threads), default path vs release-style loop",
                       "all_met": all(v == "met" for v in verdicts),
                       "network_gflop_per_step": step_flops / 1e9,
                       "matmul_peak_gflop_per_s": {k: v and v / 1e9 for k, v in peak.items()},
                       "copies_per_min": copies}, device=args.device)


if __name__ == "__main__":
    main()
