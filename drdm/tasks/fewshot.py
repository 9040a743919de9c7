"""Few-shot segmentation on real slices with converged U-Nets (Table 2 where it is strongest).

The protocol (:class:`FewShotProtocol`; chapter 4 states every departure from Section 4):

1. Subjects are split once, per vendor in turn: a fixed test set (``n_test``), validation
   subjects (``n_val``) and an order in which the rest get labelled; ``labelled=(1, 5)``
   takes the first 1 and 5 of that order (nested). No subject is in two of them.
2. Slices: :func:`drdm.tasks.augcache.prepare_slices` (centre crop, resize, normalisation).
3. Augmented copies (``n_aug`` per labelled slice: BigAug, its elastic part, DRDM's
   Algorithm 3 through each slice's :class:`drdm.grid.InputGrid`) come from :class:`~drdm.tasks.augcache.AugCache`,
   generated once per slice and reused by every label count, training seed and re-run.
4. Each cell ``(labelled subjects, method, seed)`` trains one U-Net (Eq. 17 BCE, Adam,
   the same step budget for every method), checks the validation subjects' Dice every
   ``eval_every`` steps, stops after ``patience`` checks without improvement and keeps the
   best weights; then scores the test subjects. The cell is written atomically to
   ``<work>/cells/<run key>/<cell>.json``; a re-run skips written cells, so a killed run
   loses at most the cell it was training.
5. :func:`summarise` averages each test subject's scores over seeds and reports per-structure Dice,
   sensitivity, precision, ASD, DRDM - BigAug and - none with bootstrap 95 % intervals over test **subjects**.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .augcache import AugCache, Slice, method_params, prepare_slices, slice_seed
from ..runner import pick_device
from ..stats import paired_difference, summary
from ._common import log, num_threads
from .segmentation import METHOD_NAMES as _SEG_NAMES, METHODS, STRUCTURES

__all__ = ["FewShotProtocol", "PROTOCOLS", "vendor_split", "run_fewshot", "summarise", "fewshot_markdown",
           "fewshot_verdict", "STRUCTURES", "METHODS"]

#: the few-shot tables name the baseline "none" (Table 2 writes N/A)
METHOD_LABELS = {**_SEG_NAMES, "none": "none"}


@dataclass(frozen=True)
class FewShotProtocol:
    """Sizes of the few-shot experiment (``cpu``: the recorded M&Ms run; ``ci``: seconds).

    Attributes:
        crop, size, percentiles: slice grid (:func:`~drdm.tasks.augcache.prepare_slices`).
        n_test, n_val: test and validation subjects (taken per vendor in turn).
        labelled: numbers of labelled training subjects (nested: the first k of one order).
        split_seed: the subject shuffle inside each vendor.
        seeds: training seeds (U-Net initialisation and batches).
        n_aug: augmented copies per labelled slice; aug_seed: their seed (not the training seed).
        drdm_levels, settings: Algorithm 3's ``T'`` values (copies split evenly) and the recovery
            setting (``"auto"``: the release's for the release's weights).
        features, norm: the U-Net (Section 4.1 blocks; batch normalisation is a departure).
        loss: ``"bce"`` (Eq. 17) or ``"bce+dice"``. batch, lr, lr_final: Adam with exponential decay
            from ``lr`` to ``lr * lr_final`` over ``max_steps``.
        max_steps, eval_every, patience: the step budget, the validation interval, and how many
            checks without improvement stop training (0: never early).
        threads: torch threads during the run (None: unchanged).
    """
    crop: int = 160
    size: int = 96
    percentiles: tuple = (1.0, 99.0)
    n_test: int = 10
    n_val: int = 2
    labelled: tuple = (1, 5)
    split_seed: int = 0
    seeds: tuple = (0, 1, 2)
    n_aug: int = 8
    aug_seed: int = 0
    drdm_levels: tuple = (20, 30)
    settings: str = "auto"
    features: tuple = (16, 32, 64, 128)
    norm: str | None = "batch"
    loss: str = "bce"
    batch: int = 8
    lr: float = 1e-3
    lr_final: float = 0.1
    max_steps: int = 1200
    eval_every: int = 100
    patience: int = 4
    threads: int | None = None

    @property
    def prep(self) -> dict:
        return {"crop": self.crop, "size": self.size, "percentiles": list(self.percentiles)}


PROTOCOLS = {
    "cpu": FewShotProtocol(),
    "ci": FewShotProtocol(crop=32, size=32, n_test=2, n_val=1, labelled=(1, 2), seeds=(0,), n_aug=2,
                          drdm_levels=(4,), features=(8, 16), max_steps=24, eval_every=8, patience=0, threads=1),
}


# ---------------------------------------------------------------- subjects

def vendor_split(slices: Sequence[Slice], n_test: int, n_val: int, seed: int = 0) -> dict[str, list[str]]:
    """``{"test", "val", "order"}`` subject ids, drawn per vendor in turn.

    Inside each vendor the sorted subjects are shuffled by ``numpy.random.default_rng(seed)``;
    the test set takes one subject from each vendor in turn until it has ``n_test``, then
    validation ``n_val``, and the labelled ``order`` is the rest, vendors alternating.
    """
    by_vendor: dict[str, list[str]] = {}
    for s in slices:
        if s.subject not in by_vendor.setdefault(s.vendor, []):
            by_vendor[s.vendor].append(s.subject)
    rng = np.random.default_rng(seed)
    queues = {v: [sorted(subs)[i] for i in rng.permutation(len(subs))] for v, subs in sorted(by_vendor.items())}
    total = sum(len(q) for q in queues.values())
    if n_test + n_val >= total:
        raise ValueError(f"{total} subjects cannot give {n_test} test, {n_val} validation and any training subject")

    def take(k):
        out = []
        while len(out) < k:
            for v in queues:
                if queues[v] and len(out) < k:
                    out.append(queues[v].pop(0))
        return out

    test, val = take(n_test), take(n_val)
    return {"test": test, "val": val, "order": take(total - n_test - n_val)}


# ---------------------------------------------------------------- augmented copies

def drdm_identity(checkpoint, device="cpu"):
    """``(net or None, checkpoint sha256, reason)`` for the DRDM checkpoint (path or shipped name),
    the network loaded on ``device``."""
    from ..checkpoint import load, resolve
    from ..outputs import sha256_file
    if checkpoint is None:
        from ..shared import absent_reason, official_checkpoint
        checkpoint = official_checkpoint()
        if checkpoint is None:
            return None, None, absent_reason("the release's 2-D checkpoint")
    path = resolve(checkpoint)
    net = load(path, device=device)
    if net.config.ndim != 2:
        return None, None, f"{path.name}: a {net.config.ndim}-D network; the slices are 2-D"
    return net, sha256_file(path), None


def settings_name(net, prot: FewShotProtocol) -> str:
    """The recovery setting DRDM copies are made with (``"auto"``: the network's default)."""
    from ..sampling import recovery_settings
    return recovery_settings(net, None if prot.settings == "auto" else prot.settings).name


def copy_params(method: str, prot: FewShotProtocol, *, net=None, checkpoint_sha256=None) -> dict:
    """The cache key's ``params`` for one method's copies under ``prot``."""
    settings = settings_name(net, prot) if method == "drdm" else None
    params = method_params(method, n_aug=prot.n_aug, seed=prot.aug_seed, prep=prot.prep, levels=prot.drdm_levels,
                           settings=settings, checkpoint_sha256=checkpoint_sha256)
    if method == "drdm":
        from ..sampling import path_for
        params["path"] = path_for(net, next(net.parameters()).device)     # copies of another path: other bits
    return params


def copies(cache: AugCache, method: str, items: Sequence[Slice], prot: FewShotProtocol, *, net=None,
           checkpoint_sha256=None, device="cpu", progress=True):
    """``[(images (n, 1, S, S), labels (n, 1, S, S))]`` per slice, from the cache or made now."""
    from .segmentation import make_augmented
    params = copy_params(method, prot, net=net, checkpoint_sha256=checkpoint_sha256)

    def make(s: Slice):
        img = torch.from_numpy(s.image)[None, None]
        lab = torch.from_numpy(s.label)[None, None]
        with torch.no_grad():
            return make_augmented(method, img, lab, prot.n_aug, slice_seed(prot.aug_seed, method, s), net=net,
                                  levels=prot.drdm_levels, device=device, settings=params.get("settings"))

    return cache.get(method, items, params, make, progress=progress)


# ---------------------------------------------------------------- scoring

def _stack(items: Sequence[Slice]) -> tuple[torch.Tensor, torch.Tensor]:
    imgs = torch.from_numpy(np.stack([s.image for s in items]))[:, None]
    labs = torch.from_numpy(np.stack([s.label for s in items]))[:, None]
    return imgs, labs


def subject_scores(pred: torch.Tensor, target: torch.Tensor, subjects: Sequence[str], *,
                   surfaces: bool = True) -> dict[str, dict[str, dict[str, float]]]:
    """``{subject: {structure: {dice, sens, prec[, asd]}}}`` from slice predictions ``(N, 1, S, S)``.

    Dice, sensitivity and precision pool the voxel counts of all of a subject's slices (both
    phases), as a volume score. ASD (pixels of the protocol grid) is the mean over the slices
    whose reference holds the structure; a prediction without it counts as the image diagonal.
    """
    from .. import metrics
    p_all, t_all = pred[:, 0].numpy(), target[:, 0].numpy()
    diag = float(np.hypot(*t_all.shape[1:]))
    out = {}
    for subj in dict.fromkeys(subjects):
        rows = [i for i, s in enumerate(subjects) if s == subj]
        p, t = p_all[rows], t_all[rows]
        out[subj] = {}
        for name, v in STRUCTURES:
            tp, fp, fn = metrics.confusion(p, t, v)
            row = {"dice": 2 * tp / max(2 * tp + fp + fn, 1), "sens": tp / max(tp + fn, 1),
                   "prec": tp / max(tp + fp, 1) if tp + fp else 0.0}
            if surfaces:
                d = [metrics.average_symmetric_surface_distance(p[k] == v, t[k] == v) if (p[k] == v).any() else diag
                     for k in range(len(rows)) if (t[k] == v).any()]
                row["asd"] = float(np.mean(np.minimum(d, diag))) if d else None
            out[subj][name] = row
    return out


def mean_dice(scores: dict) -> float:
    """Mean over subjects of the mean foreground Dice (the validation score)."""
    return float(np.mean([np.mean([r["dice"] for r in s.values()]) for s in scores.values()]))


# ---------------------------------------------------------------- cells

def _fingerprint(slices: Sequence[Slice]) -> str:
    h = hashlib.sha256()
    for s in slices:
        h.update(f"{s.name}|{s.vendor}".encode())            # the vendor steers the split
        h.update(np.ascontiguousarray(s.image).tobytes())
        h.update(np.ascontiguousarray(s.label).astype(np.uint8).tobytes())
    return h.hexdigest()[:16]


def run_key(prot: FewShotProtocol, slices: Sequence[Slice]) -> str:
    """Hash of what every cell depends on (not seeds, label counts or methods: cells are per those)."""
    doc = {k: v for k, v in dataclasses.asdict(prot).items() if k not in ("seeds", "labelled", "threads")}
    doc["data"] = _fingerprint(slices)
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _cell(n: int, method: str, seed: int, tag: str | None) -> str:
    return f"n{n}_{method}_s{seed}" + (f"_{tag[:12]}" if method == "drdm" and tag else "")


def drdm_tag(prot: FewShotProtocol, net, checkpoint_sha256: str | None) -> str | None:
    """What names a drdm cell: a hash of everything its copies depend on (checkpoint, levels,
    setting, grid map), so a cell trained on other copies is never read as this run's."""
    if net is None:
        return None
    params = copy_params("drdm", prot, net=net, checkpoint_sha256=checkpoint_sha256)
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:12]


