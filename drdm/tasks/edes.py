"""Table 3 on cardiac MRI: ACDC end-diastole <-> end-systole registration, with synthetic pretraining.

The standard cardiac benchmark of the registration papers closest to DRDM: register each subject's ED
and ES frames (same slice, both directions) and score the warped expert labels. The protocol
(:class:`EDESProtocol`; chapter 5 states it before the numbers):

1. **Split**: the Table 2 split (:func:`drdm.data.stratified_split`, stratified by diagnosis, same
   seed): 20 test and 5 validation subjects; the other 45 train. No test subject is seen in any
   training, synthetic or real.
2. **Pairs** (:func:`cardiac_pairs`): every slice index whose ED and ES slices both hold all three
   structures; both frames cropped to one ``roi`` square centred on the box around the two frames'
   labels (the usual region-of-interest crop of cardiac registration; the same crop for both frames,
   so it tells nothing about the motion), resized to ``size`` (labels by one-hot resize and arg-max),
   intensities clipped to per-slice percentiles and scaled to [0, 1]. Directions ED->ES and ES->ED.
3. **Training** (a VoxelMorph, :mod:`drdm.tasks.voxelmorph`): unsupervised on the training subjects'
   real pairs, image MSE + ``lambda * |grad u|^2``, ``lambda`` chosen once on the validation subjects
   among ``lambdas`` (highest Dice among those folding at most ``max_fold`` per mille); synthetic
   pretraining by Eq. 20 on pairs of Algorithm 4 from the training subjects' frames: DRDM (the release's
   weights in the release setting through :class:`drdm.grid.InputGrid`) or MRBS; each synthetic-only
   and then fine-tuned as the real-only row. Every row for each of ``seeds``.
4. **Scores** per test pair: Dice, ASD and HD95 (pixels of the ``size`` grid) of LV, RV and myocardium
   of the moving labels warped by the predicted field, |J|<0 per mille, mean |u|; pairs averaged per
   subject first; intervals by :func:`drdm.stats.crossed_interval` over test subjects x seeds.

Every unit (lambda trial, pretraining, row x seed) is written atomically under
``<work>/cells/<run key>/`` with its weights, so a killed run resumes where it stopped.
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
import torch.nn.functional as F

from .. import spatial
from ..data.records import CARDIAC_STRUCTURES as STRUCTURES
from ..runner import pick_device
from ..seeds import sample_seed
from ._common import log, num_threads
from .edes_report import ROWS, magnitude, pair_scores, row_key, subject_means, summarise
from .registration import RegProfile, finetune_unsupervised, pretrain, register, synthetic_pairs
from .voxelmorph import VoxelMorph

__all__ = ["EDESProtocol", "EDES_PROTOCOLS", "REVISIONS", "CardiacPair", "cardiac_pairs", "run_edes", "choose_lambda",
           "synth_frames"]



@dataclass(frozen=True)
class EDESProtocol:
    """Sizes of the ED<->ES registration experiment (``cpu``: the recorded run; ``ci``: seconds).

    Attributes:
        n_test, n_val, split_seed: subjects per group (:func:`drdm.data.stratified_split`).
        lambdas, max_fold: smoothness weights tried on the validation subjects and the folding bound
            (per mille) a choice must meet on them: half the baseline's bar on the test subjects
            (:data:`~drdm.tasks.edes_report.BASELINE_FOLD`, 10), because five validation subjects
            understate the test folding (revision 2, :data:`REVISIONS`).
        revision: the protocol's revision (:data:`REVISIONS` says what changed and why).
        training: the VoxelMorph, its optimisation and the synthesis
            (:class:`~drdm.tasks.registration.RegProfile`: ``finetune_steps`` on real pairs,
            ``pretrain_steps`` of Eq. 20, ``batch``, ``lr``, ``grad_weight``; ``n_synth`` synthetic pairs
            per training frame, MRBS ``mrbs_levels`` (fractions of the side) and ``mrbs_magnitudes``
            (fractions of each spacing), Algorithm 4's ``drdm_pairs`` ``(T'_aug, T'_syn)`` cycled over
            the copies; ``enc``, ``dec``, ``extra`` widths).
        synth_seed: the synthetic pairs' run seed (one set per method, shared by the training seeds).
        synth_frames: training frames the synthetic pairs are made from (``None``: all; drawn once by
            ``synth_seed``, the same frames for DRDM and MRBS; DRDM's Algorithm 4 costs about 10 s a
            pair at 256^2 on 2 cores, so the recorded run synthesises from 128 of the 588 frames).
        seeds: training seeds. threads: torch threads.
        roi, size, percentiles: the crop around the heart (pixels of the stored grid), the grid it is
            resized to, and the intensity clipping.
    """
    n_test: int = 4
    n_val: int = 1
    split_seed: int = 0
    lambdas: tuple = (0.01, 0.1, 1.0)
    max_fold: float = 5.0
    training: RegProfile = RegProfile(size=96, n_synth=1, drdm_pairs=((30, 30), (50, 50)), pretrain_steps=1500,
                                      finetune_steps=1500, threads=None)
    synth_seed: int = 0
    synth_frames: int | None = 128
    seeds: tuple = (0, 1, 2)
    threads: int | None = None
    roi: int = 112
    size: int = 96
    percentiles: tuple = (1.0, 99.0)
    revision: int = 2


#: what each revision of the ``cpu`` protocol changed, and why (the record and chapter 5 quote it)
REVISIONS = {
    1: "lambda chosen on the validation subjects with folding <= 10 per mille, the test bar itself.",
    2: "Run 1 chose lambda = 0.01 (validation: 84.5 % Dice, 7.6 per mille); on the test subjects its "
       "real-pairs VoxelMorph gained +20.1 Dice points but folded 11.8 per mille, above the baseline bar of 10, "
       "so by the rule no synthesis comparison could be read and the run was stopped there (its record: "
       "results/cpu/registration_acdc_run1.*). Revision 2 asks the validation choice to fold at most half "
       "the bar (5 per mille). Both synthesis arms share the fine-tuning lambda, so the change favours "
       "neither; the lambda trials themselves are the same trainings and are reused.",
}


EDES_PROTOCOLS = {
    "cpu": EDESProtocol(),
    "ci": EDESProtocol(roi=40, size=32, n_test=1, n_val=1, lambdas=(0.01, 1.0), seeds=(0,), threads=1,
                       synth_frames=None,
                       training=RegProfile(size=32, n_synth=1, drdm_pairs=((4, 4),), pretrain_steps=20, finetune_steps=20,
                                           batch=4, enc=(8, 16), dec=(16, 16), extra=(8,))),
}


# ---------------------------------------------------------------- pairs

@dataclass(frozen=True, eq=False)
class CardiacPair:
    """One slice index of one subject in both frames, on the protocol grid.

    ``ed``/``es``: images ``(size, size)`` float32 in [0, 1]; ``ed_label``/``es_label``: int64 maps.
    """
    subject: str
    group: str
    index: int
    ed: np.ndarray
    es: np.ndarray
    ed_label: np.ndarray
    es_label: np.ndarray


def _roi(a: np.ndarray, centre, roi: int, fill) -> np.ndarray:
    """The ``roi`` square of ``a`` centred on ``centre`` (padded with ``fill`` outside the image)."""
    out = np.full((roi, roi), fill, dtype=a.dtype)
    lo = [int(round(c - roi / 2)) for c in centre]
    src = tuple(slice(max(0, l), min(n, l + roi)) for l, n in zip(lo, a.shape))
    dst = tuple(slice(s.start - l, s.stop - l) for s, l in zip(src, lo))
    out[dst] = a[src]
    return out


def _resample(img: np.ndarray, lab: np.ndarray, size: int, percentiles) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = np.percentile(img, percentiles)
    img = (np.clip(img, lo, hi) - lo) / max(float(hi - lo), 1e-6)
    x = F.interpolate(torch.from_numpy(img.astype(np.float32))[None, None], size=(size, size), mode="bilinear",
                      align_corners=False, antialias=True)
    onehot = F.one_hot(torch.from_numpy(lab.astype(np.int64)), 4).movedim(-1, 0)[None].float()
    onehot = F.interpolate(onehot, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x[0, 0].clamp(0, 1).numpy(), onehot[0].argmax(0).numpy().astype(np.int64)


def cardiac_pairs(records, *, roi: int = 112, size: int = 80, percentiles=(1.0, 99.0)) -> list[CardiacPair]:
    """ED/ES slice pairs of the same subject and slice index whose two frames hold all three structures.

    ``records``: :class:`drdm.data.Record` volumes ``(H, W, slices)`` with ``phase`` ``"ED"``/``"ES"``
    (e.g. :func:`drdm.data.load_acdc_h5`); one ED and one ES record per subject. A subject with one frame
    only is refused: a pair never crosses subjects or slices.
    """
    frames: dict[str, dict[str, object]] = {}
    for r in records:
        if r.phase not in ("ED", "ES"):
            raise ValueError(f"subject {r.subject}: phase {r.phase!r}; ED/ES registration needs ED and ES frames")
        if r.label is None:
            raise ValueError(f"subject {r.subject} {r.phase}: no label map")
        if r.phase in frames.setdefault(r.subject, {}):
            raise ValueError(f"subject {r.subject}: two {r.phase} frames")
        frames[r.subject][r.phase] = r
    out = []
    for subject in sorted(frames):
        f = frames[subject]
        if set(f) != {"ED", "ES"}:
            raise ValueError(f"subject {subject}: only {sorted(f)}; both ED and ES are needed")
        ed, es = f["ED"], f["ES"]
        if ed.image.shape != es.image.shape:
            raise ValueError(f"subject {subject}: ED {ed.image.shape} and ES {es.image.shape} differ in shape")
        vol = ed.image.ndim == 3
        for k in range(ed.image.shape[-1] if vol else 1):
            take = (lambda a: a[..., k]) if vol else (lambda a: a)
            a, b = np.asarray(take(ed.label)), np.asarray(take(es.label))
            if not all((a == v).any() and (b == v).any() for _, v in STRUCTURES):
                continue
            fg = np.argwhere((a > 0) | (b > 0))
            centre = (fg.min(0) + fg.max(0)) / 2
            ed_img, ed_lab = _resample(_roi(np.asarray(take(ed.image), np.float32), centre, roi, 0.0),
                                       _roi(a, centre, roi, 0), size, percentiles)
            es_img, es_lab = _resample(_roi(np.asarray(take(es.image), np.float32), centre, roi, 0.0),
                                       _roi(b, centre, roi, 0), size, percentiles)
            group = str(ed.meta.get("group") or "?")
            out.append(CardiacPair(subject, group, k, ed_img, es_img, ed_lab, es_lab))
    return out


def _tensors(pairs: Sequence[CardiacPair]):
    """Both directions: ``(moving, fixed, moving labels, fixed labels, subjects)``, ED->ES first."""
    ed = torch.from_numpy(np.stack([p.ed for p in pairs]))[:, None]
    es = torch.from_numpy(np.stack([p.es for p in pairs]))[:, None]
    edl = torch.from_numpy(np.stack([p.ed_label for p in pairs]))[:, None]
    esl = torch.from_numpy(np.stack([p.es_label for p in pairs]))[:, None]
    subjects = [p.subject for p in pairs] * 2
    return torch.cat([ed, es]), torch.cat([es, ed]), torch.cat([edl, esl]), torch.cat([esl, edl]), subjects


# ---------------------------------------------------------------- the run

def _model(prot: EDESProtocol, seed: int, device) -> VoxelMorph:
    return VoxelMorph(2, 1, prot.training.enc, prot.training.dec, prot.training.extra,
                      generator=torch.Generator().manual_seed(sample_seed(seed, "registration-init"))).to(device)


def _key(prot: EDESProtocol, pairs: Sequence[CardiacPair], checkpoint_sha256) -> str:
    h = hashlib.sha256(json.dumps(dataclasses.asdict(prot) | {"seeds": None, "threads": None,
                                                               "drdm": checkpoint_sha256},
                                  sort_keys=True, default=str).encode())
    for p in pairs:
        h.update(f"{p.subject}|{p.index}|{p.group}".encode())
        for a in (p.ed, p.es, p.ed_label, p.es_label):
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:12]


def run_edes(records, protocol: str | EDESProtocol = "cpu", *, work_dir="runs/edes", checkpoint=None,
             rows: Sequence[tuple[str, bool]] = ROWS, device: str = "auto", stop_after: int | None = None,
             command: str | None = None, figure=None) -> dict:
    """Run (or resume) the ED<->ES experiment; returns the record (:func:`summarise`).

    ``checkpoint``: the DRDM weights for the ``drdm`` rows (default the release's 2-D weights from
    ``../shared``; absent: those rows are skipped with the reason). ``stop_after``: stop after this
    many newly trained units (``0``: report only). ``figure``: a PNG path for one test pair, moving /
    fixed / warped by each fine-tuned row's seed-0 model with label contours and the field's grid.
    """
    from ..data import stratified_split
    from ..faults import guard
    from ..files import atomic_write
    from .augcache import drdm_identity
    prot = EDES_PROTOCOLS[protocol] if isinstance(protocol, str) else protocol
    dev, t0 = pick_device(device), time.perf_counter()
    with num_threads(prot.threads):
        pairs = cardiac_pairs(records, roi=prot.roi, size=prot.size, percentiles=prot.percentiles)
        groups = {p.subject: p.group for p in pairs}
        split = stratified_split(groups, n_test=prot.n_test, n_val=prot.n_val, draws=0, per_draw=0, extra=0,
                                 seed=prot.split_seed)
        part = {k: [p for p in pairs if p.subject in set(split[k])] for k in ("test", "val", "pool")}
        train, val, test = (_tensors(part[k]) for k in ("pool", "val", "test"))
        skipped, net, sha = {}, None, None
        if any(s == "drdm" for s, _ in rows):
            net, sha, why = drdm_identity(checkpoint, dev)
            if net is None:
                skipped["drdm"] = why
        cells = Path(work_dir) / "cells" / _key(prot, pairs, sha)
        new, compute = [0], {}

        def unit(name: str, make):
            """A unit's JSON record (and weights), made now unless written before."""
            path = cells / f"{name}.json"
            if not path.is_file():
                if stop_after is not None and new[0] >= stop_after:
                    return None
                with guard(f"registration unit {name}"):
                    t = time.perf_counter()
                    rec, state = make()
                    rec["wall_s"] = round(time.perf_counter() - t, 2)
                    if state is not None:
                        atomic_write(path.with_suffix(".pt"), lambda tmp: torch.save(state, tmp))
                    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(rec)))
                new[0] += 1
                log.info("edes %s (%.0f s)", name, rec["wall_s"])
            rec = json.loads(path.read_text())
            compute[name] = rec.get("wall_s", 0.0)
            return rec

        def real_training(model, lam, seed):
            idx = list(range(train[0].shape[0]))
            return finetune_unsupervised(model, torch.cat([train[0], train[1]]), train[4] * 2, steps=prot.training.finetune_steps,
                                         batch=prot.training.batch, lr=prot.training.lr, smooth_weight=lam, seed=seed,
                                         pairs=[(i, i + len(idx)) for i in idx])

        def scored(model, data):
            ddf = register(model, data[0], data[1])
            sc = pair_scores(ddf, data[2], data[3])
            return subject_means(sc, data[4]), ddf

        # the smoothness weight, once, on the validation subjects
        trials = {}
        for lam in prot.lambdas:
            def make(lam=lam):
                model = real_training(_model(prot, prot.seeds[0], dev), lam, prot.seeds[0])
                subj, _ = scored(model, val)
                return {"lambda": lam, "val": subj}, model.state_dict()
            rec = unit(f"lambda_{lam:g}", make)
            if rec is not None:
                trials[lam] = rec
        lam = choose_lambda(trials, prot.max_fold) if len(trials) == len(prot.lambdas) else None

        synth_sets = {}
        results = {}
        for synth, ft in rows:
            if synth in skipped or (ft and lam is None):
                continue
            runs = []
            for seed in (prot.seeds if (synth, ft) != ("none", False) else prot.seeds[:1]):
                def make(synth=synth, ft=ft, seed=seed):
                    if (synth, ft) == ("none", False):
                        subj, ddf = scored(None, test)
                        return {"test": subj, "motion": None}, None
                    model = _model(prot, seed, dev)
                    trial = cells / f"lambda_{lam:g}.pt" if lam is not None else None
                    if (synth, ft, seed) == ("none", True, prot.seeds[0]) and trial.is_file():
                        # the same training as the chosen lambda's trial (same seed, data, steps): reuse it
                        model.load_state_dict(torch.load(trial, weights_only=True, map_location=dev))
                        subj, ddf = scored(model, test)
                        return {"test": subj, "lambda": lam, "motion": magnitude(ddf)}, model.state_dict()
                    if synth != "none":
                        pre = cells / f"pretrain_{synth}_s{seed}.pt"
                        if not pre.is_file():
                            if synth not in synth_sets:
                                synth_sets[synth] = _synthetic_set(cells / f"synthetic_{synth}.pt", lambda: synthetic_pairs(
                                    synth, train[0][synth_frames(prot, train[0].shape[0])],
                                    prot.training.n_synth, sample_seed(prot.synth_seed, "synthetic-pairs", synth),
                                    prot.training, net=net, device=dev))
                            m, f, d = synth_sets[synth]
                            mags = cells / f"synthetic_{synth}.json"
                            if not mags.is_file():
                                atomic_write(mags, lambda tmp: Path(tmp).write_text(json.dumps(magnitude(d))))
                            pretrain(model, m, f, d, steps=prot.training.pretrain_steps, batch=prot.training.batch,
                                     lr=prot.training.lr, grad_weight=prot.training.grad_weight, seed=seed)
                            atomic_write(pre, lambda tmp: torch.save(model.state_dict(), tmp))
                        model.load_state_dict(torch.load(pre, weights_only=True, map_location=dev))
                    if ft:
                        real_training(model, lam, seed)
                    subj, ddf = scored(model, test)
                    return {"test": subj, "lambda": lam if ft else None, "motion": magnitude(ddf)}, model.state_dict()
                rec = unit(f"{row_key(synth, ft).replace('/', '_')}_s{seed}", make)
                if rec is not None:
                    rec["seed"] = seed
                    runs.append(rec)
            if runs:
                results[row_key(synth, ft)] = runs
        magnitudes = {p.stem.split("_", 1)[1]: json.loads(p.read_text()) for p in sorted(cells.glob("synthetic_*.json"))}
        if figure is not None:
            example_figure(figure, test, cells, prot, dev)
    info = {"command": command, "protocol": dataclasses.asdict(prot), "split": {k: split[k] for k in ("test", "val", "pool")},
            "n_pairs": {k: len(v) for k, v in part.items()}, "skipped": skipped, "device": str(dev),
            "drdm_checkpoint_sha256": sha, "lambda": lam,
            "revision": prot.revision, "revisions": {str(k): v for k, v in REVISIONS.items() if k <= prot.revision},
            "lambda_trials": {f"{k:g}": _val_summary(v) for k, v in trials.items()},
            "synthetic_magnitudes": magnitudes, "session_wall_s": round(time.perf_counter() - t0, 1),
            "compute_wall_s": round(sum(compute.values()), 1)}
    return summarise(results, info)


