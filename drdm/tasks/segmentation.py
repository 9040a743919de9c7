"""Few-shot segmentation with augmentation (Section 4, Table 2).

A vanilla U-Net (Section 4.1: two 3x3 convolutions + ReLU per block, max-pooling
and up-sampling with stride 2, sigmoid outputs) is trained with the BCE of Eq. 17
on one-hot labels (one sigmoid channel per label value, background included),
Adam at 1e-3 with an exponential learning-rate decay, on the labelled training
images plus ``n_aug`` augmented copies of each (``"none"``: the originals only;
``"bigaug"``: :class:`drdm.baselines.BigAug`; ``"elastic"``: its elastic part;
``"drdm"``: Algorithm 3, :func:`drdm.sampling.augment`). Every method gets the
same number of optimisation steps.

Protocol (:func:`run_segmentation`):

1. Subject-level split into a training pool and a test set
   (:func:`drdm.data.subject_split`; a subject never appears in both).
2. For each ratio ``r``, the first ``max(1, round(r n))`` training subjects (one
   seeded order, so the subsets are nested) are labelled; all their slices train.
3. Each test image is scored per structure (RV 1, myocardium 2, LV 3): Dice,
   sensitivity, precision, ASD and HD in voxels (:mod:`drdm.metrics`; an empty
   prediction's infinite distance counts as the image diagonal).
4. With several seeds, each test image's metrics are averaged over the seeds;
   tables give mean (and std) over test images; paired Wilcoxon signed-rank
   tests compare each method with ``"none"`` and DRDM with BigAug over test images.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .. import metrics
from ..data.records import CARDIAC_STRUCTURES as STRUCTURES
from ..phantoms import phantom_records
from ..seeds import sample_seed
from ..stats import compare_sentence, finite, fmt, fmt_p, paired_difference, summary, wilcoxon
from ._common import Experiment, fit_size, log, num_threads, split_subjects, to_tensors
from .augcache import make_copies
from .unet import UNet, bce_loss, predict, train_segmenter

__all__ = ["UNet", "SegProfile", "PROFILES", "METHODS", "STRUCTURES", "bce_loss", "train_segmenter",
           "predict", "run_segmentation", "table2_markdown", "verdict"]

METHODS = ("none", "bigaug", "elastic", "drdm")
METHOD_NAMES = {"none": "N/A", "bigaug": "BigAug", "elastic": "Elastic", "drdm": "DRDM"}


# ---------------------------------------------------------------- profiles

@dataclass(frozen=True)
class SegProfile:
    """Sizes of one run (``ci``: seconds on 2 CPU cores; ``cpu``: minutes; ``gpu``: paper scale).

    Attributes:
        size: image side (phantoms are drawn at it; records are preprocessed to it).
        n_subjects, phases: phantom subjects and cardiac phases per subject.
        test_fraction: share of subjects in the test set (paper: 100 / 100).
        split_seed: the subject split and the order in which subjects get labelled.
        ratios: labelled fractions of the training subjects (paper: 5, 20, 50, 100 %).
        n_aug: augmented copies per labelled image (paper: 32).
        drdm_levels: ``T'`` values for Algorithm 3 (copies spread evenly over them).
        steps, batch, lr, lr_final: optimisation (paper: Adam 1e-3, exponential decay, batch 64).
        features, norm: the U-Net; ``ci``/``cpu`` add batch normalisation so that a few hundred
            steps converge (the paper's U-Net, used by ``gpu``, has none). seeds: default training seeds.
        threads: torch intra-op threads during the run (``None``: unchanged). ``ci`` uses 1: its
            tensors are tiny, and 2 threads on a busy 2-core machine ran 9x slower.
    """
    size: int = 32
    n_subjects: int = 8
    phases: tuple = ("ED", "ES")
    test_fraction: float = 0.5
    split_seed: int = 0
    ratios: tuple = (0.5, 1.0)
    n_aug: int = 2
    drdm_levels: tuple = (20,)
    steps: int = 100
    batch: int = 8
    lr: float = 1e-3
    lr_final: float = 0.1
    features: tuple = (16, 32, 64)
    norm: str | None = "batch"
    seeds: tuple = (0,)
    threads: int | None = 1


PROFILES = {
    "ci": SegProfile(),
    "cpu": SegProfile(size=64, n_subjects=40, ratios=(0.05, 0.2, 0.5, 1.0), n_aug=8, drdm_levels=(20, 40),
                      steps=600, batch=16, features=(16, 32, 64, 128), threads=None),
    # the paper's plain U-Net (no normalisation) at paper scale
    "gpu": SegProfile(size=128, n_subjects=200, ratios=(0.05, 0.2, 0.5, 1.0), n_aug=32,
                      drdm_levels=(30, 40, 50, 60), steps=6000, batch=64, features=(32, 64, 128, 256, 512),
                      norm=None, seeds=(0, 1, 2), threads=None),
}


# ---------------------------------------------------------------- augmentation

# ---------------------------------------------------------------- evaluation

def _score(pred: torch.Tensor, target: torch.Tensor) -> dict[str, np.ndarray]:
    """Per test image and structure: ``{metric: (N, 3)}`` in :data:`STRUCTURES` order."""
    diag = math.sqrt(sum(s ** 2 for s in target.shape[2:]))
    out = {k: np.zeros((pred.shape[0], len(STRUCTURES))) for k in ("dice", "sens", "prec", "asd", "hd")}
    for i in range(pred.shape[0]):
        rows = metrics.label_metrics(pred[i, 0].numpy(), target[i, 0].numpy(), [v for _, v in STRUCTURES])
        for j, (_, v) in enumerate(STRUCTURES):
            for k in out:
                out[k][i, j] = rows[v][k]
    out["asd"] = finite(out["asd"], diag)
    out["hd"] = finite(out["hd"], diag)
    return out


def _aggregate(per_image: dict[str, np.ndarray]) -> dict:
    res = {"structures": {}, "average": {}}
    for j, (name, _) in enumerate(STRUCTURES):
        res["structures"][name] = {k: summary(v[:, j]) for k, v in per_image.items()}
    res["average"] = {k: summary(v.mean(1)) for k, v in per_image.items()}
    res["per_image"] = {k: {name: v[:, j].tolist() for j, (name, _) in enumerate(STRUCTURES)}
                        for k, v in per_image.items() if k in ("dice", "asd")}
    return res


# ---------------------------------------------------------------- the experiment

def _records(data, prof: SegProfile):
    from ..data import slices
    if isinstance(data, str):
        if data != "phantom":
            raise ValueError(f"data must be 'phantom' or a list of drdm.data.Record, got {data!r}")
        return phantom_records("cardiac", prof.n_subjects, prof.size, seed=1000, phases=prof.phases)
    records = slices(list(data))                          # 3-D volumes -> labelled 2-D slices
    bad = [r for r in records if r.label is not None and int(np.asarray(r.label).max()) > 3]
    if bad:
        raise ValueError(f"labels must follow ACDC (0 bg, 1 RV, 2 myo, 3 LV); {bad[0]} has larger values")
    return fit_size(records, prof.size)


def run_segmentation(profile: str = "ci", data="phantom", ratios: Sequence[float] | None = None,
                     methods: Sequence[str] = METHODS, seeds: Sequence[int] | None = None,
                     drdm_checkpoint=None, out_dir=None, device: str = "auto", **overrides) -> dict:
    """Table 2 on phantoms or on records.

    Args:
        profile: ``"ci"`` | ``"cpu"`` | ``"gpu"`` (:data:`PROFILES`); ``overrides`` replace
            any :class:`SegProfile` field (e.g. ``steps=200``).
        data: ``"phantom"`` (2-D cardiac phantoms, ACDC labels) or a list of
            :class:`drdm.data.Record` with ACDC labels (3-D volumes are cut into slices;
            everything is preprocessed to ``size``).
        ratios: labelled fractions of the training subjects (default: the profile's).
        methods: subset of :data:`METHODS`. ``"drdm"`` needs a 2-D checkpoint: the
            argument (a path or a shipped name), else the shipped ``phantom2d`` model
            (:func:`drdm.checkpoint.resolve`); without one it is skipped and the reason is
            logged and stored under ``"skipped"``.
        seeds: training seeds (network init, batches, augmentation draws).
        out_dir: if given, ``<out_dir>/<profile>/segmentation.json`` (+ provenance) and ``.md``.

    Returns:
        A JSON-serialisable dict: ``config``, ``split`` (subject ids), ``skipped``,
        ``results[ratio_key][method]`` (per structure and average: mean/std/n of
        dice, sens, prec, asd, hd; per-image dice and asd), ``wilcoxon[ratio_key]``,
        ``markdown`` (Table 2 plus ASD/HD and p-value tables), ``wall_time_s``.
    """
    exp = Experiment("segmentation", PROFILES, profile, overrides, seeds, methods, METHODS, device)
    prof, seeds, methods, dev = exp.prof, exp.seeds, exp.methods, exp.device
    ratios = tuple(prof.ratios if ratios is None else ratios)
    if not ratios or not all(0 < r <= 1 for r in ratios):
        raise ValueError(f"ratios must lie in (0, 1], got {ratios}")
    with num_threads(prof.threads):
        records = _records(data, prof)
        train, test = split_subjects(records, prof.test_fraction, prof.split_seed)
        train_subjects = sorted({r.subject for r in train})
        order = [train_subjects[i] for i in np.random.default_rng(prof.split_seed).permutation(len(train_subjects))]
        test_imgs, test_labs = to_tensors(test)
        train_imgs, train_labs = to_tensors(train)
        net = exp.load_drdm(drdm_checkpoint, 2, prof.drdm_levels)
        run_methods = [m for m in methods if m not in exp.skipped]

        cache: dict = {}                                  # (method, seed, image index) -> copies

        def pool(method, seed, idx):
            imgs, labs = [train_imgs[idx]], [train_labs[idx]]
            if method != "none":
                for i in idx.tolist():
                    key = (method, seed, i)
                    if key not in cache:
                        cache[key] = make_copies(method, train_imgs[i:i + 1], train_labs[i:i + 1], prof.n_aug,
                                                 sample_seed(seed, "copies", method, i),
                                                 net=net, levels=prof.drdm_levels, device=dev)
                    imgs.append(cache[key][0])
                    labs.append(cache[key][1])
            return torch.cat(imgs), torch.cat(labs)

        results, tests, diffs = {}, {}, {}
        n_train = len(order)
        for r in ratios:
            k = max(1, int(round(r * n_train)))
            chosen = set(order[:k])
            idx = torch.tensor([i for i, rec in enumerate(train) if rec.subject in chosen])
            key = f"{k}/{round(100 * r)}%"
            per_method = {}
            for m in run_methods:
                runs = []
                for seed in seeds:
                    x, y = pool(m, seed, idx)
                    model = train_segmenter(x, y, n_classes=4, steps=prof.steps, batch=prof.batch, lr=prof.lr,
                                            lr_final=prof.lr_final, features=prof.features, norm=prof.norm,
                                            seed=seed, device=dev)
                    runs.append(_score(predict(model, test_imgs), test_labs))
                per_image = {kk: np.mean([run[kk] for run in runs], 0) for kk in runs[0]}
                per_method[m] = per_image
                log.info("segmentation %s %s: mean Dice %.3f", key, m, per_image["dice"].mean())
            results[key] = {"ratio": r, "n_subjects": k, "n_images": int(idx.numel()),
                            "methods": {m: _aggregate(v) for m, v in per_method.items()}}
            tests[key] = _wilcoxon_tests(per_method)
            diffs[key] = {f"{a}_vs_{b}": paired_difference(per_method[a]["dice"].mean(1), per_method[b]["dice"].mean(1))
                          for a, b in (("drdm", "bigaug"), ("drdm", "none"), ("bigaug", "none"))
                          if a in per_method and b in per_method}
    return exp.finish(data, {
        "split": {"train_subjects": train_subjects, "test_subjects": sorted({r.subject for r in test}),
                  "n_train_images": len(train), "n_test_images": len(test)},
        "results": results, "wilcoxon": tests,
        # average Dice difference over test images, bootstrap 95 % CI (fractions, not %)
        "dice_difference": diffs,
    }, {"ratios": list(ratios), "methods": list(methods)}, table2_markdown, out_dir)


def _wilcoxon_tests(per_method: dict) -> dict:
    pairs = [(m, "none") for m in ("bigaug", "elastic", "drdm") if m in per_method and "none" in per_method]
    if "drdm" in per_method and "bigaug" in per_method:
        pairs.append(("drdm", "bigaug"))
    out = {}
    for a, b in pairs:
        row = {}
        for j, (name, _) in enumerate(STRUCTURES):
            row[name] = {k: wilcoxon(per_method[a][k][:, j], per_method[b][k][:, j]) for k in ("dice", "asd")}
        row["Average"] = {k: wilcoxon(per_method[a][k].mean(1), per_method[b][k].mean(1)) for k in ("dice", "asd")}
        out[f"{a}_vs_{b}"] = row
    return out


def verdict(result: dict, a: str = "drdm", b: str = "bigaug", spread: dict | None = None) -> list[str]:
    """One line per label ratio: does ``a`` beat ``b`` on average Dice (difference, 95 % CI, p)?
    ``spread``: ``{"<ratio key> <a>_vs_<b>": fraction}`` (:func:`drdm.book.phantom_spread`);
    a difference inside it is no conclusion."""
    out = []
    for key, block in result["results"].items():
        diff = result.get("dice_difference", {}).get(key, {}).get(f"{a}_vs_{b}")
        if diff is None and not {a, b} <= set(block["methods"]):
            out.append(f"{key}: {METHOD_NAMES[a]} or {METHOD_NAMES[b]} was not run ({result.get('skipped') or 'not asked'}).")
            continue
        p = (result["wilcoxon"].get(key, {}).get(f"{a}_vs_{b}", {}).get("Average", {}) or {}).get("dice")
        out.append(compare_sentence(f"{key} subjects, {METHOD_NAMES[a]} minus {METHOD_NAMES[b]}", diff, p,
                                    spread=(spread or {}).get(f"{key} {a}_vs_{b}")))
    return out


def table2_markdown(result: dict) -> str:
    """Table 2's layout (DSC / sensitivity / precision in %, per structure and average),
    then ASD / HD in voxels, then Wilcoxon p-values."""
    cols = [n for n, _ in STRUCTURES] + ["Average"]
    head = ("| #subj/ratio | aug method | " + " | ".join(f"{c} dsc↑ | {c} sns↑ | {c} prec↑" for c in cols) + " |")
    lines = [head, "|" + "---|" * (2 + 3 * len(cols))]
    dist = ["| #subj/ratio | aug method | " + " | ".join(f"{c} ASD↓ | {c} HD↓" for c in cols) + " |",
            "|" + "---|" * (2 + 2 * len(cols))]
    for key, block in result["results"].items():
        first = True
        for m in METHODS:
            if m not in block["methods"]:
                continue
            res = block["methods"][m]
            cells, dcells = [], []
            for c in cols:
                src = res["average"] if c == "Average" else res["structures"][c]
                cells += [fmt(src[k]["mean"], 1, 100) for k in ("dice", "sens", "prec")]
                dcells += [fmt(src[k]["mean"], 2) for k in ("asd", "hd")]
            lead = f"| {key if first else ''} | {METHOD_NAMES[m]} | "
            lines.append(lead + " | ".join(cells) + " |")
            dist.append(lead + " | ".join(dcells) + " |")
            first = False
    out = ["Segmentation (Table 2 layout): DSC, sensitivity, precision (%) on the test subjects", "",
           *lines, "", "Surface distances (voxels; mean over test images)", "", *dist]
    tests = result.get("wilcoxon", {})
    if any(tests.values()):
        out += ["", "Paired Wilcoxon signed-rank p-values over test images (DSC / ASD)", "",
                "| #subj/ratio | comparison | " + " | ".join(cols) + " |", "|" + "---|" * (2 + len(cols))]
        for key, rows in tests.items():
            for name, row in rows.items():
                a, b = name.split("_vs_")
                out.append(f"| {key} | {METHOD_NAMES[a]} vs {METHOD_NAMES[b]} | "
                           + " | ".join(f"{fmt_p(row[c]['dice'])} / {fmt_p(row[c]['asd'])}" for c in cols) + " |")
    if result.get("skipped"):
        out += [""] + [f"Skipped {m}: {why}" for m, why in result["skipped"].items()]
    return "\n".join(out)