def train_cell(prot: FewShotProtocol, train_pool, val, test, *, seed: int, device, progress=False) -> dict:
    """Train one U-Net on ``train_pool`` (images, labels), choose its stop on ``val``
    (images, labels, subjects) and score ``test`` (same form). Returns the cell's record."""
    from .unet import parameter_count, predict, train_segmenter
    t0 = time.perf_counter()
    vx, vy, vs = val

    def validate(model):
        return mean_dice(subject_scores(predict(model, vx), vy, vs, surfaces=False))

    model = train_segmenter(*train_pool, n_classes=4, steps=prot.max_steps, batch=prot.batch, lr=prot.lr,
                            lr_final=prot.lr_final, features=prot.features, norm=prot.norm, seed=seed, device=device,
                            loss=prot.loss, validate=validate, eval_every=prot.eval_every, patience=prot.patience,
                            progress=progress)
    tx, ty, ts = test
    hist = model.history
    return {"seed": seed, "n_train_images": int(train_pool[0].shape[0]), "parameters": parameter_count(model),
            "history": hist, "test": subject_scores(predict(model, tx), ty, ts),
            "wall_s": round(time.perf_counter() - t0, 2)}


def plateau_change(history: dict) -> float | None:
    """Validation Dice at the last check minus at the last check at or before 4/5 of the steps
    run (how much the last fifth of training moved it), in Dice fractions; ``None`` without
    such an earlier check."""
    steps, val = history["step"], history["val"]
    early = [i for i, s in enumerate(steps) if s <= 0.8 * history["steps_run"]]
    if not early or early[-1] == len(steps) - 1:
        return None
    return float(val[-1] - val[early[-1]])


