"""Does drdm's recovery behave as the release's? Agreement in distribution, and the chaos.

The release's recovery loop (``DeformDDPM.diff_recover``) was run, unmodified, on 40
real M&Ms slices (``reference/official/recovery_inputs.npz``, one sample per slice and
level, T' = 30 and 45; ``recovery_stats.json``). :func:`run` draws one sample per
slice, level and run seed (two by default) with :func:`drdm.sampling.deform` on the
same inputs and
:func:`compare` tests every metric with the criterion

    |mean_drdm - mean_release| <= max(rel * |mean_release| (abs for |J|<0), k * SE),

``SE = sqrt(s_d^2 / n_d + s_r^2 / n_r)`` (standard error of the difference of means;
``rel`` = 10 %, ``abs`` = 0.3 percentage points, ``k`` = 2.5). Samples cannot be
compared one by one: the loop is chaotic (:func:`divergence`).

Run it with ``make fidelity`` (``python -m drdm.fidelity``); it resumes an interrupted
run from its partial file.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from . import spatial
from .evaluation import field_stats
from .sampling import deform, predictor, process_for, recovery_settings, recovery_step
from .seeds import sample_seed

__all__ = ["METRICS", "CRITERION", "release_reference", "sample_rows", "read_partial", "append_rows", "run",
           "compare", "format_table", "divergence"]

METRICS = ("rec_max", "rec_mean", "rec_negJ", "rnd_max", "rnd_mean", "rnd_negJ")
CRITERION = {"rel": 0.10, "abs_negJ": 0.3, "k_se": 2.5}
_KEYS = {"max": "max_pct", "mean": "mean_pct", "negJ": "negJ_pct"}


def release_reference(official: Path) -> tuple[np.ndarray, list[str], dict]:
    """``(inputs (40, 256, 256) float32, names, recovery_stats)`` from ``reference/official``."""
    npz = np.load(Path(official) / "recovery_inputs.npz")
    stats = json.loads((Path(official) / "recovery_stats.json").read_text())
    return npz["inputs"].astype(np.float32), [str(n) for n in npz["names"]], stats


def sample_rows(net, images: torch.Tensor, level: int, seed: int, indices, settings=None,
                path=None) -> list[dict]:
    """One Algorithm-2 sample of each ``(1, S, S)`` image of ``images`` ``(B, 1, S, S)`` (slice
    ``indices[b]``, its own generator, so the rows do not depend on the batch); the release's
    metrics of the recovered (``rec_*``) and random (``rnd_*``) fields, in % (see
    ``recovery_stats.json``), with the setting and the path the network ran on."""
    fp = process_for(net, images)
    phi = torch.cat([fp.sample(torch.tensor([level]), torch.Generator(images.device).manual_seed(
        sample_seed(seed, "field", level, i)), device=images.device).phi for i in indices])
    res = deform(net, images, level, process=fp, random_ddf=phi, settings=settings, path=path)
    stats = {prefix: field_stats(ddf) for prefix, ddf in (("rec", res.ddf), ("rnd", res.random))}
    return [{**{f"{prefix}_{k}": float(st[v][b]) for prefix, st in stats.items() for k, v in _KEYS.items()},
             "settings": res.settings, "path": res.path} for b in range(len(indices))]


def read_partial(partial: Path) -> list[dict]:
    """The rows of a JSON-lines partial file; a last line cut short (a killed run, a full disk) is
    dropped and cut from the file, so the next row starts on a line of its own."""
    partial = Path(partial)
    if not partial.exists():
        return []
    raw = partial.read_bytes()
    rows, good = [], 0
    for line in raw.splitlines(keepends=True):
        try:
            if line.strip():
                rows.append(json.loads(line))
        except ValueError:
            break
        if not line.endswith(b"\n"):
            rows and line.strip() and rows.pop()        # complete JSON but no newline: rewrite it
            break
        good += len(line)
    if good < len(raw):
        with partial.open("r+b") as fh:
            fh.truncate(good)
    return rows


def append_rows(partial: Path, rows: list[dict]) -> None:
    """Append ``rows`` as whole lines; on any error the file is cut back to where it was."""
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    with Path(partial).open("ab") as fh:
        start = fh.tell()
        try:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        except BaseException:
            fh.truncate(start)
            raise


def run(net, inputs: np.ndarray, names: list[str], partial: Path, levels=(30, 45), seeds=(0,),
        limit: int | None = None, settings=None, path=None, progress: bool = True, batch: int | None = None) -> list[dict]:
    """One sample per input slice (``inputs`` ``(N, S, S)`` and ``names`` from
    :func:`release_reference`), level and run seed; rows are appended to ``partial`` (JSON
    lines) as each batch finishes, and rows already there are kept, so an interrupted run resumes
    (a full disk or lack of memory stops it with one line, :mod:`drdm.faults`). ``batch``: samples
    per :func:`~drdm.sampling.deform` call (default twice the thread count: the fast path runs one
    sample per thread); every sample has its own generator, so the rows do not depend on it."""
    from tqdm.auto import tqdm
    from .faults import guard
    n = len(inputs) if limit is None else min(limit, len(inputs))
    batch = batch or 2 * torch.get_num_threads()
    partial = Path(partial)
    done = {}
    for r in read_partial(partial):
        r.setdefault("run_seed", 0)          # rows written before run seeds existed
        done[(r["run_seed"], r["T_prime"], r["index"])] = r
    keys = [(sd, lv, i) for sd in seeds for lv in levels for i in range(n)]
    todo = [k for k in keys if k not in done]
    partial.parent.mkdir(parents=True, exist_ok=True)
    groups = {}
    for sd, lv, i in todo:
        groups.setdefault((sd, lv), []).append(i)
    with tqdm(total=len(keys), initial=len(keys) - len(todo), disable=not progress, desc="fidelity") as bar:
        for (sd, lv), idx in groups.items():
            for c in range(0, len(idx), batch):
                chunk = idx[c:c + batch]
                with guard(f"fidelity samples T'={lv}, seed {sd}, slices {chunk[0]}-{chunk[-1]}"):
                    t0 = time.perf_counter()
                    img = torch.from_numpy(inputs[chunk])[:, None]
                    made = sample_rows(net, img, lv, sd, chunk, settings, path)
                    s = round((time.perf_counter() - t0) / len(chunk), 2)
                    rows = [{"slice": names[i], "index": i, "T_prime": lv, "run_seed": sd,
                             "seed": sample_seed(sd, "field", lv, i), **r, "s": s} for i, r in zip(chunk, made)]
                    append_rows(partial, rows)
                for i, r in zip(chunk, rows):
                    done[(sd, lv, i)] = r
                bar.update(len(chunk))
    return [done[k] for k in keys]


def _moments(values) -> tuple[float, float, int]:
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v)


def compare(ours: list[dict], release_rows: list[dict], levels=(30, 45), criterion=CRITERION) -> list[dict]:
    """Every metric at every level: means, standard deviations, the difference, its
    standard error, the allowed difference and whether it holds (module docstring).
    ``release_rows``: ``recovery_stats.json``'s ``per_slice`` restricted to the
    same slices."""
    out = []
    for lv in levels:
        mine = [r for r in ours if r["T_prime"] == lv]
        idx = {r["index"] for r in mine}
        ref = [r for r in release_rows if r["T_prime"] == lv and r["index"] in idx]
        for m in METRICS:
            md, sd, nd = _moments([r[m] for r in mine])
            mr, sr, nr = _moments([r[m] for r in ref])
            se = math.sqrt(sd ** 2 / nd + sr ** 2 / nr)
            tol = criterion["abs_negJ"] if m.endswith("negJ") else criterion["rel"] * abs(mr)
            allowed = max(tol, criterion["k_se"] * se)
            out.append({"T_prime": lv, "metric": m, "n_drdm": nd, "n_release": nr, "drdm_mean": md,
                        "drdm_std": sd, "release_mean": mr, "release_std": sr, "difference": md - mr,
                        "se_difference": se, "allowed": allowed, "agrees": abs(md - mr) <= allowed})
    return out


def format_table(rows: list[dict]) -> str:
    """A Markdown table of :func:`compare`'s rows."""
    lines = ["| T' | metric | drdm mean (std) | release mean (std) | difference | SE | allowed | agrees |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['T_prime']} | {r['metric']} | {r['drdm_mean']:.3f} ({r['drdm_std']:.3f}) | "
                     f"{r['release_mean']:.3f} ({r['release_std']:.3f}) | {r['difference']:+.3f} | "
                     f"{r['se_difference']:.3f} | {r['allowed']:.3f} | {'yes' if r['agrees'] else 'NO'} |")
    return "\n".join(lines)


