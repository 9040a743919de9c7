"""Table 1 of the paper against the release's weights on ACDC, at every level, with a verdict per row.

Protocol (stated before any number, and in chapter 3):

* **Data.** The central end-diastolic slice of each ACDC subject of the slice folder
  (``../shared/data/acdc_slices``: 70 subjects; ``frame01`` is ED): of a frame's stored slices
  ``S = 1..n`` (base to apex), the one at position ``n // 2`` in 0-based order.
* **To the network grid** as the release's ACDC loader (``CMR_tgt_loader``) does: each slice
  stretched to 256^2 (anisotropically: no padding, no spacing, which the slice form does not
  store anyway) and min-max scaled per slice, by ``InputGrid(..., isotropic=False,
  threshold=(None, None)).to_network`` (the same map as ``drdm table1``).
* **Sampling.** The release's 2-D weights in the release setting (bicubic image warps,
  zero-padded composition), Algorithm 2 (``T'`` recovery steps), one sample per slice and level
  at ``T'`` = 30, 45, 55, 65, 70; slice ``i`` at level ``T'`` draws its random field from
  ``sample_seed(seed, "field", T', i)``; the default network path (:mod:`drdm.sampling`).
* **Metrics** (:func:`drdm.evaluation.field_stats`): max and mean ``|phi|`` in % of the side and
  ``|J|<0`` in % of pixels, of the generated (recovered) field, which is what the paper's Table 1
  reports, and of the random field ``phi_{T':1}`` for reference.
* **Verdict rule**, per level and metric, comparing our mean ``m`` (standard error ``SE`` over
  slices) with the paper's mean ``p``: *consistent* when ``|m - p| <= max(2.5 SE, 0.10 |p|)``;
  otherwise *higher* or *lower*, by ``m - p`` and by ``m / p``. The paper's standard deviations are
  shown beside ours; the paper does not say over how many images its numbers are taken.

Resumable: each level is one unit, written atomically to ``<work>/level_<T'>.json`` when done;
a full disk or lack of memory stops the run with one line (:mod:`drdm.faults`).

Run: ``python -m drdm.tasks.table1`` (``make table1-acdc``); writes
``results/cpu/table1_acdc.{json,md}`` and the figure of the most folded fields
``results/cpu/table1_acdc_folding.png``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

__all__ = ["PAPER_TABLE1", "LEVELS", "RULE", "central_ed_slices", "network_images", "run_level", "verdict",
           "summarise", "findings", "markdown", "main"]

#: the paper's Table 1 (2-D cardiac MRI, generated fields): T' -> metric -> (mean, sd)
PAPER_TABLE1 = {
    30: {"max_pct": (7.8, 1.3), "mean_pct": (2.4, 0.6), "negJ_pct": (0.7, 1.5)},
    45: {"max_pct": (10.4, 2.4), "mean_pct": (3.0, 0.8), "negJ_pct": (0.9, 1.2)},
    55: {"max_pct": (11.8, 3.2), "mean_pct": (3.3, 0.8), "negJ_pct": (2.4, 3.2)},
    65: {"max_pct": (12.7, 4.0), "mean_pct": (3.6, 0.9), "negJ_pct": (6.6, 5.5)},
    70: {"max_pct": (14.8, 3.5), "mean_pct": (4.3, 1.4), "negJ_pct": (9.8, 7.2)},
}
LEVELS = tuple(PAPER_TABLE1)
METRICS = ("max_pct", "mean_pct", "negJ_pct")
NAMES = {"max_pct": "max |phi| (% side)", "mean_pct": "mean |phi| (% side)", "negJ_pct": "|J|<0 (%)"}
#: the verdict rule (module docstring)
RULE = {"k_se": 2.5, "rel": 0.10}
def central_ed_slices(folder) -> list[tuple[str, Path]]:
    """``[(subject, file)]``: the central ED (``frame01``) slice of every subject in ``folder``
    (the slice form's root or its ``slices/``), sorted by subject."""
    root = Path(folder)
    root = root / "slices" if (root / "slices").is_dir() else root
    from ..data import acdc_name
    frames: dict[str, list[tuple[int, Path]]] = {}
    for p in root.glob("patient*_frame01_slice_*.h5"):
        subject, _, number = acdc_name(p)               # the one ACDC file-name parser
        frames.setdefault(subject, []).append((number, p))
    if not frames:
        raise ValueError(f"{root}: no patientNNN_frame01_slice_S.h5 files (the ACDC slice form)")
    return [(s, sorted(v)[len(v) // 2][1]) for s, v in sorted(frames.items())]


def network_images(files, size=(256, 256)) -> torch.Tensor:
    """``(N, 1, *size)``: each slice stretched to the network grid and min-max scaled (the
    release's ACDC loader; :class:`drdm.grid.InputGrid` with ``isotropic=False``)."""
    import h5py
    from ..grid import InputGrid
    out = []
    for f in files:
        with h5py.File(f, "r") as h:
            image = np.asarray(h["image"][()], dtype=np.float32)
        grid = InputGrid(image.shape, (1.0, 1.0), size, isotropic=False, threshold=(None, None))
        out.append(torch.from_numpy(grid.to_network(image))[None])
    return torch.stack(out)


def run_level(net, images: torch.Tensor, level: int, seed: int = 0, progress: bool = True) -> dict:
    """One level: ``{"random"|"recovered": {metric: [N values]}, "path", "settings", "seconds"}``."""
    from ..evaluation import table1
    from ..sampling import default_path
    t0 = time.perf_counter()
    _, rows = table1(net, images, levels=(level,), seed=seed, batch=2 * torch.get_num_threads(),
                     progress=progress, return_rows=True)
    return {**rows[int(level)], "path": default_path(images), "settings": "release",
            "seconds": round(time.perf_counter() - t0, 1)}


def verdict(ours: list[float], paper_mean: float, rule=RULE) -> dict:
    """Our mean, SD and SE against the paper's mean under :data:`RULE`."""
    v = np.asarray(ours, dtype=np.float64)
    m, sd = float(v.mean()), float(v.std(ddof=1))
    se = sd / math.sqrt(len(v))
    allowed = max(rule["k_se"] * se, rule["rel"] * abs(paper_mean))
    diff = m - paper_mean
    word = "consistent" if abs(diff) <= allowed else ("higher" if diff > 0 else "lower")
    return {"mean": m, "sd": sd, "se": se, "n": len(v), "paper_mean": paper_mean, "difference": diff,
            "ratio": m / paper_mean if paper_mean else None, "allowed": allowed, "verdict": word}


def summarise(levels: dict) -> dict:
    """Rows per level and metric (recovered field vs the paper; random field alongside)."""
    rows = []
    for lv in sorted(levels, key=int):
        rec = levels[lv]
        for metric in METRICS:
            paper_mean, paper_sd = PAPER_TABLE1[int(lv)][metric]
            r = verdict(rec["recovered"][metric], paper_mean)
            rnd = np.asarray(rec["random"][metric], dtype=np.float64)
            rows.append({"T_prime": int(lv), "metric": metric, **r, "paper_sd": paper_sd,
                         "random_mean": float(rnd.mean()), "random_sd": float(rnd.std(ddof=1))})
    counts = {w: sum(r["verdict"] == w for r in rows) for w in ("consistent", "higher", "lower")}
    return {"rows": rows, "counts": counts, "sentence": _sentence(rows, counts), "findings": findings(rows)}


def findings(rows: list[dict]) -> list[str]:
    """One phrase per metric saying where it agrees with the paper, e.g. ``"mean |phi|: consistent at
    every level"`` or ``"|J|<0: lower at T' = 30; higher at T' = 45, 55"`` (the reproducibility
    chapter quotes them; a test checks they are the record's)."""
    out = []
    for metric in METRICS:
        mine = [r for r in rows if r["metric"] == metric]
        name = NAMES[metric].split(" (")[0]
        if all(r["verdict"] == "consistent" for r in mine):
            out.append(f"{name}: consistent at every level")
            continue
        parts = []
        for word in ("consistent", "higher", "lower"):
            lv = [r["T_prime"] for r in mine if r["verdict"] == word]
            if lv:
                parts.append((min(lv), f"{word} at T' = {', '.join(map(str, lv))}"))
        out.append(f"{name}: " + "; ".join(p for _, p in sorted(parts)))
    return out


def _sentence(rows, counts) -> str:
    off = [r for r in rows if r["verdict"] != "consistent"]
    head = (f"{counts['consistent']} of {len(rows)} rows are consistent with the paper's Table 1 under the "
            f"stated rule")
    if not off:
        return head + "."
    parts = [f"{NAMES[r['metric']]} at T'={r['T_prime']} is {r['verdict']} ({r['mean']:.2f} vs {r['paper_mean']:.1f}, "
             f"x{r['ratio']:.2f})" for r in off]
    return head + "; " + "; ".join(parts) + "."


def markdown(summary: dict, meta: dict) -> str:
    lines = [f"# Table 1 of the paper against the release's weights on ACDC ({meta['n_slices']} central ED slices)",
             "", f"Command: `{meta['command']}`. Wall time: {meta['wall_min']:.0f} min on {meta['device']}. "
             f"Network path: {meta['path']}; setting: release; one sample per slice and level.", "",
             f"Rule: *consistent* when |ours - paper| <= max({RULE['k_se']} SE, {RULE['rel']:.0%} of the paper's "
             "mean); otherwise *higher* / *lower*. Generated (recovered) fields; the random field phi_{T':1} "
             "alongside.", "",
             "| T' | metric | ours mean +- SD (SE) | paper mean +- SD | ours - paper | ours / paper | verdict | "
             "random field mean +- SD |", "|---|---|---|---|---|---|---|---|"]
    for r in summary["rows"]:
        name = NAMES[r["metric"]].replace("|", "\\|")          # a pipe inside a table cell
        lines.append(f"| {r['T_prime']} | {name} | {r['mean']:.2f} +- {r['sd']:.2f} ({r['se']:.2f}) | "
                     f"{r['paper_mean']:.1f} +- {r['paper_sd']:.1f} | {r['difference']:+.2f} | "
                     f"{r['ratio']:.2f} | **{r['verdict']}** | {r['random_mean']:.2f} +- {r['random_sd']:.2f} |")
    lines += ["", summary["sentence"], "", "By metric: " + "; ".join(f"*{f}*" for f in summary["findings"]) + ".", ""]
    if meta.get("most_folded"):
        lines.append("Most folded generated fields (|J|<0 %): " + "; ".join(
            f"T'={lv}: " + ", ".join(f"{s} {v:.2f}" for s, v in items) for lv, items in meta["most_folded"].items()))
    return "\n".join(lines) + "\n"


def _folding_figure(net, images, subjects, levels, seed, path):
    """The three most folded generated fields at the two highest-folding levels: the deformed image
    with its folding pixels in red, re-made from their seeds (the fast path is batch-independent)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from .. import spatial
    from ..sampling import deform, process_for
    from ..seeds import sample_seed
    fp = process_for(net, images[:1])
    fig, axes = plt.subplots(len(levels), 3, figsize=(9, 3.1 * len(levels)), squeeze=False)
    for row, (lv, picks) in zip(axes, levels.items()):
        for ax, (i, value) in zip(row, picks):
            g = torch.Generator().manual_seed(sample_seed(seed, "field", lv, i))
            phi = fp.sample(torch.tensor([lv]), g).phi
            res = deform(net, images[i:i + 1], lv, process=fp, random_ddf=phi)
            det = spatial.jacobian_det(res.ddf.double())[0]
            ax.imshow(res.image[0, 0].numpy(), cmap="gray")
            ax.imshow(np.ma.masked_where(det.numpy() >= 0, np.ones(det.shape)), cmap="autumn", alpha=0.8)
            ax.set_title(f"{subjects[i]}, T'={lv}: |J|<0 {value:.2f} %", fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=60)
    plt.close(fig)


def main(argv=None) -> int:
    from ..checkpoint import load_official
    from ..faults import EXIT_STOPPED, RunStopped, guard
    from ..files import atomic_write
    from ..provenance import Timer, output_dir, save_results
    from ..shared import absent_reason, acdc_slices_dir, official_checkpoint
    ap = argparse.ArgumentParser(description="Table 1 of the paper against the release's weights on ACDC, "
                                             "one verdict per level and metric (resumable)")
    ap.add_argument("--data-dir", help="the ACDC slice form (default ../shared/data/acdc_slices)")
    ap.add_argument("--levels", default=",".join(map(str, LEVELS)))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, help="first N subjects only (a smoke run)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="runs/table1_acdc", help="finished levels (resume)")
    ap.add_argument("--out", default="results", help="results root; files go to OUT/cpu/")
    ap.add_argument("--no-figure", action="store_true")
    args = ap.parse_args(argv)
    data = Path(args.data_dir) if args.data_dir else acdc_slices_dir()
    ckpt = official_checkpoint()
    if data is None or ckpt is None:
        print("skipped: " + absent_reason("the ACDC slices and the release's weights"))
        return 0
    torch.set_num_threads(args.threads)
    levels = [int(v) for v in args.levels.split(",")]
    unknown = sorted(set(levels) - set(PAPER_TABLE1))
    if unknown:
        ap.error(f"the paper's Table 1 has no level {unknown}; choose from {LEVELS}")
    picked = central_ed_slices(data)[:args.limit]
    subjects = [s for s, _ in picked]
    images = network_images([f for _, f in picked])
    net = load_official(ckpt)
    work = output_dir(args.work) / f"seed{args.seed}_n{len(picked)}"
    timer = Timer()
    done = {}
    try:
        for lv in levels:
            part = work / f"level_{lv}.json"
            if part.is_file():
                rec = json.loads(part.read_text())
                if rec.get("subjects") == subjects:
                    done[lv] = rec
                    continue
            with guard(f"table1 level T'={lv}"):
                print(f"table1: T'={lv} on {len(subjects)} slices", file=sys.stderr, flush=True)
                rec = {**run_level(net, images, lv, args.seed, progress=sys.stderr.isatty()), "subjects": subjects}
                atomic_write(part, lambda tmp: Path(tmp).write_text(json.dumps(rec)))
            done[lv] = rec
    except RunStopped as e:
        print(f"table1: {e}", file=sys.stderr)
        return EXIT_STOPPED
    summary = summarise(done)
    seconds = sum(r["seconds"] for r in done.values())
    most = {lv: sorted(enumerate(done[lv]["recovered"]["negJ_pct"]), key=lambda kv: -kv[1])[:3] for lv in levels}
    command = " ".join(["python -m drdm.tasks.table1", *(sys.argv[1:] if argv is None else argv)])
    meta = {"command": command, "n_slices": len(subjects), "device": f"cpu, {args.threads} threads",
            "wall_min": seconds / 60, "path": ", ".join(sorted({r["path"] for r in done.values()})),
            "most_folded": {lv: [(subjects[i], v) for i, v in most[lv]] for lv in levels}}
    numbers = {"command": command, "protocol": __doc__.split("Protocol (stated before any number, and in chapter 3):")[1]
               .split("Resumable:")[0].strip(), "rule": RULE, "paper": {str(k): v for k, v in PAPER_TABLE1.items()},
               "levels": levels, "subjects": subjects,
               "slices": [Path(f).name for _, f in picked], "path": meta["path"], "settings": "release",
               "per_slice": {str(lv): {k: done[lv][k] for k in ("random", "recovered")} for lv in levels},
               "most_folded": {str(k): v for k, v in meta["most_folded"].items()}, **summary,
               "seconds_per_level": {str(lv): done[lv]["seconds"] for lv in levels}}
    path = save_results("table1_acdc", numbers, profile="cpu", seed=args.seed, device=meta["device"],
                        wall_time_s=seconds, out_dir=args.out, data=f"ACDC slice form ({len(subjects)} subjects)")
    md = markdown(summary, meta)
    atomic_write(path.with_suffix(".md"), lambda tmp: Path(tmp).write_text(md))
    if not args.no_figure:
        top = sorted(levels, key=lambda lv: -max(v for _, v in most[lv]))[:2]
        _folding_figure(net, images, subjects, {lv: most[lv] for lv in sorted(top)}, args.seed,
                        path.with_name("table1_acdc_folding.png"))
    print(md)
    print(f"wrote {path} and {path.with_suffix('.md')} ({timer.elapsed / 60:.1f} min this run)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