def _synthetic_set(path: Path, make):
    """A method's synthetic pairs ``(moving, fixed, ddf)``, made once and kept beside the cells (DRDM's
    take half an hour: a run killed during the pretrainings must not make them again)."""
    from ..files import atomic_write
    if path.is_file():
        return tuple(torch.load(path, weights_only=True))
    out = make()
    atomic_write(path, lambda tmp: torch.save(list(out), tmp))
    return out


def synth_frames(prot: EDESProtocol, n: int) -> torch.Tensor:
    """Indices (sorted) of the training frames the synthetic pairs are made from: ``prot.synth_frames``
    of the ``n`` (ED frames, then ES), drawn once from ``prot.synth_seed``; all when ``None`` or more."""
    if prot.synth_frames is None or prot.synth_frames >= n:
        return torch.arange(n)
    g = torch.Generator().manual_seed(sample_seed(prot.synth_seed, "synthetic-pairs", "frames"))
    return torch.randperm(n, generator=g)[:prot.synth_frames].sort().values


def choose_lambda(trials: dict[float, dict], max_fold: float) -> float:
    """The smoothness weight with the highest validation Dice among those folding at most ``max_fold``
    per mille (the least folding one when none does).

    >>> choose_lambda({0.01: {"val": {"a": {"dice": .8, "negj": 30}}}, 1.0: {"val": {"a": {"dice": .7, "negj": 2}}}}, 10)
    1.0
    """
    rows = {lam: _val_summary(t) for lam, t in trials.items()}
    ok = [lam for lam, r in rows.items() if r["negj"] <= max_fold]
    if not ok:
        return min(rows, key=lambda k: rows[k]["negj"])
    return max(ok, key=lambda k: rows[k]["dice"])