@torch.no_grad()
def divergence(net, image: torch.Tensor, level: int, seed: int = 0, eps: float = 1e-4,
               settings=None) -> dict:
    """How far two recoveries drift apart, step by step (the chaos of the loop).

    Three runs from one random field ``phi_{T':1}``: the reference (contiguous layout),
    the same field perturbed by ``eps`` voxel (one random unit direction per voxel,
    a fixed generator), and the reference field with the network in channels-last
    layout (float32 rounding only). Returns, per recovery step, the mean and max
    over voxels of ``|phi_ref - phi_other|`` in voxels, for both others.
    """
    rs = recovery_settings(net, settings)
    fp = process_for(net, image)
    phi0 = fp.sample(torch.tensor([level]), torch.Generator(image.device).manual_seed(seed),
                     device=image.device).phi
    g = torch.Generator(image.device).manual_seed(sample_seed(seed, "chaos-direction"))
    direction = torch.randn(phi0.shape, generator=g, device=image.device)
    direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
    channels_last, _ = predictor(net, image, "channels_last")
    runs = {"reference": (net, phi0), "perturbed": (net, phi0 + eps * direction), "channels_last": (channels_last, phi0)}
    states = {k: (phi, spatial.warp(image, phi, mode=rs.image_mode)) for k, (_, phi) in runs.items()}
    curves = {k: {"mean": [], "max": []} for k in ("perturbed", "channels_last")}
    steps = []
    for t in range(level - 1, -1, -1):
        for k, (predict, _) in runs.items():
            phi, cur = states[k]
            _, phi, cur = recovery_step(predict, image, phi, cur, t, rs)
            states[k] = (phi, cur)
        steps.append(level - t)
        ref = states["reference"][0]
        for k in curves:
            d = (states[k][0] - ref).norm(dim=1)
            curves[k]["mean"].append(float(d.mean()))
            curves[k]["max"].append(float(d.max()))
    return {"T_prime": level, "eps_voxel": eps, "settings": rs.name, "step": steps, **curves}


