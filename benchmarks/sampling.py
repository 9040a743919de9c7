"""Sampling speed: drdm's batched Algorithm 2 against a re-implementation of the release's loop.

Run:  python benchmarks/sampling.py [--quick] [--device cpu]

The "official-style" loop follows the release's control flow at equal recovery steps: one sample
at a time, and at every step the image *and* a 4-channel soft label map are re-warped bicubically
(the release's augmentation script). Both use the same network weights and the same number of
network calls; the difference is batching and warping only what the next step needs (labels are
warped once, at the end, with the label-safe warp). Prints samples/s and the ratio.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import device_name, rate, write  # noqa: E402

from drdm import spatial  # noqa: E402
from drdm.network import DRDMNet, NetworkConfig  # noqa: E402
from drdm.sampling import deform, process_for  # noqa: E402


def official_style(net, image, soft_labels, level, steps, fp, g):
    """One sample at a time; re-warp image and soft labels bicubically after every step."""
    outs = []
    for b in range(image.shape[0]):
        img0, lab0 = image[b:b + 1], soft_labels[b:b + 1]
        ddf = fp.sample(torch.tensor([level]), g, device=image.device).phi
        img = spatial.warp(img0, ddf, mode="bicubic")
        lab = spatial.warp(lab0, ddf, mode="bicubic")
        for t in range(steps - 1, -1, -1):
            psi = net(img, torch.tensor([t], device=image.device))
            ddf = spatial.compose(psi, ddf)
            img = spatial.warp(img0, ddf, mode="bicubic")
            lab = spatial.warp(lab0, ddf, mode="bicubic")
        outs.append((img, lab))
    return outs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    net = DRDMNet(NetworkConfig(ndim=2)).to(dev).eval()
    S = 64 if args.quick else args.size
    rows = []
    cases = [(30, "level"), (80, "all")] if not args.quick else [(10, "level")]
    for level, recover in cases:
        steps = level if recover == "level" else net.config.timesteps
        lvl = min(level, net.config.timesteps - 1)
        for batch in (1, 8):
            img = torch.rand(batch, 1, S, S, device=dev)
            lab = torch.randint(0, 4, (batch, 1, S, S), device=dev)
            soft = torch.nn.functional.one_hot(lab[:, 0], 4).permute(0, 3, 1, 2).float()
            fp = process_for(net, img)
            g = torch.Generator(dev).manual_seed(0)

            def ours():
                with torch.inference_mode():
                    r = deform(net, img, lvl, generator=g, recover=recover)
                    spatial.warp(lab, r.ddf, mode="label")

            def theirs():
                with torch.inference_mode():
                    official_style(net, img, soft, lvl, steps, fp, g)
            mt = 0.5 if args.quick else 5.0
            ours_rate = rate(ours, batch, mt, min_calls=1)
            theirs_rate = rate(theirs, batch, mt, min_calls=1) if batch == 1 or args.quick else None
            rows.append({"size": S, "level": level, "recover": recover, "steps": steps, "batch": batch,
                         "drdm_samples_per_s": ours_rate, "official_style_samples_per_s": theirs_rate})
            print(rows[-1], flush=True)
    ref = {(r["level"], r["recover"]): r["official_style_samples_per_s"] for r in rows if r["batch"] == 1}
    print(f"\n{'T-prime':>7s} {'steps':>5s} {'batch':>5s} {'drdm/s':>8s} {'official-style/s':>16s} {'ratio':>6s}")
    best = 0.0
    for r in rows:
        base = ref[(r["level"], r["recover"])]
        r["ratio_vs_official_style"] = r["drdm_samples_per_s"] / base if base else None
        best = max(best, r["ratio_vs_official_style"] or 0)
        print(f"{r['level']:>7d} {r['steps']:>5d} {r['batch']:>5d} {r['drdm_samples_per_s']:8.3f} "
              f"{base:16.3f} {r['ratio_vs_official_style']:6.2f}x")
    verdict = "met" if best >= 5 else f"MISSED: best {best:.2f}x, short of 5x by {5 - best:.2f}x"
    print(f"target: DRDM sampling >= 5x the official-style loop at equal recovery steps: {verdict}")
    write("sampling", {"rows": rows, "threads": args.threads, "device": device_name(dev), "quick": args.quick,
                       "target_5x": verdict})


if __name__ == "__main__":
    main()