def _val_summary(trial: dict) -> dict:
    subj = trial["val"]
    return {"dice": float(np.mean([s["dice"] for s in subj.values()])),
            "negj": float(np.mean([s["negj"] or 0.0 for s in subj.values()]))}


def example_figure(path, test, cells: Path, prot: EDESProtocol, device="cpu") -> bool:
    """One test pair (ED->ES, the middle one): moving, fixed, and the moving image warped by each
    fine-tuned row's seed-0 model, labels outlined, the predicted field's grid drawn; ``False`` when
    no such model is finished."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ..files import atomic_write
    from ..viz import outline_labels, plot_grid, show_image
    models = [(name, cells / f"{name.replace('/', '_')}_s{prot.seeds[0]}.pt")
              for name in ("none/real", "mrbs/real", "drdm/real")]
    models = [(n, w) for n, w in models if w.is_file()]
    if not models:
        return False
    i = (len(test[4]) // 2) // 2                          # ED->ES pairs come first
    mv, fx, mvl, fxl = (t[i:i + 1] for t in test[:4])
    fig, axes = plt.subplots(1, 2 + len(models), figsize=(3 * (2 + len(models)), 3.2))

    def panel(ax, img, lab, title, ddf=None):
        show_image(ax, img, title)
        outline_labels(ax, lab)
        if ddf is not None:
            plot_grid(ax, ddf, step=6, color="y", lw=0.4)

    panel(axes[0], mv, mvl, f"moving (ED), {test[4][i]}")
    panel(axes[1], fx, fxl, "fixed (ES)")
    for ax, (name, w) in zip(axes[2:], models):
        model = _model(prot, prot.seeds[0], device)
        model.load_state_dict(torch.load(w, weights_only=True, map_location=device))
        ddf = register(model, mv, fx)
        warped = spatial.warp(mv, ddf)
        panel(ax, warped, spatial.warp(mvl.float(), ddf, mode="label"), name, ddf)
    fig.tight_layout()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)
    return True


def main(argv=None) -> int:
    """``python -m drdm.tasks.edes``: the recorded ED<->ES run (``make edes``), resumable."""
    import argparse
    import shlex
    import sys
    from ..faults import EXIT_STOPPED, RunStopped
    from ..provenance import save_results
    from ..shared import absent_reason, acdc_slices_dir
    ap = argparse.ArgumentParser(description="ACDC ED<->ES registration with VoxelMorph, DRDM and MRBS synthetic "
                                             "pretraining (Table 3 on cardiac MRI), resumable")
    ap.add_argument("--data-dir", help="ACDC in either SSL4MIS h5 form (default ../shared/data/acdc_slices)")
    ap.add_argument("--protocol", choices=sorted(EDES_PROTOCOLS), default="cpu")
    ap.add_argument("--checkpoint", help="DRDM weights (default: the release's 2-D weights from ../shared)")
    ap.add_argument("--work", default="runs/edes", help="finished units and their weights (resume)")
    ap.add_argument("--out", default="results", help="results root; files go to OUT/<protocol>/")
    ap.add_argument("--report-only", action="store_true", help="train nothing: record the finished units")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    from ..data import load_acdc_h5
    data = Path(args.data_dir) if args.data_dir else acdc_slices_dir()
    if data is None:
        print("skipped: " + absent_reason("the ACDC slices"))
        return 0
    import logging
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    command = "python -m drdm.tasks.edes " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
                                                      if a != "--report-only")
    try:
        figure = Path(args.out) / args.protocol / "registration_acdc_example.png"
        result = run_edes(load_acdc_h5(data), args.protocol, work_dir=args.work, checkpoint=args.checkpoint,
                          device=args.device, stop_after=0 if args.report_only else None, command=command.strip(),
                          figure=figure)
    except RunStopped as e:
        print(f"drdm: {e}", file=sys.stderr)
        return EXIT_STOPPED
    path = save_results("registration_acdc", result, profile=args.protocol, seed=result["protocol"]["synth_seed"],
                        device=result["device"], wall_time_s=result["compute_wall_s"], out_dir=args.out,
                        data="ACDC (h5), ED<->ES")
    path.with_suffix(".md").write_text(result["markdown"] + "\n")
    print(result["markdown"])
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