def main(argv=None) -> int:
    from .faults import EXIT_STOPPED, RunStopped
    from .files import atomic_write
    from .provenance import Timer, output_dir, save_results
    from .shared import absent_reason, official_checkpoint, official_dir
    from .checkpoint import load_official
    ap = argparse.ArgumentParser(description="drdm's recovery against the release's own loop, in distribution "
                                             "(and the divergence curves of chapter 3)")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N slices (default all 40)")
    ap.add_argument("--levels", default="30,45")
    ap.add_argument("--seeds", default="0,1", help="run seeds: one sample per slice, level and seed "
                    "(default 0,1: 80 samples per level against the release's 40)")
    ap.add_argument("--settings", default="release", choices=("release", "drdm"))
    ap.add_argument("--path", default="auto", choices=("auto", "fast", "channels_last", "plain"),
                    help="how the network runs (drdm.sampling.PATHS); auto: the default path (fast on CPU)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="results", help="results folder; files go to OUT/fidelity/")
    ap.add_argument("--chaos", action="store_true", help="also write the divergence curves (chaos.json)")
    args = ap.parse_args(argv)
    official, ckpt = official_dir(), official_checkpoint()
    if official is None or ckpt is None or not (official / "recovery_stats.json").exists():
        print("skipped: " + absent_reason("the release's recovery statistics and weights"))
        return 0
    torch.set_num_threads(args.threads)
    levels = tuple(int(v) for v in args.levels.split(","))
    path = None if args.path == "auto" else args.path
    net = load_official(ckpt)
    tag = args.settings + ("" if path is None else f"_{path}")
    partial = output_dir(args.out) / "fidelity" / f"partial_{tag}.jsonl"
    inputs, names, stats = release_reference(official)
    timer = Timer()
    seeds = tuple(int(v) for v in args.seeds.split(","))
    try:
        ours = run(net, inputs, names, partial, levels, seeds, args.limit, args.settings, path)
    except RunStopped as e:
        print(f"fidelity: {e}", file=sys.stderr)
        return EXIT_STOPPED
    paths = sorted({r.get("path", "?") for r in ours})
    rows = compare(ours, stats["per_slice"], levels)
    table = format_table(rows)
    per_seed = {sd: compare([r for r in ours if r["run_seed"] == sd], stats["per_slice"], levels) for sd in seeds}
    ok = all(r["agrees"] for r in rows)
    command = " ".join(["python -m drdm.fidelity", *(sys.argv[1:] if argv is None else argv)])
    verdict = ("every metric agrees with the release's own loop" if ok else
               "DISAGREES: " + ", ".join(f"T'={r['T_prime']} {r['metric']}" for r in rows if not r["agrees"]))
    print(table + "\n\n" + verdict)
    device = "cpu, %d threads" % args.threads
    samples = [{k: v for k, v in r.items() if k != "s"} for r in ours]
    path = save_results(f"recovery_{tag}", {"command": command, "settings": args.settings,
                                            "path": paths, "criterion": CRITERION,
                                            "rows": rows, "verdict": verdict, "all_agree": ok, "seeds": list(seeds),
                                            "rows_by_seed": {str(k): v for k, v in per_seed.items()},
                                            "samples": samples},
                        profile="fidelity", seed=seeds[0], device=device, wall_time_s=timer.elapsed,
                        out_dir=args.out, data="release recovery_inputs (40 M&Ms slices)",
                        timings={"sample_seconds_total": sum(r["s"] for r in ours)})
    md = (f"# drdm ({args.settings} setting) against the release's own recovery loop\n\n"
          f"Command: `{command}`. drdm's network path: {', '.join(paths)} (`drdm.sampling.PATHS`). Criterion: |difference of means| <= max(10 % of the release's mean "
          f"(0.3 points for |J|<0), 2.5 SE of the difference). Metrics in % (of the side, or of pixels).\n\n"
          f"All {len(seeds)} run seeds pooled ({len(seeds)} samples per slice and level):\n\n"
          f"{table}\n\n**{verdict}**\n"
          + "".join(f"\nRun seed {sd} alone (one sample per slice and level):\n\n{format_table(r)}\n"
                    for sd, r in per_seed.items()))
    atomic_write(path.with_suffix(".md"), lambda tmp: Path(tmp).write_text(md))
    if args.chaos:
        img = torch.from_numpy(inputs[0])[None, None]
        t1 = Timer()
        curves = [divergence(net, img, lv, seed=seeds[0]) for lv in levels]
        save_results("chaos", {"command": command, "slice": names[0], "curves": curves}, profile="fidelity",
                     seed=seeds[0], device=device, wall_time_s=t1.elapsed, out_dir=args.out,
                     data="release recovery_inputs slice 0")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