def run_fewshot(records, protocol: str | FewShotProtocol = "cpu", *, work_dir="runs/fewshot",
                methods: Sequence[str] = METHODS, checkpoint=None, device: str = "auto", progress: bool = True,
                stop_after: int | None = None, command: str | None = None) -> dict:
    """Run (or resume) every cell and return :func:`summarise`'s result.

    Args:
        records: labelled :class:`drdm.data.Record` (3-D volumes are cut into slices).
        protocol: a :data:`PROTOCOLS` name or a :class:`FewShotProtocol`.
        work_dir: cells under ``cells/<run key>/``, augmented copies under ``aug/``.
        methods: subset of :data:`METHODS`; ``"drdm"`` needs ``checkpoint`` (path or shipped
            name; default the release's 2-D weights from ``../shared``), else it is skipped
            with the reason recorded.
        stop_after: stop after this many newly trained cells (tests simulate a killed run).
    """
    from ..faults import guard
    from ..files import atomic_write
    prot = PROTOCOLS[protocol] if isinstance(protocol, str) else protocol
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        raise ValueError(f"methods must be taken from {METHODS}, got {list(methods)}")
    work = Path(work_dir)
    dev = pick_device(device)
    with num_threads(prot.threads):
        slices = prepare_slices(records, crop=prot.crop, size=prot.size, percentiles=prot.percentiles)
        split = vendor_split(slices, prot.n_test, prot.n_val, prot.split_seed)
        if max(prot.labelled) > len(split["order"]):
            raise ValueError(f"{len(split['order'])} training subjects cannot give {max(prot.labelled)} labelled ones")
        by = {k: [s for s in slices if s.subject in set(v)] for k, v in split.items()}
        val = (*_stack(by["val"]), [s.subject for s in by["val"]])
        test = (*_stack(by["test"]), [s.subject for s in by["test"]])
        skipped, net, sha = {}, None, None
        if "drdm" in methods:
            net, sha, why = drdm_identity(checkpoint, dev)
            if net is None:
                skipped["drdm"] = why
                log.warning("fewshot: skipping drdm: %s", why)
        methods = [m for m in METHODS if m in methods and m not in skipped]
        key = run_key(prot, slices)
        cell_dir = work / "cells" / key
        cache = AugCache(work / "aug")
        tag = drdm_tag(prot, net, sha)
        new = 0
        for seed in prot.seeds:
            for n in sorted(prot.labelled, reverse=True):
                labelled = set(split["order"][:n])
                items = [s for s in slices if s.subject in labelled]
                for m in methods:
                    path = cell_dir / f"{_cell(n, m, seed, tag)}.json"
                    if path.is_file() or (stop_after is not None and new >= stop_after):
                        continue
                    with guard(f"few-shot cell {path.stem}"):      # full disk / no memory: one line, resumable
                        x, y = _stack(items)
                        if m != "none":
                            extra = copies(cache, m, items, prot, net=net, checkpoint_sha256=sha, device=dev,
                                           progress=progress)
                            x = torch.cat([x] + [c[0] for c in extra])
                            y = torch.cat([y] + [c[1] for c in extra])
                        rec = train_cell(prot, (x, y), val, test, seed=seed, device=dev, progress=progress)
                        rec.update(n_subjects=n, method=m, subjects=sorted(labelled), n_labelled_slices=len(items))
                        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(rec)))
                    new += 1
                    log.info("fewshot %s: best val Dice %.3f at step %s, test Dice %.3f (%.0f s)", path.stem,
                             rec["history"]["best_val"], rec["history"]["best_step"], mean_dice(rec["test"]),
                             rec["wall_s"])
        # generation time of every copy made so far for the labelled slices (recorded in each cache file)
        items = [s for s in slices if s.subject in set(split["order"][:max(prot.labelled)])]
        made = {m: cache.recorded(m, items, copy_params(m, prot, net=net, checkpoint_sha256=sha))
                for m in methods if m != "none"}
    # exactly this run's cells (a drdm cell of other copies has another name)
    wanted = [cell_dir / f"{_cell(n, m, seed, tag)}.json" for seed in prot.seeds for n in prot.labelled for m in methods]
    cells = [json.loads(p.read_text()) for p in wanted if p.is_file()]
    info = {"command": command, "protocol": dataclasses.asdict(prot), "run_key": key, "split": split,
            "n_slices": {k: len(v) for k, v in by.items()}, "skipped": skipped, "device": str(dev),
            "drdm_checkpoint_sha256": sha,
            "cache": {"bytes": cache.size_bytes(), "seconds": round(sum(v[1] for v in made.values()), 1),
                      "copies": {m: v[0] for m, v in made.items()}},
            "settings": None if net is None else settings_name(net, prot)}
    return summarise(cells, info)


