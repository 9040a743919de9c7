"""Random-field generation speed: drdm's forward process against MONAI, one CPU thread.

Run:  python benchmarks/forward_fields.py [--quick]   (or `make bench`)

Each row times "draw a random DDF and warp one image with it" (the unit of work of
an elastic augmentation) and prints fields/s and the ratio to MONAI Rand2DElastic /
Rand3DElastic measured in the same run, with TorchIO's RandomElasticDeformation as a second
peer (each skipped with a note when not installed; `make bench` installs both).
Writes results/bench/forward_fields.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from pathlib import Path

import torch

from drdm import spatial
from drdm.diffusion import DiffusionConfig, ForwardProcess
from drdm.provenance import git_commit, repo_root


def rate(fn, batch: int, min_time: float) -> float:
    fn()                                   # warm-up
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += batch
        dt = time.perf_counter() - t0
        if dt >= min_time and n >= 2 * batch:
            return n / dt


def drdm_case(ndim, size, reading, t, batch, integration="euler"):
    fp = ForwardProcess(DiffusionConfig(reading=reading, ndim=ndim, image_size=size, integration=integration))
    g = torch.Generator().manual_seed(0)
    img = torch.rand(batch, 1, *[size] * ndim)
    tt = torch.full((batch,), t)

    def run():
        phi = fp.sample(tt, g).phi
        return spatial.warp(img, phi)
    return run


def monai_case(ndim, size):
    try:
        from monai.transforms import Rand2DElastic, Rand3DElastic
    except ImportError:
        return None
    img = torch.rand(1, *[size] * ndim)
    if ndim == 2:   # the widely copied setting (research/peers.md): spacing 30 px, magnitude 5-6 px
        tr = Rand2DElastic(spacing=(30, 30), magnitude_range=(5, 6), prob=1.0, padding_mode="zeros")
    else:           # sigma 5-8, magnitude 100-200 (the common 3-D setting)
        tr = Rand3DElastic(sigma_range=(5, 8), magnitude_range=(100, 200), prob=1.0, padding_mode="zeros")
    tr.set_random_state(0)
    return lambda: tr(img)


def torchio_case(ndim, size):
    """TorchIO RandomElasticDeformation at its defaults (7 control points per axis, up to
    7.5 mm, B-spline by SimpleITK); a 2-D image is a one-slice volume for TorchIO."""
    try:
        import torchio as tio
    except ImportError:
        return None
    # a 2-D image is 1 voxel deep, which TorchIO flags as "may fold" on every call
    warnings.filterwarnings("ignore", message="The maximum displacement is larger")
    shape = (1, size, size, 1) if ndim == 2 else (1, size, size, size)
    subject = tio.Subject(image=tio.ScalarImage(tensor=torch.rand(shape)))
    tr = tio.RandomElasticDeformation()
    torch.manual_seed(0)
    return lambda: tr(subject)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter timings (smoke test)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    min_time = 0.3 if args.quick else 3.0
    rows = []
    peers = {}
    for ndim, size in ((2, 256), (3, 128)):
        fn = monai_case(ndim, size)
        name = f"MONAI Rand{ndim}DElastic"
        peers[ndim] = rate(fn, 1, min_time) if fn else None
        rows.append({"case": name, "size": f"{size}^{ndim}", "batch": 1,
                     "fields_per_s": peers[ndim], "note": "" if fn else "MONAI not installed"})
        fn = torchio_case(ndim, size)
        r = rate(fn, 1, min_time) if fn else None
        rows.append({"case": "TorchIO RandomElasticDeformation", "size": f"{size}^{ndim}", "batch": 1,
                     "fields_per_s": r, "ratio_vs_monai": (r / peers[ndim]) if r and peers[ndim] else None,
                     "note": "" if fn else "TorchIO not installed"})
    cases = [
        (2, 256, "official", 79, 1, "euler"), (2, 256, "official", 79, 16, "euler"),
        (2, 256, "official", 79, 1, "squaring"), (2, 256, "official", 79, 16, "squaring"),
        (2, 256, "paper", 80, 1, "euler"),
        (3, 128, "official", 79, 1, "euler"), (3, 128, "official", 79, 1, "squaring"),
    ]
    for ndim, size, reading, t, batch, integ in cases:
        if args.quick and (ndim == 3 or reading == "paper"):
            continue
        r = rate(drdm_case(ndim, size, reading, t, batch, integ), batch, min_time if reading == "official" else 0.1)
        label = f"drdm {reading}" + (f" ({integ})" if reading == "official" else "") + f" t={t}"
        rows.append({"case": label, "size": f"{size}^{ndim}", "batch": batch, "fields_per_s": r,
                     "ratio_vs_monai": (r / peers[ndim]) if peers.get(ndim) else None})
    scaling = []
    if not args.quick:
        for ndim, sizes, integ in ((2, (64, 128, 256), "euler"), (3, (32, 64, 128), "squaring")):
            for size in sizes:
                r = rate(drdm_case(ndim, size, "official", 79, 1, integ), 1, 1.0)
                scaling.append({"ndim": ndim, "size": size, "t": 79, "integration": integ, "fields_per_s": r})
        for t in (10, 30, 50, 79):
            r = rate(drdm_case(2, 256, "official", t, 1, "euler"), 1, 1.0)
            scaling.append({"ndim": 2, "size": 256, "t": t, "integration": "euler", "fields_per_s": r})
    print(f"{'case':38s} {'size':>8s} {'batch':>5s} {'fields/s':>9s} {'x MONAI':>8s}")
    for r in rows:
        fps = f"{r['fields_per_s']:.2f}" if r["fields_per_s"] else "-"
        ratio = r.get("ratio_vs_monai")
        print(f"{r['case']:38s} {r['size']:>8s} {r['batch']:>5d} {fps:>9s} "
              f"{(f'{ratio:.2f}x' if ratio else '-'):>8s} {r.get('note', '')}")
    target = [r for r in rows if r["case"].startswith("drdm official") and r["size"] == "256^2"]
    best = max((r["ratio_vs_monai"] or 0) for r in target) if target else 0
    if peers.get(2):
        verdict = "met" if best >= 2 else f"MISSED by {2 - best:.2f}x"
        print(f"target: official 2-D 256^2 t=80 fields >= 2x MONAI Rand2DElastic: best {best:.2f}x ({verdict})")
    out = repo_root() / "results" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    for r in scaling:
        print(f"scaling: {r['ndim']}-D {r['size']} t={r['t']} ({r['integration']}): {r['fields_per_s']:.2f} fields/s")
    doc = {"rows": rows, "scaling": scaling, "threads": 1, "quick": args.quick, "commit": git_commit(),
           "machine": platform.processor() or platform.machine(), "torch": torch.__version__}
    (out / "forward_fields.json").write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