# ---------------------------------------------------------------- summary

METRICS = ("dice", "sens", "prec", "asd")
COMPARISONS = (("drdm", "bigaug"), ("drdm", "none"), ("bigaug", "none"), ("elastic", "none"))


def _subject_table(runs: list[dict]) -> dict[str, dict[str, dict[str, float | None]]]:
    """Per test subject and structure, each metric averaged over the seeds' runs."""
    out = {}
    for subj in runs[0]["test"]:
        out[subj] = {}
        for name, _ in STRUCTURES:
            row = {}
            for k in METRICS:
                vals = [r["test"][subj][name].get(k) for r in runs]
                vals = [v for v in vals if v is not None]
                row[k] = float(np.mean(vals)) if vals else None
            out[subj][name] = row
    return out


def _average(row: dict, k: str) -> float | None:
    vals = [r[k] for r in row.values() if r.get(k) is not None]
    return float(np.mean(vals)) if vals else None


def summarise(cells: list[dict], info: dict) -> dict:
    """The recorded result: per label count and method, per-structure means over test subjects
    (seeds averaged per subject first), learning curves, convergence, paired differences with
    bootstrap 95 % intervals over subjects, the verdict and the Markdown table."""
    groups: dict[int, dict[str, list[dict]]] = {}
    for c in cells:
        groups.setdefault(c["n_subjects"], {}).setdefault(c["method"], []).append(c)
    results, diffs = {}, {}
    for n in sorted(groups, reverse=True):
        block = {}
        for m in [m for m in METHODS if m in groups[n]]:
            runs = sorted(groups[n][m], key=lambda c: c["seed"])
            table = _subject_table(runs)
            block[m] = {
                "seeds": [r["seed"] for r in runs],
                "structures": {name: {k: summary([table[s][name][k] for s in table if table[s][name][k] is not None])
                                      for k in METRICS} for name, _ in STRUCTURES},
                "average": {k: summary([a for a in (_average(table[s], k) for s in table) if a is not None])
                            for k in METRICS},
                "per_subject": {s: {"average_dice": _average(table[s], "dice"),
                                    **{name: table[s][name] for name, _ in STRUCTURES}} for s in table},
                "convergence": [{"seed": r["seed"], "best_step": r["history"]["best_step"],
                                 "steps_run": r["history"]["steps_run"], "best_val_dice": r["history"]["best_val"],
                                 "plateau_change": plateau_change(r["history"]), "wall_s": r["wall_s"]} for r in runs],
                "curves": [{"seed": r["seed"], **{k: r["history"][k] for k in ("step", "train_loss", "val")}}
                           for r in runs],
                "n_train_images": runs[0]["n_train_images"], "parameters": runs[0]["parameters"],
                "labelled_subjects": runs[0]["subjects"], "n_labelled_slices": runs[0]["n_labelled_slices"],
            }
        results[str(n)] = block
        diffs[str(n)] = {}
        for a, b in COMPARISONS:
            if a in block and b in block:
                subs = sorted(block[a]["per_subject"])
                diffs[str(n)][f"{a}_vs_{b}"] = {
                    "average": paired_difference([block[a]["per_subject"][s]["average_dice"] for s in subs],
                                                 [block[b]["per_subject"][s]["average_dice"] for s in subs]),
                    **{name: paired_difference([block[a]["per_subject"][s][name]["dice"] for s in subs],
                                               [block[b]["per_subject"][s][name]["dice"] for s in subs])
                       for name, _ in STRUCTURES}}
    wall = sum(c["wall_s"] for c in cells) + info.get("cache", {}).get("seconds", 0.0)
    result = {"task": "fewshot_segmentation", **info, "results": results, "dice_difference": diffs,
              "n_cells": len(cells), "wall_time_s": round(wall, 1)}
    result["verdict"] = fewshot_verdict(result)
    result["markdown"] = fewshot_markdown(result)
    return result


def _ci(d: dict | None) -> str:
    if d is None:
        return "–"
    return f"{100 * d['mean']:+.1f} [{100 * d['ci'][0]:+.1f}, {100 * d['ci'][1]:+.1f}]"


def fewshot_verdict(result: dict) -> list[str]:
    """One line per label count: DRDM against BigAug and against none, in words."""
    from ..stats import compare_sentence
    out = []
    for n, diffs in result["dice_difference"].items():
        for a, b in (("drdm", "bigaug"), ("drdm", "none")):
            d = diffs.get(f"{a}_vs_{b}")
            label = f"{n} labelled subject{'s' if n != '1' else ''}, {METHOD_LABELS[a]} minus {METHOD_LABELS[b]}"
            if d is None:
                skipped = result.get("skipped", {})
                why = skipped.get(a) or skipped.get(b) or "no finished cells for both methods"
                out.append(f"{label}: not compared ({why}).")
            else:
                out.append(compare_sentence(label, d["average"], None).replace("n = ", "test subjects n = "))
    return out


def fewshot_markdown(result: dict) -> str:
    """The recorded table: scores, intervals over subjects, convergence, verdict."""
    cols = [n for n, _ in STRUCTURES] + ["Average"]
    head = "| labelled | method | " + " | ".join(f"{c} Dice | {c} sens | {c} prec | {c} ASD" for c in cols) + " |"
    lines = ["Test subjects' scores (%; ASD in pixels of the protocol grid): mean over test subjects, "
             "each subject's score averaged over training seeds first", "", head, "|" + "---|" * (2 + 4 * len(cols))]
    conv = ["| labelled | method | seed | best step | steps run | best val Dice | val change, last fifth | "
            "training images | minutes |", "|---|---|---|---|---|---|---|---|---|"]
    for n, block in result["results"].items():
        for m, res in block.items():
            cells = []
            for c in cols:
                src = res["average"] if c == "Average" else res["structures"][c]
                cells += [f"{100 * src[k]['mean']:.1f}" if src[k]["mean"] is not None else "–"
                          for k in ("dice", "sens", "prec")]
                cells.append(f"{src['asd']['mean']:.2f}" if src["asd"]["mean"] is not None else "–")
            lines.append(f"| {n} | {METHOD_LABELS[m]} | " + " | ".join(cells) + " |")
            for cv in res["convergence"]:
                pc = cv["plateau_change"]
                conv.append(f"| {n} | {METHOD_LABELS[m]} | {cv['seed']} | {cv['best_step']} | {cv['steps_run']} | "
                            f"{100 * cv['best_val_dice']:.1f} | {'–' if pc is None else f'{100 * pc:+.1f}'} | "
                            f"{res['n_train_images']} | {cv['wall_s'] / 60:.1f} |")
    diff = ["| labelled | comparison | " + " | ".join(cols) + " |", "|" + "---|" * (2 + len(cols))]
    for n, rows in result["dice_difference"].items():
        for name, row in rows.items():
            a, b = name.split("_vs_")
            diff.append(f"| {n} | {METHOD_LABELS[a]} - {METHOD_LABELS[b]} | "
                        + " | ".join(_ci(row["average"] if c == "Average" else row[c])
                                     for c in cols) + " |")
    out = [*lines, "", "Dice differences (points) with 95 % bootstrap intervals over test subjects", "", *diff,
           "", "Convergence (validation subjects; the best step's weights are tested)", "", *conv,
           "", "Verdict:", "", *[f"- {v}" for v in result["verdict"]]]
    if result.get("skipped"):
        out += [""] + [f"Skipped {m}: {why}" for m, why in result["skipped"].items()]
    return "\n".join(out)
